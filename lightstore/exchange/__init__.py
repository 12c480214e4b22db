"""Moving realizations between stores: archives (and, later, direct copies)."""

from lightstore.exchange.archive import spack, sunpack

__all__ = ["spack", "sunpack"]
