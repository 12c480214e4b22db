"""Jobs for child processes: ``python tests/workers.py JOB ARGS...`` (see `helpers.Worker`).

Each job works on a real store and prints one JSON line with what it got. Jobs that
several processes run at once print "ready", then wait for ``ROOT/../go`` to exist, so
the test can release them all at the same instant; jobs that hold something print "held"
and hold it until they read a line on stdin.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

from lightstore import (
    build_metric,
    build_outpath,
    build_path,
    build_wrapper,
    copy_closure,
    instantiate,
    match_latest,
    match_only,
    match_some,
    mkdrv,
    mkSS,
    realize,
    realize1,
    realizeMany,
    selfref,
)
from lightstore.facade import Store
from lightstore.foundation.locks import KeyedLocks


def wait_for_go(root: str) -> None:
    """Say "ready", then wait at the starting line until the test releases every worker."""
    print("ready", flush=True)
    go = os.path.join(os.path.dirname(root), "go")
    while not os.path.exists(go):
        time.sleep(0.002)


def writer(text: str, log: str | None = None, sleep: float = 0.0):
    """A realizer writing `text` to out.txt, recording each run in `log`."""

    def real(b):
        if log:
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\n")
        time.sleep(sleep)
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write(text)

    return real


def same(root: str, log: str, sleep: str) -> dict:
    """Everyone realizes the same deterministic stage."""
    S = mkSS(root)

    def stage(r):
        return mkdrv(
            {"name": "same", "out": [selfref, "out.txt"]},
            match_only(),
            build_wrapper(writer("same", log, float(sleep))),
            r,
        )

    wait_for_go(root)
    t0, c0 = time.monotonic(), time.process_time()
    rref = realize1(instantiate(stage, S=S))
    return {"rref": rref, "wall": time.monotonic() - t0, "cpu": time.process_time() - c0}


def nondet(root: str, log: str, k: str) -> dict:
    """Everyone realizes the same non-deterministic stage with match_some(k), nouts=k."""
    S = mkSS(root)
    n = int(k)

    def real(b):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.2)
        for out in b.outpaths:
            with open(os.path.join(out, "out.txt"), "w") as f:
                f.write(os.urandom(8).hex())

    def stage(r):
        return mkdrv(
            {"name": "nondet", "out": [selfref, "out.txt"]},
            match_some(n),
            build_wrapper(real, nouts=n),
            r,
        )

    wait_for_go(root)
    return {"rrefs": sorted(realizeMany(instantiate(stage, S=S)))}


def distinct(root: str, start: str, count: str) -> dict:
    """Realize `count` distinct small stages."""
    S = mkSS(root)
    store = Store.open(root)
    wait_for_go(root)
    t0 = time.monotonic()
    rrefs = []
    for i in range(int(start), int(start) + int(count)):

        def stage(r, i=i):
            return mkdrv(
                {"name": f"d{i}", "i": i, "out": [selfref, "out.txt"]},
                match_only(),
                build_wrapper(writer(str(i))),
                r,
            )

        rrefs.append(realize1(instantiate(stage, S=S)))
    _ = store
    return {"count": len(rrefs), "wall": time.monotonic() - t0}


def pipeline(root: str, seed: str, rounds: str) -> dict:
    """Realize 3-stage pipelines with random parameters and pin each result."""
    rng = random.Random(int(seed))
    store = Store.open(root)
    S = store.settings
    pinned = []
    for n in range(int(rounds)):
        lr = rng.choice([0.1, 0.01, 0.001])
        shared = rng.randrange(3)

        def stage(r, lr=lr, shared=shared):
            a = mkdrv(
                {"name": "data", "v": shared, "out": [selfref, "out.txt"]},
                match_only(),
                build_wrapper(writer(f"data{shared}")),
                r,
            )

            def train(b):
                with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
                    f.write(f"train {lr} {os.urandom(4).hex()}")

            t = mkdrv(
                {"name": "train", "lr": lr, "data": [a, "out.txt"], "out": [selfref, "out.txt"]},
                match_latest(),
                build_wrapper(train),
                r,
            )
            return mkdrv(
                {"name": "eval", "model": [t, "out.txt"], "out": [selfref, "out.txt"]},
                match_only(),
                build_wrapper(writer("eval")),
                r,
            )

        with store.realizing():  # keeps the result from gc until it is pinned
            rref = realize1(instantiate(stage, S=S))
            name = f"p{seed}-{n}"
            store.pin(name, rref)
        pinned.append([name, rref])
    return {"pinned": pinned}


def churn(root: str, seed: str) -> dict:
    """Realize random stages forever (until killed), sometimes collecting garbage."""
    rng = random.Random(int(seed))
    store = Store.open(root)
    S = store.settings
    print("ready", flush=True)
    while True:
        i = rng.randrange(40)
        size = rng.choice([10, 100_000, 3_000_000])

        def stage(r, i=i, size=size):
            a = mkdrv(
                {"name": "base", "i": i % 5, "out": [selfref, "out.txt"]},
                match_only(),
                build_wrapper(writer(f"b{i % 5}")),
                r,
            )

            def real(b):
                with open(os.path.join(build_outpath(b), "blob"), "wb") as f:
                    f.write(os.urandom(size))
                os.makedirs(os.path.join(build_outpath(b), "sub", "dir"))
                with open(os.path.join(build_outpath(b), "sub", "dir", "f"), "w") as f:
                    f.write("x")

            return mkdrv(
                {"name": "blob", "i": i, "size": size, "dep": [a, "out.txt"]},
                match_latest(),
                build_wrapper(real),
                r,
            )

        realize1(instantiate(stage, S=S))
        if rng.random() < 0.1:
            store.gc()


def crashpoint(root: str, seed: str, collect: str) -> dict:
    """Realize a small pipeline with fresh random content; then maybe collect garbage.

    Run with LIGHTSTORE_FAILPOINT set, this dies at the named point.
    """
    from lightstore.foundation.failpoints import failpoint

    store = Store.open(root)
    S = store.settings

    def real(b):
        with open(os.path.join(build_outpath(b), "part"), "wb") as f:
            f.write(os.urandom(2_000_000))
            failpoint("realizer")
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write(seed)

    def stage(r):
        a = mkdrv(
            {"name": "base", "out": [selfref, "out.txt"]},
            match_only(),
            build_wrapper(writer("base")),
            r,
        )
        return mkdrv(
            {"name": "top", "seed": seed, "dep": [a, "out.txt"], "out": [selfref, "out.txt"]},
            match_latest(),
            build_wrapper(real),
            r,
        )

    rref = realize1(instantiate(stage, S=S))
    if collect == "gc":
        store.gc()
    return {"rref": rref}


def sweep_stage(log: str, branch_s: float, hang_lr: float | None = None):
    """A data stage, 6 train branches (lr) of `branch_s` seconds, an evaluate stage
    with a custom matcher. `hang_lr`: that branch sleeps for a minute (to be killed)."""

    def logged(name: str, body):
        def real(b):
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {name}\n")
            body(b)

        return real

    def data(b):
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write("data")

    def train(lr):
        def body(b):
            time.sleep(60 if lr == hang_lr else branch_s)
            with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
                f.write(f"model {lr}")

        return body

    def newest_first(S, rrefs):  # a custom matcher: any one, in a stable order
        return sorted(rrefs)[:1] or None

    def stage(r):
        d = mkdrv(
            {"name": "data", "out": [selfref, "out.txt"]},
            match_only(),
            build_wrapper(logged("data", data)),
            r,
        )
        models = [
            mkdrv(
                {"name": "train", "lr": lr, "data": [d, "out.txt"], "out": [selfref, "out.txt"]},
                match_only(),
                build_wrapper(logged(f"train{lr}", train(lr))),
                r,
            )
            for lr in (0.1, 0.03, 0.01, 0.003, 0.001, 0.0003)
        ]
        return mkdrv(
            {"name": "evaluate", "models": [[m, "out.txt"] for m in models]},
            newest_first,
            build_wrapper(logged("evaluate", lambda b: None)),
            r,
        )

    return stage


def sweep(root: str, log: str, branch_s: str, hang_lr: str = "") -> dict:
    """Realize the 6-branch sweep; report the chosen RRefs of every derivation and the time."""
    S = mkSS(root)
    stage = sweep_stage(log, float(branch_s), float(hang_lr) if hang_lr else None)
    wait_for_go(root)
    t0 = time.monotonic()
    _, _, ctx = realize(instantiate(stage, S=S))
    return {"context": {d: sorted(r) for d, r in ctx.items()}, "wall": time.monotonic() - t0}


def make_deep(folder: str, depth: int, name: str = "d") -> None:
    """Nest `depth` folders `name` below `folder`, with leaf.txt and a link to it at the bottom.

    Made through directory descriptors, one level at a time, so the total
    path may be longer than PATH_MAX (as a realizer can make it).
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            below = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
        leaf = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
        os.write(leaf, b"the bottom")
        os.close(leaf)
        os.symlink("leaf.txt", "link", dir_fd=fd)
    finally:
        os.close(fd)


def deep(root: str, depth: str, name: str = "d") -> dict:
    """Realize one stage whose output is `depth` folders deep (no waiting for go)."""
    S = mkSS(root)

    def stage(r):
        return mkdrv(
            {"name": "deep", "depth": int(depth), "folder": name},
            match_only(),
            build_wrapper(lambda b: make_deep(build_outpath(b), int(depth), name)),
            r,
        )

    return {"rref": realize1(instantiate(stage, S=S))}


# -- the gc soak: realizers and a collector side by side -------------------------------------


def _reader(text: str, dep_key: str):
    """A realizer that reads its dependency's file: it must exist for the whole build."""

    def real(b):
        parent = build_path(b, b.config[dep_key])
        with open(parent) as f:
            got = f.read()
        time.sleep(0.01)  # widen the window in which a wrong gc would strike
        if not os.path.exists(parent):
            raise RuntimeError(f"{parent} vanished during the build")
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write(text + got[:40])

    return real


def soak_realize(root: str, seconds: str, seed: str) -> dict:
    """Realize new pipelines (a shared parent from a small pool, then two fresh stages) for
    `seconds`."""
    rng = random.Random(int(seed))
    S = mkSS(root)
    deadline = time.monotonic() + float(seconds)
    count = 0
    while time.monotonic() < deadline:
        shared = rng.randrange(4)
        fresh = f"{seed}-{count}-{rng.random()}"

        def stage(r, shared=shared, fresh=fresh):
            parent = mkdrv(
                {"name": "parent", "i": shared, "out": [selfref, "out.txt"]},
                match_only(),
                build_wrapper(writer(f"parent{shared}")),
                r,
            )
            child = mkdrv(
                {
                    "name": "child",
                    "run": fresh,
                    "dep": [parent, "out.txt"],
                    "out": [selfref, "out.txt"],
                },
                match_only(),
                build_wrapper(_reader("child", "dep")),
                r,
            )
            return mkdrv(
                {
                    "name": "leaf",
                    "run": fresh,
                    "dep": [child, "out.txt"],
                    "out": [selfref, "out.txt"],
                },
                match_only(),
                build_wrapper(_reader("leaf", "dep")),
                r,
            )

        realize1(instantiate(stage, S=S))
        count += 1
    return {"pipelines": count}


def soak_collect(root: str, seconds: str, seed: str) -> dict:
    """Pin the newest result and collect garbage in a loop until ``ROOT/../stop`` exists,
    checking after each round that everything pinned is still whole."""
    store = Store.open(root)
    stop = os.path.join(os.path.dirname(root), "stop")
    rounds = removed = 0
    pins: list[str] = []
    while not os.path.exists(stop):
        newest = store.catalogue.column(
            "SELECT rref FROM realizations WHERE rref LIKE '%-leaf' "
            "ORDER BY build_stopped DESC LIMIT 1"
        )
        if newest:
            name = f"keep-{rounds}"
            store.pin(name, newest[0])
            pins.append(name)
            if len(pins) > 3:
                store.unpin(pins.pop(0))
        report = store.gc(timeout=120)
        rounds += 1
        removed += len(report.rrefs)
        # Everything pinned, with its closure, is still whole.
        for name, ref in store.pins().items():
            closure = {ref, *store.catalogue.rrefdeps([ref])}
            present = store.catalogue.known_rrefs(sorted(closure))
            if present != closure:
                raise RuntimeError(
                    f"gc removed part of the closure of pin {name}: {closure - present}"
                )
            for r in closure:
                if not os.path.isdir(store.rref_path(r)):
                    raise RuntimeError(f"the folder of {r} (pinned by {name}) is gone")
        time.sleep(0.05)
    return {"gc_rounds": rounds, "collected": removed, "pins": len(pins)}


# -- remote caches ---------------------------------------------------------------------------


def build(root: str, variant: str) -> dict:
    """Realize the remote tests' pipeline `variant` ("a" or "b": two targets sharing their
    dependencies; "nd": nondeterministic; "many": many files). Remote variables
    ($LIGHTSTORE_PUSH, ...) apply."""
    from remote_helpers import many_files_stage
    from remote_helpers import pipeline as remote_pipeline

    store = Store.open(root, create=True)
    if variant == "many":
        rref = realize1(instantiate(many_files_stage, S=store.settings))
    elif variant == "nd":  # random train and report: every store builds its own
        rref = realize1(instantiate(remote_pipeline, S=store.settings, nondeterministic=True))
    else:
        scale = 1 if variant == "a" else 2
        rref = realize1(instantiate(remote_pipeline, S=store.settings, scale=scale))
    return {"rref": rref}


def push(root: str, url: str, *refs: str) -> dict:
    """Push `refs` to `url`."""
    report = Store.open(root, create=True).push(url, list(refs), jobs=4)
    return {"uploaded": report.uploaded, "blobs": report.blobs_uploaded}


def push_at_go(root: str, url: str, *refs: str) -> dict:
    """Push `refs` to `url` once released."""
    store = Store.open(root, create=True)
    wait_for_go(root)
    report = store.push(url, list(refs), jobs=4)
    return {"uploaded": report.uploaded, "blobs": report.blobs_uploaded}


def pull(root: str, url: str, *refs: str) -> dict:
    """Pull `refs` from `url`."""
    return {"added": Store.open(root, create=True).pull(url, list(refs), jobs=4)}


# -- other stores, metrics, locks, logs ------------------------------------------------------


def copy(src: str, dst: str, *refs: str) -> dict:
    """Copy the closure of `refs` from the store `src` into `dst` (says "start" first)."""
    print("start", flush=True)
    added = copy_closure(list(refs), src, dst)
    print("done", flush=True)
    return {"added": added}


def metrics(root: str, lr: str) -> dict:
    """Realize a train stage recording its loss, and a shared one whose metric it then sets
    ten times."""

    def train(lr, loss):
        def real(b):
            with open(os.path.join(build_outpath(b), "model.txt"), "w") as f:
                f.write(f"lr={lr}\n")
            build_metric(b, "loss", loss)

        return lambda r: mkdrv(
            {"name": "train", "lr": lr, "out": [selfref, "model.txt"]},
            match_only(),
            build_wrapper(real),
            r,
        )

    S = mkSS(root)
    rref = realize1(instantiate(train(float(lr), float(lr) * 2), S=S))
    shared = realize1(instantiate(train(0.5, 1.0), S=S))
    for i in range(10):
        Store.open(root).set_metric(shared, "counter", i)
    return {"rref": rref, "shared": shared}


def hold_key(path: str, key: str) -> dict:
    """Hold `key` of the keyed locks at `path` until released."""
    with KeyedLocks(path).hold(int(key)):
        print("held", flush=True)
        sys.stdin.readline()
    return {}


def hold_build_lock(root: str, dref: str, context_hash: str) -> dict:
    """Hold the build lock of (dref, context_hash) in the store at `root` until released."""
    with Store.open(root).build_lock(dref, context_hash):
        print("held", flush=True)
        sys.stdin.readline()
    return {}


def slow_build(root: str, jobs: str = "0") -> dict:
    """Realize a stage that prints "working", then sleeps a minute (to be killed); with
    `jobs` > 0 on that many worker processes."""

    def stage(r=None):
        def real(b):
            print("working", flush=True)
            time.sleep(60)

        return mkdrv({"name": "slow"}, match_only(), build_wrapper(real), r)

    parallel = {"jobs": int(jobs)} if int(jobs) else {}
    return {"rref": realize1(instantiate(stage, S=mkSS(root)), **parallel)}


# -- Pylightnix's REPL --------------------------------------------------------------------


def repl_pair(root: str) -> dict:
    """Realize the REPL tests' pair n1 <- n2 (waiting for the build lock of a paused session
    of another process)."""
    import lightstore as ls

    def make(b):
        with open(os.path.join(ls.build_outpath(b), "artifact"), "w") as f:
            f.write("other")

    def stage(r):
        n1 = ls.mkdrv(
            ls.mkconfig({"name": "n1", "a": "1"}), ls.match_only(), ls.build_wrapper(make), r
        )
        return ls.mkdrv(
            ls.mkconfig({"name": "n2", "maman": n1}), ls.match_only(), ls.build_wrapper(make), r
        )

    return {"rref": ls.realize1(ls.instantiate(stage, S=ls.mkSS(root)))}


def repl_paused(root: str) -> dict:
    """Pause a REPL session in the middle of a build, say "paused", and wait (to be killed)."""
    import lightstore as ls

    def make(b):
        with open(os.path.join(ls.build_outpath(b), "artifact"), "w") as f:
            f.write("x")

    def stage(r):
        return ls.mkdrv(ls.mkconfig({"name": "k"}), ls.match_only(), ls.build_wrapper(make), r)

    rh = ls.repl_realize(ls.instantiate(stage, S=ls.mkSS(root)), force_interrupt=True)
    b = ls.repl_build(rh)
    with open(os.path.join(ls.build_outpath(b), "half"), "w") as f:
        f.write("half done")
    print("paused", flush=True)
    sys.stdin.read()
    return {}


JOBS = {
    job.__name__: job
    for job in (
        same,
        nondet,
        distinct,
        pipeline,
        churn,
        crashpoint,
        sweep,
        deep,
        soak_realize,
        soak_collect,
        build,
        push,
        push_at_go,
        pull,
        copy,
        metrics,
        hold_key,
        hold_build_lock,
        slow_build,
        repl_pair,
        repl_paused,
    )
}

if __name__ == "__main__":
    job, *args = sys.argv[1:]
    print(json.dumps(JOBS[job](*args)), flush=True)
