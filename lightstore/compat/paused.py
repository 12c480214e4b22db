"""The builds that REPL sessions of this process hold paused, and the guard that lets
the thread holding one build it itself (waiting for its own pause would never end).

Every realize of the Pylightnix layer passes `guard` as its
`RealizeOptions.guard`; `lightstore.compat.repl` records pauses here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from lightstore.foundation.refs import DRef
from lightstore.store import LocalStore

# (store root, build lock key) -> thread that holds the paused build.
_paused: dict[tuple[str, int], int] = {}
_paused_lock = threading.Lock()


def guard(store: LocalStore, dref: DRef, ctx_hash: str) -> bool:
    """True if this very thread holds the build of `dref` in that context paused.

    The build then runs under the session's hold of its build lock (as
    Pylightnix would build it again): the session cannot go on while this
    thread builds, and other threads and processes still wait for the session.
    """
    if not _paused:
        return False  # no session is paused: the common case costs one check
    key = (store.root, store.build_locks.key(dref, ctx_hash))
    with _paused_lock:
        owner = _paused.get(key)
    return owner is not None and owner == threading.get_ident()


@contextmanager
def paused(store: LocalStore, key: int) -> Iterator[None]:
    """Record, for the block, that this thread holds the build of lock `key` paused."""
    with _paused_lock:
        _paused[(store.root, key)] = threading.get_ident()
    try:
        yield
    finally:
        with _paused_lock:
            _paused.pop((store.root, key), None)
