"""Which store and registry to use when the caller names none.

This is the one place that reads the environment: ``$LIGHTSTORE_ROOT`` names
the default store, else ``$XDG_DATA_HOME/lightstore`` (``~/.local/share/lightstore``).
The default store is created on first use; a store named explicitly must exist.
The per-thread "current" storage and registry are the Pylightnix convenience
layer; the core always receives explicit objects.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from lightstore.facade import Store
from lightstore.store import StorageSettings

if TYPE_CHECKING:
    from lightstore.engine.registry import Registry

ROOT_VARIABLE = "LIGHTSTORE_ROOT"


class _Current(threading.local):
    storage: StorageSettings | None = None
    registry: Registry | None = None


current = _Current()


def default_root() -> str:
    """The default store root: ``$LIGHTSTORE_ROOT``, else ``$XDG_DATA_HOME/lightstore``."""
    root = os.environ.get(ROOT_VARIABLE)
    if root:
        return os.path.abspath(os.path.expanduser(root))
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(data, "lightstore")


def resolve_store(S: Any = None) -> Store:
    """The store meant by `S`: a Store, StorageSettings, a root path, or None for the current/default store.

    Raises StoreNotFoundError for an explicit root that holds no store.
    """
    if isinstance(S, Store):
        return S
    if isinstance(S, StorageSettings):
        return Store.open(S.root)
    if isinstance(S, str):
        return Store.open(S)
    if S is None:
        if current.storage is not None:
            return Store.open(current.storage.root)
        return Store.open(default_root(), create=True)
    raise TypeError(
        f"expected StorageSettings, Store, a path or None for S, got {type(S).__name__}"
    )
