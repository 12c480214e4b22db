"""What the tests share: reading and writing files, a snapshot of everything a store holds,
the `lightstore` command in-process and as a process, a small sample pipeline, and child
processes running the jobs of tests/workers.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from click.testing import CliRunner, Result

from lightstore import (
    DRef,
    RRef,
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkdrv,
    realize1,
    rref2dref,
    selfref,
)
from lightstore.cli import cli
from lightstore.facade import Store
from lightstore.foundation.failpoints import VARIABLE as FAILPOINT
from lightstore.store import CATALOGUE_FILE
from lightstore.store.layout import LOCKS_DIR

HERE = os.path.dirname(os.path.abspath(__file__))
#: The repository: child processes import this checkout's lightstore.
REPO = os.path.dirname(HERE)
WORKERS = os.path.join(HERE, "workers.py")
#: How long a child process may take before a test gives up on it.
TIMEOUT = 120


# -- files ---------------------------------------------------------------------------------------


def write(path: str | os.PathLike[str], data: str | bytes, mode: int | None = None) -> None:
    """Write `data` (text as UTF-8) to `path`, making its folder; then set `mode` if given."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    if mode is not None:
        os.chmod(path, mode)


def read(path: str | os.PathLike[str]) -> str:
    """The text (UTF-8) of the file at `path`."""
    with open(path, encoding="utf-8") as f:
        return f.read()


def make_writable(path: str) -> None:
    """Give the owner write access to the folder `path` and everything in it (stored objects
    are read-only), so that a test can damage or remove them."""
    for folder, _dirs, files in os.walk(path):
        os.chmod(folder, stat.S_IRWXU)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o644)


#: Path tails (after a reference or `selfref`) that would leave the folder they start in.
ESCAPING_TAILS = [
    ["/etc/passwd"],
    ["..", "..", "etc", "passwd"],
    ["a", ""],
    ["a/../../b"],
    ["x\0y"],
    ["a//b"],
]


# -- everything a store holds ---------------------------------------------------------------------

#: The catalogue's own files: SQLite rewrites them as it reads, and a process that opens one
#: and closes it drops the SQLite locks of every connection it has to it (POSIX locks).
CATALOGUE_FILES = frozenset(CATALOGUE_FILE + s for s in ("", "-wal", "-shm", "-journal"))


def tree_state(
    folder: str, skip: Iterable[str] = (), unopened: Callable[[str], bool] = lambda rel: False
) -> dict[str, tuple]:
    """Every entry below `folder` by relative path: its kind and permission bits, and a file's
    bytes or a link's target. Entries named in `skip` are left out; files for which
    `unopened(path)` holds are never opened: their size and modification time stand in for
    their bytes."""
    skipped = set(skip)
    state: dict[str, tuple] = {}
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(parent, name)
            rel = os.path.relpath(path, folder)
            if rel in skipped:
                continue
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                state[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                state[rel] = ("dir", mode)
            elif stat.S_ISREG(st.st_mode) and unopened(rel):
                state[rel] = ("file", mode, ("size", st.st_size, "mtime", st.st_mtime_ns))
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    state[rel] = ("file", mode, f.read())
            else:  # a FIFO, socket or device: never opened
                state[rel] = ("special", stat.S_IFMT(st.st_mode), mode)
    return state


def catalogue_state(path: str) -> dict[str, Any] | None:
    """The catalogue file at `path`: its schema, user_version and every row of every table
    (None if there is no such file, "unreadable" if SQLite cannot read it)."""
    if not os.path.lexists(path):
        return None
    # mode=rw never creates the file; a read-write connection, the last to close, removes
    # the -wal and -shm files it made.
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=rw"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            schema = sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
            tables = sorted(name for kind, name, _t, _s in schema if kind == "table")
            return {
                "schema": schema,
                "user_version": conn.execute("PRAGMA user_version").fetchone()[0],
                "rows": {
                    t: sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"'))) for t in tables
                },
            }
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        return {"unreadable": str(e)}


def snapshot(store: Store | str, catalogue_files: bool = False) -> dict[str, Any]:
    """Everything the store at `store` (a Store or its root) holds: every entry of its tree
    (see `tree_state`) and every row of its catalogue.

    The catalogue's own files are left out of the tree (their rows are compared), unless
    `catalogue_files`: then their size and modification time are compared too, which only
    holds still while no connection has the catalogue open. Lock files are never opened
    (that would drop this process's locks); empty ones, which any operation makes on first
    taking a lock, are left out."""
    root = store if isinstance(store, str) else store.root

    def unopened(rel: str) -> bool:
        return rel in CATALOGUE_FILES or os.path.dirname(rel) == LOCKS_DIR

    tree = tree_state(root, skip=() if catalogue_files else CATALOGUE_FILES, unopened=unopened)
    for rel, entry in list(tree.items()):
        if os.path.dirname(rel) == LOCKS_DIR and entry[0] == "file" and entry[2][1] == 0:
            del tree[rel]
    return {"tree": tree, "catalogue": catalogue_state(os.path.join(root, CATALOGUE_FILE))}


def difference(before: dict[str, Any], after: dict[str, Any]) -> str:
    """What changed between two snapshots, in a few readable lines."""
    lines = []
    tb, ta = before["tree"], after["tree"]
    for rel in sorted(set(tb) | set(ta)):
        if rel not in tb:
            lines.append(f"added {rel}: {ta[rel][:2]}")
        elif rel not in ta:
            lines.append(f"removed {rel}")
        elif tb[rel] != ta[rel]:
            lines.append(f"changed {rel}: {tb[rel][:2]} -> {ta[rel][:2]}")
    cb, ca = before["catalogue"] or {}, after["catalogue"] or {}
    for key in sorted(set(cb) | set(ca)):
        if key == "rows":
            rb, ra = cb.get("rows", {}), ca.get("rows", {})
            for table in sorted(set(rb) | set(ra)):
                gone = sorted(set(rb.get(table, [])) - set(ra.get(table, [])))
                new = sorted(set(ra.get(table, [])) - set(rb.get(table, [])))
                lines += [f"{table}: row removed {r}" for r in gone]
                lines += [f"{table}: row added {r}" for r in new]
        elif cb.get(key) != ca.get(key):
            lines.append(f"catalogue {key} changed")
    return "\n".join(lines) or "snapshots differ"


def assert_unchanged(
    store: Store | str, before: dict[str, Any], catalogue_files: bool = False
) -> None:
    """Fail, saying what changed, unless the store holds exactly what `before` recorded
    (taken by `snapshot` with the same `catalogue_files`)."""
    after = snapshot(store, catalogue_files)
    assert after == before, difference(before, after)


def holdings(store: Store) -> dict[str, Any]:
    """What a store holds, comparable across stores: its objects/ tree and the catalogue rows
    that say what it holds (not when or by whom it was added)."""
    conn = sqlite3.connect(store.catalogue.path)
    try:
        queries = {
            "derivations": "SELECT dref, name, config FROM derivations",
            "derivation_deps": "SELECT dref, dep FROM derivation_deps",
            "realizations": "SELECT rref, dref, context, context_hash, size, file_count "
            "FROM realizations",
            "realization_deps": "SELECT rref, dep FROM realization_deps",
        }
        rows = {k: set(conn.execute(sql).fetchall()) for k, sql in queries.items()}
    finally:
        conn.close()
    return {"tree": tree_state(store.objects_dir), "rows": rows}


# -- the command ----------------------------------------------------------------------------------


def run(root: str | None, *args: str, env: dict[str, str] | None = None) -> Result:
    """Invoke `lightstore [--root root] args...` in-process."""
    argv = (["--root", root] if root else []) + list(args)
    return CliRunner().invoke(cli, argv, env=env)


def ok(root: str | None, *args: str) -> str:
    """Run a command that must succeed; return its stdout."""
    result = run(root, *args)
    assert result.exit_code == 0, (result.exit_code, result.output)
    return result.stdout


def fails(code: int, root: str | None, *args: str) -> Result:
    """Run a command that must exit with `code`."""
    result = run(root, *args)
    assert result.exit_code == code, (result.exit_code, result.output)
    return result


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: this one, importing this checkout's lightstore,
    without a failpoint unless `env` sets one."""
    full = {k: v for k, v in os.environ.items() if k != FAILPOINT}
    full["PYTHONPATH"] = REPO + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env or {})
    return full


def cli_process(
    *args: str,
    root: str | None = None,
    env: dict[str, str] | None = None,
    prefix: Iterable[str] = (),
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess:
    """`python -m lightstore [--root root] args...` as a child process (after `prefix`, a
    command that runs it, if given), with its output captured as text."""
    argv = [*prefix, sys.executable, "-m", "lightstore", *(["--root", root] if root else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=child_env(env))


def address_space(limit: int):
    """A `preexec_fn` capping a child's memory (its address space) at `limit` bytes, for
    tests of what could otherwise fill the machine's memory: there it fails instead."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return cap


@dataclass
class Finished:
    """How a child process ended: its exit status, stderr, and how many bytes it printed."""

    returncode: int
    stderr: str
    printed: int


def run_process(root: str, *args: str, memory: int = 2 << 30, timeout: float = 120) -> Finished:
    """`python -m lightstore --root root args...` as a child process with at most `memory`
    bytes of address space; its stdout is only counted, so it may print a lot."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightstore", "--root", root, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        preexec_fn=address_space(memory),
    )
    printed = [0]

    def count() -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(1 << 20):
            printed[0] += len(chunk)

    counter = threading.Thread(target=count)
    counter.start()
    try:
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode("utf-8", "replace")
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        counter.join()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    return Finished(proc.returncode, stderr, printed[0])


def hexpart(ref: str) -> str:
    """The first hash of a reference (what a short reference abbreviates)."""
    return ref.split(":", 1)[1].split("-", 1)[0]


# -- a small pipeline: data <- train(lr) x3, eval <- train(0.01) ------------------------------------

LRS = (0.1, 0.01, 0.001)


@dataclass
class Pipeline:
    """A small realized pipeline: data <- train(lr) x3, and eval <- train(0.01)."""

    root: str
    data: RRef
    train: dict[float, RRef]
    eval: RRef

    def dref(self, rref: RRef) -> DRef:
        return rref2dref(rref)


def data_stage(r):
    def real(b):
        write(os.path.join(build_outpath(b), "data.csv"), "x,y\n1,2\n")

    return mkdrv(
        {"name": "data", "rows": 1, "out": [selfref, "data.csv"]},
        match_only(),
        build_wrapper(real),
        r,
    )


def train_stage(lr, r):
    data = data_stage(r)

    def real(b):
        write(os.path.join(build_outpath(b), "model.txt"), f"lr={lr}\n")
        write(os.path.join(build_outpath(b), "logs", "loss.txt"), "0.5\n" * int(10 / lr))

    return mkdrv(
        {
            "name": "train",
            "lr": lr,
            "model": {"depth": 4},
            "data": data,
            "out": [selfref, "model.txt"],
        },
        match_only(),
        build_wrapper(real),
        r,
    )


def eval_stage(r):
    train = train_stage(0.01, r)

    def real(b):
        write(os.path.join(build_outpath(b), "score.txt"), "0.93\n")

    return mkdrv(
        {"name": "eval", "model": train, "out": [selfref, "score.txt"]},
        match_only(),
        build_wrapper(real),
        r,
    )


def build_pipeline(S) -> Pipeline:
    """Realize data, three train runs and one eval into the store `S`."""
    train = {lr: realize1(instantiate(train_stage, lr, S=S)) for lr in LRS}
    ev = realize1(instantiate(eval_stage, S=S))
    data = next(iter(Store.open(S.root).context(train[0.1]).values()))[0]
    return Pipeline(S.root, data, train, ev)


# -- child processes running the jobs of tests/workers.py -----------------------------------------


def wait_until(
    condition: Callable[[], object],
    timeout: float = 60,
    what: str = "the condition",
    alive: Iterable[Worker] = (),
) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds, or as soon as one of
    the workers in `alive` has exited."""
    deadline = time.monotonic() + timeout
    watched = tuple(alive)
    while not condition():
        for w in watched:
            assert w.running, f"{w} exited while waiting for {what}:\n{w.stderr}"
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.01)


def go(root: str) -> None:
    """Release the workers of `root` waiting at the starting line (``ROOT/../go``)."""
    open(os.path.join(os.path.dirname(root), "go"), "w").close()


@dataclass
class Outcome:
    """How a worker ended: its exit status (-9 when killed by SIGKILL), stdout and stderr."""

    returncode: int
    stdout: str
    stderr: str

    def result(self) -> Any:
        """The JSON of the last line the worker printed (it must have succeeded)."""
        assert self.returncode == 0, f"the worker failed ({self.returncode}):\n{self.stderr}"
        return json.loads(self.stdout.strip().splitlines()[-1])


class Worker:
    """A child process running the job `job` of tests/workers.py with `args`.

    Its stdout (line by line) and stderr are read all along, so it never blocks on a full
    pipe; `failpoint` makes it die by SIGKILL at that point of lightstore's code. Use it as a
    context manager, or through the `workers` fixture, so that it is always reaped."""

    def __init__(
        self,
        job: str,
        *args: str,
        env: dict[str, str] | None = None,
        failpoint: str | None = None,
    ) -> None:
        extra = dict(env or {})
        if failpoint:
            extra[FAILPOINT] = failpoint
        self.job = job
        self.proc = subprocess.Popen(
            [sys.executable, WORKERS, job, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(extra),
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_lines, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._readers:
            t.start()

    def __repr__(self) -> str:
        return f"worker {self.job} (pid {self.pid})"

    def _read_lines(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._stdout.append(line)
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr.append(self.proc.stderr.read())

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def stderr(self) -> str:
        """What it printed on stderr (once it has exited; nothing before)."""
        if not self.running:
            self._readers[1].join(timeout=60)
        return "".join(self._stderr)

    def wait_for(self, marker: str, timeout: float = 60) -> None:
        """Wait until the worker prints the line `marker`; fail if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self} did not print {marker!r} in {timeout} s") from None
            if line is None:
                self.proc.wait()
                for t in self._readers:
                    t.join(timeout=60)
                raise AssertionError(f"{self} exited before printing {marker!r}:\n{self.stderr}")
            if line == marker:
                return

    def release(self) -> None:
        """Send the worker a line on stdin (a job holding something lets go)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def kill(self) -> Outcome:
        """Kill the worker by SIGKILL if it still runs; reap it."""
        if self.running:
            self.proc.send_signal(signal.SIGKILL)
        return self._reap()

    def finish(self, timeout: float = TIMEOUT) -> Outcome:
        """Wait for the worker to exit (kill -9 it and fail after `timeout` seconds)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self} still ran after {timeout} s:\n{self.stderr}") from None
        return self._reap()

    def result(self, timeout: float = TIMEOUT) -> Any:
        """Wait for the worker to succeed; the JSON of the last line it printed."""
        return self.finish(timeout).result()

    def _reap(self) -> Outcome:
        self.proc.wait()
        for t in self._readers:
            t.join(timeout=60)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream:
                with contextlib.suppress(BrokenPipeError):  # a dead child's unread stdin
                    stream.close()
        return Outcome(self.proc.returncode, "".join(self._stdout), self.stderr)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class Workers:
    """Workers started by one test (the `workers` fixture), all killed and reaped after it."""

    def __init__(self) -> None:
        self.started: list[Worker] = []

    def start(self, job: str, *args: str, **kw: Any) -> Worker:
        """Start a worker running `job` (see `Worker`)."""
        worker = Worker(job, *args, **kw)
        self.started.append(worker)
        return worker

    def together(self, job: str, root: str, *args_of_each: Iterable[str]) -> list[Worker]:
        """Start one worker of `job` on the store `root` per argument list; once every one
        is ready at the starting line, release them all at the same instant."""
        started = [self.start(job, root, *args) for args in args_of_each]
        for w in started:
            w.wait_for("ready")
        go(root)
        return started

    def results(self, workers: Iterable[Worker], timeout: float = TIMEOUT) -> list[Any]:
        """Wait for each worker to succeed; their results, in order."""
        return [w.result(timeout) for w in workers]

    def reap(self) -> None:
        for w in self.started:
            w.kill()


def run_job(
    job: str,
    *args: str,
    env: dict[str, str] | None = None,
    failpoint: str | None = None,
    timeout: float = TIMEOUT,
) -> Outcome:
    """Run `job` of tests/workers.py in a child process, to its end."""
    with Worker(job, *args, env=env, failpoint=failpoint) as worker:
        return worker.finish(timeout)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid
