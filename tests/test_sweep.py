"""Sweeps in practice: processes share the work, shapes are checked before building, both
matcher spellings, code tracked with sourcedeps.

The process tests run jobs of tests/workers.py in real processes on one store.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest
from helpers import go, wait_until

from lightstore import (
    LightstoreError,
    Registry,
    build_outpath,
    build_wrapper,
    fsinit,
    instantiate,
    match_all,
    mkdrv,
    mkSS,
    realize,
    realize1,
    realizeMany,
    selfref,
)
from lightstore.facade import Store
from lightstore.foundation.errors import InvalidConfigError

BRANCH_S = 0.5


def new_root(tmp_path, name: str) -> str:
    os.makedirs(tmp_path / name)
    root = str(tmp_path / name / "store")
    fsinit(mkSS(root))
    return root


def built(log: str) -> list[tuple[int, str]]:
    with open(log) as f:
        return [(int(p), n) for p, n in (line.split() for line in f if line.strip())]


@pytest.mark.slow
def test_three_processes_share_one_sweep(tmp_path, workers):
    serial_root = new_root(tmp_path, "serial")
    serial_log = str(tmp_path / "serial.log")
    (serial,) = workers.results(workers.together("sweep", serial_root, (serial_log, str(BRANCH_S))))

    root = new_root(tmp_path, "shared")
    log = str(tmp_path / "shared.log")
    results = workers.results(workers.together("sweep", root, *[(log, str(BRANCH_S))] * 3))

    names = [n for _, n in built(log)]
    assert sorted(names) == sorted(n for _, n in built(serial_log))
    assert Counter(names).most_common(1)[0][1] == 1, "a realization was built twice"
    assert len({pid for pid, n in built(log) if n.startswith("train")}) == 3, "work not shared"
    assert all(r["context"] == serial["context"] for r in results)
    # 6 branches over 3 processes: about 2 branch-times instead of 6 (a
    # generous bound against the serial run on this same, maybe busy, machine).
    assert max(r["wall"] for r in results) < 0.75 * serial["wall"], (serial["wall"], results)


@pytest.mark.slow
def test_a_holder_that_dies_hands_its_work_to_a_waiter(tmp_path, workers):
    root = new_root(tmp_path, "shared")
    log = str(tmp_path / "shared.log")
    go(root)
    holder = workers.start("sweep", root, log, str(BRANCH_S), "0.1")  # its first branch hangs
    wait_until(
        lambda: os.path.exists(log) and any(n == "train0.1" for _, n in built(log)),
        60,
        "the holder to start the branch that hangs",
        alive=[holder],
    )
    waiter = workers.start("sweep", root, log, str(BRANCH_S))
    # The waiter builds the 5 free branches, then waits for the held one.
    wait_until(
        lambda: len([n for pid, n in built(log) if pid == waiter.pid]) >= 5,
        60,
        "the waiter to build the free branches",
        alive=[waiter],
    )
    assert holder.kill().returncode == -signal.SIGKILL
    result = waiter.result()
    mine = [n for pid, n in built(log) if pid == waiter.pid]
    assert "train0.1" in mine and "evaluate" in mine
    assert len(result["context"]) == 8
    store = Store.open(root)
    statuses = store.catalogue.query(
        "SELECT status FROM builds WHERE pid = ? AND status != 'succeeded'", (holder.pid,)
    )
    assert [tuple(s) for s in statuses] == [("interrupted",)]
    report = store.verify(check_contents=True)
    assert report.ok, [(p.kind, p.ref, p.detail) for p in report.problems]
    assert os.listdir(store.tmp_dir) == []


def test_realize1_of_several_targets_fails_before_building(S):
    built_names: list[str] = []

    def one(name):
        def real(b):
            built_names.append(name)
            with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
                f.write(str(name))

        return real

    def sweep(r):
        return [
            mkdrv(
                {"name": f"t{i}", "out": [selfref, "out.txt"]}, match_all, build_wrapper(one(i)), r
            )
            for i in range(3)
        ]

    cl = instantiate(sweep, r=Registry(S))
    with pytest.raises(LightstoreError, match=r"realize1 expects a closure with one target"):
        realize1(cl)
    with pytest.raises(LightstoreError, match=r"realizeMany expects a closure with one target"):
        realizeMany(cl)
    assert built_names == []
    assert len(realize(cl)[2]) == 3


def test_match_all_both_spellings(S):
    def stage(matcher):
        def make(r):
            return mkdrv(
                {"name": "m", "out": [selfref, "out.txt"]},
                matcher,
                build_wrapper(
                    lambda b: open(os.path.join(build_outpath(b), "out.txt"), "w").close()
                ),
                r,
            )

        return make

    a = realizeMany(instantiate(stage(match_all), r=Registry(S)))
    b = realizeMany(instantiate(stage(match_all()), r=Registry(S)))
    assert a == b and len(a) == 1
    assert match_all()(S, []) is None and match_all(S, a) == a
    with pytest.raises(TypeError):
        match_all(S)  # type: ignore[call-overload]


def helper_v1(x):
    return x + 1


def helper_v2(x):
    return x + 2


def test_mkdrv_sourcedeps_tracks_code(S):
    def stage(sourcedeps):
        def make(r):
            return mkdrv(
                {"name": "s"},
                match_all,
                build_wrapper(lambda b: None),
                r,
                sourcedeps=sourcedeps,
            )

        return make

    r = Registry(S)
    plain = stage(())(r)
    v1 = stage([helper_v1])(r)
    v2 = stage([helper_v2])(r)
    assert len({plain, v1, v2}) == 3
    assert stage([helper_v1])(Registry(S)) == v1  # stable
    assert stage(["def f(): pass"])(r) != plain  # source text works too
    with pytest.raises(InvalidConfigError, match="__source__"):
        mkdrv(
            {"name": "s", "__source__": "x"},
            match_all,
            build_wrapper(lambda b: None),
            r,
            sourcedeps=[helper_v1],
        )
    with pytest.raises(InvalidConfigError, match="cannot read the source"):
        stage([len])(r)
