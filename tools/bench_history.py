#!/usr/bin/env python3
"""How fast `lightstore history` and `ls` answer on a big store.

Builds a store of N realizations (default 50,000) by writing catalogue rows
directly through the catalogue API in big transactions -- the tree is not
needed by history or ls, which read only the catalogue -- shaped like a
hyperparameter sweep:

    prepare  (N/250 datasets)  <-  train (80%: lr, seed, dataset)  <-  eval (the rest)

with builds spread over the last 60 days. It then times, through the same
read-only view the command line uses, the filtered history query ("train
runs with lr < 1e-3 started in the last week, with lr and seed"), the same
filter as raw `--where` SQL, the newest 20, `ls` of derivations and
realizations, `du` and a prefix lookup; and the whole command in a fresh
process. Prints one line per query: rows, first call, median of the rest.

Usage: .venv/bin/python tools/bench_history.py [--realizations 50000] [--root DIR] [--repeat 5]
(an existing store given with --root is measured as it is)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from lightstore.catalogue import NewDerivation, NewRealization
from lightstore.facade import Store
from lightstore.foundation.refs import DRef, RRef, mkdref, mkrref
from lightstore.query import derivations, disk_usage, history, open_view, resolve

DAY = 86400.0
BATCH = 10_000
LRS = [10.0**-k for k in range(1, 6)] + [3 * 10.0**-k for k in range(2, 6)]


def _hex(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _drv(kind: str, i: int, config: dict[str, Any], deps: list[DRef]) -> NewDerivation:
    config = {"name": kind, **config}
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return NewDerivation(mkdref(_hex(text), kind), kind, text, deps)


def build(store: Store, n: int, seed: int = 1) -> dict[str, int]:
    """Record `n` realizations (and their derivations) in `store`; return counts.

    As in a real store, each realization finishes after the ones it depends
    on, and rows are recorded in the order they finished.
    """
    rnd = random.Random(seed)
    now = time.time()
    start = now - 60 * DAY
    n_prep = max(1, n // 250)
    n_train = (n - n_prep) * 4 // 5
    n_eval = n - n_prep - n_train
    # (finish time, derivation, realization): sorted by time before recording.
    done: list[tuple[float, NewDerivation, NewRealization]] = []

    def realize(d: NewDerivation, deps: list[tuple[RRef, float]], i: int) -> tuple[RRef, float]:
        after = max((t for _, t in deps), default=start)
        stopped = rnd.uniform(after, now) if deps else start + rnd.uniform(0, DAY)
        duration = min(rnd.uniform(0.5, 3600.0), stopped - after)
        ctx = {str(d.deps[0]): [str(deps[0][0])]} if deps else {}
        ctx_text = json.dumps(ctx, sort_keys=True, separators=(",", ":"))
        r = mkrref(_hex(f"{d.dref}/{i}"), d.dref.split(":")[1][:32], d.name)
        record = NewRealization(
            r,
            d.dref,
            ctx_text,
            _hex(ctx_text),
            [str(x) for x, _ in deps],
            rnd.randint(1_000, 50_000_000),
            rnd.randint(1, 40),
            stopped - duration,
            stopped,
        )
        done.append((stopped, d, record))
        return r, stopped

    preps = []
    for i in range(n_prep):
        d = _drv("prepare", i, {"dataset": f"set-{i}", "split": 0.8}, [])
        preps.append((d, realize(d, [], i)))
    trains = []
    for i in range(n_train):
        pd, pr = preps[i % n_prep]
        cfg = {
            "lr": rnd.choice(LRS),
            "seed": i,
            "batch": rnd.choice([32, 64, 128]),
            "data": pd.dref,
        }
        d = _drv("train", i, cfg, [pd.dref])
        trains.append((d, realize(d, [pr], i)))
    for i in range(n_eval):
        td, tr = trains[rnd.randrange(n_train)]
        d = _drv("eval", i, {"model": td.dref, "metric": "auc", "i": i}, [td.dref])
        realize(d, [tr], i)
    done.sort(key=lambda x: x[0])
    derivs = [d for _, d, _ in done]
    reals = [r for _, _, r in done]
    for i in range(0, len(derivs), BATCH):
        store.catalogue.add_derivations(derivs[i : i + BATCH])
    for i in range(0, len(reals), BATCH):
        store.catalogue.add_realizations(reals[i : i + BATCH], None)
    return {"prepare": n_prep, "train": n_train, "eval": n_eval}


def timed(fn: Callable[[], Any], repeat: int) -> tuple[int, float, float]:
    """(rows, first call in ms, median of the next `repeat` calls in ms)."""
    t0 = time.perf_counter()
    result = fn()
    first = (time.perf_counter() - t0) * 1000
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1000)
    return len(result) if hasattr(result, "__len__") else 1, first, statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--realizations", "-n", type=int, default=50_000)
    parser.add_argument("--root", help="store folder (default: a temporary one, removed after)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    tmp = None if args.root else tempfile.mkdtemp(prefix="lightstore-bench-")
    root = args.root or os.path.join(tmp or "", "store")
    try:
        store = Store.open(root, create=True)
        t0 = time.perf_counter()
        have = store.catalogue.column("SELECT count(*) FROM realizations")[0]
        if have:  # an existing --root: measure it as it is
            args.realizations = have
            counts = dict(store.catalogue.query("SELECT name, count(*) FROM history GROUP BY name"))
        else:
            counts = build(store, args.realizations)
        built = time.perf_counter() - t0
        store.catalogue.close()
        size = os.path.getsize(os.path.join(root, "catalogue.sqlite"))
        print(
            f"store: {args.realizations} realizations ({counts}), built in {built:.1f} s; "
            f"catalogue {size / 2**20:.1f} MiB (+ WAL) at {root}"
        )
        view = open_view(root)
        some = view.catalogue.column("SELECT rref FROM realizations LIMIT 1")[0]
        queries: list[tuple[str, Callable[[], Any]]] = [
            (
                "history -n train -c 'lr<1e-3' --since 7d -f lr -f seed",
                lambda: history(
                    view, "train", config=["lr<1e-3"], since="7d", fields=["lr", "seed"]
                ),
            ),
            (
                "history -w \"json_extract(config,'$.lr')<1e-3 AND started>=...\" -f lr",
                lambda: history(
                    view,
                    where="json_extract(config, '$.lr') < 1e-3 "
                    "AND started >= strftime('%s', 'now', '-7 days') + 0",
                    fields=["lr"],
                ),
            ),
            ("history --limit 20", lambda: history(view, limit=20)),
            ("history (all rows)", lambda: history(view)),
            ("ls -n train", lambda: derivations(view, "train")),
            ("ls (all derivations)", lambda: derivations(view)),
            ("ls -r --since 1d", lambda: history(view, since="1d")),
            ("du", lambda: disk_usage(view)),
            ("show PREFIX (resolve 8 hex digits)", lambda: [resolve(view, some[5:13])]),
        ]
        print(f"{'query':<66} {'rows':>7} {'first ms':>9} {'median ms':>10}")
        for label, fn in queries:
            rows, first, median = timed(fn, args.repeat)
            print(f"{label:<66} {rows:>7} {first:>9.1f} {median:>10.1f}")
        view.catalogue.close()
        command = [
            sys.executable, "-m", "lightstore", "--root", root, "history",
            "-n", "train", "-c", "lr<1e-3", "--since", "7d", "-f", "lr", "--csv",
        ]  # fmt: skip
        walls = []
        for _ in range(3):
            t0 = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True, check=True)
            walls.append((time.perf_counter() - t0) * 1000)
        lines = proc.stdout.count("\n") - 1
        print(
            f"{'whole command in a new process (history ... --csv)':<66} {lines:>7} "
            f"{walls[0]:>9.1f} {statistics.median(walls):>10.1f}"
        )
    finally:
        if tmp:
            Store.forget_instances()
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
