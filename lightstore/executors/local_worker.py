"""The worker process of `jobs=N` (`lightstore.executors.local`).

Started by the caller as a fresh interpreter (``python -c`` with the caller's
sys.path), it answers ``("ready", pid)`` once imported, then takes one message
at a time on its pipe: ``("setup", {...})`` (the caller's environment, working
directory and sys.path, sent at the start of each run) or ``("build",
payload)`` (a task pickled with cloudpickle), answered with ``("done",
answer)`` or ``("failed", pickled error or None, its text)``, after any
number of ``("output", fd, bytes)``: what the build printed, sent to a caller
that draws a progress bar (it writes the output above the bar). It exits when
the caller closes the pipe. The build itself is the Dask workers' task,
`lightstore.executors.worker.build_on_worker`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from lightstore.executors.worker import build_on_worker
from lightstore.foundation import terminal

# The pipe is written by the build's thread and by the log pump (relayed output).
_send_lock = threading.Lock()


def _send(conn: Connection, message: tuple[Any, ...]) -> None:
    with _send_lock:
        conn.send_bytes(pickle.dumps(message))


def main(fd: int) -> None:
    """Serve the caller on the socket `fd` until it closes it."""
    conn = Connection(fd)
    os.register_at_fork(after_in_child=functools.partial(_disown, fd))
    try:
        _send(conn, ("ready", os.getpid()))
    except OSError:
        return  # the caller is gone already (it exited while this worker started)
    while True:
        try:
            kind, body = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the caller closed the pipe, or is gone
        if kind == "setup":
            _setup(body)
        elif kind == "build":
            answer = _build(conn, body)
            with _send_lock:
                conn.send_bytes(answer)


def _disown(fd: int) -> None:
    """In a child a build forked (without exec), put /dev/null where the caller's pipe
    was: the caller learns that its worker died only once every process holding the
    pipe closed it (a forked child living on would hide the death, and the caller
    would wait for it), and a child falling back into `main` must not answer in the
    worker's name (it reads the end of /dev/null, and returns)."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.dup2(null, fd, inheritable=False)
    finally:
        os.close(null)


def _setup(caller: dict[str, Any]) -> None:
    """Take the caller's sys.path, environment and working directory, so that a kept
    worker builds as a fresh one started now would."""
    sys.path[:] = caller["path"]
    env = caller["env"]
    for name in [n for n in os.environ if n not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
    if caller["cwd"] is not None:
        with contextlib.suppress(OSError):  # the caller's folder is gone: stay here
            os.chdir(caller["cwd"])


def _build(conn: Connection, payload: bytes) -> bytes:
    try:
        root, task, options, exchange, relay = pickle.loads(payload)
        if not relay:
            answer = build_on_worker(root, task, options, exchange)
        else:
            previous = terminal.set_sink(terminal.Relay(lambda fd, data: _relay(conn, fd, data)))
            try:
                answer = build_on_worker(root, task, options, exchange)
            finally:
                terminal.set_sink(previous)
        return pickle.dumps(("done", answer))
    except BaseException as e:  # every failure goes back to the caller, named there
        return _failure(e)


def _relay(conn: Connection, fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the caller is gone: nobody to show it to
        _send(conn, ("output", fd, data))


def _failure(error: BaseException) -> bytes:
    import cloudpickle

    try:
        text = f"{type(error).__name__}: {error}"
    except Exception:  # an exception whose str() fails
        text = type(error).__name__
    try:
        blob: bytes | None = cloudpickle.dumps(error)
    except Exception:  # travels as text
        blob = None
    return pickle.dumps(("failed", blob, text))
