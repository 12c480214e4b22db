"""Built-in stages: nodes from in-memory data (`mknode`, `mkfile`), and data fetched
from URLs or local files and checked against their sha256 (`fetchurl`, `fetchlocal`)."""

from lightstore.stages.fetch import fetchlocal, fetchurl
from lightstore.stages.trivial import mkfile, mknode

__all__ = ["fetchlocal", "fetchurl", "mkfile", "mknode"]
