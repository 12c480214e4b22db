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

import contextlib
import errno
import fcntl
import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

from filelock import FileLock, Timeout

from lightstore.foundation.errors import LockTimeout

POLL_INTERVAL_S = 0.05
REPORT_EVERY_S = 10.0


#: The descriptors this process holds locks through (OFD and flock locks belong to the
#: open file, which a fork shares).
_lock_fds: set[int] = set()


def _open_lock_file(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    _lock_fds.add(fd)
    return fd


def _close_lock_file(fd: int) -> None:
    _lock_fds.discard(fd)
    os.close(fd)


def _drop_inherited_locks() -> None:
    """In a forked child, /dev/null in place of the parent's lock descriptors: a child a
    build forks (a server, a data loader) that outlives the build must not keep its
    build lock, nor the collector lock, held for as long as it lives. The parent's
    locks stay held by the parent's own descriptors."""
    if not _lock_fds:
        return
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for fd in list(_lock_fds):
            with contextlib.suppress(OSError):  # already closed: nothing to drop
                os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)
    _lock_fds.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


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
    fd = _open_lock_file(path)
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
        _close_lock_file(fd)  # closing the descriptor releases the flock


class KeyedLocks:
    """Exclusive locks on 2**60 independent keys, all in one file.

    Build locks are byte-range locks on one byte of ``locks/builds.lock`` at
    an offset derived from the key: no lock file is created per build
    (creating files is the slow part of publishing on many filesystems), a
    waiter sleeps in the kernel until the holder releases or dies, and
    distinct keys never contend. They are open-file-description locks (Linux
    ``F_OFD_SETLKW``): owned by the descriptor each `hold` opens, so threads
    and `Store` instances of one process exclude each other too, and the
    kernel's per-process deadlock detection (which misfires when several
    threads of two processes wait on each other's keys) does not apply.
    Where OFD locks are missing (macOS, old kernels) or ``$LIGHTSTORE_LOCKS``
    is ``posix``, classic record locks are used, with a per-key thread lock
    and polling instead of EDEADLK.
    """

    # The fallback's per-key thread locks, shared by every instance on one file (as the
    # process's record locks are): (path, pid, key) -> (lock, users).
    _threads: ClassVar[dict[tuple[str, int, int], tuple[threading.Lock, int]]] = {}
    # Re-entrant: see ProcessSharedLock._guard.
    _guard: ClassVar[threading.RLock] = threading.RLock()

    def __init__(self, path: str) -> None:
        self.path = path

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
        if not _HAVE_OFD:
            with self._thread_lock(key, timeout):
                yield from _held(self.path, key, timeout, holders, on_wait, ofd=False)
            return
        yield from _held(self.path, key, timeout, holders, on_wait, ofd=True)

    @contextmanager
    def try_hold(self, key: int) -> Iterator[bool]:
        """Hold the lock of `key` if it is free: yields True if held, False (holding nothing) if not."""
        if not _HAVE_OFD:
            slot = (self.path, os.getpid(), key)
            with self._guard:
                tlock, users = self._threads.get(slot, (threading.Lock(), 0))
                got = tlock.acquire(blocking=False)
                if got:
                    self._threads[slot] = (tlock, users + 1)
            if not got:
                yield False
                return
            try:
                fd = _shared_descriptor(self.path)
                if not _try_lock(fd, key, ofd=False, wait=False):
                    yield False
                    return
                try:
                    yield True
                finally:
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, key)
            finally:
                tlock.release()
                with self._guard:
                    tlock, users = self._threads[slot]
                    if users == 1:
                        del self._threads[slot]
                    else:
                        self._threads[slot] = (tlock, users - 1)
            return
        fd = _open_lock_file(self.path)
        try:
            yield _try_lock(fd, key, ofd=True, wait=False)
        finally:
            _close_lock_file(fd)  # closing the descriptor releases its lock

    @contextmanager
    def _thread_lock(self, key: int, timeout: float | None) -> Iterator[None]:
        slot = (self.path, os.getpid(), key)
        with self._guard:
            tlock, users = self._threads.get(slot, (threading.Lock(), 0))
            self._threads[slot] = (tlock, users + 1)
        try:
            if not tlock.acquire(timeout=-1 if timeout is None else timeout):
                raise LockTimeout(
                    f"build lock {key:x} not acquired in {timeout:.0f}s (held in this process)"
                )
            try:
                yield
            finally:
                tlock.release()
        finally:
            with self._guard:
                tlock, users = self._threads[slot]
                if users == 1:
                    del self._threads[slot]
                else:
                    self._threads[slot] = (tlock, users - 1)


#: ``LIGHTSTORE_LOCKS=posix`` makes build locks use the fallback (classic record locks) even
#: where OFD locks exist, so that the fallback is tested on Linux too; read once, at import.
LOCKS_VARIABLE = "LIGHTSTORE_LOCKS"
_HAVE_OFD = (
    hasattr(fcntl, "F_OFD_SETLKW") and os.environ.get(LOCKS_VARIABLE, "").strip().lower() != "posix"
)


def _flock_struct(kind: int, key: int) -> bytes:
    # struct flock {short l_type; short l_whence; off_t l_start; off_t l_len; pid_t l_pid;}
    # (pid must be 0 for OFD locks); padded to its C size.
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, key, 1, 0)


def _try_lock(fd: int, key: int, ofd: bool, wait: bool) -> bool:
    """Take the lock of `key` on `fd`; without `wait`, False if someone holds it."""
    try:
        if ofd:
            cmd = fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK
            fcntl.fcntl(fd, cmd, _flock_struct(fcntl.F_WRLCK, key))
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB), 1, key)
        return True
    except OSError as e:
        # EDEADLK: record locks' per-process deadlock detection; treat as busy and poll.
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            return False
        raise


def _held(
    path: str,
    key: int,
    timeout: float | None,
    holders: Callable[[], list[dict[str, Any]]] | None,
    on_wait: Callable[[str], None] | None,
    ofd: bool,
) -> Iterator[None]:
    # Record locks (the fallback) belong to the process: closing any descriptor
    # of the file would drop them all, so that case shares one that stays open.
    fd = _open_lock_file(path) if ofd else _shared_descriptor(path)
    try:
        if not _try_lock(fd, key, ofd, wait=False):
            if on_wait is not None:
                on_wait(
                    f"waiting for a build held by {describe_holders(holders() if holders else [])}"
                )
            deadline = None if timeout is None else time.monotonic() + timeout
            # Sleep in the kernel when we may wait forever (and OFD locks cannot misfire EDEADLK).
            if not (deadline is None and ofd and _try_lock(fd, key, ofd, wait=True)):
                while not _try_lock(fd, key, ofd, wait=False):
                    if deadline is not None and time.monotonic() >= deadline:
                        found = holders() if holders else []
                        raise LockTimeout(
                            f"build lock not acquired in {timeout:.0f}s; held by {describe_holders(found)}",
                            holder=found[0] if found else None,
                        )
                    time.sleep(POLL_INTERVAL_S)
        try:
            yield
        finally:
            if not ofd:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, key)
    finally:
        if ofd:
            _close_lock_file(fd)  # closing the descriptor releases its lock


_shared: dict[tuple[str, int], int] = {}


def _shared_descriptor(path: str) -> int:
    key = (path, os.getpid())  # a forked child needs its own
    if key not in _shared:
        _shared[key] = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    return _shared[key]


class ProcessSharedLock:
    """A shared flock held once per process however many threads (or Store
    instances) use it, with writer preference for an exclusive holder.

    Threads of a process share one descriptor and a counter: a realizer that
    realizes in a thread pool cannot deadlock against a waiting collector by
    queueing behind it while its parent holds the lock. `held_here` lets the
    collector refuse to wait for its own process.
    """

    _registry: ClassVar[dict[tuple[str, int], list[int]]] = {}  # (path, pid) -> [count, fd]
    # Re-entrant: the garbage collector may finalize an abandoned holder (a REPL
    # session's paused generator) at any allocation, also one made under the guard,
    # and its release takes the guard in the same thread.
    _guard: ClassVar[threading.RLock] = threading.RLock()

    def __init__(self, path: str, intent_path: str) -> None:
        self.path = path
        self.intent_path = intent_path

    def held_here(self) -> bool:
        """True if this process holds the lock shared."""
        entry = self._registry.get((self.path, os.getpid()))
        return entry is not None and entry[0] > 0

    def shared(self) -> AbstractContextManager[None]:
        """Hold the lock shared (waits while an exclusive holder waits or holds)."""
        return _SharedHold(self)

    @contextmanager
    def exclusive(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock exclusively; raises LockTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with shared_flock(self.intent_path, exclusive_mode=True, timeout=timeout):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            with shared_flock(self.path, exclusive_mode=True, timeout=left):
                yield


class _SharedHold:
    """One hold of `ProcessSharedLock.shared` (a class: every realize takes two)."""

    __slots__ = ("entry", "lock")

    def __init__(self, lock: ProcessSharedLock) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        lock = self.lock
        key = (lock.path, os.getpid())
        with lock._guard:
            entry = lock._registry.get(key)
            if entry is None or entry[0] == 0:
                with shared_flock(lock.intent_path):
                    pass  # queue behind a waiting collector
                fd = _open_lock_file(lock.path)
                fcntl.flock(fd, fcntl.LOCK_SH)
                entry = lock._registry[key] = [0, fd]
            entry[0] += 1
        self.entry = entry

    def __exit__(self, *exc: object) -> None:
        entry = self.entry
        with self.lock._guard:
            entry[0] -= 1
            if entry[0] == 0:
                _close_lock_file(entry[1])
