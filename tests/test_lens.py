"""Lenses: dotted navigation from DRefs, RRefs, Builds, dicts, closures, never leaving the store."""

from __future__ import annotations

import os

import pytest
from helpers import ESCAPING_TAILS, write

from lightstore import (
    InvalidConfigError,
    InvalidReferenceError,
    LightstoreError,
    UnknownReferenceError,
    build_outpath,
    build_path,
    build_paths,
    build_wrapper,
    fsinit,
    instantiate,
    isrref,
    match_latest,
    match_only,
    mkdrv,
    mklens,
    mkSS,
    realize,
    realize1,
    rref2dref,
    rref2path,
    selfref,
)


def dep_stage(r, text="dep text", matcher=None):
    def real(b):
        write(os.path.join(build_outpath(b), "out.txt"), text)

    return mkdrv(
        {"name": "dep", "out": [selfref, "out.txt"], "n": 5, "maybe": None, "d": {"k": [1, 2]}},
        matcher or match_only(),
        build_wrapper(real),
        r,
    )


def top_stage(r, seen=None, matcher=None):
    dep = dep_stage(r, matcher=matcher)

    def real(b):
        if seen is not None:
            lens = mklens(b)
            seen["own_syspath"] = lens.out.syspath
            seen["dep_syspath"] = lens.ref_dep.out.syspath
            seen["dep_contents"] = lens.ref_dep.out.contents
            seen["dep_rref"] = lens.ref_dep.rref
            seen["dep_n"] = lens.ref_dep.n.val
            seen["self_dref"] = lens.dref
            seen["via_b"] = mklens(b.dref, b=b).ref_dep.out.syspath
        write(os.path.join(build_outpath(b), "top.txt"), "top")

    return mkdrv(
        {"name": "top", "ref_dep": dep, "out": [selfref, "top.txt"], "msg": "hi"},
        match_only(),
        build_wrapper(real),
        r,
    )


@pytest.fixture
def realized(S):
    """(top rref, dep rref) of a realized two-stage pipeline."""
    result, clo = instantiate(top_stage, S=S)
    _, _, ctx = realize(clo)
    dep_dref = clo.derivations[0].dref
    return ctx[result][0], ctx[dep_dref][0]


def test_lens_from_rref_through_a_dependency(S, realized):
    top, dep = realized
    lens = mklens(top, S=S)
    assert lens.ref_dep.out.syspath == os.path.join(rref2path(dep, S), "out.txt")
    assert lens.ref_dep.out.contents == "dep text"
    assert lens.ref_dep.rref == dep
    assert lens.ref_dep.dref == rref2dref(dep)
    assert lens.ref_dep.n.val == 5
    assert lens.ref_dep.d.val == {"k": [1, 2]}
    assert lens.msg.val == "hi"
    assert lens.out.syspath == os.path.join(rref2path(top, S), "top.txt")
    assert lens.out.contents == "top"
    assert lens.out.refpath == [rref2dref(top), "top.txt"]
    assert lens.ref_dep.out.refpath == [rref2dref(dep), "out.txt"]
    assert lens.rref == top
    assert lens.dref == rref2dref(top)
    assert lens.syspath == rref2path(top, S)
    assert lens.ref_dep.syspath == rref2path(dep, S)


def test_val_and_optval(S, realized):
    top, _ = realized
    lens = mklens(top, S=S)
    assert lens.ref_dep.maybe.optval is None
    with pytest.raises(LightstoreError):
        lens.ref_dep.maybe.val  # noqa: B018
    assert lens.msg.optval == "hi"
    # A DRef value is returned as is by .val.
    assert lens.ref_dep.val == rref2dref(realized[1])


def test_lens_from_a_dref(S, realized):
    top, _ = realized
    lens = mklens(rref2dref(top), S=S)
    assert lens.msg.val == "hi"
    # As in Pylightnix, without a realization context a lens chooses no realization.
    for resolve in (
        lambda: lens.ref_dep.out.syspath,
        lambda: lens.ref_dep.rref,
        lambda: lens.rref,
        lambda: lens.out.contents,
    ):
        with pytest.raises(AssertionError, match="context"):
            resolve()


def test_lens_from_a_build(S):
    seen = {}
    result, clo = instantiate(lambda r: top_stage(r, seen), S=S)
    _, _, ctx = realize(clo)
    dep = ctx[clo.derivations[0].dref][0]
    assert seen["dep_syspath"] == os.path.join(rref2path(dep, S), "out.txt")
    assert seen["via_b"] == seen["dep_syspath"]
    assert seen["dep_contents"] == "dep text"
    assert seen["dep_rref"] == dep
    assert seen["dep_n"] == 5
    assert seen["self_dref"] == result
    # Inside the build the own output is the temporary folder, not the store.
    assert os.path.basename(seen["own_syspath"]) == "top.txt"
    assert not seen["own_syspath"].startswith(rref2path(ctx[result][0], S))


def test_lens_from_a_dict(S, realized):
    _top, dep = realized
    d = {"a": {"b": 3}, "ref": rref2dref(dep), "p": [rref2dref(dep), "out.txt"], "abs": "/x/y"}
    with pytest.raises(AssertionError, match="context"):  # as in Pylightnix
        mklens(d, S=S).p.syspath  # noqa: B018
    lens = mklens(d, S=S, rref=dep)
    assert lens.a.b.val == 3
    assert lens.ref.n.val == 5
    assert lens.p.syspath == os.path.join(rref2path(dep, S), "out.txt")
    assert lens.p.contents == "dep text"
    assert lens.abs.syspath == "/x/y"
    assert lens.a.val == {"b": 3}


def test_lens_from_a_closure(S, realized):
    top, dep = realized
    _, clo = instantiate(top_stage, S=S)
    lens = mklens(clo)
    assert lens.msg.val == "hi"
    assert lens.ref_dep.out.refpath[0] == rref2dref(dep)
    # As in Pylightnix, a closure is no realization context: paths need one.
    with pytest.raises(AssertionError, match="context"):
        lens.ref_dep.out.contents  # noqa: B018
    with pytest.raises(AssertionError, match="context"):
        lens.rref  # noqa: B018
    assert mklens(clo, rref=top).ref_dep.out.contents == "dep text"


def test_lens_from_an_rref_string_and_its_config(S, realized):
    _top, dep = realized
    lens = mklens(str(dep), S=S)
    assert lens.name.val == "dep"
    assert lens.out.val == [rref2dref(dep), "out.txt"]


def test_unknown_field_lists_fields(S, realized):
    top, _ = realized
    with pytest.raises(UnknownReferenceError) as info:
        mklens(top, S=S).nosuchfield  # noqa: B018
    msg = str(info.value)
    assert "nosuchfield" in msg
    for field in ("msg", "name", "out", "ref_dep"):
        assert field in msg
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownReferenceError):
        mklens(top, S=S).ref_dep.missing  # noqa: B018


def test_bad_navigation(S, realized):
    top, _ = realized
    with pytest.raises(LightstoreError):
        mklens(top, S=S).msg.further  # noqa: B018
    with pytest.raises(InvalidReferenceError):
        mklens(top, S=S).msg.refpath  # noqa: B018
    with pytest.raises(InvalidReferenceError):
        mklens(top, S=S).msg.syspath  # noqa: B018
    with pytest.raises(LightstoreError):
        mklens(42, S=S)


def test_contents_of_a_folder_fails(S, realized):
    top, _ = realized
    with pytest.raises(InvalidReferenceError):
        mklens(top, S=S).contents  # noqa: B018


def test_lens_follows_the_realization_context(S):
    """From an RRef, a dependency resolves to the realization that RRef used."""
    counter = iter(["first", "second"])

    def stage(r):
        def real(b):
            write(os.path.join(build_outpath(b), "out.txt"), next(counter))

        dep = mkdrv(
            {"name": "dep", "out": [selfref, "out.txt"]}, match_latest(), build_wrapper(real), r
        )
        return mkdrv(
            {"name": "user", "ref_dep": dep},
            match_only(),
            build_wrapper(lambda b: None),
            r,
        )

    _result, clo = instantiate(stage, S=S)
    dep_dref = clo.derivations[0].dref
    first = realize1(clo)
    second = realize1(clo, force_rebuild=[dep_dref])
    assert first != second
    assert mklens(first, S=S).ref_dep.out.contents == "first"
    assert mklens(second, S=S).ref_dep.out.contents == "second"
    # From the DRef there is no context, and two realizations: refuse to guess.
    with pytest.raises(InvalidReferenceError):
        mklens(dep_dref, S=S).out.syspath  # noqa: B018
    assert isrref(mklens(second, S=S).ref_dep.rref)


# -- paths that would leave the store -----------------------------------------------------------


@pytest.mark.parametrize("tail", ESCAPING_TAILS)
def test_lens_and_build_path_refuse_escaping_tails(store, tail):
    def real(b):
        with open(os.path.join(build_outpath(b), "f"), "w") as f:
            f.write("x")

    def stage(r):
        return mkdrv({"name": "dep"}, match_only(), build_wrapper(real), r)

    rref = realize1(instantiate(stage, S=store.settings))
    dref = rref2dref(rref)
    lens = mklens({"p": [dref, *tail]}, S=store.settings).p
    with pytest.raises(InvalidConfigError):
        _ = lens.syspath
    with pytest.raises(InvalidConfigError):
        _ = lens.contents
    seen = []

    def user(b):
        seen.append(b)
        with pytest.raises(InvalidConfigError):
            build_path(b, [dref, *tail])
        with pytest.raises(InvalidConfigError):
            build_path(b, [b.dref, *tail])
        with pytest.raises(InvalidConfigError):
            build_paths(b, [dref, *tail])
        with open(os.path.join(build_outpath(b), "f"), "w") as f:
            f.write("y")

    def stage2(r):
        d = stage(r)
        return mkdrv({"name": "user", "in": d}, match_only(), build_wrapper(user), r)

    realize1(instantiate(stage2, S=store.settings))
    assert seen


def test_lens_contents_stays_inside_the_store(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    S = fsinit(mkSS(str(tmp_path / "store"))).settings

    def stage(r):
        def real(b):
            out = build_outpath(b)
            os.symlink(str(secret), os.path.join(out, "leak"))
            with open(os.path.join(out, "ok"), "w") as f:
                f.write("inside")
            os.symlink(os.path.join(out, "ok"), os.path.join(out, "alias"))

        config = {"name": "links", "leak": [selfref, "leak"], "ok": [selfref, "ok"]}
        return mkdrv(config, match_only(), build_wrapper(real), r)

    rref = realize1(instantiate(stage, S=S))
    assert mklens(rref, S=S).ok.contents == "inside"
    with pytest.raises(InvalidReferenceError, match="outside the store"):
        _ = mklens(rref, S=S).leak.contents
