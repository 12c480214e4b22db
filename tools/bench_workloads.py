"""The workloads of tools/bench, run against one library in that library's own interpreter.

Usage (the driver, tools/bench_driver.py, runs this; it is not meant to be
called by hand)::

    python tools/bench_workloads.py --lib lightstore|pylightnix COMMAND [options]

Lightstore lives in the project venv and Pylightnix 0.3.0 in a scratch venv,
so each library's half of a benchmark runs as a subprocess of the driver.
Both halves run this same file: the stages and the data are identical, and
the few calls that differ between the libraries are in `Lib`. Each command
prints one JSON document on stdout: ``{"lib", "version", "records": [...]}``,
a record being one metric of one workload at one parameter with its samples.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any

from bench_common import (
    MiB,
    disk_usage,
    emit,
    force_rmtree,
    log,
    peak_rss_bytes,
    repeat,
    repeat_both,
    touch,
    wait_for,
)

#: The stage name and `lr` bound of the history query (one name in ten, lr < 0.05).
HISTORY_NAME = "p3"
HISTORY_LR = 0.05
CHAIN = 20


class Lib:
    """One library under test: its module and the few calls that differ between the two."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.L: Any = importlib.import_module(name)
        self.version = str(getattr(self.L, "__version__", "?"))

    def fresh(self, root: str) -> Any:
        """A new, empty store at `root`; returns its storage settings."""
        S = self.L.mkSS(root)
        self.L.fsinit(S, remove_existing=True)
        return S

    def settings(self, root: str) -> Any:
        return self.L.mkSS(root)

    def realize(self, stage: Callable[..., Any], S: Any) -> str:
        """What a user does: declare the stage (instantiate) and realize it."""
        return str(self.L.realize1(self.L.instantiate(stage, S=S)))

    def list_all(self, S: Any) -> list[str]:
        return list(self.L.allrrefs(S))

    def gc_plan(self, S: Any, keep_dref: str, keep_rref: str) -> Any:
        return self.L.store_gc([keep_dref], [keep_rref], S)

    def closure(self, S: Any, rref: str) -> set[str]:
        return set(self.L.rrefdeps([rref], S))

    def history(self, S: Any, name: str, lr: float) -> list[str]:
        """Realizations of stage `name` whose config's `lr` is below `lr`."""
        if self.name == "lightstore":
            store = self.L.Store.open(S.root)
            rows = store.catalogue.query(
                "SELECT rref FROM history WHERE name = ? AND json_extract(config, '$.lr') < ?",
                (name, lr),
            )
            return [r for (r,) in rows]
        # Pylightnix has no index: scan the derivations (the name is in the folder name).
        found: list[str] = []
        for dref in self.L.alldrefs(S):
            if self.L.undref(dref)[1] != name:
                continue
            if self.L.cfgdict(self.L.drefcfg_(dref, S)).get("lr", 1.0) < lr:
                found.extend(self.L.drefrrefs(dref, S))
        return found

    def count_realizations(self, S: Any, name: str) -> int:
        return sum(
            len(self.L.drefrrefs(d, S)) for d in self.L.alldrefs(S) if self.L.undref(d)[1] == name
        )

    def disk(self, root: str) -> dict[str, int]:
        """Disk use of a store; lightstore's WAL is checkpointed first (it is transient)."""
        catalogue = os.path.join(root, "catalogue.sqlite")
        if self.name == "lightstore" and os.path.exists(catalogue):
            conn = sqlite3.connect(catalogue)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
        usage = disk_usage(root)
        cat = sum(
            os.lstat(p).st_blocks * 512
            for p in (catalogue, catalogue + "-wal", catalogue + "-shm")
            if os.path.exists(p)
        )
        usage["catalogue_bytes"] = cat
        return usage


# -- stages -------------------------------------------------------------------


def write_file(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def trivial(lib: Lib, config: dict[str, Any], matcher: Any = None) -> Callable[..., Any]:
    """A stage whose realizer writes one small file."""
    L = lib.L

    def stage(r: Any) -> Any:
        def build(b: Any) -> None:
            write_file(os.path.join(L.build_outpath(b), "out.txt"), "result\n")

        return L.mkdrv(
            L.mkconfig(dict(config)), matcher or L.match_only(), L.build_wrapper(build), r
        )

    return stage


def chain(lib: Lib, depth: int, tag: str) -> Callable[..., Any]:
    """A stage declaring `depth` trivial stages, each depending on the previous one."""
    L = lib.L

    def build(b: Any) -> None:
        write_file(os.path.join(L.build_outpath(b), "out.txt"), "result\n")

    def stage(r: Any) -> Any:
        prev = None
        for k in range(depth):
            config: dict[str, Any] = {"name": "chain", "tag": tag, "k": k}
            if prev is not None:
                config["prev"] = prev
            prev = L.mkdrv(L.mkconfig(config), L.match_only(), L.build_wrapper(build), r)
        return prev

    return stage


def populate_stage(lib: Lib, i: int) -> Callable[..., Any]:
    """The i-th independent stage of a populated store: ten names, a pseudo-random `lr`."""
    lr = ((i * 7919) % 10007) / 10007
    return trivial(lib, {"name": f"p{i % 10}", "i": i, "lr": lr})


def many_stage(lib: Lib, k: int) -> Callable[..., Any]:
    """A `match_latest(1)` stage whose one build makes `k` distinct realizations."""
    L = lib.L

    def build(b: Any) -> None:
        for j, out in enumerate(L.build_outpaths(b)):
            write_file(os.path.join(out, "out.txt"), f"{j}\n")

    def stage(r: Any) -> Any:
        return L.mkdrv(
            L.mkconfig({"name": "many", "k": k}),
            L.match_latest(1),
            L.build_wrapper(build, nouts=k),
            r,
        )

    return stage


class FileOperations:
    """Exactly the file operations one trivial realization needs, and nothing else.

    No catalogue, no locks, no hashing: create the derivation folder; write its
    config to a temporary file, make it read-only and rename it into place;
    make a build folder, write the realizer's one file, make it read-only,
    write context.json read-only, rename the folder into place and make it
    read-only. The layout is the store's (objects/<H>-<name>/<R>, tmp/), on
    the same filesystem, so `populate` can be compared with it side by side.
    """

    def __init__(self, root: str) -> None:
        self.objects = os.path.join(root, "objects")
        self.tmp = os.path.join(root, "tmp")
        os.makedirs(self.objects, exist_ok=True)
        os.makedirs(self.tmp, exist_ok=True)
        self.done = 0

    def names(self, n: int) -> list[tuple[str, str, str, str]]:
        """Paths for the next `n` realizations (computed before the clock starts)."""
        out = []
        for i in range(self.done, self.done + n):
            h = hashlib.blake2b(f"d{i}".encode(), digest_size=16).hexdigest()
            r = hashlib.blake2b(f"r{i}".encode(), digest_size=16).hexdigest()
            dfolder = os.path.join(self.objects, f"{h}-p{i % 10}")
            text = json.dumps({"i": i, "lr": 0.5, "name": f"p{i % 10}"}, separators=(",", ":"))
            out.append((dfolder, os.path.join(dfolder, r), os.path.join(self.tmp, f"b{i}"), text))
        self.done += n
        return out

    def realize(self, dfolder: str, target: str, area: str, config: str) -> None:
        os.mkdir(dfolder)
        staged = area + ".config"
        write_file(staged, config)
        os.chmod(staged, 0o444)
        os.rename(staged, os.path.join(dfolder, "config.json"))
        os.mkdir(area)
        out = os.path.join(area, "out.txt")
        write_file(out, "result\n")
        os.chmod(out, 0o444)
        fd = os.open(
            os.path.join(area, "context.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444
        )
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("{}")
        os.rename(area, target)
        os.chmod(target, 0o555)

    def time_per_realization(self, n: int) -> float:
        batch = self.names(n)
        t0 = time.perf_counter()
        for paths in batch:
            self.realize(*paths)
        return (time.perf_counter() - t0) / n


# -- records ------------------------------------------------------------------


class Recorder:
    def __init__(self, lib: Lib, only: set[str] | None) -> None:
        self.lib = lib
        self.only = only
        self.records: list[dict[str, Any]] = []

    def wanted(self, workload: str) -> bool:
        return self.only is None or workload in self.only

    def add(
        self,
        workload: str,
        metric: str,
        samples: list[float],
        unit: str,
        param: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        self.records.append(
            {
                "workload": workload,
                "metric": metric,
                "param": param or {},
                "unit": unit,
                "samples": samples,
                "extra": extra,
            }
        )

    def answer(self) -> None:
        emit({"lib": self.lib.name, "version": self.lib.version, "records": self.records})


# -- groups -------------------------------------------------------------------


def run_scaling(lib: Lib, rec: Recorder, tmp: str, sizes: list[int], reps: int) -> None:
    """Grow one store through `sizes`; at each size measure every per-store-size workload.

    The store grows by populating; the per-size workloads add a few chains
    (20 realizations each), so "a store of N" holds N populated realizations
    plus at most a few hundred others.
    """
    root = os.path.join(tmp, f"{lib.name}-scaling")
    S = lib.fresh(root)
    empty = lib.disk(root)
    done = 0
    kept: tuple[str, str] | None = None
    # The file-operations floor, timed between populate batches (same moment, same disk).
    files = (
        FileOperations(os.path.join(tmp, f"{lib.name}-files")) if lib.name == "lightstore" else None
    )
    for size in sizes:
        param = {"size": size}
        batch = max(1, (size - done) // 10)
        per_realization: list[float] = []
        per_files: list[float] = []
        log(f"[{lib.name}] populate to {size}")
        while done < size:
            n = min(batch, size - done)
            stages = [populate_stage(lib, i) for i in range(done, done + n)]
            t0 = time.perf_counter()
            for stage in stages:
                lib.realize(stage, S)
            per_realization.append((time.perf_counter() - t0) / n)
            if files is not None and rec.wanted("populate-files"):
                per_files.append(files.time_per_realization(min(n, 1000)))
            done += n
        if rec.wanted("populate"):
            rec.add("populate", "time per realization", per_realization, "s", param)
        if per_files:
            rec.add("populate-files", "time per realization", per_files, "s", param)
        if rec.wanted("disk") and size == sizes[0]:
            usage = lib.disk(root)
            per = {k: (usage[k] - empty[k]) / size for k in usage}
            rec.add("disk", "bytes per realization", [per["bytes"]], "bytes", param, **per)
            rec.add("disk", "inodes per realization", [per["inodes"]], "count", param)
        if kept is None:
            keep = chain(lib, CHAIN, "kept")
            kept_rref = lib.realize(keep, S)
            kept = (str(lib.L.rref2dref(kept_rref)), kept_rref)
        measure_at_size(lib, rec, S, size, reps, kept)


def measure_at_size(
    lib: Lib, rec: Recorder, S: Any, size: int, reps: int, kept: tuple[str, str]
) -> None:
    """The workloads that depend on the store size, on a store of `size`."""
    param = {"size": size}
    if rec.wanted("list"):
        log(f"[{lib.name}] list at {size}")
        answer: list[int] = []
        wall, cpu = repeat_both(lambda: answer.append(len(lib.list_all(S))), reps)
        rec.add("list", "time", wall, "s", param, answer=answer[-1])
        rec.add("list", "cpu time", cpu, "s", param)
    if rec.wanted("gc"):
        log(f"[{lib.name}] gc plan at {size}")
        wall, cpu = repeat_both(lambda: lib.gc_plan(S, *kept), reps)
        rec.add("gc", "time", wall, "s", param)
        rec.add("gc", "cpu time", cpu, "s", param)
    if rec.wanted("history"):
        log(f"[{lib.name}] history at {size}")
        found: list[int] = []
        samples = repeat(lambda: found.append(len(lib.history(S, HISTORY_NAME, HISTORY_LR))), reps)
        rec.add("history", "time", samples, "s", param, answer=found[-1])
    if rec.wanted("cached-chain"):
        log(f"[{lib.name}] cached chain at {size}")
        samples = repeat(lambda: lib.realize(chain(lib, CHAIN, "kept"), S), reps)
        rec.add("cached-chain", "time", samples, "s", param)
    if rec.wanted("new-chain"):
        log(f"[{lib.name}] new chain at {size}")
        samples = []
        for k in range(reps):
            stage = chain(lib, CHAIN, f"new-{size}-{k}")
            t0 = time.perf_counter()
            lib.realize(stage, S)
            samples.append(time.perf_counter() - t0)
        rec.add("new-chain", "time", samples, "s", param)


def run_deep(lib: Lib, rec: Recorder, tmp: str, depths: list[int], reps: int) -> None:
    """Realize fresh chains of each depth, re-realize one, and take the closure of the deepest."""
    S = lib.fresh(os.path.join(tmp, f"{lib.name}-deep"))
    last = ""
    for depth in depths:
        param = {"depth": depth}
        log(f"[{lib.name}] deep chain of {depth}")
        samples = []
        for k in range(reps):
            t0 = time.perf_counter()
            rref = lib.realize(chain(lib, depth, f"deep-{depth}-{k}"), S)
            samples.append(time.perf_counter() - t0)
            if k == 0:
                last = rref
        if rec.wanted("deep-realize"):
            rec.add("deep-realize", "time", samples, "s", param)
        if rec.wanted("deep-cached"):
            samples = repeat(lambda d=depth: lib.realize(chain(lib, d, f"deep-{d}-0"), S), reps)
            rec.add("deep-cached", "time", samples, "s", param)
    if rec.wanted("closure"):
        size: list[int] = []
        samples = repeat(lambda: size.append(len(lib.closure(S, last))), reps)
        rec.add("closure", "time", samples, "s", {"depth": depths[-1]}, answer=size[-1])


def run_many(lib: Lib, rec: Recorder, tmp: str, ks: list[int], reps: int) -> None:
    """A cached realize of a match_latest(1) stage holding K realizations."""
    S = lib.fresh(os.path.join(tmp, f"{lib.name}-many"))
    for k in ks:
        log(f"[{lib.name}] one stage with {k} realizations")
        t0 = time.perf_counter()
        lib.realize(many_stage(lib, k), S)
        build = time.perf_counter() - t0
        samples = repeat(lambda k=k: lib.realize(many_stage(lib, k), S), reps)
        rec.add("many-cached", "time", samples, "s", {"K": k}, setup_s=build)


def run_hash(lib: Lib, rec: Recorder, tmp: str, kind: str, nbytes: int, nfiles: int) -> None:
    """Publish one big file or many small ones, in this fresh process; time after the realizer."""
    L = lib.L
    root = os.path.join(tmp, f"{lib.name}-hash-{kind}-{os.getpid()}")
    S = lib.fresh(root)
    marks: dict[str, float] = {}

    def build(b: Any) -> None:
        out = L.build_outpath(b)
        if kind == "big":
            block = memoryview(os.urandom(4 * MiB))
            with open(os.path.join(out, "big.bin"), "wb") as f:
                left = nbytes
                while left > 0:
                    n = min(left, len(block))
                    f.write(block[:n])
                    left -= n
        else:
            per_dir = 1000
            for j in range(nfiles):
                folder = os.path.join(out, f"d{j // per_dir:03d}")
                if j % per_dir == 0:
                    os.mkdir(folder)
                with open(os.path.join(folder, f"f{j:05d}.bin"), "wb") as f:
                    f.write(j.to_bytes(8, "little") * 512)
        # Written data reaches the disk before the clock starts: a real realizer
        # runs long enough for that, and writeback would otherwise add noise.
        os.sync()
        marks["done"] = time.perf_counter()

    def stage(r: Any) -> Any:
        config = {"name": f"hash-{kind}", "bytes": nbytes, "files": nfiles}
        return L.mkdrv(L.mkconfig(config), L.match_only(), L.build_wrapper(build), r)

    before = peak_rss_bytes()
    lib.realize(stage, S)
    elapsed = time.perf_counter() - marks["done"]
    peak = peak_rss_bytes()
    total = nbytes if kind == "big" else nfiles * 4096
    workload = f"hash-{kind}"
    rec.add(workload, "time after realizer", [elapsed], "s", {}, bytes=total)
    rec.add(workload, "throughput", [total / elapsed], "B/s", {}, bytes=total)
    rec.add(workload, "peak memory", [float(peak)], "bytes", {}, before_realize=before)
    force_rmtree(root)


def run_contend(lib: Lib, args: argparse.Namespace) -> None:
    """One of several processes realizing into one store, started together by a barrier."""
    S = lib.settings(args.root)
    L = lib.L
    if args.mode == "same":

        def build(b: Any) -> None:
            with open(args.log, "a", encoding="utf-8") as f:
                f.write(f"{os.getpid()}\n")
            # Long enough for every process to arrive while the build runs; the
            # output is not deterministic, like a training run.
            time.sleep(args.hold)
            write_file(os.path.join(L.build_outpath(b), "out.txt"), os.urandom(8).hex())

        def same(r: Any) -> Any:
            return L.mkdrv(L.mkconfig({"name": "same"}), L.match_only(), L.build_wrapper(build), r)

        stages = [same]
    else:
        stages = [
            trivial(lib, {"name": "distinct", "w": args.worker, "i": i}) for i in range(args.count)
        ]
    touch(os.path.join(args.ready, str(args.worker)))
    wait_for(args.go, timeout=600)
    errors: list[str] = []
    start = time.time()
    for stage in stages:
        try:
            lib.realize(stage, S)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    stop = time.time()
    emit({"lib": lib.name, "worker": args.worker, "start": start, "stop": stop, "errors": errors})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lib", required=True, choices=["lightstore", "pylightnix"])
    p.add_argument("--only", default="", help="comma-separated workloads to record")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("scaling")
    s.add_argument("--tmp", required=True)
    s.add_argument("--sizes", required=True)
    s.add_argument("--reps", type=int, default=5)
    s = sub.add_parser("deep")
    s.add_argument("--tmp", required=True)
    s.add_argument("--depths", required=True)
    s.add_argument("--reps", type=int, default=5)
    s = sub.add_parser("many")
    s.add_argument("--tmp", required=True)
    s.add_argument("--ks", required=True)
    s.add_argument("--reps", type=int, default=5)
    s = sub.add_parser("hash")
    s.add_argument("--tmp", required=True)
    s.add_argument("--kind", required=True, choices=["big", "small"])
    s.add_argument("--bytes", type=int, default=0)
    s.add_argument("--files", type=int, default=0)
    s = sub.add_parser("init")
    s.add_argument("--root", required=True)
    s = sub.add_parser("count")
    s.add_argument("--root", required=True)
    s.add_argument("--name", required=True)
    s = sub.add_parser("contend")
    s.add_argument("--root", required=True)
    s.add_argument("--mode", required=True, choices=["same", "distinct"])
    s.add_argument("--worker", type=int, required=True)
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--ready", required=True)
    s.add_argument("--go", required=True)
    s.add_argument("--log", default=os.devnull)
    s.add_argument("--hold", type=float, default=0.5)
    args = p.parse_args(argv)

    lib = Lib(args.lib)
    rec = Recorder(lib, {w for w in args.only.split(",") if w} or None)
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    if args.command == "scaling":
        run_scaling(lib, rec, args.tmp, ints(args.sizes), args.reps)
    elif args.command == "deep":
        run_deep(lib, rec, args.tmp, ints(args.depths), args.reps)
    elif args.command == "many":
        run_many(lib, rec, args.tmp, ints(args.ks), args.reps)
    elif args.command == "hash":
        run_hash(lib, rec, args.tmp, args.kind, args.bytes, args.files)
    elif args.command == "init":
        lib.fresh(args.root)
    elif args.command == "count":
        rec.add(
            "count",
            "realizations",
            [lib.count_realizations(lib.settings(args.root), args.name)],
            "count",
        )
    elif args.command == "contend":
        run_contend(lib, args)
        return
    rec.answer()


if __name__ == "__main__":
    sys.exit(main())
