"""The progress line of a realize, and the output printed above it.

`Progress` draws "realize [###...] done/total" on one line of the terminal
(stderr), redrawn in place and cleared at the end; in a Jupyter kernel it
updates one text output of the cell instead (IPython is imported only there);
anywhere else (a pipe, a file, CI) it is off and costs nothing.

While a bar is on, what builds print is written *above* it: the bar is
cleared, the output written, the bar drawn again, so a line of output never
lands on the bar's line. `lightstore.foundation.logs` passes the terminal
output of builds in this process through `current()`; worker processes send
theirs to the caller (`relay`), which writes it with `Progress.output`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from lightstore.foundation.files import write_all

#: A bar is first drawn this long after the realize starts: instant builds show none.
SHOW_AFTER_S = 0.3
#: A notebook's bar is updated at most this often (each update is a message to the browser).
NOTEBOOK_EVERY_S = 0.25
_WIDTH = 30
_CLEAR = b"\r\x1b[K"


class Sink(Protocol):
    """Where the terminal output of builds goes instead of straight to the terminal."""

    def output(self, fd: int, data: bytes, write: Callable[[], None] | None = None) -> None:
        """Show `data` meant for fd 1 or 2; `write` writes it there (None: write it yourself)."""


_sink: Sink | None = None
_sink_lock = threading.Lock()
# Set while a sink writes in this thread: what it writes goes straight to the terminal.
_writing = threading.local()


def current() -> Sink | None:
    """The sink of this process's build output (a bar or a relay), None when there is none."""
    if _sink is None or getattr(_writing, "on", False):
        return None
    return _sink


def set_sink(sink: Sink | None) -> Sink | None:
    """Make `sink` the process's sink of build output; returns the previous one."""
    global _sink
    with _sink_lock:
        previous, _sink = _sink, sink
    return previous


def in_notebook() -> bool:
    """Whether this process is a Jupyter (IPython) kernel; never imports IPython itself."""
    if "ipykernel" not in sys.modules:
        return False
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
    except Exception:  # an IPython too old or half imported: no notebook bar
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _stderr_is_terminal() -> bool:
    try:
        return os.isatty(2)
    except OSError:
        return False


class _TerminalLine:
    """The bar's line on the terminal, written through a copy of fd 2 taken at the start
    (a build in this process points fd 2 at its log pipe)."""

    def __init__(self) -> None:
        self.fd = os.dup(2)

    def draw(self, text: str, below: bool = False) -> None:
        start = b"\n" if below else _CLEAR
        write_all(self.fd, start + text.encode("utf-8", "replace"))

    def clear(self) -> None:
        write_all(self.fd, _CLEAR)

    def close(self) -> None:
        os.close(self.fd)


class _NotebookLine:
    """The bar as one text output of a notebook cell, updated in place."""

    def __init__(self) -> None:
        from IPython.display import display  # a kernel has IPython

        self.handle = display({"text/plain": ""}, raw=True, display_id=True)
        self.last = 0.0

    def draw(self, text: str, below: bool = False) -> None:
        now = time.monotonic()
        if now - self.last >= NOTEBOOK_EVERY_S:
            self.last = now
            self.handle.update({"text/plain": text}, raw=True)

    def clear(self) -> None:
        """Output goes to the cell's own stream, never on the bar: nothing to clear."""

    def close(self) -> None:
        self.handle.update({"text/plain": ""}, raw=True)


class Progress:
    """The progress line of a realize: derivations done out of `total` (see the module).

    `on` tells whether it draws (stderr a terminal, or a notebook kernel); off,
    every method returns at once. Thread-safe: builds print from other threads.
    Use it as a context manager, or call `close`.
    """

    def __init__(self, total: int, label: str = "realize", delay: float = SHOW_AFTER_S) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self._line: _TerminalLine | _NotebookLine | None = None
        self._start = time.monotonic() + delay
        self._drawn = False
        self._mid_line = False  # the output above ended without a newline
        self._lock = threading.RLock()
        self._previous: Sink | None = None
        try:
            if _sink is not None:
                pass  # a bar (or a relay to one) is on already: a nested realize draws none
            elif _stderr_is_terminal():
                self._line = _TerminalLine()
            elif in_notebook():
                self._line = _NotebookLine()
        except Exception:  # no fd to spare, or a notebook without display: no bar
            self._line = None
        if self._line is not None:
            self._previous = set_sink(self)

    @property
    def on(self) -> bool:
        """Whether this bar draws."""
        return self._line is not None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def show(self, done: int) -> None:
        """Draw `done`/total (once `SHOW_AFTER_S` has passed since the start)."""
        if self._line is None:
            return
        with self._lock:
            self.done = done
            if time.monotonic() >= self._start:
                self._draw()

    def output(self, fd: int, data: bytes, write: Callable[[], None] | None = None) -> None:
        """Write `data` meant for fd 1 or 2 above the bar; `write` writes it (default: to
        ``sys.stdout``/``sys.stderr``)."""
        with self._lock:
            line = self._line
            if line is not None and self._drawn and not self._mid_line:
                line.clear()
                self._drawn = False
            _writing.on = True
            try:
                if write is not None:
                    write()
                else:
                    _write_stream(fd, data)
            finally:
                _writing.on = False
            if data:
                self._mid_line = not data.endswith(b"\n")
            if line is not None and not self._mid_line and time.monotonic() >= self._start:
                self._draw()

    def close(self) -> None:
        """Clear the bar (cleared, as if never drawn) and stop taking output."""
        with self._lock:
            line, self._line = self._line, None
            if line is None:
                return
            if current() is self:
                set_sink(self._previous)
            try:
                if self._drawn:
                    line.clear()
                line.close()
            except Exception:  # a terminal gone, a kernel shutting down: nothing to clear
                pass

    def _draw(self) -> None:
        line = self._line
        if line is None:
            return
        filled = _WIDTH * self.done // max(self.total, 1)
        text = f"{self.label} [{'#' * filled}{'.' * (_WIDTH - filled)}] {self.done}/{self.total}"
        try:
            # After a partial line of output, the bar starts below it (the line is kept).
            line.draw(text, below=self._mid_line)
        except OSError:  # the terminal went away: stop drawing
            return
        self._mid_line = False
        self._drawn = True


class Relay:
    """The sink of a worker process whose caller draws a bar: build output is sent to
    the caller with `send(fd, data)` instead of being written to the terminal."""

    def __init__(self, send: Callable[[int, bytes], Any]) -> None:
        self.send = send
        self._lock = threading.Lock()

    def output(self, fd: int, data: bytes, write: Callable[[], None] | None = None) -> None:
        if data:
            with self._lock:
                self.send(fd, data)


def _write_stream(fd: int, data: bytes) -> None:
    """Write `data` to Python's stdout or stderr (a notebook's cell, or the terminal)."""
    stream = sys.stdout if fd == 1 else sys.stderr
    if stream is None:
        return
    try:
        stream.write(data.decode(getattr(stream, "encoding", None) or "utf-8", "replace"))
        stream.flush()
    except (OSError, ValueError):  # closed: the output is lost, as it would be
        pass
