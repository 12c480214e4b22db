"""The progress line of a realize: on a terminal only, one line redrawn and cleared at the
end, with what builds print written above it, intact (serial, `jobs=`, Dask); in a notebook
kernel a text output updated in place; nothing in pipes or when everything is cached."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types

import pytest
from helpers import REPO, TIMEOUT

from lightstore.foundation import terminal
from lightstore.foundation.terminal import Progress

#: A child's script: a chain of three stages, each printing lines (Python-level, fd-level
#: from a subprocess, and a partial line) while it builds slowly enough to show the bar.
SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from lightstore import (build_outpath, build_wrapper, instantiate, match_only, mkdrv,
                            realize1, Store)

    def stage(i, r):
        dep = stage(i - 1, r) if i > 0 else None
        def real(b):
            for n in range(3):
                print(f"stage {i} line {n} of its output", flush=True)
                time.sleep(0.15)
            subprocess.run(["echo", f"stage {i} from a subprocess"], check=True)
            time.sleep(0.1)  # fd-level output is copied by a thread: let it come first
            sys.stderr.write(f"stage {i} partial")
            sys.stderr.flush()
            time.sleep(0.2)
            sys.stderr.write(f" rest of stage {i}\\n")
            open(os.path.join(build_outpath(b), "x"), "w").write(str(i))
        return mkdrv({"name": f"s{i}", "dep": dep}, match_only(), build_wrapper(real), r)

    store = Store.open(sys.argv[1], create=True)
    kw = eval(sys.argv[2])
    realize1(instantiate(stage, 2, S=store.settings), **kw)
    print("REALIZED")
    realize1(instantiate(stage, 2, S=store.settings), **kw)  # all cached: no bar
    print("AGAIN")
    """
)

EXPECTED = [
    *(f"stage {i} line {n} of its output" for i in range(3) for n in range(3)),
    *(f"stage {i} from a subprocess" for i in range(3)),
]


def _screen(data: bytes) -> list[str]:
    """The lines a terminal shows for `data` (carriage return, newline, erase to end of
    line; other escape sequences are not expected and kept as text)."""
    lines: list[list[str]] = [[]]
    col = 0
    text = data.decode("utf-8", "replace")
    i = 0
    while i < len(text):
        c = text[i]
        if text.startswith("\x1b[K", i):
            del lines[-1][col:]
            i += 3
            continue
        if c == "\r":
            col = 0
        elif c == "\n":
            lines.append([])
            col = 0
        else:
            line = lines[-1]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = c
            else:
                line.append(c)
            col += 1
        i += 1
    return ["".join(x) for x in lines]


def _run_in_terminal(root: str, kw: str) -> bytes:
    pty = pytest.importorskip("pty")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, root, kw],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        cwd=REPO,
        env={**os.environ, "TERM": "xterm"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=TIMEOUT) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks)


def _check_screen(raw: bytes) -> None:
    shown = _screen(raw)
    assert b"realize [" in raw, "no progress bar was drawn"
    for line in EXPECTED:
        assert line in shown, f"{line!r} is not a line of its own:\n" + "\n".join(shown)
    for i in range(3):
        # A partial line is kept whole or split at the bar; never mixed with the bar.
        assert f"stage {i} partial rest of stage {i}" in shown or (
            f"stage {i} partial" in shown and f" rest of stage {i}" in shown
        ), "\n".join(shown)
    assert not [x for x in shown if "realize [" in x], "the bar was not cleared:\n" + "\n".join(
        shown
    )
    # The second realize is all cached: nothing drawn between the two markers.
    assert b"\r" not in raw.split(b"REALIZED", 1)[1].replace(b"\r\n", b"\n")


@pytest.mark.parametrize("kw", ["{}", "{'jobs': 2}"], ids=["serial", "jobs"])
def test_output_above_the_bar_is_intact_on_a_terminal(tmp_path, kw):
    _check_screen(_run_in_terminal(str(tmp_path / "store"), kw))


@pytest.mark.slow
def test_output_of_dask_workers_above_the_bar_is_intact(tmp_path):
    pytest.importorskip("distributed")
    kw = (
        "{'client': __import__('distributed').Client(__import__('distributed').LocalCluster("
        "n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None))}"
    )
    _check_screen(_run_in_terminal(str(tmp_path / "store"), kw))


def test_no_bar_in_a_pipe(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "store"), "{}"],
        capture_output=True,
        cwd=REPO,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    assert b"realize [" not in proc.stdout + proc.stderr
    assert b"\r" not in proc.stdout + proc.stderr and b"\x1b" not in proc.stdout + proc.stderr
    assert b"stage 2 line 2 of its output" in proc.stdout


def test_off_bar_takes_no_output_and_writes_nothing(capfd):
    with Progress(3) as bar:
        assert not bar.on and terminal.current() is None
        bar.show(1)
    assert capfd.readouterr() == ("", "")


# -- notebooks -------------------------------------------------------------------------------


class _Handle:
    def __init__(self) -> None:
        self.shown: list[str] = []

    def update(self, bundle, raw=False):
        self.shown.append(bundle["text/plain"])


@pytest.fixture
def kernel(monkeypatch):
    """What a Jupyter kernel has in sys.modules: ipykernel, and IPython with a shell that has
    a kernel and a display function (recorded)."""
    handles: list[_Handle] = []

    def display(bundle, raw=False, display_id=False):
        handles.append(_Handle())
        return handles[-1]

    shell = types.SimpleNamespace(kernel=object())
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell  # type: ignore[attr-defined]
    display_module = types.ModuleType("IPython.display")
    display_module.display = display  # type: ignore[attr-defined]
    ipython.display = display_module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_module)
    monkeypatch.setattr(terminal, "_stderr_is_terminal", lambda: False)
    return types.SimpleNamespace(shell=shell, handles=handles)


def test_a_notebook_kernel_is_detected_lazily(kernel):
    assert terminal.in_notebook()
    kernel.shell.kernel = None  # IPython in a terminal, not a kernel
    assert not terminal.in_notebook()


def test_no_notebook_without_ipykernel(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert not terminal.in_notebook()


def test_the_bar_in_a_notebook_is_one_output_updated_then_emptied(kernel, capsys):
    with Progress(4, delay=0) as bar:
        assert bar.on
        bar.show(2)
        bar.output(1, b"printed by a worker\n")
    (handle,) = kernel.handles
    assert handle.shown[0].startswith("realize [") and "2/4" in handle.shown[0]
    assert handle.shown[-1] == ""
    # Output goes to the cell's stream, not the bar.
    assert capsys.readouterr().out == "printed by a worker\n"
    assert terminal.current() is None


def test_a_notebook_without_display_gets_no_bar(kernel, monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython.display")
    monkeypatch.setattr(sys.modules["IPython"], "display", None)
    with Progress(4, delay=0) as bar:
        assert not bar.on
