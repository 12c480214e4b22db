"""Moving realizations between stores: archives (`spack`/`sunpack`) and direct copies.

- `spack(rrefs, path, S)` packs the closure of realizations into a .zip or .tar archive.
- `sunpack(path, S)` adds an archive to a store, checking every hash first.
- `copy_closure(rrefs, src, dst)` copies a closure between two stores, resumably.
- `safe_extract(path, dest)` extracts any .zip/.tar archive without letting it
  write outside `dest` (used by `sunpack` and by `fetchurl(..., unpack=True)`).
"""

from lightstore.exchange.archive import spack, sunpack
from lightstore.exchange.copy import copy_closure
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
    "copy_closure",
    "safe_extract",
    "spack",
    "sunpack",
]
