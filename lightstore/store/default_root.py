"""Where the default store lives: the one place that reads ``$LIGHTSTORE_ROOT``.

The Pylightnix conventions (`lightstore.compat`), the user-facing `Store` and
the command line all ask here, so the environment is read in one place.
"""

from __future__ import annotations

import os

ROOT_VARIABLE = "LIGHTSTORE_ROOT"


def default_root() -> str:
    """The default store root: ``$LIGHTSTORE_ROOT``, else ``$XDG_DATA_HOME/lightstore``
    (``~/.local/share/lightstore``)."""
    root = os.environ.get(ROOT_VARIABLE)
    if root:
        return os.path.abspath(os.path.expanduser(root))
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(data, "lightstore")
