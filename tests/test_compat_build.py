"""Pylightnix's `build`, `lens` and `deco` modules, and Output-typed matchers/realizers."""

from __future__ import annotations

import os
import time

import pytest

import lightstore as ls


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _writer(name, text):
    def make(b):
        with open(os.path.join(ls.build_outpath(b), name), "w") as f:
            f.write(text)

    return make


def test_build_times_come_from_the_catalogue(S):
    r = ls.Registry(S)

    def slow(b):
        time.sleep(0.05)
        _writer("f", "1")(b)

    d = ls.mkdrv({"name": "slow"}, ls.match_only(), ls.build_wrapper(slow), r)
    rref = ls.realize1(ls.instantiate(d, r=r))
    start, stop = ls.rrefbstart(rref, S), ls.rrefbstop(rref, S)
    assert start is not None and stop is not None
    assert ls.parsetime(start) <= ls.parsetime(stop) <= time.time() + 1
    assert ls.rrefbdelta(rref, S) >= 0.04
    # No marker files in the output: the build record holds the times.
    assert sorted(os.listdir(ls.rref2path(rref, S))) == ["context.json", "f"]
    with pytest.raises(AssertionError):
        ls.rrefbstart("rref:" + "a" * 32 + "-" + d[5:37] + "-slow", S)


class Counting(ls.Build):
    """A Build subclass, made by build_wrapper_ from BuildArgs."""

    def __init__(self, ba):
        super().__init__(ba)
        self.notes: list[str] = []


def test_build_wrapper_with_a_build_subclass_and_manual_outputs(S):
    r = ls.Registry(S)
    seen = {}

    def make(b):
        assert isinstance(b, Counting) and b.outpaths == []
        paths = ls.build_markstart(b, 2)
        for i, p in enumerate(paths):
            with open(os.path.join(p, "i"), "w") as f:
                f.write(str(i))
        seen["rarg"], seen["iarg"] = b.rarg, b.iarg
        with pytest.raises(AssertionError):
            ls.build_markstart(b, 1)  # outputs are made once
        ls.build_markstop(b)
        ls.build_markstop_noexcept(b)

    d = ls.mkdrv({"name": "sub"}, ls.match_all, ls.build_wrapper_(make, Counting, nouts=None), r)
    rrefs = ls.realizeMany(ls.instantiate(d, r=r), realize_args={d: "ARG"})
    assert len(rrefs) == 2 and seen == {"rarg": "ARG", "iarg": {}}
    ba = ls.mkbuildargs(S, d, {}, "AUTO", "AUTO", {}, None)
    b = ls.Build(ba)
    assert b.dref == d and ls.build_config(b).val["name"] == "sub"
    assert ls.build_cattrs(b) is ls.build_cattrs(b)  # cached: realizers keep state on it


def test_build_environ(S):
    r = ls.Registry(S)
    dep = ls.mkdrv(
        {"name": "dep", "out": [ls.selfref, "f"]},
        ls.match_only(),
        ls.build_wrapper(_writer("f", "x")),
        r,
    )
    got = {}

    def make(b):
        got.update(ls.build_environ(b, {"KEEP": "1"}))

    top = ls.mkdrv(
        {"name": "top", "n": 3, "src": [dep, "f"]}, ls.match_only(), ls.build_wrapper(make), r
    )
    ls.realize1(ls.instantiate(top, r=r))
    assert got["KEEP"] == "1" and got["n"] == "3" and got["name"] == "top"
    assert _read(got["src"]) == "x"


def test_output_typed_matchers_and_realizers(S):
    r = ls.Registry(S)

    def realizer_o(S_, dref, ctx, ra):
        out = ls.Path(ls.resolve_store(S_).new_build_area("o") if False else _area(S_))
        with open(os.path.join(out, "f"), "w") as f:
            f.write("o")
        return ls.Output([out])

    def matcher_o(S_, o):
        assert isinstance(o, ls.Output)
        return ls.Output(o.val[:1]) if o.val else None

    cfg = {"name": "typed", "f": [ls.selfref, "f"]}
    d = ls.mkdrv(cfg, ls.output_matcher(matcher_o), ls.output_realizer(realizer_o), r)
    rref = ls.realize1(ls.instantiate(d, r=r))
    assert ls.mklens(rref, S=S).f.contents == "o"
    # mkdrv also takes them unwrapped: Output in and out.
    d2 = ls.mkdrv({**cfg, "v": 2}, matcher_o, realizer_o, r)
    rref2 = ls.realize1(ls.instantiate(d2, r=r))
    assert ls.mklens(rref2, S=S).f.contents == "o"
    # output_validate checks promises.
    empty = _area(S)
    with pytest.raises(ls.PromiseException) as e:
        ls.output_validate(d, ls.Output([empty]), S)
    assert e.value.failed == [(empty, [ls.selfref, "f"])]
    assert ls.output_validate(d, ls.Output([ls.rref2path(rref, S)]), S) == [ls.rref2path(rref, S)]


def _area(S):
    from lightstore.compat.current import store_of as resolve_store

    return resolve_store(S).new_build_area("test")


def test_lens_pylightnix_signature_and_helpers(S):
    r = ls.Registry(S)
    dep = ls.mkdrv(
        {"name": "dep", "out": [ls.selfref, "f"], "d": {"x": 1}},
        ls.match_only(),
        ls.build_wrapper(_writer("f", "dep")),
        r,
    )
    top = ls.mkdrv(
        {"name": "top", "dep": dep}, ls.match_only(), ls.build_wrapper(_writer("g", "t")), r
    )
    _, clo = ls.instantiate(top, r=r)
    rref = ls.realize1(clo)
    rdep = ls.rrefctx(rref, S)[dep][0]
    assert ls.mklens(top, rref=rref, S=S).dep.out.syspath == os.path.join(
        ls.rref2path(rdep, S), "f"
    )
    assert ls.mklens(top, ctx={dep: [rdep]}, S=S).dep.rref == rdep
    assert ls.mklens(clo).dep.d.x.val == 1
    assert ls.mklens(clo).dep.closure.targets == [dep]
    ctx = ls.LensContext(S, None, {dep: [rdep]}, None)
    assert ls.val2rref(dep, ctx) == rdep
    assert ls.val2path(rdep, ctx) == ls.rref2path(rdep, S)
    assert ls.val2dict(dep, ctx)["name"] == "dep"
    assert ls.val2dict(3, ctx) is None
    with pytest.raises(AssertionError):
        ls.val2rref(top, ctx)
    lens = ls.mklens(rref, S=S).dep
    assert ls.traverse(lens, "x") == rdep or ls.isdref(ls.traverse(lens, "x"))
    assert ls.lens_repr(lens, "val") == "mklens(x).dep.val"
    # Mutation works on dicts only, and only for existing fields.
    d = {"foo": "foo", "bar": {"baz": 1}}
    ls.mklens(d, S=S).foo.val = "zzz"
    ls.mklens(d, S=S).bar.baz.val += 1
    assert d == {"foo": "zzz", "bar": {"baz": 2}}
    with pytest.raises(AssertionError):
        ls.mklens(d, S=S).nope.val = 1
    with pytest.raises(AssertionError):
        ls.mklens(rref, S=S).dep.d.x.val = 42
    # A Build passed second (SPEC's mklens(x, b)) still counts as the build.
    seen = {}

    def make(b):
        seen["p"] = ls.mklens(b.dref, b).dep.out.syspath
        seen["own"] = ls.mklens(b, build_output_idx=0).syspath

    user = ls.mkdrv({"name": "user", "dep": dep}, ls.match_only(), ls.build_wrapper(make), r)
    ls.realize1(ls.instantiate(user, r=r))
    assert _read(seen["p"]) == "dep" and seen["own"].startswith(S.tmpdir)


def test_deco_helpers(S):
    r = ls.Registry(S)

    @ls.autodrv_(r=r, a=1, out=[ls.selfref, "o"])
    def first(build, arglist):
        for args in arglist:
            with open(args.out, "w") as f:
                f.write(str(args.a))

    @ls.autodrv(r=r, nouts=2, ref=first, b=2, out=[ls.selfref, "o"])
    def second(build, ref, b, out, rindex, **_):
        with open(out, "w") as f:
            f.write(f"{ref.a}{b}{rindex}")

    rrefs = ls.realizeMany(ls.instantiate(second, r=r))
    assert sorted(_read(ls.mklens(x, S=S).out.syspath) for x in rrefs) == ["120", "121"]

    @ls.autostage_(nouts=1, c=3, out=[ls.selfref, "o"])
    def third(build, arglist):
        with open(arglist[0].out, "w") as f:
            f.write(str(arglist[0].c))

    rref = ls.realize1(ls.instantiate(third, S=S))
    assert ls.mklens(rref, S=S).out.contents == "3"
    unrolled = ls.realizeU(ls.instantiate(third, c=4, S=S))
    assert _read(unrolled.out) == "4"
    u2 = ls.unrollR([ls.rref2dref(rref)], {ls.rref2dref(rref): [rref]}, always_multiref=True, S=S)
    assert u2[0][0].c == 3
    attrs = ls.unroll({ls.rref2dref(rref): [rref]}, ls.rref2dref(rref), None, 0, S=S)
    assert attrs.c == 3

    def f(build, a=1):
        return (a, build)

    args, call = ls.wrapsig(f, {"z": 2})
    assert args == {"a": 1, "z": 2} and call("B", args) == (1, "B")
    with pytest.raises(ls.PylightnixException):
        ls.wrapsig(f, {"a": 2})
