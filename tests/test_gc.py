"""Garbage collection: roots, closures, concurrency with realizing processes."""

from __future__ import annotations

import os

import pytest

from lightstore import (
    IntegrityError,
    allrrefs,
    build_outpath,
    build_wrapper,
    drefrrefs,
    instantiate,
    linkrref,
    match_only,
    mkdrv,
    realize1,
    rmref,
    rref2dref,
    rrefdeps,
    selfref,
)
from lightstore.foundation.errors import UnknownReferenceError


def chain(tag: str, n: int = 3):
    """A stage of `n` dependent derivations, each writing one file."""

    def stage(r):
        prev = None
        for i in range(n):

            def real(b, i=i):
                with open(os.path.join(build_outpath(b), "f"), "w") as f:
                    f.write(f"{tag}{i}")

            cfg = {"name": f"{tag}{i}", "out": [selfref, "f"]}
            if prev is not None:
                cfg["prev"] = [prev, "f"]
            prev = mkdrv(cfg, match_only(), build_wrapper(real), r)
        return prev

    return stage


def test_gc_keeps_closure_of_pins_and_links(store, tmp_path):
    a = realize1(instantiate(chain("a"), S=store))
    b = realize1(instantiate(chain("b"), S=store))
    c = realize1(instantiate(chain("c"), S=store))
    store.pin("keep-a", a)
    link = linkrref(b, destdir=str(tmp_path), S=store)
    dry = store.gc(dry_run=True)
    assert set(dry.rrefs) == {c} | rrefdeps([c], store)
    assert dry.bytes_freed == 6
    assert len(allrrefs(store)) == 9, "a dry run deletes nothing"
    report = store.gc()
    assert set(report.rrefs) == set(dry.rrefs) and not report.dry_run
    kept = set(allrrefs(store))
    assert kept == {a, b} | rrefdeps([a, b], store)
    for r in report.rrefs:
        assert not os.path.exists(store.rref_path(r))
    for d in report.drefs:
        assert not os.path.exists(store.dref_path(d))
    # A link stops being a root once it no longer points at its object: b's chain goes
    # (the chains share nothing), a's stays.
    b_closure = {b} | rrefdeps([b], store)
    os.unlink(link)
    report = store.gc()
    assert set(report.rrefs) == b_closure
    assert b not in allrrefs(store) and a in allrrefs(store)
    assert store.verify(check_contents=True).ok


def test_pin_and_unpin(store):
    a = realize1(instantiate(chain("a", 1), S=store))
    store.pin("x", a)
    store.pin("y", rref2dref(a))
    assert store.pins() == {"x": a, "y": rref2dref(a)}
    assert store.unpin("x") and not store.unpin("x")
    assert store.gc().rrefs == [], "a pinned derivation keeps its realizations"
    store.unpin("y")
    assert store.gc().rrefs == [a]
    with pytest.raises(UnknownReferenceError):
        store.pin("z", a)
    with pytest.raises(ValueError):
        store.pin("bad/name", rref2dref(a))


def test_foreign_keys_refuse_dangling(store):
    top = realize1(instantiate(chain("a"), S=store))
    (dep,) = [r for r in allrrefs(store) if r.endswith("-a1")]
    with pytest.raises(IntegrityError):
        rmref(dep, store)
    # SQLite's refusal arrives as lightstore's IntegrityError, saying what was being done.
    with (
        pytest.raises(IntegrityError, match="deleting by hand"),
        store.catalogue.write("deleting by hand") as conn,
    ):
        conn.execute("DELETE FROM realizations WHERE rref = ?", (dep,))
    removed = rmref(dep, store, with_referrers=True)
    assert set(removed) >= {dep, top}
    assert top not in allrrefs(store)
    store.pin("p", allrrefs(store)[0])
    with pytest.raises(IntegrityError):
        rmref(allrrefs(store)[0], store)


def test_gc_shrinks_catalogue(store):
    def many(r):
        out = []
        for i in range(400):
            out.append(
                mkdrv(
                    {"name": "m", "i": i, "pad": "x" * 500, "out": [selfref, "f"]},
                    match_only(),
                    build_wrapper(lambda b: open(os.path.join(build_outpath(b), "f"), "w").close()),
                    r,
                )
            )
        return out

    from lightstore import realize

    realize(instantiate(many, S=store))
    size_full = os.path.getsize(store.catalogue.path)
    store.gc()
    store.catalogue.shrink()
    # gc keeps the records (history outlives the artifacts): the file does not grow much...
    assert os.path.getsize(store.catalogue.path) < size_full * 1.5
    assert allrrefs(store) == []
    # ...and forgetting them gives the space back.
    assert store.forget(everything=True).realizations == 400
    assert os.path.getsize(store.catalogue.path) < size_full / 2
    # The catalogue is still usable: a new realization is recorded and found.
    rref = realize1(instantiate(chain("z", 1), S=store))
    assert allrrefs(store) == [rref] and drefrrefs(rref2dref(rref), store) == [rref]


def test_gc_while_processes_realize(tmp_path, workers):
    from lightstore import fsinit, mkSS
    from lightstore.facade import Store

    root = str(tmp_path / "store")
    store = fsinit(mkSS(root))
    procs = [workers.start("pipeline", root, str(seed), "12") for seed in range(4)]
    collections = 0
    while any(p.running for p in procs):
        store.gc(timeout=60)
        collections += 1
    results = workers.results(procs)
    assert collections > 1
    store.gc()
    Store.forget_instances()
    store = Store.open(root)
    pins = store.pins()
    assert len(pins) == 48
    for result in results:
        for name, rref in result["pinned"]:
            assert pins[name] == rref
            assert os.path.isdir(store.rref_path(rref))
    assert store.verify(check_contents=True).ok


def test_gc_plan_longer_than_sqlites_longest_string(store):
    """The plan joins dead references into one string; past SQLite's limit it goes row by row."""
    import sqlite3

    for tag in "abcd":
        realize1(instantiate(chain(tag), S=store))
    store.pin("keep", allrrefs(store)[0])
    joined = store.gc(dry_run=True)
    # A limit shorter than the joined list (12 references of ~90 bytes) but
    # longer than any statement or row here.
    store.catalogue.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 600)
    try:
        rows = store.gc(dry_run=True)
    finally:
        store.catalogue.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000_000)
    assert len(joined.rrefs) >= 9
    assert (rows.rrefs, rows.drefs, rows.bytes_freed) == (
        joined.rrefs,
        joined.drefs,
        joined.bytes_freed,
    )
