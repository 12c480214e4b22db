"""Cross-process locks of a store.

- A *build lock* per (derivation, context): whoever holds it is the one
  process that builds that derivation in that context; the others wait, then
  re-read the catalogue and reuse its result. The kernel releases a flock when
  its holder dies, so a waiter whose builder was killed takes over.
- The *collector lock*: realizations hold it shared for as long as they run,
  garbage collection holds it exclusively, so gc never deletes what a running
  realization has chosen but not yet recorded as a dependency.

filelock provides the exclusive lock. Its read-write lock is built on a SQLite
file; a shared flock is one system call, and that is what every cached
realize pays, so the collector lock uses `fcntl.flock` directly.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from filelock import FileLock, Timeout

from lightstore.errors import LockTimeout

POLL_INTERVAL_S = 0.05
REPORT_EVERY_S = 10.0


def describe_holders(holders: list[dict[str, Any]]) -> str:
    """Human text for lock holders ({pid, host, since})."""
    if not holders:
        return "an unknown process"
    return ", ".join(
        f"pid {h['pid']} on {h['host']} since {time.strftime('%H:%M:%S', time.localtime(h['since']))}"
        for h in holders
    )


@contextmanager
def exclusive(
    path: str,
    *,
    timeout: float | None = None,
    holders: Callable[[], list[dict[str, Any]]] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive file lock on `path`, waiting (without spinning) as long as needed.

    While it waits, `on_wait` is told every few seconds who holds the lock (as
    reported by `holders`). Raises LockTimeout after `timeout` seconds.
    """
    lock = FileLock(path, thread_local=False)
    start = time.monotonic()
    last_report = start
    while True:
        try:
            lock.acquire(
                timeout=REPORT_EVERY_S if timeout is None else min(timeout, REPORT_EVERY_S),
                poll_interval=POLL_INTERVAL_S,
            )
            break
        except Timeout:
            found = holders() if holders else []
            who = describe_holders(found)
            now = time.monotonic()
            if timeout is not None and now - start >= timeout:
                raise LockTimeout(
                    f"lock {path} not acquired in {timeout:.0f}s; held by {who}",
                    holder=found[0] if found else None,
                ) from None
            if on_wait is not None and now - last_report >= REPORT_EVERY_S:
                on_wait(f"waiting for {path}, held by {who}")
                last_report = now
    try:
        yield
    finally:
        lock.release()


@contextmanager
def shared_flock(
    path: str, *, exclusive_mode: bool = False, timeout: float | None = None
) -> Iterator[None]:
    """Hold a shared (or exclusive) flock on `path` (blocks in the kernel, no polling)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        op = fcntl.LOCK_EX if exclusive_mode else fcntl.LOCK_SH
        if timeout is None:
            fcntl.flock(fd, op)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, op | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"lock {path} not acquired in {timeout:.0f}s") from None
                    time.sleep(POLL_INTERVAL_S)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


class KeyedLocks:
    """Exclusive locks on 2**60 independent keys, all in one file.

    Build locks are POSIX record locks on one byte of ``locks/builds.lock``
    at an offset derived from the key: no lock file is created per build
    (creating files is the slow part of publishing on many filesystems), a
    waiter sleeps in the kernel until the holder releases or dies, and
    distinct keys never contend. Record locks belong to the process, not to a
    thread, so a per-key thread lock serialises the threads of one process
    first; and the file descriptor stays open for the life of the process,
    because closing any descriptor of the file would drop all its record locks.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0
        self._guard = threading.Lock()
        self._threads: dict[int, tuple[threading.Lock, int]] = {}

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            # After a fork the inherited descriptor holds none of our locks; open our own.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self._pid = os.getpid()
            self._threads = {}
        return self._fd

    @staticmethod
    def key(*parts: str) -> int:
        """The byte offset that stands for a key made of `parts`."""
        return int(hashlib.blake2b("\0".join(parts).encode(), digest_size=8).hexdigest(), 16) >> 4

    @contextmanager
    def hold(
        self,
        key: int,
        *,
        timeout: float | None = None,
        holders: Callable[[], list[dict[str, Any]]] | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> Iterator[None]:
        """Hold the lock of `key`; raises LockTimeout after `timeout` seconds."""
        with self._guard:
            fd = self._descriptor()
            tlock, users = self._threads.get(key, (threading.Lock(), 0))
            self._threads[key] = (tlock, users + 1)
        try:
            if not tlock.acquire(timeout=-1 if timeout is None else timeout):
                raise LockTimeout(
                    f"build lock {key:x} not acquired in {timeout:.0f}s (held in this process)"
                )
            try:
                self._lock_range(fd, key, timeout, holders, on_wait)
                try:
                    yield
                finally:
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, key)
            finally:
                tlock.release()
        finally:
            with self._guard:
                tlock, users = self._threads[key]
                if users == 1:
                    del self._threads[key]
                else:
                    self._threads[key] = (tlock, users - 1)

    def _lock_range(
        self,
        fd: int,
        key: int,
        timeout: float | None,
        holders: Callable[[], list[dict[str, Any]]] | None,
        on_wait: Callable[[str], None] | None,
    ) -> None:
        if _try_lockf(fd, key):
            return
        if on_wait is not None:
            on_wait(f"waiting for a build held by {describe_holders(holders() if holders else [])}")
        if timeout is None:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, key)  # sleeps in the kernel
            return
        deadline = time.monotonic() + timeout
        while not _try_lockf(fd, key):
            if time.monotonic() >= deadline:
                found = holders() if holders else []
                raise LockTimeout(
                    f"build lock not acquired in {timeout:.0f}s; held by {describe_holders(found)}",
                    holder=found[0] if found else None,
                )
            time.sleep(POLL_INTERVAL_S)


def _try_lockf(fd: int, key: int) -> bool:
    """Take the record lock of `key` without waiting; False if someone holds it."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, key)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
