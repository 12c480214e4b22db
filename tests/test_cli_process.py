"""The command as a real process: `python -m lightstore`, the `lightstore` script, exit
statuses, progress bars on a terminal only, and reading the catalogue while others write."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading

import pytest
import sqlite_utils
from helpers import build_pipeline, cli_process

from lightstore import (
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkdrv,
    realize1,
    selfref,
)
from lightstore.cli.context import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_PROBLEMS
from lightstore.facade import Store
from lightstore.store import CATALOGUE_FILE

TIMEOUT = 60


def lightstore(*args: str, root: str | None = None) -> subprocess.CompletedProcess:
    """The command in a child process, on the store that $LIGHTSTORE_ROOT names."""
    return cli_process(*args, env={"LIGHTSTORE_ROOT": root} if root else None, timeout=TIMEOUT)


def test_python_m_lightstore_help_and_version():
    proc = lightstore("--help")
    assert proc.returncode == 0 and "Exit status" in proc.stdout and proc.stderr == ""
    proc = lightstore("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("lightstore, version")


def test_the_installed_script():
    script = shutil.which("lightstore", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the lightstore script is not installed next to this Python")
    proc = subprocess.run(
        [script, "history", "--help"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0 and "Examples:" in proc.stdout


def test_exit_statuses_in_a_process(pipeline, tmp_path):
    root = pipeline.root
    assert lightstore("show", pipeline.eval, root=root).returncode == 0
    missing = lightstore("ls", root=str(tmp_path / "nowhere"))
    assert missing.returncode == EXIT_NOT_FOUND and "no lightstore store" in missing.stderr
    unknown = lightstore("show", "dref:" + "0" * 32 + "-x", root=root)
    assert unknown.returncode == EXIT_NOT_FOUND and unknown.stdout == ""
    bad = lightstore("sql", "SELECT FROM WHERE", root=root)
    assert bad.returncode == EXIT_BAD_INPUT and "syntax error" in bad.stderr
    write = lightstore("sql", "DELETE FROM realizations", root=root)
    assert write.returncode == EXIT_BAD_INPUT and "read-only" in write.stderr
    usage = lightstore("show", root=root)
    assert usage.returncode == EXIT_BAD_INPUT and "Usage:" in usage.stderr


def test_history_csv_in_a_process(pipeline):
    proc = lightstore("history", "-n", "train", "-f", "lr", "--csv", root=pipeline.root)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [float(r["lr"]) for r in rows] == [0.1, 0.01, 0.001]
    assert {r["rref"] for r in rows} == set(pipeline.train.values())


def test_graph_output_is_valid_dot(pipeline, tmp_path):
    proc = lightstore("graph", pipeline.eval, root=pipeline.root)
    assert proc.returncode == 0
    dot = shutil.which("dot")
    if dot is None:
        pytest.skip("graphviz is not installed")
    out = subprocess.run(
        [dot, "-Tsvg"], input=proc.stdout, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert out.returncode == 0 and "<svg" in out.stdout


# -- progress bars -----------------------------------------------------------------------------


def _in_terminal(args: list[str], root: str) -> tuple[int, str]:
    """Run the command with stdout and stderr on a pseudo-terminal; return (status, output)."""
    pty = pytest.importorskip("pty")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightstore", "--root", root, *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
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
    return proc.wait(timeout=TIMEOUT), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("args", [["verify", "--check-contents"], ["reindex"]])
def test_progress_bar_on_a_terminal_only(pipeline, args):
    status, shown = _in_terminal(args, pipeline.root)
    assert status == 0, shown
    label = "verifying" if args[0] == "verify" else "reindexing"
    assert label in shown and "100%" in shown
    piped = lightstore(*args, root=pipeline.root)
    assert piped.returncode == 0
    assert label not in piped.stdout + piped.stderr and "\r" not in piped.stdout


def test_verify_problems_exit_4_in_a_process(pipeline, store):
    folder = store.rref_path(pipeline.eval)
    os.chmod(folder, 0o755)
    os.chmod(os.path.join(folder, "score.txt"), 0o644)
    with open(os.path.join(folder, "score.txt"), "w") as f:
        f.write("1.0\n")
    proc = lightstore("verify", "--check-contents", "--json", root=pipeline.root)
    assert proc.returncode == EXIT_PROBLEMS
    assert json.loads(proc.stdout)["problems"][0]["ref"] == pipeline.eval


# -- reading while others write ----------------------------------------------------------------


def test_sqlite_tools_and_sql_read_while_a_writer_holds_the_catalogue(pipeline, store):
    """WAL: readers (the sql command, sqlite3, sqlite-utils) are not blocked by a write
    transaction in progress, and do not see its uncommitted rows."""
    path = os.path.join(pipeline.root, CATALOGUE_FILE)
    with store.catalogue.write() as conn:
        conn.execute("DELETE FROM pins")
        conn.execute(
            "INSERT INTO pins (name, rref, created) VALUES ('uncommitted', ?, 0)", (pipeline.eval,)
        )
        proc = lightstore("sql", "SELECT count(*) AS n FROM pins", "--json", root=pipeline.root)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == [{"n": 0}]
        proc = lightstore("history", "--json", root=pipeline.root)
        assert len(json.loads(proc.stdout)) == 5
        db = sqlite_utils.Database(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1))
        assert db["history"].count == 5
        db.close()
        shell = shutil.which("sqlite3")
        if shell:
            out = subprocess.run(
                [shell, "-readonly", path, "SELECT count(*) FROM history"],
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            assert out.returncode == 0 and out.stdout.strip() == "5", out.stderr
    proc = lightstore("sql", "SELECT name FROM pins", "--json", root=pipeline.root)
    assert json.loads(proc.stdout) == [{"name": "uncommitted"}]


def test_history_shows_a_build_while_it_runs(S, tmp_path):
    """A realization in progress is visible as a running build to `lightstore sql`."""
    started, release = threading.Event(), threading.Event()

    def slow(r):
        def real(b):
            started.set()
            release.wait(TIMEOUT)
            with open(os.path.join(build_outpath(b), "x"), "w") as f:
                f.write("done")

        return mkdrv({"name": "slow", "out": [selfref, "x"]}, match_only(), build_wrapper(real), r)

    results: list = []
    worker = threading.Thread(target=lambda: results.append(realize1(instantiate(slow, S=S))))
    worker.start()
    try:
        assert started.wait(TIMEOUT)
        proc = lightstore("sql", "SELECT name, status FROM build_log", "--json", root=S.root)
        assert json.loads(proc.stdout) == [{"name": "slow", "status": "running"}]
        proc = lightstore("roots", root=S.root)
        assert proc.returncode == 0
    finally:
        release.set()
        worker.join(TIMEOUT)
    proc = lightstore("history", "--json", root=S.root)
    assert [r["rref"] for r in json.loads(proc.stdout)] == results


def test_read_commands_work_on_a_read_only_store(pipeline):
    """Reading needs no write access: the view takes no lock and writes nothing."""
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions")
    root = pipeline.root
    modes = {}
    for p in [root, os.path.join(root, "locks"), os.path.join(root, "tmp")]:
        modes[p] = os.stat(p).st_mode
        os.chmod(p, 0o555)
    try:
        proc = lightstore("history", "--json", root=root)
        assert proc.returncode == 0, proc.stderr
        assert len(json.loads(proc.stdout)) == 5
    finally:
        for p, m in modes.items():
            os.chmod(p, m)


# -- a user who can only read ---------------------------------------------------------------


def as_reader(root: str) -> list[str]:
    """A command prefix that runs as a user who can read but not write `root` (nothing if
    this user is not root: the permission bits do), or skip."""
    if os.geteuid() != 0:
        return []
    # Root ignores permissions: drop the capabilities that let it, and give the
    # store to another user, so the usual permission bits apply.
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to drop root's capabilities")
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, f) for f in dirs + files)]:
            os.lchown(name, 65534, 65534)
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def close_every_store() -> None:
    """Close the catalogues this process has open (the last writer closes: -wal and -shm go)."""
    for opened in set(Store._instances.values()):
        opened.catalogue.close()
    Store.forget_instances()


def test_a_user_who_can_only_read_can_run_every_reading_command(S, tmp_path):
    p = build_pipeline(S)
    close_every_store()
    for suffix in ("-wal", "-shm"):
        assert not os.path.exists(os.path.join(p.root, "catalogue.sqlite" + suffix))
    for folder in (tmp_path, p.root):
        os.chmod(folder, 0o755)
    prefix = as_reader(p.root)
    if not prefix:
        os.chmod(p.root, 0o555)
    for args in (
        ["ls"],
        ["history", "--json"],
        ["show", p.eval],
        ["sql", "SELECT count(*) FROM realizations"],
    ):
        proc = cli_process(*args, root=p.root, prefix=prefix)
        assert proc.returncode == 0, (args, proc.stderr)
    assert not os.path.exists(os.path.join(p.root, "catalogue.sqlite-shm"))
    os.chmod(p.root, 0o755)


def test_reindex_without_write_access_is_a_store_error(S):
    p = build_pipeline(S)
    close_every_store()
    prefix = as_reader(p.root)
    if not prefix:
        os.chmod(p.root, 0o555)
    try:
        proc = cli_process("reindex", root=p.root, prefix=prefix)
    finally:
        os.chmod(p.root, 0o755)
    assert proc.returncode == 5, proc.stderr
    assert "write access" in proc.stderr and "Traceback" not in proc.stderr
