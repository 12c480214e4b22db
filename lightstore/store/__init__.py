"""The store layer: the tree of one root and its catalogue, as every layer above sees it.

`layout` names every file and folder; `base.StoreBase` holds a store's locks
and derivations; `core.LocalStore` opens a store on top of it; `publish` makes
realizations; `recovery` cleans up after dead processes; `view.StoreView` is the read-only store of
the reading commands.
"""

from lightstore.store.base import DEFAULT_GC_TIMEOUT_S, StorageSettings
from lightstore.store.core import LocalStore
from lightstore.store.layout import (
    CATALOGUE_FILE,
    CONFIG_FILE,
    CONTEXT_FILE,
    HOST_TAG,
    Layout,
)

__all__ = [
    "CATALOGUE_FILE",
    "CONFIG_FILE",
    "CONTEXT_FILE",
    "DEFAULT_GC_TIMEOUT_S",
    "HOST_TAG",
    "Layout",
    "LocalStore",
    "StorageSettings",
]
