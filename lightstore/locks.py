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

import fcntl
import os
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
