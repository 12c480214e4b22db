"""Profile one benchmark workload with cProfile: the setup runs unprofiled, then the measured part.

Usage (from the repository root)::

    .venv/bin/python tools/bench_profile.py WORKLOAD [--size N] [--depth D] [--k K]
        [--reps R] [--sort cumtime|tottime] [--lines 40] [--lib lightstore]

WORKLOAD is one of populate, list, gc, history, cached-chain, new-chain,
deep-realize, deep-cached, closure, many-cached, hash-big, hash-small. The
stages are those of tools/bench (tools/bench_workloads.py); the store is a
fresh one in a temporary folder, removed afterwards. Use it to see where a
figure of BENCHMARKS.md goes, and to check a fix.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench_common import MiB, force_rmtree, log
from bench_workloads import (
    CHAIN,
    HISTORY_LR,
    HISTORY_NAME,
    Lib,
    chain,
    many_stage,
    populate_stage,
)


def setup(lib: Lib, args: argparse.Namespace, root: str) -> Callable[[], Any]:
    """Prepare the store for `args.workload`; return the operation to profile."""
    S = lib.fresh(root)
    w = args.workload

    def populate(n: int) -> None:
        for i in range(n):
            lib.realize(populate_stage(lib, i), S)

    if w == "populate":
        lib.realize(populate_stage(lib, -1), S)
        counter = iter(range(10**9))
        return lambda: lib.realize(populate_stage(lib, next(counter)), S)
    if w in ("list", "gc", "history", "cached-chain", "new-chain"):
        populate(args.size)
        rref = lib.realize(chain(lib, CHAIN, "kept"), S)
        dref = str(lib.L.rref2dref(rref))
        fresh = iter(range(10**9))
        return {
            "list": lambda: lib.list_all(S),
            "gc": lambda: lib.gc_plan(S, dref, rref),
            "history": lambda: lib.history(S, HISTORY_NAME, HISTORY_LR),
            "cached-chain": lambda: lib.realize(chain(lib, CHAIN, "kept"), S),
            "new-chain": lambda: lib.realize(chain(lib, CHAIN, f"new-{next(fresh)}"), S),
        }[w]
    if w in ("deep-realize", "deep-cached", "closure"):
        last = lib.realize(chain(lib, args.depth, "deep"), S)
        fresh = iter(range(10**9))
        return {
            "deep-realize": lambda: lib.realize(chain(lib, args.depth, f"d{next(fresh)}"), S),
            "deep-cached": lambda: lib.realize(chain(lib, args.depth, "deep"), S),
            "closure": lambda: lib.closure(S, last),
        }[w]
    if w == "many-cached":
        lib.realize(many_stage(lib, args.k), S)
        return lambda: lib.realize(many_stage(lib, args.k), S)
    if w in ("hash-big", "hash-small"):
        L = lib.L
        kind = w.split("-")[1]
        counter = iter(range(10**9))

        def build(b: Any) -> None:
            out = L.build_outpath(b)
            if kind == "big":
                block = os.urandom(4 * MiB)
                with open(os.path.join(out, "big.bin"), "wb") as f:
                    for _ in range(args.megabytes // 4):
                        f.write(block)
            else:
                for j in range(args.files):
                    folder = os.path.join(out, f"d{j // 1000:03d}")
                    if j % 1000 == 0:
                        os.mkdir(folder)
                    with open(os.path.join(folder, f"f{j:05d}.bin"), "wb") as f:
                        f.write(j.to_bytes(8, "little") * 512)
            os.sync()

        def stage(r: Any) -> Any:
            config = {"name": w, "n": next(counter)}
            return L.mkdrv(L.mkconfig(config), L.match_only(), L.build_wrapper(build), r)

        return lambda: lib.realize(stage, S)
    raise SystemExit(f"unknown workload {w!r}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workload")
    p.add_argument("--lib", default="lightstore", choices=["lightstore", "pylightnix"])
    p.add_argument("--size", type=int, default=1000, help="store size (list, gc, history, chains)")
    p.add_argument("--depth", type=int, default=200)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--megabytes", type=int, default=1024, help="hash-big file size")
    p.add_argument("--files", type=int, default=20000, help="hash-small file count")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--sort", default="cumtime")
    p.add_argument("--lines", type=int, default=40)
    p.add_argument("--out", help="also save the raw profile here")
    args = p.parse_args()
    lib = Lib(args.lib)
    tmp = tempfile.mkdtemp(prefix="lightstore-profile-")
    try:
        op = setup(lib, args, os.path.join(tmp, "store"))
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        for _ in range(args.reps):
            prof.runcall(op)
        elapsed = time.perf_counter() - t0
        log(f"{args.workload} ({lib.name}): {elapsed / args.reps * 1e3:.3f} ms per call, profiled")
        if args.out:
            prof.dump_stats(args.out)
        pstats.Stats(prof, stream=sys.stdout).sort_stats(args.sort).print_stats(args.lines)
    finally:
        force_rmtree(tmp)


if __name__ == "__main__":
    main()
