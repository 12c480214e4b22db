"""gc marking on random dependency graphs: both ways of marking (forward from few roots,
and by deciding only the non-roots when roots are most of the store) give the answer a
plain reachability walk over the catalogue's edge tables gives."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lightstore
from lightstore import build_outpaths, build_wrapper, instantiate, match_all, mkdrv, realizeMany
from lightstore.foundation.errors import InvalidReferenceError
from lightstore.maintenance.marking import _mark

# A graph: node i depends on some nodes before it, and its build makes 1 or 2 outputs.
graphs = st.integers(min_value=1, max_value=9).flatmap(
    lambda n: st.tuples(
        st.tuples(*[st.sets(st.integers(0, max(0, i - 1)), max_size=min(i, 3)) for i in range(n)]),
        st.lists(st.integers(1, 2), min_size=n, max_size=n),
    )
)


def build_graph(
    root: str, deps: tuple[set[int], ...], outs: list[int], realized: list[bool] | None = None
) -> lightstore.Store:
    """Realize the nodes of the graph (those `realized` says; the others are only
    recorded, with their dependencies) into a new store at `root`."""
    store = lightstore.fsinit(lightstore.mkSS(root))

    def node(i: int, r: Any) -> Any:
        cfg = {"name": f"n{i}", "deps": [node(j, r) for j in sorted(deps[i]) if j < i]}

        def make(b: Any) -> None:
            for k, out in enumerate(build_outpaths(b)):
                with open(os.path.join(out, "f"), "w") as f:
                    f.write(f"{i}.{k}")

        return mkdrv(cfg, match_all, build_wrapper(make, nouts=outs[i]), r)

    for i in range(len(deps)):
        if realized is None or realized[i]:
            realizeMany(instantiate(lambda r, i=i: node(i, r), S=store))
        else:
            instantiate(lambda r, i=i: node(i, r), S=store)
    return store


def reference_dead(
    store: lightstore.Store, keep_d: set[str], keep_r: set[str], since: float | None
) -> tuple[list[str], list[str]]:
    """Reachability over the edge tables, one step at a time in Python; pins and the
    inputs of running builds are kept too."""
    q = store.catalogue.query
    keep_d = set(keep_d) | {d for (d,) in q("SELECT dref FROM pins WHERE dref IS NOT NULL")}
    keep_r = set(keep_r) | {r for (r,) in q("SELECT rref FROM pins WHERE rref IS NOT NULL")}
    keep_r |= {r for (r,) in q("SELECT rref FROM build_inputs")}
    redges = [(a, b) for a, b in q("SELECT rref, dep FROM realization_deps")]
    dedges = [(a, b) for a, b in q("SELECT dref, dep FROM derivation_deps")]
    rows = q("SELECT rref, dref, coalesce(build_stopped, created) FROM realizations")
    live_r = {r for r, d, t in rows if r in keep_r or d in keep_d or (since and t >= since)}
    while True:
        more = {b for a, b in redges if a in live_r} - live_r
        if not more:
            break
        live_r |= more
    live_d = set(keep_d) | {d for r, d, _ in rows if r in live_r}
    while True:
        more = {b for a, b in dedges if a in live_d} - live_d
        if not more:
            break
        live_d |= more
    all_d = [d for (d,) in q("SELECT dref FROM derivations")]
    return sorted(set(all_d) - live_d), sorted({r for r, _, _ in rows} - live_r)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(graph=graphs, data=st.data())
def test_both_markings_agree_with_reachability(graph, data):
    deps, outs = graph
    # Some derivations recorded but never realized; pins on derivations and realizations.
    realized = data.draw(st.lists(st.booleans(), min_size=len(deps), max_size=len(deps)))
    with tempfile.TemporaryDirectory() as tmp:
        store = build_graph(os.path.join(tmp, "s"), deps, outs, realized)
        rrefs = sorted(store.catalogue.all_rrefs())
        drefs = sorted(store.catalogue.all_drefs())
        pinned = data.draw(st.lists(st.sampled_from(rrefs + drefs), max_size=2)) if rrefs else []
        for k, ref in enumerate(pinned):
            store.pin(f"p{k}", ref)
        times = sorted(
            t for (t,) in store.catalogue.query("SELECT build_stopped FROM realizations")
        )
        for _ in range(3):
            some_r = st.lists(st.sampled_from(rrefs), max_size=len(rrefs)) if rrefs else st.just([])
            keep_r = set(data.draw(some_r))
            keep_d = set(data.draw(st.lists(st.sampled_from(drefs), max_size=3)))
            since = data.draw(st.one_of(st.none(), st.sampled_from(times))) if times else None
            want_d, want_r = reference_dead(store, keep_d, keep_r, since)
            for mode in ("dense", "sparse", "auto"):
                dead_d, dead_r, size, _ = _mark(store, keep_d, keep_r, True, since, mode)
                assert (dead_d, dead_r) == (want_d, want_r), mode
                sizes = store.catalogue.query("SELECT rref, size FROM realizations ORDER BY rref")
                assert size == sum(s for r, s in sizes if r in set(want_r))


def test_dense_marking_checks_keeps_not_in_the_store(tmp_path):
    """Kept references found in the store are trusted; any other is checked."""
    g = build_graph(str(tmp_path / "g"), (set(), {0}), [1, 1])
    rrefs = g.catalogue.all_rrefs()
    for mode in ("dense", "sparse"):
        with pytest.raises(InvalidReferenceError):
            _mark(g, [], [*rrefs, "rref:not-a-ref"], True, None, mode)
        with pytest.raises(InvalidReferenceError):
            _mark(g, [rrefs[0]], [], True, None, mode)  # an RRef where a DRef belongs
        well_formed_unknown = "rref:" + "0" * 32 + "-" + "1" * 32 + "-x"
        assert _mark(g, [], [*rrefs, well_formed_unknown], True, None, mode)[1] == []
        assert _mark(g, [], [*rrefs], True, time.time(), mode)[1] == []


def test_a_collection_with_most_of_the_store_pinned_removes_only_the_rest(tmp_path):
    """The real collection (not a plan) in the dense mode: pins on all but one chain."""
    from lightstore.catalogue.marking import dense_keeps as dense_roots
    from lightstore.maintenance.pins import gc_keeps as roots

    store = build_graph(str(tmp_path / "s"), (set(), {0}, {1}, set(), {3}), [1, 1, 1, 1, 6])
    tips = sorted(store.catalogue.root_rrefs())
    doomed = [t for t in tips if "-n2" in t]  # the tip of the first chain (n0 <- n1 <- n2)
    kept = [t for t in tips if t not in doomed]
    for i, rref in enumerate(kept):
        store.pin(f"p{i}", rref)
    found = roots(store)
    with store.catalogue.conn:
        assert dense_roots(store.catalogue.conn, found.rrefs, found.drefs, None)
    report = store.gc()
    names = sorted(r.rsplit("-", 1)[1] for r in report.rrefs)
    assert names == ["n0", "n1", "n2"]
    assert sorted(store.catalogue.all_rrefs()) == sorted(
        {*kept} | {d for k in kept for d in lightstore.rrefdeps([k], store)}
    )
    assert store.verify().ok


class _EqStr(str):
    """A str subclass that defines == and so has no hash (as Python makes it)."""

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]


def test_malformed_keeps_raise_invalid_reference_error(tmp_path):
    g = build_graph(str(tmp_path / "g"), (set(), {0}), [1, 1])
    rrefs = g.catalogue.all_rrefs()
    want = _mark(g, [], rrefs, True, None, "sparse")
    for mode in ("dense", "sparse"):
        # A str subclass is a string: kept as its value.
        assert _mark(g, [], [_EqStr(r) for r in rrefs], True, None, mode) == want
        for bad in (None, 3, rrefs[0], [None], [b"rref:"], [[rrefs[0]]], [rrefs[0] + ","]):
            with pytest.raises(InvalidReferenceError):
                _mark(g, [], bad, True, None, mode)
            with pytest.raises(InvalidReferenceError):
                _mark(g, bad, [], True, None, mode)


def test_marking_while_a_cursor_of_the_same_connection_is_open(tmp_path):
    """Marking inside a loop over rows of the same connection: the loop goes on, and the
    temporary table goes once nothing holds it."""
    g = build_graph(str(tmp_path / "g"), (set(), {0}, {1}), [1, 2, 1])
    rrefs = g.catalogue.all_rrefs()
    want = _mark(g, [], rrefs[:2], True, None, "sparse")
    for mode in ("dense", "sparse"):
        seen = []
        for (rref,) in g.catalogue.conn.execute("SELECT rref FROM realizations ORDER BY rref"):
            assert _mark(g, [], rrefs[:2], True, None, mode) == want
            seen.append(rref)
        assert seen == rrefs, mode
        _mark(g, [], rrefs[:2], True, None, mode)
        assert g.catalogue.column("SELECT name FROM temp.sqlite_master") == []


def test_both_markings_keep_the_inputs_of_a_running_build(tmp_path):
    """Asked while a build runs, with nothing pinned: its inputs and their closure are roots."""
    store = lightstore.fsinit(lightstore.mkSS(str(tmp_path / "s")))
    seen: dict[str, Any] = {}

    def stage(r: Any) -> Any:
        def leaf(i: int) -> Any:
            return mkdrv({"name": f"leaf{i}"}, match_all, build_wrapper(lambda b: None), r)

        a = mkdrv({"name": "a", "dep": leaf(0)}, match_all, build_wrapper(lambda b: None), r)

        def top(b: Any) -> None:
            seen["want"] = reference_dead(store, set(), set(), None)
            for mode in ("dense", "sparse", "auto"):
                seen[mode] = _mark(store, [], [], True, None, mode)[:2]

        return mkdrv({"name": "top", "a": a, "x": leaf(1)}, match_all, build_wrapper(top), r)

    realizeMany(instantiate(stage, S=store))
    want_d, want_r = seen["want"]
    assert want_r == [] and len(want_d) == 1, "only the running build's own derivation goes"
    for mode in ("dense", "sparse", "auto"):
        assert seen[mode] == (want_d, want_r), mode
