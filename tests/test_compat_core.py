"""Pylightnix's `types` and `core` modules, from lightstore (behaviour as in Pylightnix)."""

from __future__ import annotations

import os
import threading

import pytest

import lightstore as ls
from lightstore.compat.current import current


def _node(r, cfg, data="x"):
    def make(b):
        with open(os.path.join(ls.build_outpath(b), "out"), "w") as f:
            f.write(data)

    return ls.mkdrv(ls.mkconfig(cfg), ls.match_only(), ls.build_wrapper(make), r)


def test_types():
    # NewTypes, as in Pylightnix: plain strings at run time.
    assert ls.SPath("/s") == ls.Path("/s") == "/s" and type(ls.Path("/s")) is str
    assert issubclass(ls.Hash, str)
    assert ls.PylightnixException is ls.LightstoreError
    assert issubclass(ls.PromiseException, ls.BuildError)
    o = ls.Output([ls.Path("/a")])
    assert o.val == ["/a"] and o == ls.Output(["/a"])
    rc = ls.RConfig({"a": 1})
    assert rc.val == {"a": 1} and rc == {"a": 1}
    assert ls.ConfigAttrs({"a": 1}).a == 1
    ba = ls.BuildArgs(None, ls.DRef("dref:" + "a" * 32 + "-x"), {}, None, None, {}, None)
    assert ba.iarg == {}


def test_assert_checks_are_assertion_errors_and_survive_O():
    # Pylightnix users catch these with `except AssertionError`; they are raised, not asserted.
    checks = [
        (ls.assert_valid_name, "bad name!"),
        (ls.assert_valid_dref, "dref:short"),
        (ls.assert_valid_rref, "rref:nope"),
        (ls.assert_valid_hashpart, "x" * 32),
        (ls.assert_valid_hash, "a" * 63),
        (ls.assert_valid_refpath, ["not a dref"]),
        (ls.assert_valid_context, {"dref:x": ["y"]}),
        (ls.assert_valid_config, None),
        (ls.assert_rref_deps, {"a": "rref:" + "b" * 32 + "-" + "a" * 32 + "-x"}),
    ]
    for check, arg in checks:
        with pytest.raises(AssertionError):
            check(arg)
        with pytest.raises(ls.LightstoreError):
            check(arg)
    with pytest.raises(AssertionError):
        ls.mkconfig({"a": (3, 1)})
    ls.assert_valid_hashpart("a" * 32)
    ls.assert_valid_hash("a" * 64)
    ls.assert_valid_config({"name": "ok"})


def test_thread_local_defaults(S):
    r = ls.Registry(S)
    assert ls.tlregistry(None) is None and ls.tlstorage(None) is None
    with ls.current_registry(r):
        assert ls.tlregistry(None) is r and ls.tlstorage(None) == S
        seen = {}

        def other():
            seen["r"], seen["s"] = ls.tlregistry(None), ls.tlstorage(None)

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        assert seen == {"r": None, "s": None}  # another thread has its own defaults
    assert ls.setregistry(r) is None
    assert ls.setregistry(None) is r
    assert ls.setstorage(S) is None and ls.tlstorage(None) == S
    assert ls.fsroot() == S.root and ls.fsstorage() == S.storage and ls.fstmpdir() == S.tmpdir
    assert ls.setstorage(None) == S
    assert ls.TL is current
    with pytest.raises(AssertionError):
        ls.setregistry("not a registry")  # type: ignore[arg-type]


def test_many_threads_each_with_its_registry(tmp_path):
    stores = [ls.fsinit(ls.mkSS(str(tmp_path / f"s{i}"))) for i in range(4)]
    results: dict[int, str] = {}

    def work(i):
        with ls.current_registry(ls.Registry(stores[i])):
            dref = _node(None, {"name": f"t{i}", "i": i}, data=str(i))
            results[i] = ls.realize1(ls.instantiate(dref))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(4):
        assert ls.rref2dref(results[i]) in ls.alldrefs(stores[i])
        assert ls.mklens(results[i], S=stores[i]).syspath.startswith(stores[i].root)


def test_config_readable_right_after_mkdrv(S):
    r = ls.Registry(S)
    dep = _node(r, {"name": "dep", "a": 1, "out": [ls.selfref, "out"]})
    top = _node(r, {"name": "top", "dep": dep})
    # Readable at once, as in Pylightnix.
    assert ls.drefcfg(dep, S)["a"] == 1
    assert ls.drefcfg(dep, S)["out"] == [dep, "out"]
    assert ls.drefcfg_(dep, S).val["out"] == [ls.selfref, "out"]
    assert ls.drefattrs(dep, S).a == 1
    assert ls.mklens(dep, r=r).a.val == 1
    assert ls.mklens(top, r=r).dep.a.val == 1
    assert ls.mklens(top, r=r).dep.out.refpath == [dep, "out"]
    # Recording stays batched: store-wide questions record both at once.
    assert {dep, top} <= set(ls.alldrefs(S))


def test_config_helpers(S):
    r = ls.Registry(S)
    c = ls.mkconfig({"name": "n", "p": [ls.selfref, "f"], "q": 1})
    dref = ls.mkdrv(c, ls.match_only(), ls.build_wrapper(lambda b: None), r)
    assert ls.cfgname(c) == "n" and ls.cfgname({"a": 1}) == "unnamed"
    assert ls.cfghash(c) == dref[5:37]
    assert ls.trimhash("a" * 64) == "a" * 32
    assert ls.cfgsp(c) == [("p", [ls.selfref, "f"])]
    assert ls.cfgdeps(ls.mkconfig({"d": dref})) == {dref}
    assert ls.cfgcattrs(c).q == 1
    assert '"q":1' in ls.cfgserialize(c)
    assert ls.resolve(c, dref)["p"] == [dref, "f"]
    assert ls.mkrefpath(dref, ["a"]) == [dref, "a"]
    assert ls.mkname("ok") == "ok"
    with pytest.raises(AssertionError):
        ls.mkname("no way")
    assert ls.reserved(ls.Path("/x"), "context.json") == "/x/context.json"
    with pytest.raises(AssertionError):
        ls.reserved(ls.Path("/x"), "other")
    assert ls.storagename() == "objects"
    assert ls.PYLIGHTNIX_NAMEPAT == "[a-zA-Z0-9_-]"
    ls.assert_valid_storage(S)
    with pytest.raises(AssertionError):
        ls.assert_valid_storage(ls.mkSS(str(S.root) + "-missing"))


def test_contexts_and_closures(S):
    r = ls.Registry(S)
    a = _node(r, {"name": "a", "out": [ls.selfref, "out"]})
    b = _node(r, {"name": "b", "a": a})
    clo = ls.mkclosure([b], r)
    ls.assert_valid_closure(clo)
    _, _, ctx = ls.realize(clo)
    ra = ctx[a][0]
    assert ls.context_deref(ctx, a) == [ra]
    with pytest.raises(AssertionError):
        ls.context_deref({}, a)
    c2 = ls.context_add(ls.mkcontext(), a, [ra])
    assert ls.context_eq(c2, {a: [ra]})
    with pytest.raises(AssertionError):
        ls.context_add(c2, a, [ra])
    assert ls.context_derefpath(c2, [a, "out"], S) == [os.path.join(ls.rref2path(ra, S), "out")]
    assert '"' in ls.context_serialize(c2)
    assert ls.rrefpath2path(ra, [a, "out"], S).endswith("out")
    assert [os.path.basename(p) for p in ls.rrefdata(ra, S)] == ["out"]
    assert ls.rrefattrs(ctx[b][0], S).a == a
    assert ls.drefcfgpath(a, S).endswith("config.json")
    res, clo2 = ls.unpack_closure_arg_(ls.instantiate([b], r=r))
    assert res == [b] and clo2.targets == [b]
    with pytest.raises(AssertionError):
        ls.assert_have_realizers(ls.Registry(S), [b])


def test_keys_and_match(S):
    r = ls.Registry(S)
    n = [0]

    def make(b):
        n[0] += 1
        with open(os.path.join(ls.build_outpath(b), "v"), "w") as f:
            f.write(str(n[0]))

    d = ls.mkdrv({"name": "k"}, ls.match_all, ls.build_wrapper(make), r)
    clo = ls.instantiate(d, r=r)
    r1 = ls.realize1(clo)
    r2 = ls.realizeMany(clo, force_rebuild=True)
    assert len(r2) == 2
    latest = ls.match(ls.latest(), lambda rr: rr[:1])
    newest = latest(S, r2)
    assert newest is not None and newest[0] != r1
    assert ls.match(ls.exact([r1]), lambda rr: rr)(S, r2) == [r1]
    assert ls.match(ls.texthash(), lambda rr: rr, ls.match_all)(S, r2) == sorted(r2, reverse=True)
    assert ls.match(ls.exact([]), lambda rr: rr or None, ls.match_all)(S, r2) is None


def test_mkdrv_both_call_forms_and_store_level_helpers(S):
    r = ls.Registry(S)
    d1 = ls.mkdrv(
        r, ls.mkconfig({"name": "old"}), ls.match_only(), ls.build_wrapper(lambda b: None)
    )
    d2 = ls.mkdrv(
        ls.mkconfig({"name": "old"}), ls.match_only(), ls.build_wrapper(lambda b: None), r
    )
    assert d1 == d2
    d3 = ls.mkdrv_(ls.mkconfig({"name": "direct"}), S)
    assert d3 in ls.alldrefs(S)
    folder = S.tmpdir + "/manual"
    os.makedirs(folder)
    with open(folder + "/f", "w") as f:
        f.write("1")
    rref = ls.mkrealization(d3, {}, ls.Path(folder), S)
    assert rref in ls.drefrrefs(d3, S) and not os.path.exists(folder)
    with pytest.raises(AssertionError):
        ls.mkdrv({"name": "x"}, ls.match_only(), ls.build_wrapper(lambda b: None))


def test_errors_pylightnix_catches(S):
    r = ls.Registry(S)

    def bad(b):
        raise RuntimeError("boom")

    d = ls.mkdrv({"name": "bad"}, ls.match_only(), ls.build_wrapper(bad), r)
    with pytest.raises(ls.BuildError) as e:
        ls.realize1(ls.instantiate(d, r=r))
    assert isinstance(e.value.exception, RuntimeError) and e.value.outpaths == []
    p = ls.mkdrv(
        {"name": "p", "o": [ls.selfref, "f"]}, ls.match_only(), ls.build_wrapper(lambda b: None), r
    )
    with pytest.raises(ls.PromiseException) as pe:
        ls.realize1(ls.instantiate(p, r=r))
    assert pe.value.failed and pe.value.failed[0][1] == [ls.selfref, "f"]
