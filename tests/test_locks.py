"""Build locks (`KeyedLocks`) against threads and real processes, in both implementations:
Linux's open-file-description locks, and the classic record-lock fallback used where those are
missing (macOS, old kernels), forced here on Linux as ``LIGHTSTORE_LOCKS=posix`` forces it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import Worker, child_env

from lightstore.foundation import locks
from lightstore.foundation.errors import LockTimeout
from lightstore.foundation.locks import LOCKS_VARIABLE, KeyedLocks


@pytest.fixture(params=["ofd", "posix"])
def mode(request, monkeypatch) -> str:
    """The lock implementation under test, in this process and in the children it starts."""
    if request.param == "ofd":
        if not hasattr(fcntl, "F_OFD_SETLKW"):
            pytest.skip("this system has no open-file-description locks")
        monkeypatch.setattr(locks, "_HAVE_OFD", True)
    else:
        monkeypatch.setattr(locks, "_HAVE_OFD", False)
    return request.param


def _env(mode: str) -> dict[str, str]:
    """The variables of a child using the lock implementation `mode`."""
    return {LOCKS_VARIABLE: "posix" if mode == "posix" else ""}


@contextmanager
def held_by_child(path: str, key: int, mode: str) -> Iterator[Worker]:
    """A child process that holds `key` until the block ends (or it is killed)."""
    with Worker("hold_key", path, str(key), env=_env(mode)) as child:
        child.wait_for("held")
        yield child
        if child.running:
            child.release()
            child.finish(timeout=30)


def _free(path: str, key: int) -> bool:
    with KeyedLocks(path).try_hold(key) as got:
        return got


def test_the_variable_forces_the_fallback():
    code = "import lightstore.foundation.locks as l; print(l._HAVE_OFD)"
    for value, expected in (("posix", "False"), ("", str(hasattr(fcntl, "F_OFD_SETLKW")))):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, LOCKS_VARIABLE: value, "PYTHONPATH": os.getcwd()},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == expected


def test_a_key_held_by_another_process_excludes_until_released(tmp_path, mode):
    path = str(tmp_path / "builds.lock")
    key, other = KeyedLocks.key("a"), KeyedLocks.key("b")
    with held_by_child(path, key, mode):
        assert not _free(path, key)
        with pytest.raises(LockTimeout), KeyedLocks(path).hold(key, timeout=0.3):
            pass
        assert _free(path, other), "distinct keys never contend"
    assert _free(path, key)


def test_a_killed_holder_releases_its_key(tmp_path, mode):
    path = str(tmp_path / "builds.lock")
    key = KeyedLocks.key("k")
    with held_by_child(path, key, mode) as child:
        waited: list[float] = []

        def wait() -> None:
            start = time.monotonic()
            with KeyedLocks(path).hold(key, timeout=60):
                waited.append(time.monotonic() - start)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.3)
        assert not waited
        child.kill()
        waiter.join(60)
    assert waited, "the waiter never got the key of a dead holder"


def test_threads_and_instances_of_one_process_exclude_each_other(tmp_path, mode):
    path = str(tmp_path / "builds.lock")
    key = KeyedLocks.key("shared")
    inside, most = [0], [0]
    guard = threading.Lock()

    def work(i: int) -> None:
        lock = KeyedLocks(path) if i % 2 else shared  # as separate Store instances do
        for _ in range(20):
            with lock.hold(key, timeout=60):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.001)
                with guard:
                    inside[0] -= 1

    shared = KeyedLocks(path)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert most[0] == 1


def test_releasing_one_key_keeps_the_others_held(tmp_path, mode):
    """Record locks belong to the process: closing any descriptor of the file drops them
    all. A key taken and released beside a held one must not free the held one."""
    path = str(tmp_path / "builds.lock")
    kept, passing = KeyedLocks.key("kept"), KeyedLocks.key("passing")
    with KeyedLocks(path).hold(kept):
        with KeyedLocks(path).hold(passing):
            pass
        with KeyedLocks(path).try_hold(passing) as got:
            assert got
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from lightstore.foundation.locks import KeyedLocks\n"
                "with KeyedLocks(sys.argv[1]).try_hold(int(sys.argv[2])) as got: print(got)",
                path,
                str(kept),
            ],
            env=child_env(_env(mode)),
            capture_output=True,
            text=True,
            check=True,
        )
        assert probe.stdout.strip() == "False", "another process could take a held key"


def _fork_lingering_child() -> int:
    """Fork a child that lives on (a server or a data loader a build started): its pid,
    once it runs its own code."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only sleeps
        os.write(w, b"x")
        time.sleep(60)
        os._exit(0)
    os.close(w)
    os.read(r, 1)
    os.close(r)
    return pid


@pytest.mark.parametrize("kind", ["build", "collector"])
def test_a_child_forked_under_a_lock_does_not_keep_it(tmp_path, kind):
    if kind == "build" and not hasattr(fcntl, "F_OFD_SETLKW"):
        pytest.skip("record locks are not inherited anyway")
    path = str(tmp_path / "builds.lock")
    key = KeyedLocks.key("k")
    collector = locks.ProcessSharedLock(str(tmp_path / "gc.lock"), str(tmp_path / "intent.lock"))
    held = KeyedLocks(path).hold(key) if kind == "build" else collector.shared()
    with held:
        child = _fork_lingering_child()
    try:
        if kind == "build":
            assert _free(path, key), "the forked child kept the build lock"
        else:
            with collector.exclusive(timeout=2):
                pass
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
