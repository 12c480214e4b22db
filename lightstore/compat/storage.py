"""Pylightnix-style storage and registry helpers over `Store` and `Registry`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lightstore.compat.current import current, mkSS, settings_of
from lightstore.compat.registry import Registry
from lightstore.facade import Store
from lightstore.foundation.errors import StoreError
from lightstore.foundation.files import remove_tree
from lightstore.store import CATALOGUE_FILE, StorageSettings

__all__ = ["current_registry", "current_storage", "fsinit", "mkSS", "mkregistry"]


def fsinit(
    S: Any = None,
    check_not_exist: bool = False,
    remove_existing: bool = False,
    use_as_default: bool = False,
) -> Store:
    """Create the store at `S` (default: the current/default store) and return it.

    `check_not_exist` refuses (StoreError) if a store is already there.
    `remove_existing` first deletes an existing store there; a non-empty folder
    that is not a lightstore store is never deleted (StoreError).
    `use_as_default` makes it this thread's current storage.
    """
    ss = settings_of(S)
    if check_not_exist and os.path.isfile(os.path.join(ss.root, CATALOGUE_FILE)):
        raise StoreError(f"a store already exists at {ss.root} (check_not_exist=True)")
    if remove_existing and os.path.isdir(ss.root):
        if os.listdir(ss.root) and not os.path.isfile(os.path.join(ss.root, CATALOGUE_FILE)):
            raise StoreError(
                f"refusing to delete {ss.root}: it is not empty and holds no lightstore catalogue; "
                "remove it yourself or choose another root"
            )
        remove_tree(ss.root)
        Store.forget_instances()
    store = Store.open(ss.root, create=True)
    if use_as_default:
        current.storage = store.settings
    return store


@contextmanager
def current_storage(S: Any) -> Iterator[StorageSettings]:
    """Use `S` as this thread's current storage inside the block."""
    old = current.storage
    current.storage = settings_of(S)
    try:
        yield current.storage
    finally:
        current.storage = old


@contextmanager
def current_registry(r: Registry) -> Iterator[Registry]:
    """Use `r` (and its storage) as this thread's current registry inside the block."""
    old = current.registry
    current.registry = r
    try:
        with current_storage(r.S):
            yield r
    finally:
        current.registry = old


def mkregistry(S: Any = None) -> Registry:
    """A new, empty registry for storage `S`."""
    return Registry(S)
