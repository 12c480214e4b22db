"""What a realizer printed: captured while it runs into a file per build (``logs/<build id>.log``
in the store, see `lightstore.store.layout`).

Where: one file per build attempt, beside the catalogue (not in it, and not
in the realization, whose content is hashed). A file can be appended to as
the build runs, so `lightstore log` shows a running build's progress; what a
process killed with -9 printed up to its death is kept; and big logs do not
bloat the catalogue. The build record (`builds`, one row per attempt, failed
ones too) names the file, and `realizations.build_id` leads from a run to it.
Build ids are reused only after their row is deleted, so a new build
truncates a stale file of the same id. Logs live as long as their build
record: gc keeps build history, and `forget` (and gc, for records it does
drop) delete the logs whose record is gone (`remove_orphan_logs`).

How (tee: the terminal still shows everything):

- Python level, always: ``sys.stdout``/``sys.stderr`` are wrapped by a tee
  that copies text written *by the thread running the build* into that
  build's log. Several threads realizing at once in one process each get
  their own log; threads a realizer starts itself are not captured (their
  writes still reach the terminal).
- File-descriptor level, when only one build captures in the process: fds 1
  and 2 are pointed at a pipe, and the process's log pump (one thread, started
  once) copies what arrives (from subprocesses, C extensions,
  ``os.write(1, ...)``) to the terminal and into the log. The fds are process-wide, so while builds of several threads
  overlap, fd-level output cannot be told apart: from the moment a second
  build starts until the owner ends, it goes to the terminal only, into the
  log of no build (Python-level output is still captured per thread). Output
  is never put into the wrong log. The first build owns the fds until it ends.
"""

from __future__ import annotations

import io
import os
import select
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, TextIO

from lightstore.foundation import terminal
from lightstore.foundation.files import write_all

_READ_CHUNK = 65536
#: How long the end of a build waits for the fd reader to drain the pipe.
_DRAIN_TIMEOUT_S = 2.0


class _Log:
    """One build's log file, written with O_APPEND so the tee and the fd reader interleave safely.

    The file is created at the first write: most builds print nothing, and creating
    and then deleting a file per build was the largest cost of capturing a silent one.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.closed = False
        # The pump may copy after the build ended (a subprocess still holds the pipe):
        # never write to the fd number after it was closed and perhaps reused.
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self.closed:
                return
            with suppress(OSError):  # a full disk must not fail the build: the log is a convenience
                if self.fd is None:
                    os.makedirs(os.path.dirname(self.path), exist_ok=True)
                    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                    self.fd = os.open(self.path, flags, 0o644)
                os.write(self.fd, data)

    def close(self) -> None:
        """Close the file; a build that printed nothing leaves none (a stale file of a reused
        build id is removed)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self.fd is not None:
                os.close(self.fd)
                return
        try:  # noqa: SIM105 - per build: suppress() costs a context manager
            os.unlink(self.path)
        except OSError:
            pass


class _State:
    """Process-wide capture state (guarded by `lock`)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.logs: dict[int, list[_Log]] = {}  # thread id -> its captures, innermost last
        self.count = 0
        self.fd: _FdCapture | None = None
        self.pid = os.getpid()

    def current(self) -> _Log | None:
        stack = self.logs.get(threading.get_ident())
        return stack[-1] if stack else None


_state = _State()


class _Tee(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: the text goes on to the terminal and to the
    log of the build the writing thread runs."""

    def __init__(self, original: TextIO, fd: int) -> None:
        self.original = original
        self.fd = fd  # 1 or 2

    def _terminal(self) -> Any:
        capture = _state.fd
        if capture is not None and _writes_to(self.original, self.fd):
            # fd 1/2 lead to the capture pipe now: write past it, to what they were.
            return capture.terminal_stream(self.fd, self.encoding)
        return self.original

    def write(self, text: str) -> int:
        sink = terminal.current()
        log = _state.current()
        if sink is None and log is None:
            self._write_terminal(text)
            return len(text)
        data = text.encode(self.encoding or "utf-8", errors="replace")
        if sink is None:
            self._write_terminal(text)
        else:  # above a progress bar, or to the caller drawing it
            sink.output(self.fd, data, lambda: self._write_terminal(text, flush=True))
        if log is not None:
            log.write(data)
        return len(text)

    def _write_terminal(self, text: str, flush: bool = False) -> None:
        try:
            stream = self._terminal()
            stream.write(text)
        except ValueError:  # the fd capture ended under us: its terminal stream is closed
            stream = self.original
            stream.write(text)
        if flush:  # before the bar is drawn again
            _flush(stream)

    def flush(self) -> None:
        capture = _state.fd
        if capture is not None and _writes_to(self.original, self.fd):
            # Only a terminal stream the tee opened holds text; opening one to flush
            # nothing cost four system calls per build.
            stream = capture.terminal.get(self.fd)
            if stream is not None:
                stream.flush()
            return
        self.original.flush()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.original, "errors", None)

    def fileno(self) -> int:
        return self.original.fileno()

    def isatty(self) -> bool:
        return self.original.isatty()

    def writable(self) -> bool:
        return True

    @property
    def buffer(self) -> Any:
        # Binary writes bypass the Python-level tee; at fd level they are still captured.
        return self.original.buffer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


def _writes_to(stream: Any, fd: int) -> bool:
    try:
        return bool(stream.fileno() == fd)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


class _Pump:
    """One daemon thread per process that copies the capture pipes to their terminal and log.

    Starting and joining two threads per build cost about 0.6 ms of CPU,
    most of the price of capturing a trivial build; the pump is started once.
    With epoll (Linux) a build registers and unregisters its pipes itself, and
    reads what is left at its end itself: a build wakes the pump only when it
    prints. Elsewhere pipes are handed over through a wake-up pipe and the end
    of a build waits for the pump to see the pipes close.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.pipes: dict[int, _Pipe] = {}  # read end -> pipe, as registered
        self.pending: list[_Pipe] = []
        self.direct = _HAS_EPOLL
        opened: list[Any] = []
        try:
            if self.direct:
                self.poller: Any = select.epoll()
                opened.append(self.poller)
            else:
                self.wake_read, self.wake_write = os.pipe()
                opened += [self.wake_read, self.wake_write]
                self.poller = select.poll()
                self.poller.register(self.wake_read, select.POLLIN)
            self.thread = threading.Thread(target=self._run, daemon=True, name="lightstore-log")
            self.thread.start()
        except BaseException:
            # EMFILE (or no thread to start): leave the process's fds as they were.
            for x in opened:
                with suppress(OSError):
                    x.close() if hasattr(x, "close") else os.close(x)
            raise

    def add(self, pipes: list[_Pipe]) -> None:
        """Start copying `pipes` (from any thread)."""
        if self.direct:
            for pipe in pipes:
                with self.lock:
                    self.pipes[pipe.read_end] = pipe
                self.poller.register(pipe.read_end, select.EPOLLIN)
            return
        with self.lock:
            self.pending += pipes
        os.write(self.wake_write, b"\0")

    def detach(self, pipe: _Pipe) -> None:
        """Stop watching `pipe` (epoll only; from any thread, holding `pipe.lock`)."""
        with self.lock:
            self.pipes.pop(pipe.read_end, None)
        try:  # noqa: SIM105 - per build: suppress() costs a context manager
            self.poller.unregister(pipe.read_end)
        except (OSError, ValueError):
            pass

    def _run(self) -> None:
        while True:
            try:
                events = self.poller.poll()
            except InterruptedError:
                continue
            for fd, _mask in events:
                if not self.direct and fd == self.wake_read:
                    os.read(self.wake_read, _READ_CHUNK)
                    with self.lock:
                        new, self.pending = self.pending, []
                    for added in new:
                        self.pipes[added.read_end] = added
                        self.poller.register(added.read_end, select.POLLIN)
                    continue
                with self.lock:
                    pipe = self.pipes.get(fd)
                if pipe is not None:
                    self._copy(pipe)

    def _copy(self, pipe: _Pipe) -> None:
        with pipe.lock:  # read and copied as one step, and never after a build took it back
            if pipe.closed:
                return
            try:
                data = os.read(pipe.read_end, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                pipe.copy(data)
                return
            # End of file: every holder of the write end (the build, its
            # subprocesses) has let go.
            if self.direct:
                self.detach(pipe)
            else:
                with self.lock:
                    self.pipes.pop(pipe.read_end, None)
                self.poller.unregister(pipe.read_end)
            pipe.close()


_HAS_EPOLL = hasattr(select, "epoll")
_pump_instance: _Pump | None = None


def _pump() -> _Pump:
    global _pump_instance
    pump = _pump_instance
    if pump is None or pump.pid != os.getpid() or not pump.thread.is_alive():
        # A forked child has the fds of its parent's pump but not its thread.
        _pump_instance = pump = _Pump()
    return pump


class _Pipe:
    """One captured fd's pipe: its read end, and where its data goes."""

    def __init__(self, capture: _FdCapture, fd: int, read_end: int, terminal: int) -> None:
        self.capture = capture
        self.fd = fd  # 1 or 2
        self.read_end = read_end
        self.terminal = terminal  # the terminal fd (the capture's saved copy, or the pump's own)
        self.lock = threading.Lock()
        self.closed = False

    def copy(self, data: bytes) -> None:
        sink = terminal.current()
        if sink is None:
            with suppress(OSError):
                write_all(self.terminal, data)
        else:  # above a progress bar, or to the caller drawing it
            sink.output(self.fd, data, lambda: self._to_terminal(data))
        # Never attributed once shared; a closed log drops what comes late.
        if not self.capture.shared:
            self.capture.owner.write(data)

    def _to_terminal(self, data: bytes) -> None:
        with suppress(OSError):
            write_all(self.terminal, data)

    def drain(self) -> bool:
        """Copy what waits in the pipe (holding `lock`); whether every writer let go."""
        while True:
            try:
                data = os.read(self.read_end, _READ_CHUNK)
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not data:
                return True
            self.copy(data)

    def close(self) -> None:
        """Close the read end and the terminal copy (holding `lock`)."""
        self.closed = True
        try:  # noqa: SIM105 - per build: suppress() costs a context manager
            os.close(self.read_end)
        except OSError:
            pass
        if self.terminal != self.capture.saved.get(self.fd):
            try:  # noqa: SIM105 - per build: suppress() costs a context manager
                os.close(self.terminal)
            except OSError:
                pass
        self.capture.pipe_closed()


class _FdCapture:
    """fds 1 and 2 pointed at pipes; their data is copied to the terminal and a log."""

    def __init__(self, owner: _Log) -> None:
        self.owner = owner
        # Set for good once another build starts in the process: from then on fd-level
        # output cannot be attributed (the pipe is read after the fact), so it goes to
        # the terminal only. Output is never put into the wrong log; some may be left out.
        self.shared = False
        self.saved: dict[int, int] = {}
        self.terminal: dict[int, TextIO] = {}  # opened when the Python-level tee needs them
        self.pipes: list[_Pipe] = []
        self._open_pipes = 2
        self._lock = threading.Lock()
        self.pump = pump = _pump()
        # Only the portable pump's builds wait for it to see their pipes close.
        self.drained = None if pump.direct else threading.Event()
        # Every fd is allocated before fds 1 and 2 change, so running out of fds
        # (EMFILE) leaves the process as it was.
        opened: list[int] = []
        try:
            plan = []
            for fd in (1, 2):
                saved = os.dup(fd)
                opened.append(saved)
                read_end, write_end = os.pipe()
                opened += [read_end, write_end]
                os.set_blocking(read_end, False)
                plan.append((fd, saved, read_end, write_end))
        except OSError:
            for x in opened:
                os.close(x)
            raise
        for fd, saved, read_end, write_end in plan:
            _flush(sys.stdout if fd == 1 else sys.stderr)  # None or a non-file: nothing to do
            os.dup2(write_end, fd)
            os.close(write_end)
            self.saved[fd] = saved
            self.pipes.append(_Pipe(self, fd, read_end, saved))
        if not pump.direct:
            # The pump may copy after stop() closed `saved` (a subprocess still holds
            # the pipe): it writes through a terminal fd of its own.
            for pipe in self.pipes:
                pipe.terminal = os.dup(pipe.terminal)
        pump.add(self.pipes)

    def terminal_stream(self, fd: int, encoding: str) -> TextIO:
        """Where the Python-level tee writes text meant for the terminal of `fd`."""
        stream = self.terminal.get(fd)
        if stream is None:
            stream = self.terminal[fd] = open(  # noqa: SIM115 - closed in stop()
                self.saved[fd], "w", encoding=encoding, errors="replace", closefd=False, buffering=1
            )
        return stream

    def pipe_closed(self) -> None:
        with self._lock:
            self._open_pipes -= 1
            if self._open_pipes == 0 and self.drained is not None:
                self.drained.set()

    def stop(self) -> None:
        """Put fds 1 and 2 back and copy what the build left in the pipes to its log.

        A pipe that a process started by the build still holds (it outlived the
        build) is left to the pump, which copies what comes later to the terminal
        only: it belongs to no log.
        """
        for stream in self.terminal.values():
            stream.flush()
        if not self.pump.direct:
            for fd in (1, 2):
                os.dup2(self.saved[fd], fd)
            if self.drained is not None:
                self.drained.wait(_DRAIN_TIMEOUT_S)
        else:
            for pipe in self.pipes:
                with pipe.lock:
                    self.pump.detach(pipe)
            for fd in (1, 2):
                # Restoring the fd closes the build's write end of the pipe.
                os.dup2(self.saved[fd], fd)
            for pipe in self.pipes:
                with pipe.lock:
                    if pipe.closed:
                        continue
                    if pipe.drain():
                        pipe.close()
                        continue
                    # Still held by another process: the pump copies the rest to the
                    # terminal, through its own copy of the terminal fd.
                    try:
                        pipe.terminal = os.dup(self.saved[pipe.fd])
                    except OSError:
                        pipe.close()
                        continue
                self.pump.add([pipe])
        for stream in self.terminal.values():
            stream.close()
        for fd in (1, 2):
            os.close(self.saved[fd])


def _flush(stream: Any) -> None:
    try:  # noqa: SIM105 - per build: suppress() costs a context manager
        stream.flush()
    except (OSError, ValueError, AttributeError):
        pass


#: The tees last installed, by fd: a build of the same streams takes them again.
_tees: dict[int, _Tee] = {}


def _tee(stream: TextIO, fd: int) -> _Tee:
    tee = _tees.get(fd)
    if tee is None or tee.original is not stream:
        tee = _tees[fd] = _Tee(stream, fd)
    return tee


def _install_tees() -> None:
    if not isinstance(sys.stdout, _Tee) and sys.stdout is not None:
        sys.stdout = _tee(sys.stdout, 1)
    if not isinstance(sys.stderr, _Tee) and sys.stderr is not None:
        sys.stderr = _tee(sys.stderr, 2)


def _remove_tees() -> None:
    if isinstance(sys.stdout, _Tee):
        _flush(sys.stdout)
        sys.stdout = sys.stdout.original
    if isinstance(sys.stderr, _Tee):
        _flush(sys.stderr)
        sys.stderr = sys.stderr.original


@contextmanager
def capture_output(path: str, fd_level: bool = True) -> Iterator[str]:
    """Tee what the current thread (and, when it is the only build, the process's fds 1
    and 2) print into the log file `path`; yields `path`. A silent build leaves no file.

    Never raises for a log it cannot write: the build goes on without one.
    """
    log = _Log(path)
    ident = threading.get_ident()
    with _state.lock:
        if _state.pid != os.getpid():  # a forked child: the parent's state is not ours
            _state.__init__()  # type: ignore[misc]
        _state.count += 1
        if _state.fd is not None:
            _state.fd.shared = True
        _state.logs.setdefault(ident, []).append(log)
        _install_tees()
        if fd_level and _state.fd is None and _state.count == 1:
            # Closed fds 1 or 2 make `os.dup` fail (EBADF) before anything changed.
            try:
                _state.fd = _FdCapture(log)
            except (OSError, RuntimeError):  # out of fds, or no thread for the pump
                _state.fd = None
    try:
        yield path
    finally:
        with _state.lock:
            for stream in (sys.stdout, sys.stderr):
                _flush(stream)
            if _state.fd is not None and _state.fd.owner is log:
                capture, _state.fd = _state.fd, None
                capture.stop()
            stack = _state.logs.get(ident, [])
            if log in stack:
                stack.remove(log)
            if not stack:
                _state.logs.pop(ident, None)
            _state.count -= 1
            if _state.count == 0:
                _remove_tees()
            log.close()


def read_log(path: str) -> bytes | None:
    """The captured output in the log file `path`, or None if there is none."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
