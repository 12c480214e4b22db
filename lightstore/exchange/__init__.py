"""Moving realizations between stores: archives and direct copies.

- `pack(store, rrefs, path)` packs the closure of realizations into a .zip or .tar archive.
- `unpack(store, path)` adds an archive to a store, checking every hash first.
- `copy(src, dst, rrefs)` copies a closure between two stores, resumably.
- `safe_extract(path, dest)` extracts any .zip/.tar archive without letting it
  write outside `dest` (used by `unpack` and by `fetchurl(..., unpack=True)`).

Pylightnix's `spack`, `sunpack` and `copy_closure` (`lightstore.compat.exchange`)
take a store in any of its forms and call these.
"""

from lightstore.exchange.archive import pack, unpack
from lightstore.exchange.copy import copy
from lightstore.exchange.extract import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MEMBERS,
    SUPPORTED_SUFFIXES,
    archive_kind,
    safe_extract,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MEMBERS",
    "SUPPORTED_SUFFIXES",
    "archive_kind",
    "copy",
    "safe_extract",
    "pack",
    "unpack",
]
