"""Queries, answered from the catalogue, and reference helpers."""

from __future__ import annotations

import os

import pytest
from helpers import write

from lightstore import (
    InvalidConfigError,
    InvalidReferenceError,
    UnknownReferenceError,
    alldrefs,
    allrrefs,
    build_outpath,
    build_wrapper,
    current_storage,
    dref2path,
    drefcfg,
    drefcfg_,
    drefdeps,
    drefdeps1,
    drefrrefs,
    drefrrefsC,
    instantiate,
    isdref,
    isrefpath,
    isrref,
    match_latest,
    match_only,
    mkdref,
    mkdrv,
    mkrref,
    path2dref,
    path2rref,
    realize,
    rootdrefs,
    rootrrefs,
    rref2dref,
    rref2path,
    rrefctx,
    rrefdeps,
    rrefdeps1,
    selfref,
    undref,
    unrref,
)


def node(r, name, deps=(), matcher=None, random=False):
    cfg = {"name": name, "out": [selfref, "out.txt"], "nested": {"p": [selfref, "out.txt"]}}
    for i, d in enumerate(deps):
        cfg[f"dep{i}"] = d

    def real(b):
        write(os.path.join(build_outpath(b), "out.txt"), os.urandom(8).hex() if random else name)

    return mkdrv(cfg, matcher or match_only(), build_wrapper(real), r)


@pytest.fixture
def diamond(S):
    """a <- b, a <- c, (b, c) <- d; plus an unrelated `e`. Returns drefs and chosen rrefs."""

    def stage(r):
        a = node(r, "a", matcher=match_latest(), random=True)
        b = node(r, "b", [a])
        c = node(r, "c", [a])
        d = node(r, "d", [b, c])
        e = node(r, "e")
        return {"a": a, "b": b, "c": c, "d": d, "e": e}

    drefs, clo = instantiate(stage, S=S)
    _, _, ctx = realize(clo)
    rrefs = {k: ctx[v][0] for k, v in drefs.items()}
    return drefs, rrefs, clo


def test_alldrefs_allrrefs(S, diamond):
    drefs, rrefs, _ = diamond
    assert sorted(alldrefs(S)) == sorted(drefs.values())
    assert sorted(allrrefs(S)) == sorted(rrefs.values())
    assert all(isdref(d) for d in alldrefs(S))
    assert all(isrref(r) for r in allrrefs(S))
    assert allrrefs(S) == sorted(allrrefs(S)) and alldrefs(S) == sorted(alldrefs(S))


def test_queries_default_to_the_current_storage(S, diamond):
    drefs, rrefs, _ = diamond
    with current_storage(S):
        assert sorted(alldrefs()) == sorted(drefs.values())
        assert sorted(allrrefs()) == sorted(rrefs.values())
        assert drefrrefs(drefs["a"]) == [rrefs["a"]]
    assert sorted(alldrefs(S=S)) == sorted(drefs.values())


def test_drefrrefs_and_drefrrefsC(S, diamond):
    drefs, rrefs, clo = diamond
    assert drefrrefs(drefs["d"], S) == [rrefs["d"]]
    ctx_d = rrefctx(rrefs["d"], S)
    assert drefrrefsC(drefs["d"], ctx_d, S) == [rrefs["d"]]
    assert drefrrefsC(drefs["a"], {}, S) == [rrefs["a"]]
    assert drefrrefsC(drefs["d"], {}, S) == []
    # A second realization of `a` gives new realizations of b, c and d in new contexts.
    _, _, ctx2 = realize(clo, force_rebuild=[drefs["a"]])
    a2 = ctx2[drefs["a"]][0]
    assert drefrrefs(drefs["a"], S) == [rrefs["a"], a2]  # oldest first
    assert len(drefrrefs(drefs["d"], S)) == 2
    assert drefrrefsC(drefs["b"], {drefs["a"]: [a2]}, S) == ctx2[drefs["b"]]
    assert drefrrefsC(drefs["b"], {drefs["a"]: [rrefs["a"]]}, S) == [rrefs["b"]]
    assert drefrrefs(drefs["e"], S) == [rrefs["e"]]


def test_root_drefs_and_rrefs(S, diamond):
    drefs, rrefs, _ = diamond
    assert rootdrefs(S) == {drefs["d"], drefs["e"]}
    assert rootrrefs(S) == {rrefs["d"], rrefs["e"]}


def test_dependencies(S, diamond):
    drefs, rrefs, _ = diamond
    assert drefdeps1([drefs["d"]], S) == {drefs["b"], drefs["c"]}
    assert drefdeps([drefs["d"]], S) == {drefs["a"], drefs["b"], drefs["c"]}
    assert drefdeps1([drefs["b"], drefs["c"]], S) == {drefs["a"]}
    assert drefdeps([drefs["a"]], S) == set()
    assert drefdeps([drefs["e"]], S) == set()
    assert rrefdeps1([rrefs["d"]], S) == {rrefs["b"], rrefs["c"]}
    assert rrefdeps([rrefs["d"]], S) == {rrefs["a"], rrefs["b"], rrefs["c"]}
    assert rrefdeps([rrefs["a"]], S) == set()
    assert rrefdeps1([rrefs["b"]], S) == {rrefs["a"]}


def test_drefcfg_resolves_selfrefs(S, diamond):
    drefs, _, _ = diamond
    d = drefs["b"]
    cfg = drefcfg(d, S)
    assert cfg["out"] == [d, "out.txt"]
    assert cfg["nested"] == {"p": [d, "out.txt"]}
    assert cfg["dep0"] == drefs["a"]
    assert cfg["name"] == "b"
    raw = drefcfg_(d, S)
    assert raw.val["out"] == [selfref, "out.txt"]
    assert raw.name == "b"
    # Returned values are copies: editing them does not change the store's view.
    cfg["name"] = "changed"
    raw.val["name"] = "changed"
    assert drefcfg(d, S)["name"] == "b"
    assert drefcfg_(d, S).val["name"] == "b"


def test_rrefctx(S, diamond):
    drefs, rrefs, _ = diamond
    assert rrefctx(rrefs["a"], S) == {}
    assert rrefctx(rrefs["b"], S) == {drefs["a"]: [rrefs["a"]]}
    assert rrefctx(rrefs["d"], S) == {drefs["b"]: [rrefs["b"]], drefs["c"]: [rrefs["c"]]}


def test_paths_and_back(S, store, diamond):
    drefs, rrefs, _ = diamond
    for key, rref in rrefs.items():
        p = rref2path(rref, S)
        assert os.path.isdir(p)
        assert p.startswith(store.root)
        assert path2rref(p) == rref
        assert path2rref(os.path.join(p, "out.txt")) == rref
        assert path2dref(p) == rref2dref(rref)
        assert rref2dref(rref) == drefs[key]
    for dref in drefs.values():
        p = dref2path(dref, S)
        assert os.path.isdir(p)
        assert path2dref(p) == dref
        assert path2dref(os.path.join(p, "config.json")) == dref
        assert path2rref(p) is None


def test_path2ref_of_unrelated_paths(tmp_path):
    for p in ["/", "/tmp", str(tmp_path), str(tmp_path / "x" / "y"), "relative/path"]:
        assert path2dref(p) is None
        assert path2rref(p) is None


def test_path_round_trip_without_objects(S):
    """As in Pylightnix: the mapping does not need the objects to exist."""
    dref = mkdref("a" * 32, "some-name_1")
    rref = mkrref("b" * 32, "a" * 32, "some-name_1")
    assert path2dref(dref2path(dref, S)) == dref
    assert path2rref(rref2path(rref, S)) == rref


def test_unknown_references(S):
    dref = mkdref("c" * 32, "ghost")
    rref = mkrref("d" * 32, "c" * 32, "ghost")
    with pytest.raises(UnknownReferenceError):
        drefcfg(dref, S)
    with pytest.raises(UnknownReferenceError):
        rrefctx(rref, S)
    assert drefrrefs(dref, S) == []
    with pytest.raises(InvalidReferenceError):
        drefcfg("dref:nothex-x", S)
    with pytest.raises(InvalidReferenceError):
        drefrrefs(rref, S)


def test_reference_helpers():
    h, r = "0123456789abcdef" * 2, "f" * 32
    dref = mkdref(h, "name")
    rref = mkrref(r, h, "name")
    assert dref == f"dref:{h}-name"
    assert rref == f"rref:{r}-{h}-name"
    assert isdref(dref) and not isdref(rref) and not isdref("x") and not isdref(None)
    assert isrref(rref) and not isrref(dref) and not isrref(42)
    assert undref(dref) == (h, "name")
    assert unrref(rref) == (r, h, "name")
    assert rref2dref(rref) == dref
    assert isrefpath([dref, "a", "b"]) and isrefpath([dref])
    assert not isrefpath([rref, "a"]) and not isrefpath([]) and not isrefpath(dref)
    with pytest.raises(InvalidReferenceError):
        mkdref("ABC", "name")
    with pytest.raises(InvalidReferenceError):
        mkrref("0" * 31, h, "name")
    with pytest.raises(InvalidConfigError):
        mkdref(h, "bad name")
    with pytest.raises(InvalidReferenceError):
        undref(rref)
    with pytest.raises(InvalidReferenceError):
        unrref(dref)
    with pytest.raises(InvalidReferenceError):
        rref2dref("rref:junk")


def test_queries_see_only_their_store(tmp_path, S, diamond):
    from lightstore import fsinit, mkSS

    other = fsinit(mkSS(str(tmp_path / "other"))).settings
    assert alldrefs(other) == []
    assert allrrefs(other) == []
    assert rootdrefs(other) == set()
    assert len(alldrefs(S)) == 5
