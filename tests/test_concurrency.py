"""Many real processes realizing into one store (SPEC §5)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import read

from lightstore import allrrefs, fsinit, mkSS
from lightstore.facade import Store

WORKERS = os.path.join(os.path.dirname(__file__), "workers.py")
TIMEOUT = 120


def spawn(mode: str, root: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WORKERS, mode, root, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: list[subprocess.Popen]) -> list[dict]:
    """Wait for every child (killing them all on timeout) and parse their JSON line."""
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, f"worker failed:\n{err}"
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


@pytest.fixture
def root(tmp_path) -> str:
    r = str(tmp_path / "store")
    fsinit(mkSS(r))
    return r


def go(root: str) -> None:
    open(os.path.join(os.path.dirname(root), "go"), "w").close()


def test_same_stage_is_built_once(root, tmp_path):
    log = str(tmp_path / "builds.log")
    procs = [spawn("same", root, log, "0.5") for _ in range(8)]
    time.sleep(0.5)  # let them all import and wait at the barrier
    go(root)
    results = finish(procs)
    assert len({r["rref"] for r in results}) == 1
    with open(log) as f:
        assert len(f.read().split()) == 1, "the realizer ran more than once"
    assert len(allrrefs(mkSS(root))) == 1
    # Waiters block in the lock instead of spinning: far less CPU than wall time.
    waiters = sorted(results, key=lambda r: r["wall"])[-4:]
    assert all(r["cpu"] < 0.5 * r["wall"] for r in waiters), waiters


def test_nondeterministic_stage_gets_exactly_k(root, tmp_path):
    log = str(tmp_path / "builds.log")
    procs = [spawn("nondet", root, log, "3") for _ in range(8)]
    time.sleep(0.5)
    go(root)
    results = finish(procs)
    assert len({tuple(r["rrefs"]) for r in results}) == 1
    assert len(results[0]["rrefs"]) == 3
    assert len(allrrefs(mkSS(root))) == 3
    with open(log) as f:
        assert len(f.read().split()) == 1


def test_waiter_takes_over_when_builder_dies(root, tmp_path):
    log = str(tmp_path / "builds.log")
    builder = spawn("same", root, log, "30")
    go(root)
    deadline = time.monotonic() + 30
    while not (os.path.exists(log) and read(log).strip()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    waiter = spawn("same", root, log, "0")
    time.sleep(0.5)
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    (result,) = finish([waiter])
    with open(log) as f:
        pids = f.read().split()
    assert len(pids) == 2 and pids[0] == str(builder.pid)
    store = Store.open(root)
    assert allrrefs(store) == [result["rref"]]
    report = store.verify(check_contents=True)
    assert report.ok, report.problems
    statuses = store.catalogue.column("SELECT status FROM builds ORDER BY id")
    assert statuses == ["interrupted", "succeeded"]


def test_distinct_stages_in_parallel(root):
    procs = [spawn("distinct", root, str(i * 200), "200") for i in range(8)]
    time.sleep(0.5)
    go(root)
    results = finish(procs)
    assert sum(r["count"] for r in results) == 1600
    store = Store.open(root)
    assert len(allrrefs(store)) == 1600
    assert len(os.listdir(store.objects_dir)) == 1600
    report = store.verify()
    assert report.ok, report.problems[:5]


def test_threads_share_a_store(root):
    """Threads of one process realize concurrently through per-thread connections."""
    from concurrent.futures import ThreadPoolExecutor

    from lightstore import (
        build_outpath,
        build_wrapper,
        instantiate,
        match_only,
        mkdrv,
        realize1,
        selfref,
    )

    calls: list[int] = []

    def real(b):
        calls.append(1)
        time.sleep(0.1)
        with open(os.path.join(build_outpath(b), "f"), "w") as f:
            f.write("x")

    def stage(i, r):
        return mkdrv(
            {"name": "t", "i": i % 4, "out": [selfref, "f"]}, match_only(), build_wrapper(real), r
        )

    S = mkSS(root)
    with ThreadPoolExecutor(8) as pool:
        rrefs = list(pool.map(lambda i: realize1(instantiate(stage, i, S=S)), range(16)))
    assert len(set(rrefs)) == 4
    assert len(calls) == 4
