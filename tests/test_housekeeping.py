"""Housekeeping (garbage collection, removal, links, listing), Pylightnix-style."""

from __future__ import annotations

import os
import time

import pytest
from helpers import assert_unchanged, snapshot, write

from lightstore import (
    IntegrityError,
    InvalidReferenceError,
    UnknownReferenceError,
    alldrefs,
    allrrefs,
    build_outpath,
    build_wrapper,
    catref,
    diff,
    dref2path,
    drefrrefs,
    du,
    find,
    instantiate,
    linkdref,
    linkrref,
    lsref,
    match_latest,
    match_only,
    mkdref,
    mkdrv,
    realize,
    realize1,
    rmref,
    rref2dref,
    rref2path,
    selfref,
    store_gc,
)


def node(r, name, deps=(), text=None, matcher=None, extra=None):
    cfg = {"name": name, "out": [selfref, "out.txt"], **(extra or {})}
    for i, d in enumerate(deps):
        cfg[f"dep{i}"] = d

    def real(b):
        write(os.path.join(build_outpath(b), "out.txt"), text if text is not None else name)

    return mkdrv(cfg, matcher or match_only(), build_wrapper(real), r)


@pytest.fixture
def tree(S):
    """Pylightnix's gc example: n1 <- n2, n1 <- n3, each realized separately."""

    def n1(r):
        return node(r, "n1")

    def n2(r):
        return node(r, "n2", [n1(r)])

    def n3(r):
        return node(r, "n3", [n1(r)])

    r1 = realize1(instantiate(n1, S=S))
    r2 = realize1(instantiate(n2, S=S))
    r3 = realize1(instantiate(n3, S=S))
    return r1, r2, r3


# -- store_gc ------------------------------------------------------------------------


def test_store_gc_reports_without_deleting(store, S, tree):
    r1, r2, r3 = tree
    before = snapshot(store)
    rm_drefs, rm_rrefs = store_gc([], [r2], S)
    assert rm_drefs == {rref2dref(r3)}
    assert rm_rrefs == {r3}
    assert_unchanged(store, before)

    rm_drefs, rm_rrefs = store_gc([rref2dref(r1)], [], S)
    assert rm_drefs == {rref2dref(r2), rref2dref(r3)}
    assert rm_rrefs == {r2, r3}

    # Keeping a derivation keeps its dependencies and all its realizations.
    rm_drefs, rm_rrefs = store_gc([rref2dref(r3)], [], S)
    assert rm_drefs == {rref2dref(r2)}
    assert rm_rrefs == {r2}

    rm_drefs, rm_rrefs = store_gc([], [], S)
    assert rm_drefs == {rref2dref(r) for r in tree}
    assert rm_rrefs == set(tree)
    assert store_gc([], [r2, r3], S) == (set(), set())
    assert_unchanged(store, before)


def test_store_gc_keeps_unrealized_derivations_only_if_asked(S):
    dref, _ = instantiate(lambda r: node(r, "never"), S=S)
    assert store_gc([], [], S) == ({dref}, set())
    assert store_gc([dref], [], S) == (set(), set())


def test_store_gc_treats_links_as_roots(store, S, tree, tmp_path):
    """Links made by linkrref/linkdref act as GC roots."""
    _r1, r2, r3 = tree
    linkrref(r2, str(tmp_path), S=S)
    rm_drefs, rm_rrefs = store_gc([], [], S)
    assert rm_rrefs == {r3}
    assert rm_drefs == {rref2dref(r3)}


# -- rmref -----------------------------------------------------------------------------


def test_rmref_refuses_to_break_references(store, S, tree):
    r1, _r2, _r3 = tree
    before = snapshot(store)
    with pytest.raises(IntegrityError):
        rmref(r1, S)
    with pytest.raises(IntegrityError):
        rmref(rref2dref(r1), S)
    assert_unchanged(store, before)


def test_rmref_of_a_leaf_realization(store, S, tree):
    r1, r2, r3 = tree
    removed = rmref(r3, S)
    assert removed == [r3]
    assert not os.path.exists(rref2path(r3, S))
    assert sorted(allrrefs(S)) == sorted([r1, r2])
    assert rref2dref(r3) in alldrefs(S)  # the derivation stays
    assert os.path.isdir(dref2path(rref2dref(r3), S))

    # It can simply be realized again.
    def n3(r):
        return node(r, "n3", [node(r, "n1")])

    assert realize1(instantiate(n3, S=S)) == r3


def test_rmref_with_referrers(store, S, tree):
    r1, r2, r3 = tree
    removed = rmref(r1, S, with_referrers=True)
    assert set(removed) == {r1, r2, r3}
    assert allrrefs(S) == []
    for r in tree:
        assert not os.path.exists(rref2path(r, S))
    assert len(alldrefs(S)) == 3
    rows = store.catalogue.query("SELECT count(*) FROM realization_deps")
    assert rows == [(0,)]


def test_rmref_of_a_derivation(store, S, tree):
    r1, r2, r3 = tree
    d3 = rref2dref(r3)
    rmref(d3, S)
    assert d3 not in alldrefs(S)
    assert not os.path.exists(dref2path(d3, S))
    assert sorted(allrrefs(S)) == sorted([r1, r2])


def test_rmref_of_a_derivation_with_referrers_along_a_chain(store, S):
    """Removing the bottom of a long chain removes every derivation above it."""

    def chain(r):
        d = node(r, "c0")
        for i in range(1, 6):
            d = node(r, f"c{i}", [d])
        return d

    _top, clo = instantiate(chain, S=S)
    realize1(clo)
    bottom = clo.derivations[0].dref
    removed = rmref(bottom, S, with_referrers=True)
    assert len(removed) == 12  # 6 realizations and 6 derivations
    assert alldrefs(S) == [] and allrrefs(S) == []
    assert os.listdir(store.objects_dir) == []


def test_rmref_of_unknown_or_malformed(S, tree):
    with pytest.raises(UnknownReferenceError):
        rmref(mkdref("e" * 32, "ghost"), S)
    with pytest.raises(InvalidReferenceError):
        rmref("not a reference", S)


# -- links -------------------------------------------------------------------------------


def test_linkrref_and_linkdref(store, S, tree, tmp_path):
    r1, r2, _ = tree
    dest = tmp_path / "links"
    dest.mkdir()
    link = linkrref(r2, str(dest), S=S)
    assert os.path.islink(link)
    assert os.path.dirname(link) == str(dest)
    assert "n2" in os.path.basename(link)
    assert os.path.realpath(link) == os.path.realpath(rref2path(r2, S))
    with open(os.path.join(link, "out.txt"), encoding="utf-8") as f:
        assert f.read() == "n2"

    named = linkrref(r1, str(dest), name="first", S=S)
    assert os.path.basename(named) == "first"
    # Re-linking the same name points it at the new target.
    again = linkrref(r2, str(dest), name="first", S=S)
    assert again == named and os.path.realpath(again) == os.path.realpath(rref2path(r2, S))

    dlink = linkdref(rref2dref(r1), str(dest), S=S)
    assert os.path.islink(dlink)
    assert os.path.realpath(dlink) == os.path.realpath(dref2path(rref2dref(r1), S))

    rows = store.catalogue.query("SELECT path, dref, rref FROM links ORDER BY path")
    assert sorted(rows) == sorted(
        [
            (str(link), None, r2),
            (str(named), None, r2),
            (str(dlink), rref2dref(r1), None),
        ]
    )


def test_linkrref_defaults_to_the_current_directory(S, tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    link = linkrref(tree[0], S=S)
    assert os.path.dirname(os.path.abspath(link)) == str(tmp_path)
    assert os.path.islink(link)


# -- listing, reading, disk usage, find, diff --------------------------------------------


def test_lsref(S, tree):
    r1, _, _ = tree
    assert "out.txt" in lsref(r1, S)
    names = lsref(rref2dref(r1), S)
    assert "config.json" in names
    assert rref2path(r1, S).rsplit(os.sep, 1)[1] in names


def test_catref(S, tree):
    r1, r2, _ = tree
    assert catref(r1, ["out.txt"], S) == ["n1"]
    assert catref([rref2dref(r2), "out.txt"], S=S) == ["n2"]


def test_du(S):
    def stage(r):
        a = node(r, "a", text="x" * 100)
        return node(r, "b", [a], text="y" * 1000)

    result, clo = instantiate(stage, S=S)
    _, _, ctx = realize(clo)
    usage = du(S)
    a_dref = clo.derivations[0].dref
    # As in Pylightnix: a realization counts its folder's files (context.json too), a
    # derivation its config.json and its realizations.
    ra, rb = ctx[a_dref][0], ctx[result][0]
    assert usage[result] == (_bytes(S, result) + _bytes(S, rb), {rb: _bytes(S, rb)})
    assert usage[a_dref] == (_bytes(S, a_dref) + _bytes(S, ra), {ra: _bytes(S, ra)})
    assert _bytes(S, rb) == 1000 + _bytes(S, rb, "context.json")


def _bytes(S, ref, name=None):
    """Bytes of the files of a realization's folder, or of a derivation's config.json."""
    if name is None and ref.startswith("dref:"):
        name = "config.json"
    folder = rref2path(ref, S) if ref.startswith("rref:") else dref2path(ref, S)
    names = [name] if name else os.listdir(folder)
    return sum(os.path.getsize(os.path.join(folder, n)) for n in names)


def test_du_sums_several_realizations(S):
    texts = iter(["aa", "bbbb"])

    def stage(r):
        def real(b):
            write(os.path.join(build_outpath(b), "f"), next(texts))

        return mkdrv({"name": "multi"}, match_latest(), build_wrapper(real), r)

    clo = instantiate(stage, S=S)
    realize1(clo)
    realize1(clo, force_rebuild=True)
    total, per = du(S)[clo[0]]
    context = _bytes(S, next(iter(per)), "context.json")
    assert sorted(per.values()) == [2 + context, 4 + context]
    assert total == _bytes(S, clo[0]) + 6 + 2 * context


def test_find_by_name(S, tree):
    r1, _r2, _r3 = tree
    assert find(name="n1", S=S) == [r1]
    assert sorted(find(S=S)) == sorted(tree)
    assert find(name="nothing", S=S) == []


def test_find_by_name_glob(S, tree):
    """Pylightnix matches names with fnmatch (shell-like globs)."""
    assert sorted(find(name="n*", S=S)) == sorted(tree)
    assert sorted(find(name="n[23]", S=S)) == sorted(tree[1:])


def test_find_by_stage_uses_its_config_name(S, tree):
    """Pylightnix: a stage given as `name` is instantiated and its config name is used."""

    def make_first(r):
        return node(r, "n1")

    assert find(name=make_first, S=S) == [tree[0]]


def test_find_newer_pylightnix_semantics(S):
    """`newer`: seconds since the Epoch; zero and negative numbers count back from now."""
    texts = iter(["old", "new"])

    def stage(r):
        def real(b):
            write(os.path.join(build_outpath(b), "f"), next(texts))

        return mkdrv({"name": "timed"}, match_latest(), build_wrapper(real), r)

    clo = instantiate(stage, S=S)
    old = realize1(clo)
    time.sleep(0.05)
    middle = time.time()
    time.sleep(0.05)
    new = realize1(clo, force_rebuild=True)
    assert find(newer=middle, S=S) == [new]
    assert find(newer=time.time() + 1000, S=S) == []
    assert find(newer=-3600, S=S) == [old, new]
    assert find(name="timed", newer=-3600, S=S) == [old, new]


def test_diff(S):
    def a(r):
        return node(r, "same", extra={"lr": 0.1, "k": 1})

    def b(r):
        return node(r, "same", extra={"lr": 0.2, "k": 1})

    ra = realize1(instantiate(a, S=S))
    db, _ = instantiate(b, S=S)
    text = diff(ra, db, S)
    assert '-  "lr": 0.1' in text and '+  "lr": 0.2' in text
    changed = [
        line
        for line in text.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == ['-  "lr": 0.1,', '+  "lr": 0.2,']
    assert diff(ra, rref2dref(ra), S) == ""
    assert drefrrefs(db, S) == []
