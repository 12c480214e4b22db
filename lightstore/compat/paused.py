"""The builds that REPL sessions of this process hold paused, and the guard that keeps a
thread from waiting for its own paused build (it would wait forever).

Every realize of the Pylightnix layer passes `guard` as its
`RealizeOptions.guard`; `lightstore.compat.repl` records pauses here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from lightstore.foundation.errors import UsageError
from lightstore.foundation.refs import DRef
from lightstore.store import LocalStore

# (store root, build lock key) -> thread that holds the paused build.
_paused: dict[tuple[str, int], int] = {}
_paused_lock = threading.Lock()


def guard(store: LocalStore, dref: DRef, ctx_hash: str) -> None:
    """Refuse (UsageError) to wait for a build that this very thread holds paused."""
    if not _paused:
        return  # no session is paused: the common case costs one check
    key = (store.root, store.build_locks.key(dref, ctx_hash))
    with _paused_lock:
        owner = _paused.get(key)
    if owner is not None and owner == threading.get_ident():
        raise UsageError(
            f"{dref} is paused in a REPL session of this thread; finish it with repl_continue() "
            "or repl_cancel() before realizing it again"
        )


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
