"""Benchmark driver: run every workload against lightstore and Pylightnix 0.3.0, report side by side.

Normally started by `tools/bench`, which prepares both interpreters. Each
library's half of each workload runs in that library's interpreter as a
subprocess (tools/bench_workloads.py) that answers in JSON; this driver runs
them in one go on fresh stores under a temporary folder, prints the table,
the growth with store size and the targets, writes the JSON, and after a
full run writes BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

import bench_parallel
import bench_report
from bench_common import GiB, MiB, force_rmtree, log, read_section, touch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUNNER = os.path.join(HERE, "bench_workloads.py")

GROUPS = {
    "scaling": [
        "populate",
        "populate-files",
        "disk",
        "list",
        "gc",
        "history",
        "cached-chain",
        "new-chain",
    ],
    "deep": ["deep-realize", "deep-cached", "closure"],
    "many": ["many-cached"],
    "hash": ["hash-big", "hash-small"],
    "contention": ["contention-same", "contention-distinct"],
    "parallel": bench_parallel.WORKLOADS,  # lightstore only: serial vs parallel in the same run
}
ALL_WORKLOADS = [w for ws in GROUPS.values() for w in ws]
#: Marked sections of BENCHMARKS.md that other benchmarks write (`--huge`, the parallel and
#: remote-cache runs, `--against`, `--redun`); a full run keeps them.
KEPT_SECTIONS = ["million", "parallel", "remote", "against", "redun"]


@dataclasses.dataclass
class Plan:
    sizes: list[int]
    depths: list[int]
    ks: list[int]
    reps: int
    big_bytes: int
    small_files: int
    hash_reps: int
    procs: int
    distinct_each: int
    contention_reps: int
    hold_s: float


FULL = Plan(
    sizes=[1000, 5000, 20000, 50000],
    depths=[50, 100, 200],
    ks=[10, 100, 1000],
    reps=5,
    big_bytes=GiB,
    small_files=20000,
    hash_reps=3,
    procs=8,
    distinct_each=200,
    contention_reps=3,
    hold_s=0.5,
)
QUICK = Plan(
    sizes=[200, 1000],
    depths=[20, 50],
    ks=[10, 100, 1000],
    reps=3,
    big_bytes=256 * MiB,
    small_files=2000,
    hash_reps=2,
    procs=8,
    distinct_each=25,
    contention_reps=2,
    hold_s=0.5,
)


class Runner:
    """Starts workload subprocesses in each library's interpreter."""

    def __init__(self, pythons: dict[str, str], tmp: str, only: set[str]) -> None:
        self.pythons = pythons
        self.tmp = tmp
        self.only = only
        self.env = dict(os.environ)
        # Nothing may touch the user's default stores.
        self.env["LIGHTSTORE_ROOT"] = os.path.join(tmp, "default-lightstore")
        self.env["PYLIGHTNIX_ROOT"] = os.path.join(tmp, "default-pylightnix")
        self.env["PYTHONUNBUFFERED"] = "1"
        # Pylightnix warns at import when atool (for archives, unused here) is missing.
        self.env.setdefault("PYLIGHTNIX_APACK", "apack")
        self.env.setdefault("PYLIGHTNIX_AUNPACK", "aunpack")
        self.versions: dict[str, str] = {}

    def command(self, lib: str, *args: str) -> list[str]:
        return [self.pythons[lib], RUNNER, "--lib", lib, "--only", ",".join(self.only), *args]

    def run(self, lib: str, *args: str, timeout: float = 6 * 3600) -> dict[str, Any]:
        """Run one runner command to completion; its stderr (progress) passes through."""
        proc = subprocess.run(
            self.command(lib, *args),
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{lib} runner {' '.join(args[:1])} failed ({proc.returncode})")
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
        self.versions[lib] = doc.get("version", "?")
        return doc

    def start(self, lib: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(lib, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )


def wanted(only: set[str], group: str) -> bool:
    return any(w in only for w in GROUPS[group])


def run_contention(
    runner: Runner, lib: str, plan: Plan, mode: str, procs: int, each: int, rep: int
) -> dict[str, Any]:
    """Start `procs` realizing processes on one fresh store together; return what happened."""
    base = os.path.join(runner.tmp, f"{lib}-{mode}-{procs}-{rep}")
    root, ready, go, build_log = (os.path.join(base, x) for x in ("store", "ready", "go", "builds"))
    os.makedirs(ready)
    runner.run(lib, "init", "--root", root)
    workers = []
    try:
        for w in range(procs):
            args = ["contend", "--root", root, "--mode", mode, "--worker", str(w)]
            args += ["--count", str(each), "--ready", ready, "--go", go, "--log", build_log]
            args += ["--hold", str(plan.hold_s)]
            workers.append(runner.start(lib, *args))
        deadline = time.monotonic() + 300
        while len(os.listdir(ready)) < procs:
            if any(p.poll() is not None for p in workers) or time.monotonic() > deadline:
                raise RuntimeError(f"{lib} contention workers did not all start")
            time.sleep(0.01)
        started = time.time()
        touch(go)
        answers = []
        for p in workers:
            out, err = p.communicate(timeout=3600)
            if p.returncode != 0:
                raise RuntimeError(f"{lib} contention worker failed:\n{err[-2000:]}")
            answers.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
                p.wait()
    stopped = max(a["stop"] for a in answers)
    errors = [e for a in answers for e in a["errors"]]
    result: dict[str, Any] = {"time": stopped - started, "errors": errors}
    if mode == "same":
        with (
            open(build_log, encoding="utf-8")
            if os.path.exists(build_log)
            else open(os.devnull, encoding="utf-8") as f
        ):
            result["builds"] = sum(1 for line in f if line.strip())
        counted = runner.run(lib, "count", "--root", root, "--name", "same")
        result["realizations"] = counted["records"][0]["samples"][0]
    force_rmtree(base)
    return result


def contention_records(runner: Runner, lib: str, plan: Plan, only: set[str]) -> list[dict]:
    records: list[dict[str, Any]] = []

    def add(workload: str, metric: str, samples: list[float], unit: str, param=None, **extra):
        records.append(
            {
                "workload": workload,
                "metric": metric,
                "param": param or {},
                "unit": unit,
                "samples": samples,
                "extra": extra,
            }
        )

    if "contention-same" in only:
        runs = []
        for rep in range(plan.contention_reps):
            log(f"[{lib}] {plan.procs} processes realize the same stage (run {rep + 1})")
            runs.append(run_contention(runner, lib, plan, "same", plan.procs, 1, rep))
        add("contention-same", "builds", [r["builds"] for r in runs], "count")
        add(
            "contention-same",
            "errors",
            [len(r["errors"]) for r in runs],
            "count",
            messages=sorted({e for r in runs for e in r["errors"]})[:5],
        )
        add("contention-same", "realizations", [r["realizations"] for r in runs], "count")
        add("contention-same", "time", [r["time"] for r in runs], "s")
    if "contention-distinct" in only:
        total = plan.procs * plan.distinct_each
        for procs in (1, plan.procs):
            samples, errors = [], []
            for rep in range(plan.contention_reps):
                log(f"[{lib}] {procs} process(es) realize {total} distinct stages (run {rep + 1})")
                r = run_contention(runner, lib, plan, "distinct", procs, total // procs, rep)
                samples.append(r["time"])
                errors += r["errors"]
            add(
                "contention-distinct",
                "time",
                samples,
                "s",
                {"procs": procs},
                stages=total,
                errors=len(errors),
            )
    return records


def run_all(
    runner: Runner, libs: list[str], plan: Plan, only: set[str], failures: list[str]
) -> list[tuple[str, dict]]:
    """Every selected workload, each group for each library in turn (same run, same machine).

    A group that fails for one library is reported in `failures` and the run
    goes on: its figures show as missing and its targets as n/a.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    tmp = runner.tmp
    reps = str(plan.reps)

    def attempt(lib: str, what: str, fn: Any) -> None:
        try:
            out.extend((lib, r) for r in fn())
        except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
            failures.append(f"{lib} {what}: {e}")
            log(f"[{lib}] {what} FAILED: {e}")

    def group(lib: str, name: str, *args: str) -> None:
        attempt(lib, name, lambda: runner.run(lib, name, "--tmp", tmp, *args)["records"])
        force_rmtree(os.path.join(tmp, f"{lib}-{name}"))

    for lib in libs if wanted(only, "scaling") else []:
        group(lib, "scaling", "--sizes", ",".join(map(str, plan.sizes)), "--reps", reps)
    for lib in libs if wanted(only, "deep") else []:
        group(lib, "deep", "--depths", ",".join(map(str, plan.depths)), "--reps", reps)
    for lib in libs if wanted(only, "many") else []:
        group(lib, "many", "--ks", ",".join(map(str, plan.ks)), "--reps", reps)
    # A fresh process per hashing measurement: peak RSS is per process.
    for kind in ("big", "small"):
        for rep in range(plan.hash_reps if f"hash-{kind}" in only else 0):
            for lib in libs:
                log(f"[{lib}] publish {kind} output (run {rep + 1})")
                args = ["--kind", kind, "--bytes", str(plan.big_bytes)]
                group(lib, "hash", *args, "--files", str(plan.small_files))
    for lib in libs if wanted(only, "contention") else []:
        attempt(lib, "contention", lambda lib=lib: contention_records(runner, lib, plan, only))
    if wanted(only, "parallel"):
        python = runner.pythons["lightstore"]
        attempt(
            "lightstore", "parallel", lambda: bench_parallel.records(python, runner.env, tmp, only)
        )
    return out


def machine_info(tmp: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
    fs = "?"
    try:
        best = ""
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                _, mnt, kind, *_ = line.split()
                if os.path.realpath(tmp).startswith(mnt) and len(mnt) > len(best):
                    best, fs = mnt, kind
    except OSError:
        pass
    commit = "?"
    try:
        commit = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--", "lightstore"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        commit += "+changes" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        pass
    line = (
        f"{cpu}, {os.cpu_count()} CPUs, {ram:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, {fs} temp folder, Python {platform.python_version()}"
    )
    return {
        "line": line,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "ram_gib": ram,
        "fs": fs,
        "commit": commit,
        "python": platform.python_version(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="tools/bench",
        description="Benchmark lightstore against Pylightnix 0.3.0 (full run: 15-30 min; "
        "--quick: about 2 min).",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, fewer repetitions")
    p.add_argument(
        "--only", default="", help=f"comma-separated workloads: {','.join(ALL_WORKLOADS)}"
    )
    p.add_argument("--no-baseline", action="store_true", help="run lightstore only")
    p.add_argument("--baseline-python", help="interpreter that has pylightnix==0.3.0")
    p.add_argument("--python", default=sys.executable, help="interpreter that has lightstore")
    p.add_argument("--sizes", help="store sizes, e.g. 1000,5000")
    p.add_argument("--reps", type=int, help="repetitions per measurement")
    p.add_argument("--json", default=os.path.join(ROOT, "build", "bench", "results.json"))
    p.add_argument(
        "--report", help="write the markdown report here (a full run writes BENCHMARKS.md)"
    )
    p.add_argument("--tmp", help="parent folder of the temporary stores (default: $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--from-json", help="re-render the report of a saved JSON; runs nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return rerender(args)
    plan = dataclasses.replace(QUICK if args.quick else FULL)
    if args.sizes:
        plan.sizes = [int(x) for x in args.sizes.split(",") if x]
    if args.reps:
        plan.reps = args.reps
    only = {w for w in args.only.split(",") if w} or set(ALL_WORKLOADS)
    unknown = only - set(ALL_WORKLOADS)
    if unknown:
        sys.exit(
            f"unknown workload(s): {', '.join(sorted(unknown))}; known: {', '.join(ALL_WORKLOADS)}"
        )
    libs = ["lightstore"]
    pythons = {"lightstore": args.python}
    if not args.no_baseline:
        if not args.baseline_python:
            sys.exit("give --baseline-python (tools/bench prepares one) or --no-baseline")
        libs.append("pylightnix")
        pythons["pylightnix"] = args.baseline_python
    # Only the default run (every workload, full sizes, both libraries) rewrites BENCHMARKS.md.
    full = not (args.quick or args.no_baseline or args.only or args.sizes or args.reps)
    report_path = args.report or (os.path.join(ROOT, "BENCHMARKS.md") if full else None)
    command = os.environ.get("LIGHTSTORE_BENCH_COMMAND") or shlex.join(
        ["python", "tools/bench_driver.py", *(argv if argv is not None else sys.argv[1:])]
    )

    tmp = tempfile.mkdtemp(prefix="lightstore-bench-", dir=args.tmp)
    started = time.time()
    log(
        f"tools/bench: {'quick' if args.quick else 'full'} run of {len(only)} workload(s) "
        f"for {' and '.join(libs)} in {tmp}"
    )
    try:
        runner = Runner(pythons, tmp, only)
        failures: list[str] = []
        records = run_all(runner, libs, plan, only, failures)
        machine = machine_info(tmp)
    finally:
        if not args.keep:
            force_rmtree(tmp)
    entries = bench_report.aggregate(records)
    doc: dict[str, Any] = {
        "command": command,
        "quick": args.quick,
        "full": full,
        "started": datetime.datetime.fromtimestamp(started)
        .astimezone()
        .isoformat(timespec="seconds"),
        "duration_s": time.time() - started,
        "machine": machine,
        "versions": runner.versions,
        "plan": dataclasses.asdict(plan),
        "workloads": sorted(only, key=ALL_WORKLOADS.index),
        "results": [e.as_json() for e in entries],
        "growth": bench_report.growth(entries),
        "targets": bench_report.evaluate(entries, dataclasses.asdict(plan)),
        "failures": failures,
    }
    show(doc, entries, args.json, report_path)
    return 1 if failures else 0


def show(
    doc: dict[str, Any],
    entries: list[bench_report.Entry],
    json_path: str | None,
    report: str | None,
) -> None:
    """Print the table, growth and targets; write the JSON and the markdown report."""
    print(f"\n{doc['machine']['line']}\n{doc['command']}\n")
    print(bench_report.table_text(entries))
    if doc["growth"]:
        print("\nGrowth:\n" + "\n".join(f"  {g}" for g in doc["growth"]))
    note = "" if doc["full"] else " (partial run: figures indicative)"
    print(f"\nTargets{note}:")
    print(bench_report.targets_text(doc["targets"]))
    for failure in doc.get("failures", []):
        print(f"FAILED: {failure}")
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        print(f"\nJSON: {json_path}")
    if report:
        # Sections other benchmarks keep in the same file survive a rewrite.
        kept = "".join(read_section(report, name) for name in KEPT_SECTIONS)
        with open(report, "w", encoding="utf-8") as f:
            f.write(bench_report.markdown(doc, entries) + ("\n" + kept if kept else ""))
        print(f"Report: {report}")
    print(f"Took {doc['duration_s'] / 60:.1f} min")


def rerender(args: argparse.Namespace) -> int:
    """Print (and with --report, write) the report of a saved JSON again, without running."""
    with open(args.from_json, encoding="utf-8") as f:
        doc = json.load(f)
    entries = bench_report.entries_from_json(doc["results"])
    doc["growth"] = bench_report.growth(entries)
    doc["targets"] = bench_report.evaluate(entries, doc["plan"])
    show(doc, entries, None, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
