"""Regression guard: the same workloads on another git revision and on the working tree, compared.

Usage (normally through `tools/bench --against REV`)::

    python tools/bench_against.py --against REV [--head REV2] [--rounds 4] [--size 1000]
        [--reps N] [--only WORKLOAD,...] [--factor 1.1] [--json PATH] [--tmp DIR] [--keep]

REV is checked out with `git worktree add` into a temporary folder (removed
afterwards unless --keep); its `lightstore` package is imported through
PYTHONPATH by processes of this venv, so both sides share the dependencies and
the workload code (this file and tools/bench_workloads.py, which use only the
Pylightnix-style API that every revision has). `--head REV2` measures REV2
instead of the working tree (for bisecting).

Each process builds a fresh store and runs every workload once; processes of
the two sides alternate A B B A, `--rounds` times, so a change of machine load
falls on both. For each workload and for wall and CPU (process) time it prints
the median over all samples of each side, their ratio (head / base, > 1 is
slower), the lowest and highest ratio of two neighbouring processes (one per
side), and p of a Mann-Whitney U test (scipy) on the per-process medians. A row
is marked `+` (slower) or `-` (faster) when the ratio passes --factor with
p < 0.05 (as `asv continuous` marks them); the exit status is 1 if any row is `+`.
With one round (two processes a side) p cannot go below 0.05: use --rounds 3 or more.
The samples are also written as two pyperf files, compared by `pyperf compare_to`
(mean, standard deviation and Student's t-test), whose output follows the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench_common import force_rmtree, replace_section

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: name, label, default repetitions per process (populate: batches of size/10 realizations).
WORKLOADS: list[tuple[str, str, int]] = [
    ("populate", "populate, per trivial realization", 10),
    ("new-chain", "new 20-stage chain", 5),
    ("new-chain-200", "new 200-stage chain, whole build", 2),
    ("cached-chain", "cached 20-stage chain", 10),
    ("instantiate", "instantiate a new 1,001-derivation closure", 2),
    ("instantiate-cached", "instantiate the same closure again", 3),
]
NAMES = [w for w, _, _ in WORKLOADS]
METRICS = ("cpu", "wall")
CHAIN, LONG_CHAIN = 20, 200
#: The instantiated closure: WIDTH chains of DEPTH stages under one top stage.
WIDTH, DEPTH = 10, 100


# -- worker: runs in a process that imports one revision's lightstore ---------------------


def measure(size: int, reps: dict[str, int], only: set[str], tmp: str) -> dict[str, Any]:
    """Run the workloads on a fresh store under `tmp`; samples in seconds per workload."""
    from bench_workloads import Lib, chain, populate_stage

    lib = Lib("lightstore")
    L = lib.L
    root = os.path.join(tmp, "store")
    S = lib.fresh(root)
    out: dict[str, dict[str, list[float]]] = {}

    def timed(name: str, fn: Callable[..., Any], *args: Any, per: int = 1) -> None:
        """Run fn(*args); if workload `name` is wanted, record its wall and CPU seconds / `per`."""
        if name not in only:
            fn(*args)
            return
        c0, t0 = time.process_time(), time.perf_counter()
        fn(*args)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        samples = out.setdefault(name, {"wall": [], "cpu": []})
        # pyperf takes positive values only; a clock tick is the floor.
        samples["wall"].append(max(wall / per, 1e-9))
        samples["cpu"].append(max(cpu / per, 1e-9))

    def build(b: Any) -> None:
        with open(os.path.join(L.build_outpath(b), "out.txt"), "w", encoding="utf-8") as f:
            f.write("result\n")

    def closure(tag: str) -> Callable[..., Any]:
        def stage(r: Any) -> Any:
            heads = []
            for c in range(WIDTH):
                prev = None
                for k in range(DEPTH):
                    config: dict[str, Any] = {"name": "wide", "tag": tag, "c": c, "k": k}
                    if prev is not None:
                        config["prev"] = prev
                    prev = L.mkdrv(L.mkconfig(config), L.match_only(), L.build_wrapper(build), r)
                heads.append(prev)
            top = {"name": "top", "tag": tag, "heads": heads}
            return L.mkdrv(L.mkconfig(top), L.match_only(), L.build_wrapper(build), r)

        return stage

    def realize_all(stages: list[Callable[..., Any]]) -> None:
        for stage in stages:
            lib.realize(stage, S)

    def instantiate(stage: Callable[..., Any]) -> None:
        L.instantiate(stage, S=S)

    def times(name: str) -> int:
        return reps[name] if name in only else 0

    try:
        lib.realize(populate_stage(lib, -1), S)  # first-call costs (imports, caches) untimed
        batch = max(1, size // reps["populate"])
        done = 0
        while done < size:
            n = min(batch, size - done)
            stages = [populate_stage(lib, i) for i in range(done, done + n)]
            timed("populate", realize_all, stages, per=n)
            done += n
        lib.realize(chain(lib, CHAIN, "kept"), S)
        for k in range(times("new-chain")):
            timed("new-chain", lib.realize, chain(lib, CHAIN, f"new-{k}"), S)
        for k in range(times("new-chain-200")):
            timed("new-chain-200", lib.realize, chain(lib, LONG_CHAIN, f"long-{k}"), S)
        for _ in range(times("cached-chain")):
            timed("cached-chain", lib.realize, chain(lib, CHAIN, "kept"), S)
        # The first closure is made even when only instantiating it again is timed.
        for k in range(max(times("instantiate"), min(1, times("instantiate-cached")))):
            timed("instantiate", instantiate, closure(f"c{k}"))
        for _ in range(times("instantiate-cached")):
            timed("instantiate-cached", instantiate, closure("c0"))
    finally:
        force_rmtree(root)
    return {"version": lib.version, "module": os.path.abspath(L.__file__), "samples": out}


def worker(args: argparse.Namespace) -> int:
    doc = measure(args.size, json.loads(args.reps_json), set(args.only.split(",")), args.tmp)
    json.dump(doc, sys.stdout)
    sys.stdout.write("\n")
    return 0


# -- driver ------------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", ROOT, *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def resolve(rev: str) -> str:
    try:
        return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        sys.exit(f"tools/bench --against: {rev!r} is not a commit of {ROOT}")


class Side:
    """One thing measured: a checked-out revision or the working tree."""

    def __init__(self, label: str, tree: str, commit: str, worktree: bool) -> None:
        self.label = label
        self.tree = tree
        self.commit = commit
        self.worktree = worktree  # a `git worktree add` of ours, to remove afterwards
        self.runs: dict[str, dict[str, list[list[float]]]] = {}  # workload -> metric -> runs
        self.version = "?"


def checkout(rev: str, tmp: str) -> Side:
    sha = resolve(rev)
    path = os.path.join(tmp, f"rev-{sha[:12]}")
    git("worktree", "add", "--detach", "--quiet", path, sha)
    side = Side(f"{rev} ({sha[:9]})" if not sha.startswith(rev) else sha[:9], path, sha, True)
    if not os.path.isfile(os.path.join(path, "lightstore", "__init__.py")):
        sys.exit(f"tools/bench --against: {rev} has no lightstore package")
    return side


def working_tree() -> Side:
    sha = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--", "lightstore")
    label = f"working tree ({sha[:9]}{'+changes' if dirty else ''})"
    return Side(label, ROOT, sha, False)


def run_process(side: Side, args: argparse.Namespace, reps: dict[str, int], tmp: str) -> None:
    """One process of `side`: every workload once on a fresh store; samples appended to side."""
    work = tempfile.mkdtemp(prefix="proc-", dir=tmp)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (side.tree, env.get("PYTHONPATH")) if p)
    env["LIGHTSTORE_ROOT"] = os.path.join(work, "default-store")  # never the user's store
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--tmp", work]
    cmd += ["--size", str(args.size), "--reps-json", json.dumps(reps), "--only", args.only]
    proc = subprocess.run(cmd, cwd=work, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the {side.label} process failed ({proc.returncode})")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    want = os.path.join(os.path.realpath(side.tree), "lightstore", "__init__.py")
    if os.path.realpath(doc["module"]) != want:
        raise RuntimeError(f"the {side.label} process imported {doc['module']}, not {want}")
    side.version = doc["version"]
    for workload, metrics in doc["samples"].items():
        for metric, values in metrics.items():
            side.runs.setdefault(workload, {}).setdefault(metric, []).append(values)


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def compare(base: Side, head: Side, factor: float, alpha: float = 0.05) -> list[dict[str, Any]]:
    """Per workload and metric: both medians, their ratio and the ratios of neighbouring runs.

    A row is marked when the ratio passes `factor` and a Mann-Whitney U test of the
    per-process medians of the two sides gives p < `alpha`.
    """
    from scipy.stats import mannwhitneyu

    rows = []
    for name, label, _ in WORKLOADS:
        for metric in METRICS:
            a = base.runs.get(name, {}).get(metric, [])
            b = head.runs.get(name, {}).get(metric, [])
            if not a or not b:
                continue
            ma = statistics.median(v for run in a for v in run)
            mb = statistics.median(v for run in b for v in run)
            # Runs were made in the order A B B A ...: run i of one side neighbours run i of the other.
            pairs = [
                statistics.median(y) / statistics.median(x) for x, y in zip(a, b, strict=False)
            ]
            ratio = mb / ma
            # The process is the unit: samples within one share its luck (load, hash seed).
            p = float(
                mannwhitneyu(
                    [statistics.median(x) for x in a],
                    [statistics.median(y) for y in b],
                    alternative="two-sided",
                ).pvalue
            )
            mark = ""
            if p < alpha and ratio >= factor:
                mark = "+"
            elif p < alpha and ratio <= 1 / factor:
                mark = "-"
            rows.append(
                {
                    "workload": name,
                    "label": label,
                    "metric": metric,
                    "base": ma,
                    "head": mb,
                    "ratio": ratio,
                    "pairs": pairs,
                    "p": p,
                    "mark": mark,
                    "base_runs": a,
                    "head_runs": b,
                }
            )
    return rows


def table(rows: list[dict[str, Any]], base: Side, head: Side) -> str:
    head_cells = ["", "workload", "time", base.label, head.label, "ratio", "pairs", "p"]
    lines = [head_cells]
    for r in rows:
        lines.append(
            [
                r["mark"],
                r["label"] if r["metric"] == METRICS[0] else "",
                r["metric"],
                fmt_time(r["base"]),
                fmt_time(r["head"]),
                f"{r['ratio']:.2f}",
                f"{min(r['pairs']):.2f}-{max(r['pairs']):.2f}",
                f"{r['p']:.3f}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head_cells))]
    right = {3, 4, 5, 6, 7}
    return "\n".join(
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def pyperf_files(rows: list[dict[str, Any]], base: Side, head: Side, folder: str) -> list[str]:
    """The samples as pyperf benchmark files (one run per process), for `pyperf compare_to`."""
    import pyperf

    paths = []
    for side, key in ((base, "base_runs"), (head, "head_runs")):
        benchmarks = []
        for r in rows:
            meta = {"name": f"{r['workload']} ({r['metric']})", "unit": "second"}
            runs = [pyperf.Run(v, metadata=meta, collect_metadata=False) for v in r[key]]
            benchmarks.append(pyperf.Benchmark(runs))
        path = os.path.join(folder, f"{side.commit[:9]}{'' if side.worktree else '-tree'}.json")
        pyperf.BenchmarkSuite(benchmarks).dump(path, replace=True)
        paths.append(path)
    return paths


def markdown(
    rows: list[dict[str, Any]],
    base: Side,
    head: Side,
    command: str,
    started: float,
    load: tuple[float, float, float],
    factor: float,
) -> str:
    """The comparison as a BENCHMARKS.md section."""
    end = os.getloadavg()
    when = datetime.datetime.fromtimestamp(started).astimezone().isoformat(timespec="seconds")
    lines = [
        "## Against another revision (`tools/bench --against REV`)",
        "",
        f"- Command: `{command}`; started {when}, took {(time.time() - started) / 60:.1f} min;"
        f" load average {load[0]:.1f} at the start, {end[0]:.1f} at the end,"
        f" on {os.cpu_count()} CPUs",
        f"- base: {base.label}; head: {head.label}",
        "- ratio = head / base of the medians (> 1: slower); pairs = lowest and highest ratio of"
        " two neighbouring processes; p = Mann-Whitney U on the per-process medians;"
        f" + / - = slower / faster past {factor}x with p < 0.05",
        "",
        "| workload | time | base | head | ratio | pairs | p | |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['metric']} | {fmt_time(r['base'])} | {fmt_time(r['head'])}"
            f" | {r['ratio']:.2f} | {min(r['pairs']):.2f}-{max(r['pairs']):.2f} | {r['p']:.3f}"
            f" | {r['mark']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="tools/bench --against", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument("--against", metavar="REV", help="the git revision to compare with")
    p.add_argument("--head", metavar="REV", help="measure REV instead of the working tree")
    p.add_argument("--rounds", type=int, default=4, help="A B B A blocks of processes (4)")
    p.add_argument("--size", type=int, default=1000, help="realizations populated (1000)")
    p.add_argument("--reps", type=int, default=0, help="repetitions of each workload per process")
    p.add_argument("--only", default=",".join(NAMES), help="comma-separated workloads (all)")
    p.add_argument("--factor", type=float, default=1.1, help="ratio that counts as a change")
    p.add_argument("--json", default=os.path.join(ROOT, "build", "bench", "against.json"))
    p.add_argument("--tmp", default=None, help="folder for the temporary checkout and stores")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--report", help="also write the table into this markdown file's section")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--reps-json", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if not args.against:
        p.error("--against REV is required")
    only = [w for w in args.only.split(",") if w]
    unknown = set(only) - set(NAMES)
    if unknown or not only or args.rounds < 1 or args.size < 1:
        p.error(f"workloads are {', '.join(NAMES)}; --rounds and --size at least 1")
    args.only = ",".join(only)
    reps = {name: args.reps or default for name, _, default in WORKLOADS}
    reps["populate"] = min(reps["populate"], args.size)

    load = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="lightstore-against-", dir=args.tmp)
    sides: list[Side] = []
    started = time.time()
    try:
        base = checkout(args.against, tmp)
        sides.append(base)
        head = checkout(args.head, tmp) if args.head else working_tree()
        sides.append(head)
        order = [base, head, head, base] * args.rounds
        print(
            f"tools/bench --against: {base.label} vs {head.label}, {len(order)} processes "
            f"(A B B A x {args.rounds}), store of {args.size}",
            file=sys.stderr,
            flush=True,
        )
        for i, side in enumerate(order):
            print(f"  [{i + 1}/{len(order)}] {side.label}", file=sys.stderr, flush=True)
            run_process(side, args, reps, tmp)
    except subprocess.CalledProcessError as e:
        print(f"tools/bench --against: {shlex.join(e.cmd)} failed: {e.stderr}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"tools/bench --against: {e}", file=sys.stderr)
        return 2
    finally:
        for side in sides:
            if side.worktree and not args.keep:
                subprocess.run(
                    ["git", "-C", ROOT, "worktree", "remove", "--force", side.tree],
                    capture_output=True,
                    check=False,
                )
        if not args.keep:
            force_rmtree(tmp)
    rows = compare(base, head, args.factor)
    command = os.environ.get("LIGHTSTORE_BENCH_COMMAND") or shlex.join(
        ["python", "tools/bench_against.py", *(argv if argv is not None else sys.argv[1:])]
    )
    print(
        f"\n{command}\n"
        f"ratio = {head.label} / {base.label} of the medians; pairs = lowest and highest ratio\n"
        f"of two neighbouring processes; p = Mann-Whitney U on the per-process medians;\n"
        f"+ slower, - faster: ratio past {args.factor} with p < 0.05\n"
    )
    print(table(rows, base, head))
    folder = os.path.dirname(os.path.abspath(args.json))
    os.makedirs(folder, exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        doc = {
            "command": command,
            "base": {"label": base.label, "commit": base.commit, "version": base.version},
            "head": {"label": head.label, "commit": head.commit, "version": head.version},
            "rounds": args.rounds,
            "size": args.size,
            "reps": reps,
            "duration_s": time.time() - started,
            "rows": rows,
        }
        json.dump(doc, f, indent=1)
    paths = pyperf_files(rows, base, head, folder)
    compared = subprocess.run(
        [sys.executable, "-m", "pyperf", "compare_to", *paths],
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"\npyperf compare_to (mean +- std dev; Student's t-test):\n{compared.stdout.rstrip()}")
    print(f"\nJSON: {args.json}; pyperf files: {' '.join(paths)}")
    if args.report:
        body = markdown(rows, base, head, command, started, load, args.factor)
        replace_section(args.report, "against", body)
        print(f"Report: {args.report}")
    print(f"Took {(time.time() - started) / 60:.1f} min")
    return 1 if any(r["mark"] == "+" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
