"""Child processes of the gc soak test: ``python tests/soak_workers.py MODE ROOT SECONDS SEED``.

`realize` realizes new pipelines in a loop (a shared parent from a small pool,
then two fresh stages); `collect` pins the newest result and collects garbage
in a loop, checking after each round that everything pinned is still whole.
Both run until SECONDS have passed (the collector until the realizers are
done), then print one JSON line of figures. Any exception ends the process
with a traceback and status 1.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

from lightstore import (
    build_outpath,
    build_path,
    build_wrapper,
    instantiate,
    match_only,
    mkdrv,
    mkSS,
    realize1,
    selfref,
)
from lightstore.facade import Store


def _write(text: str):
    def real(b):
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write(text)

    return real


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


def realize(root: str, seconds: str, seed: str) -> dict:
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
                build_wrapper(_write(f"parent{shared}")),
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


def collect(root: str, seconds: str, seed: str) -> dict:
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


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    result = {"realize": realize, "collect": collect}[mode](*args)
    print(json.dumps(result), flush=True)
