"""Pylightnix's implicit arguments: the per-thread current storage and registry, and
what an `S` argument means.

`S` is a `StorageSettings`, a `Store`, a root path, or None for the current
storage, else the default store (``$LIGHTSTORE_ROOT``, see
`lightstore.store.default_root`; created on first use). A store named
explicitly must exist. The layers below never read these: they take explicit
objects.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from lightstore.engine.registry import Registry
from lightstore.facade import Store
from lightstore.foundation.errors import UsageError
from lightstore.store import LocalStore, StorageSettings
from lightstore.store.default_root import default_root


class _Current(threading.local):
    storage: StorageSettings | None = None
    registry: Registry | None = None


#: This thread's current storage and registry (`current_storage`, `current_registry`).
current = _Current()


def store_of(S: Any = None) -> Store:
    """The store meant by `S` (see the module docstring).

    Raises StoreNotFoundError for an explicit root that holds no store.
    """
    if isinstance(S, Store):
        return S
    if isinstance(S, StorageSettings | LocalStore):
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


def mkSS(root: str, stordir: str | None = None, tmpdir: str | None = None) -> StorageSettings:
    """Storage settings for a store rooted at `root` (nothing is created).

    A store's objects and build area are always `root`/objects and `root`/tmp;
    `stordir`/`tmpdir` are accepted when they say the same, else UsageError.
    """
    ss = StorageSettings(os.path.abspath(os.path.expanduser(str(root))))
    for given, fixed, what in ((stordir, ss.storage, "stordir"), (tmpdir, ss.tmpdir, "tmpdir")):
        if given is not None and os.path.abspath(os.path.expanduser(given)) != fixed:
            raise UsageError(
                f"mkSS: {what}={given!r}, but a lightstore store keeps it at {fixed}; "
                "give only the root"
            )
    return ss


def settings_of(S: Any) -> StorageSettings:
    """The storage settings `S` names, without opening the store (None: current or default)."""
    if isinstance(S, StorageSettings):
        return S
    if isinstance(S, LocalStore):
        return S.settings
    if isinstance(S, str):
        return mkSS(S)
    if S is None:
        return current.storage or mkSS(default_root())
    raise TypeError(f"expected StorageSettings, Store, a path or None, got {type(S).__name__}")


def tlregistry(M: Registry | None) -> Registry | None:
    """`M` if given, else this thread's current registry (or None)."""
    return M if M is not None else current.registry


def tlstorage(S: Any) -> Any:
    """`S` if given, else this thread's current storage, else its current registry's, else None."""
    if S is not None:
        return S
    if current.storage is not None:
        return current.storage
    reg = current.registry
    return reg.store.settings if reg is not None else None
