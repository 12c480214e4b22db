"""A pipeline written exactly as a Pylightnix 0.3 user writes it, run by `from lightstore import *`.

Only names from the star import are used in the pipeline itself.
"""

from __future__ import annotations

import json
import os
from os.path import join

import pytest

from lightstore import *  # noqa: F403
from lightstore import (
    Build,
    Closure,
    Config,
    DRef,
    LightstoreError,
    Path,
    Registry,
    alldrefs,
    allrrefs,
    build_cattrs,
    build_deref,
    build_outpath,
    build_path,
    build_wrapper,
    cfgdict,
    current_registry,
    current_storage,
    drefcfg,
    drefrrefs,
    fsinit,
    instantiate,
    isdref,
    isrref,
    match_latest,
    match_only,
    mkconfig,
    mkdrv,
    mklens,
    mkregistry,
    mkSS,
    realize,
    realize1,
    realizeMany,
    redefine,
    rref2dref,
    rref2path,
    rrefctx,
    selfref,
    store_gc,
)

# --- the user's pipeline: parameters -> (non-deterministic) training -> report ----------

COUNTER = {"train": 0, "params": 0, "report": 0}


def stage_params(r: Registry) -> DRef:
    def _realize(b: Build) -> None:
        COUNTER["params"] += 1
        c = build_cattrs(b)
        with open(build_path(b, c.params_file), "w") as f:
            json.dump({"a": c.a, "b": c.b}, f)

    return mkdrv(
        mkconfig({"name": "params", "a": 2, "b": 3, "params_file": [selfref, "params.json"]}),
        match_only(),
        build_wrapper(_realize),
        r,
    )


def stage_train(r: Registry, lr: float = 0.1) -> DRef:
    ref_params = stage_params(r)

    def _realize(b: Build) -> None:
        COUNTER["train"] += 1
        c = build_cattrs(b)
        with open(build_path(b, c.input)) as f:
            p = json.load(f)
        os.makedirs(join(build_outpath(b), "model"))
        with open(build_path(b, c.weights), "w") as f:
            # The realization differs each time, like a real training run.
            f.write(json.dumps({"w": p["a"] * p["b"] * c.lr, "seed": os.urandom(4).hex()}))
        assert isrref(build_deref(b, c.ref_params))

    return mkdrv(
        mkconfig(
            {
                "name": "train",
                "lr": lr,
                "ref_params": ref_params,
                "input": [ref_params, "params.json"],
                "weights": [selfref, "model", "weights.json"],
            }
        ),
        match_latest(),
        build_wrapper(_realize),
        r,
    )


def stage_report(r: Registry) -> DRef:
    ref_train = stage_train(r)

    def _realize(b: Build) -> None:
        COUNTER["report"] += 1
        with open(mklens(b).ref_train.weights.syspath) as f:
            w = json.load(f)["w"]
        with open(join(build_outpath(b), "report.txt"), "w") as f:
            f.write(f"w={w:.2f}")

    return mkdrv(
        mkconfig({"name": "report", "ref_train": ref_train, "out": [selfref, "report.txt"]}),
        match_only(),
        build_wrapper(_realize),
        r,
    )


@pytest.fixture(autouse=True)
def _reset_counter():
    for k in COUNTER:
        COUNTER[k] = 0


def test_pylightnix_pipeline(tmp_path):
    S = mkSS(str(tmp_path / "pylightnix-store"))
    fsinit(S)

    with current_registry(Registry(S)):
        rref = realize1(instantiate(stage_report, S=S))
    assert isrref(rref)
    with open(mklens(rref, S=S).out.syspath) as f:
        assert f.read() == "w=0.60"
    assert mklens(rref, S=S).ref_train.lr.val == 0.1
    assert mklens(rref, S=S).ref_train.ref_params.a.val == 2
    weights = mklens(rref, S=S).ref_train.weights.syspath
    assert weights.startswith(rref2path(mklens(rref, S=S).ref_train.rref, S))
    assert COUNTER == {"params": 1, "train": 1, "report": 1}

    # Cached: nothing runs.
    rref2 = realize1(instantiate(stage_report, S=S))
    assert rref2 == rref
    assert COUNTER == {"params": 1, "train": 1, "report": 1}

    # Re-train: a new training realization, chosen by match_latest; the report follows.
    _, clo = instantiate(stage_report, S=S)
    train_dref = clo.derivations[1].dref
    rref3 = realize1(clo, force_rebuild=[train_dref])
    assert rref3 != rref
    assert COUNTER == {"params": 1, "train": 2, "report": 2}
    assert len(drefrrefs(train_dref, S)) == 2
    assert rrefctx(rref3, S)[train_dref] == [mklens(rref3, S=S).ref_train.rref]

    # Another learning rate: a new DRef for train and report; params are reused.
    def stage_train_lr(r: Registry) -> DRef:
        return stage_train(r, lr=0.5)

    rref4 = realize1(instantiate(stage_train_lr, S=S))
    assert rref2dref(rref4) != train_dref
    assert COUNTER["params"] == 1
    assert mklens(rref4, S=S).lr.val == 0.5

    # The queries see the whole history.
    assert len(alldrefs(S)) == 4
    assert len(allrrefs(S)) == 1 + 3 + 2
    assert isdref(train_dref)
    assert drefcfg(train_dref, S)["weights"] == [train_dref, "model", "weights.json"]


def test_pylightnix_stage_arguments_and_closure(S):
    def mkstage(config: dict, r: Registry) -> DRef:
        def _realize(b: Build) -> None:
            with open(join(build_outpath(b), "artifact"), "w") as f:
                f.write(json.dumps(build_cattrs(b).__dict__, sort_keys=True))

        return mkdrv(mkconfig(config), match_only(), build_wrapper(_realize), r)

    # instantiate passes extra positional arguments before `r`.
    _, clo = instantiate(mkstage, {"a": "1"}, S=S)
    assert isinstance(clo, Closure)
    assert len(clo.targets) == 1 and len(clo.derivations) == 1
    assert clo.derivations[0].dref == clo.targets[0]
    rref1 = realize1(clo)
    rref2 = realize1(clo)
    rref3 = realize1(clo, force_rebuild=[clo.targets[0]])
    assert rref1 == rref2 == rref3

    # Results stay read-only (checked on the mode bits: tests may run as root).
    for p in (rref2path(rref1, S), join(rref2path(rref1, S), "artifact")):
        assert not os.stat(p).st_mode & 0o222, p

    # A Config object and mkdrv itself as the stage, as Pylightnix tests do.
    def _exe(b: Build) -> None:
        p = join(build_outpath(b), "exe")
        with open(p, "w") as f:
            f.write("#!/bin/sh\necho Fooo\n")
        os.chmod(p, 0o755)

    rref_exe = realize1(instantiate(mkdrv, Config({}), match_only(), build_wrapper(_exe), S=S))
    assert os.access(join(rref2path(rref_exe, S), "exe"), os.X_OK)


def test_pylightnix_results_as_tuple_and_ignored_stages(S):
    def mk(config, r):
        return mkdrv(mkconfig(config), match_only(), build_wrapper(lambda b: None), r)

    def setting(r: Registry):
        n1 = mk({"a": "1"}, r)
        mk({"b": "2"}, r)  # not asked for: never realized
        n3 = mk({"c": "3", "maman": n1}, r)
        return n1, n3

    (n1, n3), clo = instantiate(setting, S=S)
    result, clo2, context = realize(clo)
    assert result == (n1, n3) and clo2 is clo
    assert set(context) == {n1, n3}
    assert len(alldrefs(S)) == 3  # the ignored stage is recorded too, as in Pylightnix
    assert len(drefrrefs(n1, S)) == 1 and len(drefrrefs(n3, S)) == 1


def test_pylightnix_current_registry_without_instantiate_stage(S):
    def mk(config, r=None):
        return mkdrv(mkconfig(config), match_only(), build_wrapper(lambda b: None), r)

    with current_registry(Registry(S)):
        n1 = mk({"a": "1"})
        mk({"b": "2"})
        n3 = mk({"c": "3", "maman": n1})
        rref_n3 = realize1(instantiate(n3))
    assert isrref(rref_n3)
    assert len(drefrrefs(n1, S)) == 1
    assert len(alldrefs(S)) == 3


def test_pylightnix_current_storage_and_default_store(tmp_path):
    S1 = mkSS(str(tmp_path / "s1"))
    S2 = mkSS(str(tmp_path / "s2"))
    fsinit(S1)
    fsinit(S2)

    def mk(config):
        def stage(r):
            return mkdrv(mkconfig(config), match_only(), build_wrapper(lambda b: None), r)

        return stage

    with current_storage(S1):
        realize1(instantiate(mk({"a": "1"})))
        realize1(instantiate(mk({"b": "2"})))
        with current_storage(S2) as S:
            with current_registry(Registry(S)):
                realize1(instantiate(mk({"c": "3"})))
            assert len(alldrefs()) == 1
        assert len(alldrefs()) == 2
    assert len(alldrefs(S1)) == 2
    assert len(alldrefs(S2)) == 1

    # No storage named anywhere: the default store ($LIGHTSTORE_ROOT) is created on first use.
    default_root = os.environ["LIGHTSTORE_ROOT"]
    assert not os.path.exists(default_root)
    rref = realize1(instantiate(mk({"d": "4"})))
    assert os.path.isdir(default_root)
    assert rref2path(rref).startswith(os.path.abspath(default_root))
    assert alldrefs() == [rref2dref(rref)]


def test_pylightnix_fsinit_remove_existing(tmp_path):
    S = mkSS(str(tmp_path / "s"))
    fsinit(S)
    realize1(
        instantiate(lambda r: mkdrv({"a": 1}, match_only(), build_wrapper(lambda b: None), r), S=S)
    )
    assert len(allrrefs(S)) == 1
    fsinit(S, remove_existing=True)
    assert allrrefs(S) == [] and alldrefs(S) == []


def test_pylightnix_gc_example(S):
    def mk(config, r):
        return mkdrv(mkconfig(config), match_only(), build_wrapper(lambda b: None), r)

    def _node1(r: Registry) -> DRef:
        return mk({"name": "1"}, r)

    def _node2(r: Registry) -> DRef:
        return mk({"name": "2", "maman": _node1(r)}, r)

    def _node3(r: Registry) -> DRef:
        return mk({"name": "3", "maman": _node1(r)}, r)

    realize1(instantiate(_node1, S=S))
    r2 = realize1(instantiate(_node2, S=S))
    r3 = realize1(instantiate(_node3, S=S))
    rm_drefs, rm_rrefs = store_gc([], [r2], S)
    assert rm_drefs == {rref2dref(r3)}
    assert rm_rrefs == {r3}


def test_pylightnix_recursive_realize_with_another_registry(S):
    def _setup_inner(r):
        return mkdrv(mkconfig({"foo": "bar"}), match_only(), build_wrapper(lambda b: None), r)

    def _setup_outer(r):
        rref_inner = realize1(instantiate(_setup_inner, S=S))
        r2 = mkdrv(
            mkconfig({"baz": mklens(rref_inner, S=S).foo.val}),
            match_only(),
            build_wrapper(lambda b: None),
            r,
        )
        return [rref_inner, r2]

    _, clo = instantiate(_setup_outer, S=S)
    rref = realize1(clo)
    rref_inner, _ = clo.result
    assert mklens(rref, S=S).baz.val == "bar"
    assert mklens(rref_inner, S=S).foo.val == "bar"


def test_no_recursive_instantiate_with_the_same_registry(S):
    def _setup(r):
        _, clo = instantiate(_setup, r=r)
        return clo.targets[0]

    with pytest.raises(LightstoreError):
        instantiate(_setup, S=S)


def test_redefine_pylightnix_style(S):
    def _tweak(c: dict) -> None:
        c["a"] = 5

    rref = realize1(instantiate(redefine(stage_params, new_config=_tweak), S=S))
    with open(mklens(rref, S=S).params_file.syspath) as f:
        assert json.load(f) == {"a": 5, "b": 3}


def test_realize_many_and_cfgdict(S):
    def stage(r: Registry) -> DRef:
        def _realize(b: Build) -> None:
            for i, o in enumerate(b.outpaths):
                with open(join(o, "i"), "w") as f:
                    f.write(str(i))

        return mkdrv(
            mkconfig({"name": "many"}), match_latest(2), build_wrapper(_realize, nouts=2), r
        )

    rrefs = realizeMany(instantiate(stage, S=S))
    assert len(rrefs) == 2 and all(isrref(x) for x in rrefs)
    c = mkconfig({"a": 1, "b": [1, 2]})
    d = cfgdict(c)
    assert d == {"a": 1, "b": [1, 2]}
    d["b"].append(3)
    assert cfgdict(c) == {"a": 1, "b": [1, 2]}
    assert Path("/a") == "/a"


def test_registry_helpers(S):
    r = mkregistry(S)
    assert isinstance(r, Registry)
    dref = stage_params(r)
    assert dref in r
    rref = realize1(instantiate(dref, r=r))
    assert rref2dref(rref) == dref


def test_force_rebuild_rejects_malformed_references(S):
    _, clo = instantiate(stage_params, S=S)
    realize1(clo)
    with pytest.raises(LightstoreError):
        realize1(clo, force_rebuild="Foobar")  # type: ignore[arg-type]
    with pytest.raises(LightstoreError):
        realize1(clo, force_rebuild=["Foobar"])


def test_assert_realized_rejects_malformed_references(S):
    _, clo = instantiate(stage_params, S=S)
    realize1(clo)
    with pytest.raises(LightstoreError):
        realize1(clo, assert_realized=["not a dref"])
