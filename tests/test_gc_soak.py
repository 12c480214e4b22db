"""Soak: three processes realize new pipelines while a fourth pins and collects.

Real processes, real locks, real SQLite. No process may raise; at the end the store
verifies clean with contents, every pin resolves, and the history of everything
collected is still in the catalogue.
"""

from __future__ import annotations

import os

import pytest

from lightstore import LightstoreError, allrrefs, fsinit, mkSS
from lightstore.facade import Store
from lightstore.query import history

SECONDS = float(os.environ.get("LIGHTSTORE_SOAK_SECONDS", "25"))
REALIZERS = 3


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_realizers_and_a_collector_side_by_side(tmp_path, workers):
    root = str(tmp_path / "store")
    fsinit(mkSS(root))
    procs = [
        workers.start("soak_realize", root, str(SECONDS), str(seed)) for seed in range(REALIZERS)
    ]
    collector = workers.start("soak_collect", root, str(SECONDS), "99")
    made = workers.results(procs, timeout=SECONDS + 120)
    (tmp_path / "stop").touch()
    collected = collector.result(timeout=120)
    pipelines = sum(m["pipelines"] for m in made)
    assert pipelines >= REALIZERS and all(m["pipelines"] > 0 for m in made), made
    assert collected["gc_rounds"] >= 2 and collected["collected"] > 0, collected

    store = Store.open(root)
    report = store.verify(check_contents=True)
    assert report.ok, report.problems
    pins = store.pins()
    # Every pin the collector left is still there. (On a loaded machine the
    # realizers may finish before the collector finds a leaf to pin, so the
    # count itself can be 0.)
    assert len(pins) == collected["pins"], (pins, collected)
    present = set(allrrefs(store))
    for ref in pins.values():
        assert ref in present and os.path.isdir(store.rref_path(ref))
    # Every realization ever made is on record: present, or collected by gc.
    records = history(store, include_collected=True)
    leaves = {r["rref"] for r in records if r["name"] == "leaf"}
    assert len(leaves) == pipelines
    assert {r["collected_reason"] for r in records} <= {None, "gc"}
    assert store.catalogue.query("PRAGMA foreign_key_check") == []

    # The cost of keeping a collected record: catalogue bytes per realization record,
    # measured as what `forget` gives back once vacuumed, and (dbstat) the pages of
    # collected_realizations and its indexes alone.
    store.catalogue.conn.execute("VACUUM")
    try:  # dbstat is an optional part of SQLite
        own = store.catalogue.query(
            "SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'collected_realizations%'"
        )[0][0]
    except LightstoreError:
        own = 0
    (records,) = store.catalogue.query("SELECT count(*) FROM collected_realizations")[0]
    full = os.path.getsize(store.catalogue.path)
    forgotten = store.forget(everything=True)
    store.catalogue.conn.execute("VACUUM")
    per_record = (full - os.path.getsize(store.catalogue.path)) / max(forgotten.realizations, 1)
    print(
        f"\nsoak: {pipelines} pipelines realized by {REALIZERS} processes in {SECONDS:.0f} s, "
        f"{collected['gc_rounds']} gc rounds removed {collected['collected']} realizations; "
        f"{forgotten.realizations} collected records cost {per_record:.0f} catalogue bytes each "
        f"with their derivation and build records ({own / max(records, 1):.0f} bytes in "
        "collected_realizations and its indexes)"
    )
    assert store.verify().ok
