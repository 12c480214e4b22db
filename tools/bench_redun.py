"""lightstore side by side with redun, the closest modern peer (memoized tasks in a SQLite call graph).

Usage (normally through `tools/bench --redun [--quick]`)::

    python tools/bench_redun.py [--quick] [--rounds N] [--redun-python PY] [--json PATH]
        [--report PATH] [--tmp DIR] [--keep] [--from-json PATH]

redun (REDUN_REQUIREMENT) is installed into a scratch venv, build/bench-redun-venv (or
$LIGHTSTORE_BENCH_REDUN_VENV), never into lightstore's environment; exit status 3 says it
could not be installed (no network). Each side runs in its own interpreter: lightstore's half
of a round in this venv, redun's in the scratch one, both running this file.

What is measured, in CPU time of the measuring process and wall time (BENCHMARKS.md, section
"redun", says it in full): a new and a cached chain of 20 stages; a sweep (one parameter stage
and 1,000 independent trivial tasks using it) new and cached; a chain 200 deep new and cached
(redun with its default ``check_valid="full"`` and with ``check_valid="shallow"``); the history
question "results of stage p3 with lr < 0.05, with their durations" on a store of 5,000
results, through each library's Python API and through SQL; and disk (bytes and inodes) per
result. The 5,000-result stores are built once per side, untimed except for an informational
figure; everything else runs in `--rounds` rounds of one fresh-store process per side, in the
order lightstore, redun, lightstore, redun, ... so a change of machine load falls on both.
Figures are medians of every sample of a side; the ratio is redun / lightstore (> 1:
lightstore is faster or smaller) and a row meets the goal at GOAL x.

A full-size run (no --quick) writes the section of BENCHMARKS.md; `--report PATH` writes it
into another file (or into BENCHMARKS.md after a --quick run).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import pickle
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench_common import disk_usage, force_rmtree, log, median, replace_section

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

REDUN_VERSION = "0.44.1"
REDUN_REQUIREMENT = f"redun=={REDUN_VERSION}"
REDUN_NAMESPACE = "lightstore_bench"
#: Exit status when redun cannot be installed (the smoke test skips on it).
NOT_INSTALLABLE = 3
#: The goal: redun takes at least this many times lightstore's time (or disk).
GOAL = 5.0
#: The history question: one stage name in ten, lr below this bound (about 5 % of its results).
HISTORY_NAME = "p3"
HISTORY_LR = 0.05
NAMES = 10


@dataclasses.dataclass
class Plan:
    chain: int
    deep: int
    sweep: int
    results: int
    rounds: int
    reps: dict[str, int]


FULL = Plan(
    chain=20,
    deep=200,
    sweep=1000,
    results=5000,
    rounds=3,
    reps={
        "new-chain": 3,
        "cached-chain": 5,
        "sweep-new": 1,
        "sweep-cached": 1,
        "deep-new": 1,
        "deep-cached": 3,
        "deep-cached-shallow": 5,
        "history-api": 5,
        "history-sql": 5,
    },
)
QUICK = Plan(
    chain=5,
    deep=20,
    sweep=20,
    results=100,
    rounds=1,
    reps={
        "new-chain": 2,
        "cached-chain": 2,
        "sweep-new": 1,
        "sweep-cached": 1,
        "deep-new": 1,
        "deep-cached": 2,
        "deep-cached-shallow": 2,
        "history-api": 2,
        "history-sql": 2,
    },
)

#: Timed workloads, in table order: name and label ({chain}, {deep}, ... from the plan).
WORKLOADS: list[tuple[str, str]] = [
    ("new-chain", "new {chain}-stage chain"),
    ("cached-chain", "cached {chain}-stage chain"),
    ("sweep-new", "new sweep: 1 parameter stage -> {sweep} tasks"),
    ("sweep-cached", "cached sweep of {sweep}"),
    ("deep-new", "new chain {deep} deep"),
    ("deep-cached", 'cached chain {deep} deep (redun check_valid="full", its default)'),
    ("deep-cached-shallow", 'cached chain {deep} deep (redun check_valid="shallow")'),
    ("history-api", "history at {results} results: Python API"),
    ("history-sql", "history at {results} results: SQL"),
]
#: Disk per result, from the history stores: metric and label.
DISK: list[tuple[str, str]] = [
    ("bytes", "disk per result: bytes (allocated blocks)"),
    ("inodes", "disk per result: inodes"),
]
METRICS = ("cpu", "wall")


def lr_of(i: int) -> float:
    """The pseudo-random learning rate of the i-th result (as tools/bench's populate)."""
    return ((i * 7919) % 10007) / 10007


# -- the two sides: the same stages and questions, each library's own way ---------------------


class LightstoreSide:
    """lightstore through its Pylightnix-style API (as tools/bench measures it)."""

    name = "lightstore"

    def __init__(self) -> None:
        from bench_workloads import Lib

        self.lib = Lib("lightstore")
        self.L: Any = self.lib.L
        self.version = self.lib.version
        self.builds: list[int] = []  # one entry per realizer run
        self.root = ""
        self.S: Any = None

    def open(self, root: str, fresh: bool) -> None:
        self.root = root
        self.S = self.lib.fresh(root) if fresh else self.lib.settings(root)

    def _build(self, b: Any) -> None:
        self.builds.append(1)
        with open(os.path.join(self.L.build_outpath(b), "out.txt"), "w", encoding="utf-8") as f:
            f.write("result\n")

    def _drv(self, config: dict[str, Any], r: Any) -> Any:
        L = self.L
        return L.mkdrv(L.mkconfig(config), L.match_only(), L.build_wrapper(self._build), r)

    def chain(self, tag: str, depth: int, shallow: bool = False) -> int:
        """Declare and realize `depth` stages, each depending on the previous one.

        lightstore has one way to reuse a chain, so `shallow` changes nothing.
        """

        def stage(r: Any) -> Any:
            prev = None
            for k in range(depth):
                config: dict[str, Any] = {"name": "chain", "tag": tag, "k": k}
                if prev is not None:
                    config["prev"] = prev
                prev = self._drv(config, r)
            return prev

        self.L.realize1(self.L.instantiate(stage, S=self.S))
        return depth

    def sweep(self, tag: str, n: int) -> int:
        """One parameter stage and `n` stages that depend on it, realized as one closure."""

        def stage(r: Any) -> list[Any]:
            params = self._drv({"name": "params", "tag": tag}, r)
            return [
                self._drv({"name": "point", "tag": tag, "i": i, "params": params}, r)
                for i in range(n)
            ]

        result, _, _ = self.L.realize(self.L.instantiate(stage, S=self.S))
        return len(result)

    def populate(self, n: int) -> int:
        """`n` results of ten stage names p0..p9 with config {i, lr}, realized as one closure."""

        def stage(r: Any) -> list[Any]:
            return [
                self._drv({"name": f"p{i % NAMES}", "i": i, "lr": lr_of(i)}, r) for i in range(n)
            ]

        result, _, _ = self.L.realize(self.L.instantiate(stage, S=self.S))
        return len(result)

    def disk(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.lib.disk(self.root).items()}

    def history_setup(self) -> None:
        from lightstore.query import history

        self._history = history
        self.store = self.L.Store.open(self.root)
        self.conn = sqlite3.connect(
            f"file:{os.path.join(self.root, 'catalogue.sqlite')}?mode=ro", uri=True
        )

    def history_reset(self) -> None:
        """Nothing is cached between two questions."""

    def history_api(self) -> int:
        rows = self._history(self.store, HISTORY_NAME, fields=["lr"], config=[f"lr<{HISTORY_LR}"])
        return len([(r["rref"], r["lr"], r["duration"]) for r in rows])

    def history_sql(self) -> int:
        rows = self.conn.execute(
            "SELECT rref, json_extract(config, '$.lr') AS lr, duration FROM history"
            " WHERE name = ? AND json_extract(config, '$.lr') < ?",
            (HISTORY_NAME, HISTORY_LR),
        ).fetchall()
        return len(rows)


class RedunSide:
    """redun as its documentation shows it: @task functions, a Scheduler on a sqlite repo.

    Each task writes one small file, as each lightstore realizer does, and returns it as a
    redun `File`; a task that depends on another takes that task's File as an argument, as a
    lightstore config names the derivation it depends on.
    """

    name = "redun"

    def __init__(self) -> None:
        import redun

        self.version = str(redun.__version__)
        # A chain of 200 lazy task calls is hashed and pickled recursively (about 5 frames a
        # level): Python's default limit of 1000 frames stops it near depth 150.
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
        # redun logs every job at INFO; lightstore prints nothing per build.
        logging.getLogger("redun").setLevel(logging.WARNING)
        self.builds: list[int] = []
        self.out = [""]  # where tasks write; read by the task bodies
        self.tasks = self._define_tasks()
        self.root = ""
        self.scheduler: Any = None

    def _define_tasks(self) -> dict[str, Any]:
        from redun import File, task

        builds, out = self.builds, self.out

        def write(name: str) -> Any:
            builds.append(1)
            path = os.path.join(out[0], name)
            with open(path, "w", encoding="utf-8") as f:
                f.write("result\n")
            return File(path)

        @task(namespace=REDUN_NAMESPACE)
        def step(tag: str, k: int, prev: Any) -> Any:
            return write(f"chain-{tag}-{k}.txt")

        @task(namespace=REDUN_NAMESPACE)
        def chain(tag: str, depth: int) -> Any:
            prev = None
            for k in range(depth):
                prev = step(tag, k, prev)
            return prev

        @task(namespace=REDUN_NAMESPACE)
        def params(tag: str) -> Any:
            return write(f"params-{tag}.txt")

        @task(namespace=REDUN_NAMESPACE)
        def point(p: Any, tag: str, i: int) -> Any:
            return write(f"point-{tag}-{i}.txt")

        @task(namespace=REDUN_NAMESPACE)
        def sweep(tag: str, n: int) -> Any:
            p = params(tag)
            return [point(p, tag, i) for i in range(n)]

        def result(i: int, lr: float) -> Any:
            return write(f"result-{i}.txt")

        # Ten stage names, as lightstore's p0..p9: one task each, the same body.
        named = [task(name=f"p{j}", namespace=REDUN_NAMESPACE)(result) for j in range(NAMES)]

        @task(namespace=REDUN_NAMESPACE)
        def populate(n: int) -> Any:
            return [named[i % NAMES](i=i, lr=lr_of(i)) for i in range(n)]

        return {"chain": chain, "sweep": sweep, "populate": populate}

    def open(self, root: str, fresh: bool) -> None:
        from redun import Scheduler
        from redun.config import Config

        if fresh:
            force_rmtree(root)
        self.root = root
        self.out[0] = os.path.join(root, "out")
        os.makedirs(self.out[0], exist_ok=True)
        db = os.path.join(root, "redun.db")
        self.scheduler = Scheduler(config=Config({"backend": {"db_uri": f"sqlite:///{db}"}}))
        self.scheduler.load()

    def chain(self, tag: str, depth: int, shallow: bool = False) -> int:
        chain = self.tasks["chain"]
        if shallow:
            chain = chain.options(check_valid="shallow")
        self.scheduler.run(chain(tag, depth))
        return depth

    def sweep(self, tag: str, n: int) -> int:
        return len(self.scheduler.run(self.tasks["sweep"](tag, n)))

    def populate(self, n: int) -> int:
        return len(self.scheduler.run(self.tasks["populate"](n)))

    def disk(self) -> dict[str, float]:
        usage = {k: float(v) for k, v in disk_usage(self.root).items()}
        db = os.path.join(self.root, "redun.db")
        usage["db_bytes"] = float(os.lstat(db).st_blocks * 512)
        return usage

    def history_setup(self) -> None:
        from redun.backends.db.query import CallGraphQuery

        self._query = CallGraphQuery
        self.session = self.scheduler.backend.session
        self.conn = sqlite3.connect(f"file:{os.path.join(self.root, 'redun.db')}?mode=ro", uri=True)

    def history_reset(self) -> None:
        # The ORM session keeps what it loaded; a question asked once loads it all.
        self.session.expunge_all()

    def history_api(self) -> int:
        """`redun log --task`'s query (CallGraphQuery), then each job's arguments and duration."""
        jobs = (
            self._query(self.session)
            .filter_types({"Job"})
            .filter_task_names([f"{REDUN_NAMESPACE}.{HISTORY_NAME}"])
            .all()
        )
        rows = []
        for job in jobs:
            lr = next(a.value_parsed for a in job.call_node.arguments if a.arg_key == "lr")
            if lr < HISTORY_LR:
                rows.append((job.call_hash, lr, job.duration))
        return len(rows)

    def history_sql(self) -> int:
        """The same over redun's tables; arguments are pickled, so lr is compared in Python."""
        found = self.conn.execute(
            "SELECT c.call_hash, v.value, j.start_time, j.end_time"
            " FROM task AS t"
            " JOIN call_node AS c ON c.task_hash = t.hash"
            " JOIN argument AS a ON a.call_hash = c.call_hash AND a.arg_key = 'lr'"
            " JOIN value AS v ON v.value_hash = a.value_hash"
            " JOIN job AS j ON j.call_hash = c.call_hash"
            " WHERE t.namespace = ? AND t.name = ?",
            (REDUN_NAMESPACE, HISTORY_NAME),
        ).fetchall()
        rows = []
        parse = datetime.datetime.fromisoformat
        for call_hash, value, start, end in found:
            lr = pickle.loads(value)
            if lr < HISTORY_LR:
                rows.append((call_hash, lr, (parse(end) - parse(start)).total_seconds()))
        return len(rows)


Side = LightstoreSide | RedunSide


def make_side(name: str) -> Side:
    return LightstoreSide() if name == "lightstore" else RedunSide()


# -- worker: one process of one side ----------------------------------------------------------


class Samples:
    """Wall and CPU seconds of each timed call, per workload, and the builds each call made."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.data: dict[str, dict[str, list[float]]] = {}
        self.builds: dict[str, list[int]] = {}
        self.answers: dict[str, int] = {}

    def timed(self, name: str, fn: Callable[..., int], *args: Any, **kwargs: Any) -> None:
        before = len(self.side.builds)
        c0, t0 = time.process_time(), time.perf_counter()
        answer = fn(*args, **kwargs)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        d = self.data.setdefault(name, {"wall": [], "cpu": []})
        d["wall"].append(wall)
        d["cpu"].append(cpu)
        self.builds.setdefault(name, []).append(len(self.side.builds) - before)
        self.answers[name] = answer


def run_round(side: Side, plan: Plan, work: str, history_root: str) -> dict[str, Any]:
    """Every timed workload once (its repetitions) on a fresh store, then the history questions."""
    s = Samples(side)
    reps = plan.reps
    side.open(os.path.join(work, "store"), fresh=True)
    side.chain("warm-up", 2)  # first-call costs (imports, schema) untimed
    for k in range(reps["new-chain"]):
        s.timed("new-chain", side.chain, f"new-{k}", plan.chain)
    side.chain("kept", plan.chain)
    for _ in range(reps["cached-chain"]):
        s.timed("cached-chain", side.chain, "kept", plan.chain)
    for k in range(reps["sweep-new"]):
        s.timed("sweep-new", side.sweep, f"sweep-{k}", plan.sweep)
    for _ in range(reps["sweep-cached"]):
        s.timed("sweep-cached", side.sweep, "sweep-0", plan.sweep)
    for k in range(reps["deep-new"]):
        s.timed("deep-new", side.chain, f"deep-{k}", plan.deep)
    for _ in range(reps["deep-cached"]):
        s.timed("deep-cached", side.chain, "deep-0", plan.deep)
    for _ in range(reps["deep-cached-shallow"]):
        s.timed("deep-cached-shallow", side.chain, "deep-0", plan.deep, shallow=True)
    side.open(history_root, fresh=False)
    side.history_setup()
    for name, fn in (("history-api", side.history_api), ("history-sql", side.history_sql)):
        fn()  # statement caches, imports
        for _ in range(reps[name]):
            side.history_reset()
            s.timed(name, fn)
    return {"samples": s.data, "builds": s.builds, "answers": s.answers}


def build_history(side: Side, plan: Plan, root: str) -> dict[str, Any]:
    """The store of `plan.results` results the history questions ask, and its disk per result."""
    side.open(root, fresh=True)
    empty = side.disk()
    c0, t0 = time.process_time(), time.perf_counter()
    made = side.populate(plan.results)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    full = side.disk()
    per = {k: (full[k] - empty.get(k, 0.0)) / plan.results for k in full}
    return {"results": made, "builds": len(side.builds), "disk": per, "wall": wall, "cpu": cpu}


def worker(args: argparse.Namespace) -> int:
    plan = Plan(**json.loads(args.plan))
    side = make_side(args.lib)
    if args.worker == "history":
        doc = build_history(side, plan, args.root)
    else:
        doc = run_round(side, plan, args.work, args.root)
    doc["version"] = side.version
    json.dump(doc, sys.stdout)
    sys.stdout.write("\n")
    return 0


# -- driver -----------------------------------------------------------------------------------


class NotInstallable(RuntimeError):
    """redun could not be installed into the scratch venv."""


def redun_python(given: str | None) -> str:
    """An interpreter with REDUN_REQUIREMENT: `given`, or the scratch venv (made if needed)."""
    if given:
        return given
    venv = os.environ.get("LIGHTSTORE_BENCH_REDUN_VENV") or os.path.join(
        ROOT, "build", "bench-redun-venv"
    )
    python = os.path.join(venv, "bin", "python")
    check = "import importlib.metadata as m, sys; sys.exit(m.version('redun') != sys.argv[1])"
    if os.access(python, os.X_OK):
        ok = subprocess.run([python, "-c", check, REDUN_VERSION], capture_output=True, check=False)
        if ok.returncode == 0:
            return python
    log(f"tools/bench --redun: installing {REDUN_REQUIREMENT} into {venv}")
    pip = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--retries", "1"]
    steps = [[python, *pip, "--timeout", "30", REDUN_REQUIREMENT]]
    if not os.access(python, os.X_OK):
        steps.insert(0, [sys.executable, "-m", "venv", venv])
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise NotInstallable(
                f"could not install {REDUN_REQUIREMENT} into {venv}: {proc.stderr.strip()[-800:]}"
            )
    return python


def run_worker(
    python: str, lib: str, mode: str, plan: Plan, root: str, work: str
) -> dict[str, Any]:
    env = dict(os.environ)
    env["LIGHTSTORE_ROOT"] = os.path.join(work, "default-lightstore")  # never the user's store
    env["REDUN_CONFIG"] = os.path.join(work, ".redun")  # nor the user's redun repo
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, env.get("PYTHONPATH")) if p)
    cmd = [python, os.path.abspath(__file__), "--worker", mode, "--lib", lib]
    cmd += ["--plan", json.dumps(dataclasses.asdict(plan)), "--root", root, "--work", work]
    proc = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the {lib} {mode} process failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def expected_builds(plan: Plan) -> dict[str, int]:
    """Builds each timed call must make: all of a new workload's stages, none of a cached one."""
    return {
        "new-chain": plan.chain,
        "cached-chain": 0,
        "sweep-new": plan.sweep + 1,
        "sweep-cached": 0,
        "deep-new": plan.deep,
        "deep-cached": 0,
        "deep-cached-shallow": 0,
        "history-api": 0,
        "history-sql": 0,
    }


def check(rounds: dict[str, list[dict[str, Any]]], built: dict[str, Any], plan: Plan) -> list[str]:
    """What went wrong: a side that built more or less than it should, or answered differently."""
    problems = []
    want = expected_builds(plan)
    for lib, docs in rounds.items():
        for doc in docs:
            for name, counts in doc["builds"].items():
                if any(c != want[name] for c in counts):
                    problems.append(
                        f"{lib} {name}: builds per call {counts}, expected {want[name]}"
                    )
    for lib, doc in built.items():
        if doc["builds"] != plan.results:
            problems.append(f"{lib} history store: {doc['builds']} builds for {plan.results}")
    answers = {
        lib: {n: docs[0]["answers"].get(n) for n in ("history-api", "history-sql")}
        for lib, docs in rounds.items()
        if docs
    }
    values = {a for per in answers.values() for a in per.values()}
    if len(values) != 1:
        problems.append(f"the history questions got different answers: {answers}")
    return problems


def compare(
    rounds: dict[str, list[dict[str, Any]]], built: dict[str, Any], plan: Plan
) -> list[dict[str, Any]]:
    """One row per workload and time (CPU, wall), and per disk figure: both medians and the ratio."""
    fields = dataclasses.asdict(plan)
    rows = []
    for name, label in WORKLOADS:
        for metric in METRICS:
            runs = {
                lib: [d["samples"].get(name, {}).get(metric, []) for d in docs]
                for lib, docs in rounds.items()
            }
            flat = {lib: [v for run in r for v in run] for lib, r in runs.items()}
            if not flat.get("lightstore") or not flat.get("redun"):
                continue
            rows.append(row(name, label.format(**fields), metric, "s", flat, runs))
    for metric, label in DISK:
        flat = {lib: [doc["disk"][metric]] for lib, doc in built.items()}
        if len(flat) == 2:
            rows.append(row("disk", label, metric, "bytes" if metric == "bytes" else "count", flat))
    return rows


def row(
    workload: str,
    label: str,
    metric: str,
    unit: str,
    flat: dict[str, list[float]],
    runs: dict[str, list[list[float]]] | None = None,
) -> dict[str, Any]:
    ls, rd = median(flat["lightstore"]), median(flat["redun"])
    ratio = rd / ls if ls > 0 else None
    return {
        "workload": workload,
        "label": label,
        "metric": metric,
        "unit": unit,
        "lightstore": ls,
        "redun": rd,
        "ratio": ratio,
        "status": "met" if ratio is not None and ratio >= GOAL else "MISSED",
        "lightstore_samples": flat["lightstore"],
        "redun_samples": flat["redun"],
        "runs": runs or {},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="tools/bench --redun",
        description=(__doc__ or "").splitlines()[0],
    )
    p.add_argument("--redun", action="store_true", help=argparse.SUPPRESS)  # tools/bench's switch
    p.add_argument("--quick", action="store_true", help="tiny sizes, one round (about a minute)")
    p.add_argument("--rounds", type=int, help="rounds of one process per side (full run: 3)")
    p.add_argument("--chain", type=int, help="stages of the short chain (20)")
    p.add_argument("--deep", type=int, help="stages of the deep chain (200)")
    p.add_argument("--sweep", type=int, help="tasks of the sweep (1000)")
    p.add_argument("--results", type=int, help="results in the history stores (5000)")
    p.add_argument("--reps", type=int, help="repetitions of every workload per process")
    p.add_argument("--redun-python", help=f"an interpreter that has {REDUN_REQUIREMENT}")
    p.add_argument("--python", default=sys.executable, help="the interpreter that has lightstore")
    p.add_argument("--json", default=os.path.join(ROOT, "build", "bench", "redun.json"))
    p.add_argument("--report", help="write the section into this markdown file")
    p.add_argument("--tmp", help="parent folder of the temporary stores (default: $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--from-json", help="render the report of a saved JSON again; runs nothing")
    p.add_argument("--worker", choices=["round", "history"], help=argparse.SUPPRESS)
    p.add_argument("--lib", choices=["lightstore", "redun"], help=argparse.SUPPRESS)
    p.add_argument("--plan", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    plan = dataclasses.replace(QUICK if args.quick else FULL)
    plan.reps = dict(plan.reps)
    for field in ("rounds", "chain", "deep", "sweep", "results"):
        value = getattr(args, field)
        if value is not None:
            if value < 1:
                sys.exit(f"tools/bench --redun: --{field} must be at least 1")
            setattr(plan, field, value)
    if args.reps is not None:
        if args.reps < 1:
            sys.exit("tools/bench --redun: --reps must be at least 1")
        plan.reps = {name: args.reps for name in plan.reps}
    return plan


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            doc = json.load(f)
        show(doc, None, args.report)
        return 0
    plan = make_plan(args)
    custom = any(getattr(args, f) is not None for f in ("rounds", "chain", "deep", "sweep"))
    full = not (args.quick or custom or args.results is not None or args.reps is not None)
    report = args.report or (os.path.join(ROOT, "BENCHMARKS.md") if full else None)
    command = os.environ.get("LIGHTSTORE_BENCH_COMMAND") or shlex.join(
        ["python", "tools/bench_redun.py", *(argv if argv is not None else sys.argv[1:])]
    )
    try:
        pythons = {"lightstore": args.python, "redun": redun_python(args.redun_python)}
    except NotInstallable as e:
        print(f"tools/bench --redun: {e}", file=sys.stderr)
        return NOT_INSTALLABLE

    load = os.getloadavg()
    started = time.time()
    tmp = tempfile.mkdtemp(prefix="lightstore-redun-", dir=args.tmp)
    rounds: dict[str, list[dict[str, Any]]] = {"lightstore": [], "redun": []}
    built: dict[str, Any] = {}
    versions: dict[str, str] = {}
    try:
        import bench_driver

        machine = bench_driver.machine_info(tmp)
        roots = {lib: os.path.join(tmp, f"history-{lib}") for lib in pythons}
        for lib, python in pythons.items():
            log(f"[{lib}] history store of {plan.results} results")
            work = tempfile.mkdtemp(prefix=f"{lib}-history-", dir=tmp)
            built[lib] = run_worker(python, lib, "history", plan, roots[lib], work)
            versions[lib] = built[lib]["version"]
        order = [lib for _ in range(plan.rounds) for lib in ("lightstore", "redun")]
        for i, lib in enumerate(order):
            log(f"[{i + 1}/{len(order)}] {lib}")
            work = tempfile.mkdtemp(prefix=f"{lib}-round-", dir=tmp)
            rounds[lib].append(run_worker(pythons[lib], lib, "round", plan, roots[lib], work))
            force_rmtree(work)
    except RuntimeError as e:
        print(f"tools/bench --redun: {e}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            force_rmtree(tmp)
    problems = check(rounds, built, plan)
    doc = {
        "command": command,
        "quick": args.quick,
        "full": full,
        "started": datetime.datetime.fromtimestamp(started)
        .astimezone()
        .isoformat(timespec="seconds"),
        "duration_s": time.time() - started,
        "load": [load[0], os.getloadavg()[0]],
        "machine": machine,
        "versions": versions,
        "plan": dataclasses.asdict(plan),
        "goal": GOAL,
        "history": {lib: {k: v for k, v in d.items() if k != "disk"} for lib, d in built.items()},
        "disk": {lib: d["disk"] for lib, d in built.items()},
        "answers": {lib: docs[0]["answers"] for lib, docs in rounds.items() if docs},
        "rows": compare(rounds, built, plan),
        "problems": problems,
    }
    show(doc, args.json, report)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


def show(doc: dict[str, Any], json_path: str | None, report: str | None) -> None:
    """Print the table; write the JSON and the report section."""
    import bench_report

    print(f"\n{doc['machine']['line']}\n{doc['command']}\n")
    print(bench_report.redun_table_text(doc))
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        print(f"\nJSON: {json_path}")
    if report:
        replace_section(report, "redun", bench_report.redun_markdown(doc))
        print(f"Report: {report}")
    print(f"Took {doc['duration_s'] / 60:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
