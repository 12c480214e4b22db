"""`tools/bench --huge`: a store of a million realizations, built for real, and what it costs.

Usage (from the repository root, in the project venv)::

    python tools/bench_huge.py [--sizes 10000,100000,1000000] [--procs 2] [--root DIR]
        [--skip verify-contents,reindex,...] [--reps 5] [--json PATH] [--report PATH]

The store is built by real realizations of trivial stages, by `--procs`
processes at once, shaped like many small pipelines: 100 popular "dataset"
stages, and chains of 20 stages (each stage writes one small file; the first
of a chain depends on dataset ``c % 100``, every other on the previous stage).
It grows through `--sizes`; at each size the store is measured:

- open (in this process, and in a fresh process), a cached realize of a
  20-stage chain, `allrrefs` and `ls -r` (the query API's `realizations`),
  a filtered history query (stage ``p3``, ``lr < 0.05``), the newest 20,
  `referrers --closure` of a popular realization (a dataset);
- the gc plan (`store_gc`) with 99 % and with 1 % garbage (the kept chain
  tips passed as keeps), `verify` without and with `--check-contents`
  (realizations per second), `reindex`, catalogue bytes and disk per
  realization;
- last, the collection itself: 99 % of the chain tips pinned, `Store.gc`
  removes the rest (about 1 %), then the pins go.

The build resumes where it stopped if `--root` names the store of an
earlier run (its progress is in ``<root>.state.json``). Disk: about 5 inodes
and 20 KiB per realization on ext4 (1M: 5 million inodes, ~20 GiB).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench_common import force_rmtree, log, median, replace_section
from bench_workloads import write_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATASETS = 100
CHAIN = 20
SWEEPS = 49
SWEEP_OUTPUTS = 20
#: Realizations per unit of the store: one chain and SWEEPS sweeps.
UNIT = CHAIN + SWEEPS * SWEEP_OUTPUTS
DEFAULT_SIZES = [10_000, 100_000, 1_000_000]


# -- stages -------------------------------------------------------------------


def _build(b: Any) -> None:
    import lightstore as L

    write_file(os.path.join(L.build_outpath(b), "out.txt"), "result\n")


def dataset(j: int, r: Any) -> Any:
    import lightstore as L

    return L.mkdrv(
        L.mkconfig({"name": "dataset", "d": j}), L.match_only(), L.build_wrapper(_build), r
    )


def pipeline(c: int, r: Any) -> Any:
    """Chain number `c`: CHAIN trivial stages on top of a popular dataset."""
    import lightstore as L

    prev = dataset(c % DATASETS, r)
    for k in range(CHAIN):
        lr = ((c * CHAIN + k) * 7919 % 10007) / 10007
        config = {"name": f"p{k % 10}", "chain": c, "k": k, "lr": lr, "prev": prev}
        prev = L.mkdrv(L.mkconfig(config), L.match_only(), L.build_wrapper(_build), r)
    return prev


def _build_many(b: Any) -> None:
    import lightstore as L

    for j, out in enumerate(L.build_outpaths(b)):
        write_file(os.path.join(out, "out.txt"), f"{j}\n")


def sweep(u: int, s: int, r: Any) -> Any:
    """Sweep `s` of unit `u`: one trivial stage whose build makes SWEEP_OUTPUTS realizations
    (seeds of one configuration), on top of a popular dataset."""
    import lightstore as L

    data = dataset(u % DATASETS, r)
    lr = ((u * SWEEPS + s) * 7919 % 10007) / 10007
    config = {"name": f"p{s % 10}", "unit": u, "sweep": s, "lr": lr, "data": data}
    return L.mkdrv(
        L.mkconfig(config), L.match_all, L.build_wrapper(_build_many, nouts=SWEEP_OUTPUTS), r
    )


def build_unit(u: int, root: str) -> None:
    """Unit `u` of the store: one chain and SWEEPS sweeps, UNIT realizations in all."""
    import lightstore as L

    realize(lambda r: pipeline(u, r), root)
    for s in range(SWEEPS):
        L.realizeMany(L.instantiate(lambda r, s=s: sweep(u, s, r), S=L.mkSS(root)))


def kept_chain(r: Any) -> Any:
    """The 20-stage chain whose cached realize is timed (no dataset below it)."""
    import lightstore as L

    prev = None
    for k in range(CHAIN):
        config: dict[str, Any] = {"name": "kept", "k": k}
        if prev is not None:
            config["prev"] = prev
        prev = L.mkdrv(L.mkconfig(config), L.match_only(), L.build_wrapper(_build), r)
    return prev


def realize(stage: Any, root: str) -> str:
    import lightstore as L

    return str(L.realize1(L.instantiate(stage, S=L.mkSS(root))))


# -- building -----------------------------------------------------------------


def worker(root: str, first: int, stop: int, step: int) -> None:
    """Build units first, first+step, ... < stop into the store at `root`."""
    t0 = time.perf_counter()
    for done, u in enumerate(range(first, stop, step), start=1):
        build_unit(u, root)
        if done % 10 == 0:
            rate = done * UNIT / (time.perf_counter() - t0)
            log(f"  worker {first % step}: {done} units, {rate:.0f} realizations/s")


def count(root: str) -> int:
    from lightstore import Store

    return int(Store.open(root).catalogue.column("SELECT count(*) FROM realizations")[0])


def grow(root: str, state: dict[str, Any], size: int, procs: int) -> float:
    """Add units until the store holds `size` realizations; return seconds per realization."""
    have = count(root)
    units = max(0, round((size - have) / UNIT))
    if units == 0:
        return 0.0
    first, stop = state["next_unit"], state["next_unit"] + units
    log(
        f"huge: {have} realizations; building {units} units ({units * UNIT}) with {procs} processes"
    )
    t0 = time.perf_counter()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "worker",
                "--root",
                root,
                "--first",
                str(first + w),
                "--stop",
                str(stop),
                "--step",
                str(procs),
            ]
        )
        for w in range(procs)
    ]
    try:
        codes = [p.wait() for p in workers]
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(codes):
        raise RuntimeError(f"a build worker failed: exit codes {codes}")
    elapsed = time.perf_counter() - t0
    state["next_unit"] = stop
    return elapsed / max(1, count(root) - have)


# -- measuring ----------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    """Wall-clock and CPU seconds (user + system) of each repetition.

    On a loaded machine the wall clock mostly measures the wait for a CPU;
    this process's CPU time is what the operation itself costs.
    """

    wall: list[float]
    cpu: list[float]


class Results:
    def __init__(self, label: str | None = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.label = label

    def add(
        self, size: int, what: str, seconds: Timing | float, unit: str = "s", **extra: Any
    ) -> None:
        if isinstance(seconds, Timing):
            samples, value = seconds.cpu, median(seconds.cpu)
            extra["wall"] = median(seconds.wall)
            extra["wall_samples"] = seconds.wall
        else:
            samples, value = [seconds], seconds
        self.rows.append(
            {
                "size": size,
                "column": self.label or f"N={size:,}",
                "what": what,
                "value": value,
                "unit": unit,
                "samples": samples,
                **extra,
            }
        )
        shown = f"{value * 1e3:.2f} ms" if unit == "s" else f"{value:,.1f} {unit}"
        log(f"  N={size}: {what}: {shown} {extra if extra else ''}")


def timed(fn: Any, reps: int) -> tuple[Timing, Any]:
    timing, out = Timing([], []), None
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        timing.wall.append(time.perf_counter() - t0)
        timing.cpu.append(time.process_time() - c0)
    return timing, out


def fresh_open(root: str) -> tuple[float, float]:
    """Store.open in a new process, after imports (so only the open is timed)."""
    code = (
        "import sys, time\nfrom lightstore import Store\n"
        "c0, t0 = time.process_time(), time.perf_counter()\nStore.open(sys.argv[1])\n"
        "print(time.perf_counter() - t0, time.process_time() - c0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, root], capture_output=True, text=True, check=True
    )
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


def du(path: str) -> tuple[int, int]:
    """Allocated bytes and inodes below `path` (GNU du, much faster than os.walk here)."""
    b = subprocess.run(
        ["du", "-s", "--block-size=1", path], capture_output=True, text=True, check=True
    )
    i = subprocess.run(["du", "-s", "--inodes", path], capture_output=True, text=True, check=True)
    return int(b.stdout.split()[0]), int(i.stdout.split()[0])


def measure(
    root: str, size: int, res: Results, reps: int, skip: set[str], query: str = "p3:lr<0.05"
) -> None:
    import lightstore as L
    from lightstore import Store
    from lightstore.maintenance.reindex import reindex
    from lightstore.query import closure, history, open_view, realizations

    S = L.mkSS(root)
    n = count(root)
    log(f"huge: measuring at {n} realizations")
    size = n  # the figures are for the store as it is

    def open_store() -> Any:
        Store.forget_instances()
        return Store.open(root)

    samples, _ = timed(open_store, reps)
    res.add(size, "open", samples)
    fresh = [fresh_open(root) for _ in range(3)]
    res.add(size, "open (fresh process)", Timing([w for w, _ in fresh], [c for _, c in fresh]))
    realize(kept_chain, root)
    samples, _ = timed(lambda: realize(kept_chain, root), reps)
    res.add(size, "cached realize, 20-stage chain", samples)
    samples, out = timed(lambda: L.allrrefs(S), reps)
    res.add(size, "allrrefs", samples, rows=len(out))
    view = open_view(root)
    samples, out = timed(lambda: realizations(view), max(1, reps // 2))
    res.add(size, "ls -r (query.realizations)", samples, rows=len(out))
    del out
    name, condition = query.split(":", 1)
    samples, out = timed(lambda: history(view, name, config=[condition]), reps)
    res.add(size, "history -n NAME -c CONDITION", samples, rows=len(out), query=query)
    samples, out = timed(lambda: history(view, limit=20), reps)
    res.add(size, "history --limit 20", samples, rows=len(out))
    store = Store.open(root)
    # The realization with the most direct referrers (here: a dataset).
    popular = store.catalogue.column(
        "SELECT dep FROM realization_deps GROUP BY dep ORDER BY count(*) DESC LIMIT 1"
    )[0]
    samples, out = timed(lambda: closure(view.catalogue, [popular], reverse=True), reps)
    res.add(size, "referrers --closure (popular)", samples, rows=len(out))
    view.catalogue.close()
    # Chain tips are what nothing depends on; the kept chain's tip is one of them.
    tips = sorted(store.catalogue.top_rrefs())
    for share in (0.01, 0.99):
        keep = tips[: max(1, int(len(tips) * share))]
        samples, out = timed(lambda keep=keep: L.store_gc([], keep, S), reps)
        garbage = len(out[1]) / max(1, n)
        res.add(
            size,
            f"gc plan, {round((1 - share) * 100)}% garbage",
            samples,
            garbage=round(garbage, 4),
        )
    if "verify" not in skip:
        t, report = timed(store.verify, 1)
        res.add(size, "verify", t, ok=report.ok)
        res.add(size, "verify rate (CPU)", n / t.cpu[0], "realizations/s")
    if "verify-contents" not in skip:
        t, report = timed(lambda: store.verify(check_contents=True), 1)
        res.add(size, "verify --check-contents", t, ok=report.ok)
        res.add(size, "verify --check-contents rate (CPU)", n / t.cpu[0], "realizations/s")
    if "reindex" not in skip:
        t, rep = timed(lambda: reindex(root), 1)
        res.add(size, "reindex", t, realizations=rep.realizations, skipped=len(rep.skipped))
        res.add(size, "reindex rate (CPU)", n / t.cpu[0], "realizations/s")
        if rep.old_catalogue:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(rep.old_catalogue + suffix):
                    os.unlink(rep.old_catalogue + suffix)
        store = Store.open(root)
    store.catalogue.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cat = os.path.getsize(os.path.join(root, "catalogue.sqlite"))
    res.add(size, "catalogue bytes per realization", cat / n, "bytes", catalogue=cat)
    if "disk" not in skip:
        used, inodes = du(os.path.join(root, "objects"))
        res.add(size, "disk per realization (tree + catalogue)", (used + cat) / n, "bytes")
        res.add(size, "inodes per realization", inodes / n, "inodes")
    if "collect" not in skip:
        collect(store, tips, n, size, res)


def collect(store: Any, tips: list[str], n: int, size: int, res: Results) -> None:
    """Pin the derivations of 99 % of the chain and sweep tips, collect the rest (about 1 %
    of the store), unpin."""
    from lightstore.foundation.refs import rref2dref

    drefs = sorted({rref2dref(t) for t in tips})
    pinned = drefs[: int(len(drefs) * 0.99)]
    t0 = time.perf_counter()
    for i, dref in enumerate(pinned):
        store.pin(f"huge-{i}", dref)
    log(f"  pinned {len(pinned)} derivations in {time.perf_counter() - t0:.1f} s")
    t, report = timed(store.gc, 1)
    gone = len(report.rrefs) + len(report.drefs)
    res.add(
        size, "gc (collection, ~1% garbage)", t, rrefs=len(report.rrefs), drefs=len(report.drefs)
    )
    res.add(size, "gc collection rate (CPU)", gone / t.cpu[0], "objects/s")
    for i in range(len(pinned)):
        store.unpin(f"huge-{i}")


# -- report -------------------------------------------------------------------


TARGETS = [
    ("open", 0.050, "open under 50 ms"),
    ("history -n NAME -c CONDITION", 0.100, "filtered history under 100 ms"),
    ("allrrefs", 1.0, "allrrefs under 1 s"),
    ("gc plan, 99% garbage", 2.0, "gc plan (99% garbage) under 2 s"),
    ("gc plan, 1% garbage", 2.0, "gc plan (1% garbage) under 2 s"),
]


def seconds(v: float) -> str:
    return f"{v * 1e6:.0f} µs" if v < 1e-3 else f"{v * 1e3:.1f} ms" if v < 1 else f"{v:.2f} s"


def fmt(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    v, unit = row["value"], row["unit"]
    if unit == "s":
        text = seconds(v)
        return f"{text} ({seconds(row['wall'])})" if "wall" in row else text
    if unit == "bytes":
        return f"{v / 1024:.1f} KiB"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


def header(doc: dict[str, Any]) -> list[str]:
    """What the table is, and the conditions it was taken in."""
    return [
        "## Million: large stores (`tools/bench --huge`)",
        "",
        f"- Command: `{doc['command']}`; started {doc['started']}, "
        f"took {doc['duration_s'] / 60:.1f} min; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in doc['load_average'])} on {doc['cpus']} CPUs.",
        "- Times are the median CPU time (user + system) of this process, with the wall",
        "  clock in parentheses: on a loaded machine the wall clock mostly measures the wait",
        "  for a CPU. Targets are checked on the CPU time. Rates are per CPU second.",
        "",
    ]


def report_lines(doc: dict[str, Any]) -> list[str]:
    """The "million" section of BENCHMARKS.md: one column per size, growth, targets."""
    rows = doc["results"]
    columns = [c for _, c in sorted({(r["size"], r["column"]) for r in rows})]
    whats = list(dict.fromkeys(r["what"] for r in rows))
    get = {(r["column"], r["what"]): r for r in rows}
    lines = [
        "| measure | " + " | ".join(columns) + " | growth |",
        "|---|" + "---:|" * (len(columns) + 1),
    ]
    for w in whats:
        lo, hi = get.get((columns[0], w)), get.get((columns[-1], w))
        g = "-"
        if lo and hi and lo["value"] and lo["unit"] == "s":
            g = f"x{hi['value'] / lo['value']:.1f}"
        lines.append(f"| {w} | " + " | ".join(fmt(get.get((c, w))) for c in columns) + f" | {g} |")
    first, top = columns[0], columns[-1]
    sizes = {r["column"]: r["size"] for r in rows}
    lines += [
        "",
        f"Growth is from {first} to {top} (store x{sizes[top] / sizes[first]:g}).",
        "",
        "| status | target at the largest store | figure |",
        "|---|---|---|",
    ]
    for what, limit, label in TARGETS:
        r = get.get((top, what))
        status = "n/a" if r is None else "met" if r["value"] < limit else "MISSED"
        lines.append(f"| {status} | {label} | {fmt(r)} at {top} |")
    small = get.get((first, "cached realize, 20-stage chain"))
    big = get.get((top, "cached realize, 20-stage chain"))
    if small and big:
        g = big["value"] / small["value"]
        status = "met" if g <= 1.5 else "MISSED"
        lines.append(f"| {status} | cached 20-chain flat (≤ x1.5 from {first}) | x{g:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/bench --huge", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command")
    w = sub.add_parser("worker")
    w.add_argument("--root", required=True)
    w.add_argument("--first", type=int, required=True)
    w.add_argument("--stop", type=int, required=True)
    w.add_argument("--step", type=int, required=True)
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    p.add_argument("--procs", type=int, default=2, help="build processes")
    p.add_argument("--root", help="store folder (kept; resumed if it exists); default: temporary")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--skip", default="", help="verify,verify-contents,reindex,disk,collect")
    p.add_argument("--json", default=os.path.join(ROOT, "build", "bench", "huge.json"))
    p.add_argument("--report", help="write the markdown table here")
    p.add_argument(
        "--build-only", action="store_true", help="build (or resume) the store, measure nothing"
    )
    p.add_argument(
        "--query", default="p3:lr<0.05", help="NAME:CONDITION of the filtered history query"
    )
    p.add_argument(
        "--label", help="name the size column after this instead of the count (e.g. 1M-catalogue)"
    )
    p.add_argument("--notes", help="markdown file appended to the report (findings, limits)")
    p.add_argument(
        "--from-json", help="render the report of a saved JSON (with --merge); build nothing"
    )
    p.add_argument("--merge", help="also report the rows of this earlier JSON (other sizes)")
    args = p.parse_args(argv)
    if args.command == "worker":
        worker(args.root, args.first, args.stop, args.step)
        return 0
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            doc = json.load(f)
        res = Results()
        res.rows = doc["results"]
        save(args, doc["command"], time.time() - doc["duration_s"], res, doc)
        return 0
    sizes = [int(x) for x in args.sizes.split(",") if x]
    tmp = None if args.root else tempfile.mkdtemp(prefix="lightstore-huge-")
    root = os.path.abspath(args.root or os.path.join(tmp or "", "store"))
    state_path = root + ".state.json"
    state = {"next_unit": 0}
    if os.path.exists(state_path):
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
    started = time.time()
    res = Results(args.label)
    skip = {s for s in args.skip.split(",") if s}
    command = "tools/bench --huge " + " ".join(argv if argv is not None else sys.argv[1:])
    try:
        from lightstore import Store

        Store.open(root, create=True)
        for j in range(DATASETS):
            realize(lambda r, j=j: dataset(j, r), root)
        for size in sizes:
            per = grow(root, state, size, args.procs)
            with open(state_path, "w", encoding="utf-8") as f:
                json.dump(state, f)
            if per:
                res.add(size, f"build ({args.procs} processes), per realization", per)
            if args.build_only:
                continue
            measure(root, size, res, args.reps, skip, args.query)
            # Written after every size: a long run stopped later keeps what it measured.
            save(args, command, started, res)
    finally:
        if tmp:
            force_rmtree(tmp)
    return 0


def save(
    args: argparse.Namespace,
    command: str,
    started: float,
    res: Results,
    earlier: dict[str, Any] | None = None,
) -> None:
    rows = list(res.rows)
    if args.merge:
        with open(args.merge, encoding="utf-8") as f:
            mine = {(r["size"], r["what"]) for r in rows}
            rows += [r for r in json.load(f)["results"] if (r["size"], r["what"]) not in mine]
    doc = {
        "command": command,
        "started": datetime.datetime.fromtimestamp(started)
        .astimezone()
        .isoformat(timespec="seconds"),
        "duration_s": time.time() - started,
        "load_average": earlier["load_average"] if earlier else os.getloadavg(),
        "cpus": os.cpu_count(),
        "results": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    text = "\n".join(report_lines(doc))
    print(text, flush=True)
    if args.report:
        notes = ""
        if args.notes:
            with open(args.notes, encoding="utf-8") as f:
                notes = "\n" + f.read()
        replace_section(args.report, "million", "\n".join(header(doc)) + "\n" + text + "\n" + notes)


if __name__ == "__main__":
    sys.exit(main())
