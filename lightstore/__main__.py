"""`python -m lightstore`: the command line."""

import sys

from lightstore.cli import main

if __name__ == "__main__":
    sys.exit(main())
