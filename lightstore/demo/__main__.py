"""``python -m lightstore.demo``: run the quick-start demo."""

import importlib.util
import sys

missing = [m for m in ("numpy", "scipy", "matplotlib") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(
        f"the demo needs {', '.join(missing)}: install them with `pip install 'lightstore[demo]'` "
        "(or run tools/demo, which does it for you)"
    )

from lightstore.demo.quickstart import main  # noqa: E402 (after the dependency check)

if __name__ == "__main__":
    sys.exit(main())
