"""Realizers' output captured into build logs (tee), `lightstore log`, and read-only
commands reporting builds of dead processes as interrupted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import Worker, fails, ok, wait_until
from helpers import run as run_cli

from lightstore import (
    BuildError,
    Store,
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkdrv,
    realize1,
)
from lightstore.cli.context import EXIT_NOT_FOUND
from lightstore.query.buildlog import build_log
from lightstore.store.layout import Layout


@pytest.fixture(autouse=True, params=["epoll", "portable"])
def pump_kind(request, monkeypatch):
    """Every test runs on both ways the pump works: epoll (Linux; builds register and
    drain their pipes themselves) and the portable one (poll and a wake-up pipe)."""
    import lightstore.foundation.logs as logs

    monkeypatch.setattr(logs, "_HAS_EPOLL", request.param == "epoll" and logs._HAS_EPOLL)
    monkeypatch.setattr(logs, "_pump_instance", None)  # a pump of that kind is started
    return request.param


def noisy(i, fail=False, r=None):
    def real(b):
        print(f"python out {i}")
        print(f"python err {i}", file=sys.stderr)
        subprocess.run([sys.executable, "-c", f"print('child {i}')"], check=True, timeout=30)
        os.write(2, f"fd {i}\n".encode())
        with open(os.path.join(build_outpath(b), "x"), "w") as f:
            f.write(str(i))
        if fail:
            raise RuntimeError(f"boom {i}")

    return mkdrv({"name": "noisy", "i": i, "fail": fail}, match_only(), build_wrapper(real), r)


def test_output_is_teed_into_the_log(S, store, capfd):
    before = (sys.stdout, sys.stderr)
    rref = realize1(instantiate(noisy, 1, S=S))
    assert (sys.stdout, sys.stderr) == before  # the tee is gone after the build
    out, err = capfd.readouterr()  # the terminal still saw everything
    assert "python out 1" in out and "child 1" in out
    assert "python err 1" in err and "fd 1" in err
    info = build_log(store, rref)
    assert info["build"]["status"] == "succeeded"
    for line in ("python out 1", "python err 1", "child 1", "fd 1"):
        assert line in info["log"], info["log"]
    text = ok(S.root, "log", "noisy@latest")
    assert "child 1" in text and "python err 1" in text
    assert info["path"] == store.log_path(info["build"]["id"])
    assert json.loads(ok(S.root, "log", "--json", rref))["build"]["id"] == info["build"]["id"]


def test_failed_builds_keep_their_log(S, store):
    with pytest.raises(BuildError):
        realize1(instantiate(noisy, 2, True, S=S))
    info = build_log(store, "noisy[fail=true]")  # the derivation's newest attempt
    assert info["build"]["status"] == "failed" and "python out 2" in info["log"]
    result = ok(S.root, "log", "noisy@i=2")
    assert "child 2" in result
    full = fails(0, S.root, "log", "noisy@i=2")  # stderr carries the record and the error
    assert "RuntimeError: boom 2" in full.stderr and "failed" in full.stderr
    assert build_log(store, build=info["build"]["id"])["log"] == info["log"]
    fails(EXIT_NOT_FOUND, S.root, "log", "--build", "999")


def test_threads_each_get_their_own_log(S, store):
    errors = []

    def work(i):
        try:
            realize1(instantiate(noisy, 10 + i, S=S))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for i in range(4):
        text = build_log(store, f"noisy[i={10 + i}]@latest")["log"]
        assert f"python out {10 + i}" in text and f"python err {10 + i}" in text
        others = [j for j in range(10, 14) if j != 10 + i]
        assert not any(f" {j}\n" in text for j in others), text  # nothing of another build


def test_logs_stay_with_the_history_until_forgotten(S, store):
    from lightstore.maintenance.forget import forget

    kept = realize1(instantiate(noisy, 20, S=S))
    gone = realize1(instantiate(noisy, 21, S=S))
    kept_log = build_log(store, kept)
    gone_log = build_log(store, gone)
    store.pin("keep", kept)
    store.gc()
    # gc keeps build history, so the log of a collected run is still there.
    assert build_log(store, build=gone_log["build"]["id"])["log"] == gone_log["log"]
    assert "python out 21" in ok(S.root, "log", "--build", str(gone_log["build"]["id"]))
    forget(store, everything=True)
    assert os.path.exists(kept_log["path"]) and not os.path.exists(gone_log["path"])
    fails(EXIT_NOT_FOUND, S.root, "log", "--build", str(gone_log["build"]["id"]))


def test_killed_build_shows_interrupted_to_readers(S, store):
    logs = os.path.join(S.root, "logs")

    def printed() -> bool:
        found = os.listdir(logs) if os.path.isdir(logs) else []
        return bool(found) and "working" in Path(logs, found[0]).read_text()

    with Worker("slow_build", S.root) as proc:
        wait_until(printed, 60, "the build to print", alive=[proc])
        assert "running" in build_log(store, "slow")["build"]["status"]
    # Read-only: nothing opened the store for writing since the kill.
    info = build_log(store, "slow")
    assert info["build"]["status"] == "interrupted" and info["build"]["holder_gone"]
    assert info["log"] == "working\n"  # what it printed before dying is kept
    shown = ok(S.root, "show", "slow")
    assert "interrupted" in shown and "holder gone" in shown
    assert "(holder gone)" in fails(0, S.root, "log", "slow").stderr
    raw = store.catalogue.query("SELECT status FROM builds")
    assert raw == [("running",)]  # the record itself waits for a writer
    Store.forget_instances()
    Store.open(S.root)  # a writer marks it
    assert store.catalogue.query("SELECT status FROM builds") == [("interrupted",)]


def test_a_subprocess_outliving_its_build_writes_into_no_log(S, store):
    children = []

    def stage(r=None):
        def real(b):
            print("before", flush=True)
            code = "import time; time.sleep(3); print('late', flush=True)"
            children.append(subprocess.Popen([sys.executable, "-c", code]))
            with open(os.path.join(build_outpath(b), "x"), "w") as f:
                f.write("x")

        return mkdrv({"name": "leaky"}, match_only(), build_wrapper(real), r)

    try:
        started = time.monotonic()
        rref = realize1(instantiate(stage, S=S))
        assert time.monotonic() - started < 30
        # Build logs opened after it must not receive the orphan's output.
        realize1(instantiate(noisy, 30, S=S))
    finally:
        for child in children:
            child.wait(30)
    time.sleep(0.2)
    assert build_log(store, rref)["log"] == "before\n"  # it printed after the drain wait
    assert "late" not in build_log(store, "noisy@i=30@latest")["log"]


def test_the_log_sweep_reads_build_ids_after_listing(tmp_path):
    from lightstore.maintenance.forget import remove_orphan_logs

    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("3.log", "7.log", "notes.txt"):
        (logs / name).write_text("x")
    seen = []

    def known():  # build 7 "started" after the folder was listed
        seen.append(sorted(os.listdir(logs)))
        return {7}

    assert remove_orphan_logs(Layout(str(tmp_path)), known) == 1
    assert seen == [["3.log", "7.log", "notes.txt"]]
    assert sorted(os.listdir(logs)) == ["7.log", "notes.txt"]


def test_running_out_of_fds_falls_back_to_python_capture(S, store, monkeypatch):
    import errno

    import lightstore.foundation.logs as logs

    logs._pump()  # running already, as after a first build: the capture's own pipes fail
    real_pipe, calls = os.pipe, []

    def pipe():  # the second pipe (for fd 2) hits the process's fd limit
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_pipe()

    before = [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)]
    open_fds = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "pipe", pipe)
    rref = realize1(instantiate(noisy, 40, S=S))
    monkeypatch.undo()
    assert [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)] == before
    assert len(os.listdir("/proc/self/fd")) <= open_fds + 1  # nothing leaked
    text = build_log(store, rref)["log"]
    assert "python out 40" in text and "python err 40" in text  # Python level still works


def test_a_silent_build_leaves_no_log_file(S, store):
    """Most builds of a big store print nothing: no empty file (an inode) per build."""

    def quiet(r=None):
        def real(b):
            with open(os.path.join(build_outpath(b), "x"), "w") as f:
                f.write("quiet")

        return mkdrv({"name": "quiet"}, match_only(), build_wrapper(real), r)

    rref = realize1(instantiate(quiet, S=S))
    info = build_log(store, rref)
    assert info["build"]["status"] == "succeeded" and info["log"] is None
    assert not os.path.exists(info["path"])
    assert not os.path.exists(store.logs_dir) or os.listdir(store.logs_dir) == []
    result = run_cli(S.root, "log", "quiet@latest")
    assert result.exit_code == 0 and "no output was captured" in result.stderr


def test_a_silent_build_opens_no_terminal_stream(S, store, monkeypatch):
    """Flushing the tee at the end of a build that printed nothing opens nothing (it
    opened a text stream on each saved terminal fd, four system calls a build)."""
    import lightstore.foundation.logs as logs

    opened = []
    real = logs._FdCapture.terminal_stream

    def counted(self, fd, encoding):
        opened.append(fd)
        return real(self, fd, encoding)

    monkeypatch.setattr(logs._FdCapture, "terminal_stream", counted)
    for name, fd in (("stdout", 1), ("stderr", 2)):  # streams on fds 1 and 2, as outside pytest
        monkeypatch.setattr(sys, name, open(fd, "w", closefd=False))  # noqa: SIM115

    def quiet(r=None):
        def real_build(b):
            with open(os.path.join(build_outpath(b), "x"), "w") as f:
                f.write("quiet")

        return mkdrv({"name": "quiet2"}, match_only(), build_wrapper(real_build), r)

    realize1(instantiate(quiet, S=S))
    assert opened == []


def test_one_pump_thread_serves_every_build_and_forked_children(S, store):
    """fd-level capture starts one copying thread per process, not two per build; a forked
    child (whose parent's pump thread does not exist in it) starts its own."""
    realize1(instantiate(noisy, 100, S=S))
    threads = threading.active_count()
    rrefs = [realize1(instantiate(noisy, i, S=S)) for i in range(101, 111)]
    assert threading.active_count() == threads
    for i, rref in zip(range(101, 111), rrefs, strict=True):
        log = build_log(store, rref)["log"]
        assert f"child {i}" in log and f"fd {i}" in log and f"child {i - 1}\n" not in log
    pid = os.fork()
    if pid == 0:  # the child: realize, check its own log, report through the exit code
        try:
            rref = realize1(instantiate(noisy, 200, S=S))
            log = build_log(store, rref)["log"]
            os._exit(0 if "child 200" in log and "fd 200" in log else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("epoll", [True, False])
def test_running_out_of_fds_while_starting_the_pump_leaks_nothing(S, store, monkeypatch, epoll):
    """EMFILE while the pump starts (with epoll, its poller; without, the poller it needs
    after its wake pipe was made): nothing may leak, or the realizer runs out of the fds
    it would have had; the build is still captured at Python level."""
    import errno
    import select

    import lightstore.foundation.logs as logs

    def no_poller():
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(logs, "_pump_instance", None)
    monkeypatch.setattr(logs, "_HAS_EPOLL", epoll)
    monkeypatch.setattr(select, "epoll" if epoll else "poll", no_poller)
    open_fds = len(os.listdir("/proc/self/fd"))
    rref = realize1(instantiate(noisy, 41, S=S))
    monkeypatch.undo()
    assert len(os.listdir("/proc/self/fd")) <= open_fds + 1  # nothing leaked
    text = build_log(store, rref)["log"]
    assert "python out 41" in text and "python err 41" in text


@pytest.mark.parametrize("replacement", [None, "no flush"])
def test_stdout_replaced_by_a_non_file_does_not_fail_the_build(S, store, monkeypatch, replacement):
    import lightstore.foundation.logs as logs

    class NoFlush:
        def write(self, text):
            return len(text)

    monkeypatch.setattr(sys, "stdout", NoFlush() if replacement else None)
    open_fds = len(os.listdir("/proc/self/fd"))
    rref = realize1(instantiate(noisy, 42, S=S))
    assert sys.stdout is None or isinstance(sys.stdout, NoFlush)  # the tee is gone
    monkeypatch.undo()
    assert logs._state.count == 0 and logs._state.fd is None
    # At most the pump's own fds stay, once it has seen the ends of the build's pipes (a
    # build whose pipes were empty at its end does not wait for that).
    deadline = time.monotonic() + 5
    while len(os.listdir("/proc/self/fd")) > open_fds + 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(os.listdir("/proc/self/fd")) <= open_fds + 3
    text = build_log(store, rref)["log"]
    assert "python err 42" in text and "fd 42" in text and "child 42" in text


def test_a_build_of_another_derivation_is_named_as_such(S, store):
    one = realize1(instantiate(noisy, 1, S=S))
    two = realize1(instantiate(noisy, 2, S=S))
    id_one = build_log(store, one, read=False)["build"]["id"]
    result = fails(EXIT_NOT_FOUND, S.root, "log", two, "--build", str(id_one))
    assert "belongs to another derivation" in result.stderr, result.stderr
    assert "unpack" not in result.stderr and f"--build {id_one}" in result.stderr
    result = fails(EXIT_NOT_FOUND, S.root, "log", "noisy@i=2", "--build", str(id_one))
    assert "belongs to another derivation" in result.stderr
    result = fails(EXIT_NOT_FOUND, S.root, "log", two, "--build", "99999")
    assert "no build #99999" in result.stderr
