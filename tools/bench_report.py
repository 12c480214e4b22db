"""Turn the runners' records into the benchmark table, growth lines, target checks and BENCHMARKS.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench_common import GiB, MiB, median

LIBS = ("lightstore", "pylightnix")

#: Display order of the workloads, and one line on what each measures.
WORKLOADS = {
    "populate": "realize N independent trivial stages into a fresh store, per realization",
    "populate-files": "the file operations alone of one trivial realization (folders, files, chmods, "
    "renames; no catalogue, no locks, no hashing), timed between the populate batches",
    "disk": "disk per trivial realization (tree blocks + catalogue), and inodes",
    "list": "every realization of a store of N (allrrefs)",
    "gc": "what garbage collection would remove, keeping one chain (store_gc)",
    "history": "realizations of one stage name with config lr < 0.05 (lightstore: SQL; Pylightnix: scan)",
    "cached-chain": "re-realize a realized 20-stage chain, declaration included, in a store of N",
    "new-chain": "realize a fresh 20-stage chain in a store of N",
    "deep-realize": "realize a fresh chain of the given depth",
    "deep-cached": "re-realize a realized chain of the given depth",
    "closure": "all dependencies of the last realization of the deepest chain (rrefdeps)",
    "many-cached": "cached realize of a match_latest(1) stage holding K realizations",
    "hash-big": "publish one big output file: time after the realizer returns, throughput, peak RSS",
    "hash-small": "publish many 4 KiB files: time after the realizer returns, throughput, peak RSS",
    "contention-same": "8 processes realize the same stage at once: builds, errors, realizations left",
    "contention-distinct": "8 processes x M distinct stages vs 1 process doing all 8M",
    "sweep-share": "a 6-branch sweep (1 s a branch): 1 process vs 3 processes on one store",
    "parallel-cpu": "32 stages x 0.2 s CPU: serial vs jobs=2 (Dask LocalCluster, start-up included)",
    "parallel-overhead": "per-derivation time of trivial stages: serial vs a running 2-worker cluster",
}

#: Metrics with a direction: ratios say how many times better lightstore is.
_HIGHER_BETTER = {"throughput"}
_NO_RATIO = {"builds", "errors", "realizations"}


@dataclass
class Entry:
    workload: str
    metric: str
    param: dict[str, Any]
    unit: str
    values: dict[str, dict[str, Any]]  # lib -> {"median", "samples", "extra"}

    def median(self, lib: str) -> float | None:
        v = self.values.get(lib)
        return None if v is None else v["median"]

    @property
    def ratio(self) -> float | None:
        """Pylightnix / lightstore for costs, lightstore / Pylightnix for throughput."""
        if self.metric in _NO_RATIO:
            return None
        ls, pl = self.median("lightstore"), self.median("pylightnix")
        if not ls or not pl:
            return None
        return ls / pl if self.metric in _HIGHER_BETTER else pl / ls

    def as_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "metric": self.metric,
            "param": self.param,
            "unit": self.unit,
            "ratio": self.ratio,
            **self.values,
        }


def entries_from_json(results: list[dict[str, Any]]) -> list[Entry]:
    """The entries of a saved JSON document (its "results")."""
    return [
        Entry(r["workload"], r["metric"], r["param"], r["unit"], {k: r[k] for k in LIBS if k in r})
        for r in results
    ]


def param_text(param: dict[str, Any]) -> str:
    names = {"size": "N", "depth": "depth", "K": "K", "procs": "procs"}
    return " ".join(f"{names.get(k, k)}={v}" for k, v in param.items())


def aggregate(records: list[tuple[str, dict[str, Any]]]) -> list[Entry]:
    """Group (lib, record) pairs by workload, metric and parameter; order as WORKLOADS."""
    entries: dict[tuple[str, str, str], Entry] = {}
    for lib, r in records:
        key = (r["workload"], r["metric"], repr(sorted(r["param"].items())))
        e = entries.get(key)
        if e is None:
            e = entries[key] = Entry(r["workload"], r["metric"], r["param"], r["unit"], {})
        v = e.values.setdefault(lib, {"samples": [], "extra": {}})
        v["samples"].extend(r["samples"])
        v["extra"].update(r.get("extra", {}))
    for e in entries.values():
        for v in e.values.values():
            v["median"] = median(v["samples"])
    order = list(WORKLOADS)
    return sorted(
        entries.values(),
        key=lambda e: (
            order.index(e.workload) if e.workload in order else len(order),
            list(entries.values()).index(e),
        ),
    )


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.1f} µs"
        if value < 1:
            return f"{value * 1e3:.2f} ms"
        return f"{value:.2f} s"
    if unit == "bytes":
        if value >= GiB:
            return f"{value / GiB:.2f} GiB"
        if value >= MiB:
            return f"{value / MiB:.1f} MiB"
        return f"{value / 1024:.1f} KiB"
    if unit == "B/s":
        return f"{value / 1e9:.2f} GB/s"
    if unit == "count":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
    return f"{value:.4g} {unit}"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


def cell(e: Entry, lib: str) -> str:
    """A median; for counts (builds, errors) that differ between runs, every run's value."""
    v = e.values.get(lib)
    if v is None:
        return "-"
    if e.unit == "count" and len(set(v["samples"])) > 1:
        return "/".join(fmt(x, e.unit) for x in v["samples"])
    return fmt(v["median"], e.unit)


def table_rows(entries: list[Entry]) -> list[list[str]]:
    rows = [["workload", "metric", "param", "lightstore", "Pylightnix", "ratio"]]
    for e in entries:
        rows.append(
            [
                e.workload,
                e.metric,
                param_text(e.param),
                cell(e, "lightstore"),
                cell(e, "pylightnix"),
                fmt_ratio(e.ratio),
            ]
        )
    return rows


def table_text(entries: list[Entry]) -> str:
    rows = table_rows(entries)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def table_markdown(entries: list[Entry]) -> str:
    rows = table_rows(entries)
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * 3 + "---:|" * 3]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def _series(entries: list[Entry], workload: str, key: str) -> list[Entry]:
    found = [e for e in entries if e.workload == workload and key in e.param]
    return sorted(found, key=lambda e: e.param[key])


def growth(entries: list[Entry]) -> list[str]:
    """How each cost grows with store size (and chain depth, and K)."""
    lines = []
    for workload, key in [
        ("populate", "size"),
        ("populate-files", "size"),
        ("list", "size"),
        ("gc", "size"),
        ("history", "size"),
        ("cached-chain", "size"),
        ("new-chain", "size"),
        ("deep-realize", "depth"),
        ("deep-cached", "depth"),
        ("many-cached", "K"),
    ]:
        s = [e for e in _series(entries, workload, key) if e.metric != "cpu time"]
        if len(s) < 2:
            continue
        lo, hi = s[0], s[-1]
        parts = []
        for lib, label in (("lightstore", "lightstore"), ("pylightnix", "Pylightnix")):
            a, b = lo.median(lib), hi.median(lib)
            if a and b:
                parts.append(f"{label} x{b / a:.2f}")
        factor = hi.param[key] / lo.param[key]
        lines.append(
            f"{workload}: {', '.join(parts)} from {key}={lo.param[key]} to {key}={hi.param[key]}"
            f" ({key} x{factor:g})"
        )
    return lines


# -- targets ------------------------------------------------------------------


@dataclass
class Target:
    name: str
    check: Callable[[list[Entry], dict[str, Any]], tuple[str, str]]


def _status(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _ratio_at_all(workload: str, key: str, need: float) -> Callable[..., tuple[str, str]]:
    def check(entries: list[Entry], plan: dict[str, Any]) -> tuple[str, str]:
        s = [e for e in _series(entries, workload, key) if e.ratio is not None]
        if not s:
            return "n/a", "no baseline figures"
        worst = min(s, key=lambda e: e.ratio or 0.0)
        detail = "; ".join(f"{param_text(e.param)}: {fmt_ratio(e.ratio)}" for e in s)
        return _status((worst.ratio or 0) >= need), detail

    return check


def _ratio_at_largest(
    workload: str, key: str, need: float, metric: str = "time"
) -> Callable[..., tuple[str, str]]:
    def check(entries: list[Entry], plan: dict[str, Any]) -> tuple[str, str]:
        s = [e for e in _series(entries, workload, key) if e.metric == metric]
        if not s or s[-1].ratio is None:
            return "n/a", "no baseline figures"
        e = s[-1]
        return _status((e.ratio or 0) >= need), f"{fmt_ratio(e.ratio)} at {param_text(e.param)}"

    return check


def _one(entries: list[Entry], workload: str, metric: str) -> Entry | None:
    for e in entries:
        if e.workload == workload and e.metric == metric:
            return e
    return None


def _ratio_one(workload: str, metric: str, need: float) -> Callable[..., tuple[str, str]]:
    def check(entries: list[Entry], plan: dict[str, Any]) -> tuple[str, str]:
        e = _one(entries, workload, metric)
        if e is None or e.ratio is None:
            return "n/a", "no baseline figures"
        return _status(e.ratio >= need), (
            f"{fmt_ratio(e.ratio)} ({fmt(e.median('lightstore'), e.unit)} vs "
            f"{fmt(e.median('pylightnix'), e.unit)})"
        )

    return check


def _flat(entries: list[Entry], plan: dict[str, Any]) -> tuple[str, str]:
    s = _series(entries, "cached-chain", "size")
    if len(s) < 2 or not s[0].median("lightstore"):
        return "n/a", "needs two store sizes"
    g = (s[-1].median("lightstore") or 0) / (s[0].median("lightstore") or 1)
    return _status(g <= 1.5), (
        f"lightstore x{g:.2f} from N={s[0].param['size']} to N={s[-1].param['size']} (limit x1.5)"
    )


def _linear_depth(entries: list[Entry], plan: dict[str, Any]) -> tuple[str, str]:
    s = _series(entries, "deep-cached", "depth")
    if len(s) < 2 or not s[0].median("lightstore"):
        return "n/a", "needs two depths"
    per = [(e.median("lightstore") or 0) / e.param["depth"] for e in s]
    g = per[-1] / per[0]
    return _status(g <= 1.5), (
        f"per-stage cost x{g:.2f} from depth {s[0].param['depth']} to {s[-1].param['depth']}"
        " (limit x1.5)"
    )


def _history(entries: list[Entry], plan: dict[str, Any]) -> tuple[str, str]:
    s = _series(entries, "history", "size")
    if not s or s[-1].median("lightstore") is None:
        return "n/a", "not measured"
    t = s[-1].median("lightstore") or 0
    return _status(t < 0.050), f"{fmt(t, 's')} at N={s[-1].param['size']}"


def _populate_floor(entries: list[Entry], plan: dict[str, Any]) -> tuple[str, str]:
    pop = {e.param["size"]: e for e in _series(entries, "populate", "size")}
    base = _series(entries, "populate-files", "size")
    pairs = [
        (
            e.param["size"],
            (pop[e.param["size"]].median("lightstore") or 0) / (e.median("lightstore") or 1),
        )
        for e in base
        if e.param["size"] in pop and pop[e.param["size"]].median("lightstore")
    ]
    if not pairs:
        return "n/a", "not measured"
    detail = "; ".join(f"N={n}: x{r:.2f}" for n, r in pairs)
    return _status(max(r for _, r in pairs) <= 1.5), detail + " (populate / file operations)"


def _big_speed(entries: list[Entry], plan: dict[str, Any]) -> tuple[str, str]:
    e = _one(entries, "hash-big", "throughput")
    if e is None or e.median("lightstore") is None:
        return "n/a", "not measured"
    v = e.median("lightstore") or 0
    size = e.values["lightstore"]["extra"].get("bytes", 0)
    return _status(v >= 3e9), f"{fmt(v, 'B/s')} for {fmt(size, 'bytes')}"


def _big_memory(entries: list[Entry], plan: dict[str, Any]) -> tuple[str, str]:
    e = _one(entries, "hash-big", "peak memory")
    if e is None or e.median("lightstore") is None:
        return "n/a", "not measured"
    v = e.median("lightstore") or 0
    return _status(v < 100 * MiB), f"peak RSS {fmt(v, 'bytes')} (whole process)"


def _same(entries: list[Entry], plan: dict[str, Any]) -> tuple[str, str]:
    b, err = _one(entries, "contention-same", "builds"), _one(entries, "contention-same", "errors")
    if b is None or err is None or "lightstore" not in b.values:
        return "n/a", "not measured"
    builds = b.values["lightstore"]["samples"]
    errors = err.values["lightstore"]["samples"]
    ok = all(x == 1 for x in builds) and all(x == 0 for x in errors)
    return _status(ok), f"builds per run {builds}, errors per run {errors}"


def _distinct(entries: list[Entry], plan: dict[str, Any]) -> tuple[str, str]:
    s = _series(entries, "contention-distinct", "procs")
    if len(s) < 2 or s[0].median("lightstore") is None:
        return "n/a", "not measured"
    one, many = s[0].median("lightstore") or 0, s[-1].median("lightstore") or 0
    return _status(many <= one), (
        f"{s[-1].param['procs']} processes {fmt(many, 's')} vs 1 process {fmt(one, 's')}"
    )


def _disk(metric: str) -> Callable[..., tuple[str, str]]:
    def check(entries: list[Entry], plan: dict[str, Any]) -> tuple[str, str]:
        e = _one(entries, "disk", metric)
        if e is None or e.median("pylightnix") is None or e.median("lightstore") is None:
            return "n/a", "no baseline figures"
        ls, pl = e.median("lightstore") or 0, e.median("pylightnix") or 0
        return _status(ls <= pl / 2), f"{fmt(ls, e.unit)} vs {fmt(pl, e.unit)}"

    return check


TARGETS = [
    Target(
        "cached 20-chain ≥ 20x faster, at every store size",
        _ratio_at_all("cached-chain", "size", 20),
    ),
    Target("cached 20-chain flat in store size (lightstore)", _flat),
    Target("populate ≥ 3x, at every store size", _ratio_at_all("populate", "size", 3)),
    Target("populate within 1.5x of its file operations, at every store size", _populate_floor),
    Target("new 20-chain ≥ 3x, at every store size", _ratio_at_all("new-chain", "size", 3)),
    Target("cached deepest chain ≥ 100x", _ratio_at_largest("deep-cached", "depth", 100)),
    Target("cached deep chain linear in depth (lightstore)", _linear_depth),
    Target("list ≥ 50x at the largest store", _ratio_at_largest("list", "size", 50)),
    Target("gc ≥ 20x at the largest store", _ratio_at_largest("gc", "size", 20)),
    Target(
        "list ≥ 50x at the largest store, CPU time",
        _ratio_at_largest("list", "size", 50, metric="cpu time"),
    ),
    Target(
        "gc ≥ 20x at the largest store, CPU time",
        _ratio_at_largest("gc", "size", 20, metric="cpu time"),
    ),
    Target(
        "stage with the most realizations: cached realize ≥ 30x",
        _ratio_at_largest("many-cached", "K", 30),
    ),
    Target("history query at the largest store under 50 ms", _history),
    Target("big output published at ≥ 3 GB/s", _big_speed),
    Target("big output: peak memory under 100 MiB", _big_memory),
    Target("many small files ≥ 2x", _ratio_one("hash-small", "time after realizer", 2)),
    Target("same stage, 8 processes: one build, zero errors", _same),
    Target("8 processes finish the distinct stages at least as fast as one", _distinct),
    Target("disk per trivial realization ≤ half of Pylightnix's", _disk("bytes per realization")),
    Target(
        "inodes per trivial realization ≤ half of Pylightnix's", _disk("inodes per realization")
    ),
]


def evaluate(entries: list[Entry], plan: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for t in TARGETS:
        status, detail = t.check(entries, plan)
        out.append({"target": t.name, "status": status, "detail": detail})
    return out


def targets_text(results: list[dict[str, str]]) -> str:
    width = max(len(r["target"]) for r in results)
    return "\n".join(
        f"{r['status']:>6}  {r['target'].ljust(width)}  {r['detail']}" for r in results
    )


def markdown(doc: dict[str, Any], entries: list[Entry]) -> str:
    """BENCHMARKS.md: machine, command, figures, growth and targets of one run."""
    m = doc["machine"]
    plan = doc["plan"]
    lines = [
        "# Benchmarks: lightstore and Pylightnix 0.3.0 side by side",
        "",
        "Written by `tools/bench` (see the README); do not edit by hand, re-run instead.",
        "",
        *(
            []
            if doc["full"]
            else [
                "> **Partial run** (small stores or a subset of workloads): figures are",
                "> indicative only. `tools/bench` with no option does the full run.",
                "",
            ]
        ),
        "Every figure is the median of several repetitions; *ratio* says how many times",
        "better lightstore is (Pylightnix time / lightstore time; for throughput the inverse).",
        "Both libraries ran in the same run, on the same machine, with the same stages,",
        "each in fresh stores under a temporary folder.",
        "",
        f"- Machine: {m['line']}",
        f"- Command: `{doc['command']}`",
        f"- Date: {doc['started']} ({doc['duration_s'] / 60:.1f} min)",
        f"- lightstore {doc['versions'].get('lightstore', '?')} ({m.get('commit', '?')}), "
        f"Pylightnix {doc['versions'].get('pylightnix', 'not run')}",
        f"- Store sizes {plan['sizes']}, chain depths {plan['depths']}, K {plan['ks']}, "
        f"{plan['reps']} repetitions; big file {fmt(plan['big_bytes'], 'bytes')}, "
        f"{plan['small_files']} small files; contention {plan['procs']} processes x "
        f"{plan['distinct_each']} stages",
        "",
        "## Figures",
        "",
        table_markdown(entries),
        "",
        "## Growth",
        "",
        *[f"- {g}" for g in doc["growth"]],
        "",
        "## Targets",
        "",
        "| status | target | figures |",
        "|---|---|---|",
        *[f"| {t['status']} | {t['target']} | {t['detail']} |" for t in doc["targets"]],
        "",
        *(
            ["## Failures", "", *[f"- {f}" for f in doc["failures"]], ""]
            if doc.get("failures")
            else []
        ),
        "## Workloads",
        "",
        *[f"- **{w}**: {d}" for w, d in WORKLOADS.items()],
        "",
    ]
    return "\n".join(lines)


# -- redun side by side (tools/bench --redun, tools/bench_redun.py) ---------------------------

#: What each side does in `tools/bench --redun`, for the report (why the work is the same).
REDUN_EQUIVALENCE = [
    "**A stage.** lightstore: a derivation (a config dict, `match_only`) whose realizer "
    'writes `out.txt` ("result\\n") into its output folder. redun: a `@task` whose body '
    "writes a file of the same text into a folder of the run and returns it as a "
    "`redun.File`. Each records the result its own way: lightstore a derivation folder, a "
    "realization folder and catalogue rows; redun call-node, job, argument and value rows in "
    "its sqlite repo, beside the file.",
    "**Chains.** lightstore: stage k's config names stage k-1's derivation; one stage "
    "function declares the chain, realized by `realize1(instantiate(...))` (declaration "
    "included). redun: a task `chain(tag, depth)` calls `step(tag, k, prev)` with the "
    "previous step's File and is run by `scheduler.run(chain(tag, depth))`; that makes one "
    "job more than stages (the `chain` task itself).",
    "**Cached** is the same call again in the same process. redun's default "
    '`check_valid="full"` checks the whole call subtree again (task hashes and the files); '
    '`chain.options(check_valid="shallow")` trusts the top call\'s cached result. lightstore '
    "has one way, measured in both rows.",
    "**Sweep.** lightstore: one stage function declares a `params` stage and N `point` "
    "stages whose configs name it, realized as one closure of N targets by "
    "`realize(instantiate(...))`. redun: a task returns `[point(params(tag), tag, i) for i "
    "in range(N)]`.",
    "**History.** A store of each built once, untimed (one process each): ten stage names "
    "p0..p9 (one task each in redun, with the same body) taking `i` and a pseudo-random "
    "`lr`, realized as one closure (lightstore) or returned by one task (redun). The "
    'question: "results of p3 with lr < 0.05, with their durations" (about 5 % of p3\'s). '
    'lightstore API: `history(store, "p3", fields=["lr"], config=["lr<0.05"])`; SQL: '
    "`SELECT rref, json_extract(config, '$.lr'), duration FROM history WHERE name = ? AND "
    "json_extract(config, '$.lr') < ?`. redun API: `CallGraphQuery(session)"
    '.filter_types({"Job"}).filter_task_names(["<namespace>.p3"])` (the query behind '
    "`redun log --task`), then each job's `call_node.arguments` (`value_parsed`) and "
    "`job.duration`; the ORM session is emptied before each question, which otherwise "
    "answers from what it loaded. redun SQL: `task` JOIN `call_node` JOIN `argument` (`lr`) "
    "JOIN `value` JOIN `job` on the indexed columns; arguments are pickled, so `lr` is "
    "unpickled and compared in Python and the duration computed from the job's start and "
    "end.",
    "**Disk** per result: allocated blocks and inodes of the whole store folder after the "
    "history store was built, less the empty store's: lightstore's tree and catalogue (WAL "
    "checkpointed); redun's sqlite repo and the files its tasks wrote.",
    "**Settings.** Each library at its defaults in a fresh store per process. redun's sqlite "
    "repo (SQLite's defaults: rollback journal, `synchronous=FULL`) commits, and syncs, "
    "several times per job, so its wall time includes waiting for the disk and for its "
    "executor threads; CPU time (of the measuring process, all threads) does not. Turned "
    "off or raised for "
    "redun: its INFO log line per job, and Python's recursion limit, which its 200-deep "
    "chain exceeds (RecursionError) when it hashes the nested task calls.",
    "**Checks.** Each timed call counts the stage bodies it ran: a new workload must run "
    "every stage, a cached one none, and both sides must find the same history rows; the "
    "run reports any difference as a problem.",
]


#: What the design of each side means for the rows, whatever the figures of a run.
REDUN_READING = [
    '**Cached deep chain, `check_valid="shallow"`**: redun looks up one call (the top '
    "`chain` call) and checks only its result file; lightstore declares every stage again "
    "(each config hashed) and finds each in its catalogue, so its cost grows with the depth "
    "and redun's does not.",
    '**`check_valid="full"`** (redun\'s default) evaluates the `chain` task again and '
    "looks up every call of its subtree in the repo, recording a cached job for each (21 "
    "job records for a 20-stage chain, against 1 with `shallow`).",
    "**Disk**: lightstore keeps each result as folders and files (derivation folder with "
    "config.json, realization folder with context.json and the output: 5 inodes) plus "
    "catalogue rows; redun keeps rows in one sqlite file and the output file (1 inode).",
]


def _redun_value(r: dict[str, Any], lib: str) -> str:
    v = r[lib]
    return f"{v:.2f}" if r["unit"] == "count" else fmt(v, r["unit"])


def _redun_cells(r: dict[str, Any]) -> list[str]:
    return [
        r["label"],
        r["metric"],
        _redun_value(r, "lightstore"),
        _redun_value(r, "redun"),
        "-"
        if r["ratio"] is None
        else f"{r['ratio']:.2f}x"
        if r["ratio"] < 10
        else fmt_ratio(r["ratio"]),
        r["status"],
    ]


def redun_table_text(doc: dict[str, Any]) -> str:
    """The redun comparison as a plain-text table."""
    head = ["workload", "time", "lightstore", "redun", "ratio", f"goal >= {doc['goal']:g}x"]
    rows = [head, *(_redun_cells(r) for r in doc["rows"])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for n, r in enumerate(rows):
        cells = [
            c.rjust(w) if 2 <= i <= 4 else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def redun_markdown(doc: dict[str, Any]) -> str:
    """The BENCHMARKS.md section of `tools/bench --redun`."""
    m, plan, v = doc["machine"], doc["plan"], doc["versions"]
    reps = ", ".join(f"{k} {n}" for k, n in plan["reps"].items())
    hist = doc.get("history", {})
    built = "; ".join(
        f"{lib} {fmt(h['cpu'] / plan['results'], 's')} CPU ({fmt(h['wall'] / plan['results'], 's')} wall)"
        for lib, h in hist.items()
    )
    answers = doc.get("answers", {}).get("lightstore", {})
    found = (
        f" The history question finds {answers['history-api']} of p3's "
        f"{plan['results'] // 10} results on each side."
        if "history-api" in answers
        else ""
    )
    lines = [
        f"## redun {v.get('redun', '?')} side by side (`tools/bench --redun`)",
        "",
        "Written by `tools/bench --redun` (tools/bench_redun.py); re-run instead of editing.",
        "redun (insitro's memoized tasks in a SQLite call graph) is the closest modern peer;",
        "it is installed into a scratch venv, never a dependency of lightstore.",
        "",
        *(
            []
            if doc["full"]
            else ["> **Partial run** (small sizes or fewer rounds): figures are indicative.", ""]
        ),
        f"- Machine: {m['line']}",
        f"- Command: `{doc['command']}`; started {doc['started']}, took "
        f"{doc['duration_s'] / 60:.1f} min; load average {doc['load'][0]:.1f} at the start, "
        f"{doc['load'][1]:.1f} at the end",
        f"- lightstore {v.get('lightstore', '?')} ({m.get('commit', '?')}), redun "
        f"{v.get('redun', '?')}",
        f"- {plan['rounds']} rounds of one process per side, in the order lightstore, redun, "
        "lightstore, redun, ...; each process works on fresh stores and repeats each workload "
        f"({reps}). Figures are medians of every sample of a side: CPU time of the measuring "
        "process, and wall time.",
        f"- ratio = redun / lightstore (> 1: lightstore is faster or smaller); goal: "
        f"≥ {doc['goal']:g}x.",
        "",
        f"| workload | time | lightstore | redun | ratio | goal ≥ {doc['goal']:g}x |",
        "|---|---|---:|---:|---:|---|",
        *["| " + " | ".join(_redun_cells(r)) + " |" for r in doc["rows"]],
        "",
        f"Building each history store of {plan['results']} results, one process each (not "
        f"interleaved), per result: {built}.{found}",
        "",
        *(
            ["Problems found by the run:", "", *[f"- {p}" for p in doc["problems"]], ""]
            if doc.get("problems")
            else []
        ),
        "### Reading the rows",
        "",
        *[f"- {text}" for text in REDUN_READING],
        "",
        "### What each side does",
        "",
        *[f"- {text}" for text in REDUN_EQUIVALENCE],
        "",
    ]
    return "\n".join(lines)
