"""Many real processes realizing into one store."""

from __future__ import annotations

import os
import signal
import time

import pytest
from helpers import go, read, wait_until

from lightstore import allrrefs, fsinit, mkSS
from lightstore.facade import Store


@pytest.fixture
def root(tmp_path) -> str:
    r = str(tmp_path / "store")
    fsinit(mkSS(r))
    return r


def test_same_stage_is_built_once(root, tmp_path, workers):
    log = str(tmp_path / "builds.log")
    results = workers.results(workers.together("same", root, *[(log, "0.5")] * 8))
    assert len({r["rref"] for r in results}) == 1
    with open(log) as f:
        assert len(f.read().split()) == 1, "the realizer ran more than once"
    assert len(allrrefs(mkSS(root))) == 1
    # Waiters block in the lock instead of spinning: far less CPU than wall time.
    waiters = sorted(results, key=lambda r: r["wall"])[-4:]
    assert all(r["cpu"] < 0.5 * r["wall"] for r in waiters), waiters


def test_nondeterministic_stage_gets_exactly_k(root, tmp_path, workers):
    log = str(tmp_path / "builds.log")
    results = workers.results(workers.together("nondet", root, *[(log, "3")] * 8))
    assert len({tuple(r["rrefs"]) for r in results}) == 1
    assert len(results[0]["rrefs"]) == 3
    assert len(allrrefs(mkSS(root))) == 3
    with open(log) as f:
        assert len(f.read().split()) == 1


def test_waiter_takes_over_when_builder_dies(root, tmp_path, workers):
    log = str(tmp_path / "builds.log")
    builder = workers.start("same", root, log, "30")
    go(root)
    wait_until(lambda: os.path.exists(log) and read(log).strip(), 30, "the build", alive=[builder])
    waiter = workers.start("same", root, log, "0")
    waiter.wait_for("ready")
    time.sleep(0.5)  # the waiter blocks on the builder's lock
    assert builder.kill().returncode == -signal.SIGKILL
    result = waiter.result()
    with open(log) as f:
        pids = f.read().split()
    assert len(pids) == 2 and pids[0] == str(builder.pid)
    store = Store.open(root)
    assert allrrefs(store) == [result["rref"]]
    report = store.verify(check_contents=True)
    assert report.ok, report.problems
    statuses = store.catalogue.column("SELECT status FROM builds ORDER BY id")
    assert statuses == ["interrupted", "succeeded"]


@pytest.mark.slow
def test_distinct_stages_in_parallel(root, workers):
    results = workers.results(
        workers.together("distinct", root, *[(str(i * 200), "200") for i in range(8)])
    )
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
