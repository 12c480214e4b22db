"""Child processes for the concurrency and crash tests: ``python tests/workers.py MODE ROOT ...``.

Each mode realizes something into the store at ROOT and prints one JSON line
with what it got. Workers wait for ``ROOT/../go`` to exist before starting, so
the test can release them all at the same instant.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

from lightstore import (
    build_outpath,
    build_wrapper,
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


def wait_for_go(root: str) -> None:
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
    open(os.path.join(os.path.dirname(root), f"ready-{os.getpid()}"), "w").close()
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


MODES = {
    "crashpoint": crashpoint,
    "deep": deep,
    "same": same,
    "nondet": nondet,
    "distinct": distinct,
    "pipeline": pipeline,
    "churn": churn,
    "sweep": sweep,
}

if __name__ == "__main__":
    mode, root, *args = sys.argv[1:]
    print(json.dumps(MODES[mode](root, *args)), flush=True)
