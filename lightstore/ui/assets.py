"""The browser's scripts and styles, served from installed files: Plotly's own
``plotly.min.js`` (from the `plotly` wheel) and lightstore's ``static/`` folder.

Nothing is loaded from the internet: every page names these by their path on
the lightstore server (``/-/lightstore/NAME``).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
from importlib import resources

from lightstore.foundation.errors import LightstoreError

#: The URL prefix of the assets on the server.
PREFIX = "/-/lightstore/"
#: Files of lightstore's own static folder that are served (nothing else is).
OWN = {"lightstore.js": "text/javascript", "lightstore.css": "text/css"}
PLOTLY = "plotly.min.js"


@functools.cache
def plotly_js() -> str:
    """The path of the installed Plotly's ``plotly.min.js``.

    Raises LightstoreError naming the extra if Plotly is not installed.
    """
    try:
        spec = importlib.util.find_spec("plotly")
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = os.path.join(folder, "package_data", PLOTLY)
        if os.path.isfile(path):
            return path
    raise LightstoreError(
        "the experiment browser draws its charts with Plotly, which is not installed (or has "
        f"no {PLOTLY}); install it with `pip install 'lightstore[ui]'`"
    )


@functools.cache
def version(name: str) -> str:
    """The version of an asset, for URLs that change when it does."""
    if name == PLOTLY:
        try:
            return importlib.metadata.version("plotly")
        except importlib.metadata.PackageNotFoundError:
            return "0"
    return str(int(os.stat(own_path(name)).st_mtime))


def own_path(name: str) -> str:
    """The path of one of lightstore's own static files (a name in OWN)."""
    return str(resources.files("lightstore.ui") / "static" / name)


def asset(name: str) -> tuple[str, str] | None:
    """(path, content type) of the asset `name`, or None if no such asset is served."""
    if name == PLOTLY:
        return plotly_js(), "text/javascript; charset=utf-8"
    if name in OWN:
        return own_path(name), OWN[name] + "; charset=utf-8"
    return None


def url(name: str) -> str:
    """The URL of the asset `name`, with its version (browsers may cache it for long)."""
    return f"{PREFIX}{name}?v={version(name)}"
