"""The realization engine: DRefs, caching, context-sensitive reuse, options, failures, the
registry and stages. Everything runs against a real store in a tmp folder; processes are
real subprocesses.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from helpers import assert_unchanged, read, snapshot, write

from lightstore import (
    Build,
    BuildError,
    Config,
    InvalidConfigError,
    LightstoreError,
    MatcherError,
    NotRealizedError,
    PromiseError,
    Registry,
    UnknownReferenceError,
    alldrefs,
    allrrefs,
    build_cattrs,
    build_config,
    build_context,
    build_deref,
    build_outpath,
    build_outpaths,
    build_path,
    build_wrapper,
    drefrrefs,
    instantiate,
    isdref,
    isrref,
    match_all,
    match_latest,
    match_only,
    match_some,
    mkdrv,
    realize,
    realize1,
    realized,
    realizeMany,
    redefine,
    rref2dref,
    rref2path,
    rrefctx,
    selfref,
)

# -- helpers -----------------------------------------------------------------


def text_stage(name, text="x", calls=None, deps=(), matcher=None, extra=None):
    """A stage writing `text` to out.txt; appends its name to `calls` when it builds.

    `deps` are stage functions; their DRefs go into the config as dep0, dep1...
    """

    def stage(r):
        cfg = {"name": name, "out": [selfref, "out.txt"], **(extra or {})}
        for i, dep in enumerate(deps):
            cfg[f"dep{i}"] = dep(r=r)

        def real(b):
            if calls is not None:
                calls.append(name)
            write(os.path.join(build_outpath(b), "out.txt"), text)

        return mkdrv(cfg, matcher or match_only(), build_wrapper(real), r)

    return stage


def random_stage(name, calls=None, deps=(), matcher=None):
    """A non-deterministic stage: writes random bytes."""

    def stage(r):
        cfg = {"name": name, "out": [selfref, "out.bin"]}
        for i, dep in enumerate(deps):
            cfg[f"dep{i}"] = dep(r=r)

        def real(b):
            if calls is not None:
                calls.append(name)
            with open(os.path.join(build_outpath(b), "out.bin"), "wb") as f:
                f.write(os.urandom(16))

        return mkdrv(cfg, matcher or match_latest(), build_wrapper(real), r)

    return stage


def tree_files(root: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


def builds_rows(store):
    return store.catalogue.query("SELECT dref, status, error FROM builds ORDER BY id")


# -- DRefs ---------------------------------------------------------------------

DREF_SCRIPT = textwrap.dedent(
    """
    import sys
    from lightstore import Registry, build_wrapper, match_only, mkdrv
    r = Registry(sys.argv[1])
    config = {"name": "same", "z": [1, 2.5, None, True], "a": {"y": "t", "b": 1}}
    print(mkdrv(config, match_only(), build_wrapper(lambda b: None), r))
    """
)


def test_same_config_same_dref_in_every_process(store, tmp_path):
    script = tmp_path / "dref.py"
    script.write_text(DREF_SCRIPT)
    outs = set()
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, str(script), store.root],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        outs.add(proc.stdout.strip())
    assert len(outs) == 1
    (theirs,) = outs
    # Here, with the keys in a different order at every level.
    config = {"a": {"b": 1, "y": "t"}, "z": [1, 2.5, None, True], "name": "same"}
    ours = mkdrv(config, match_only(), build_wrapper(lambda b: None), Registry(store))
    assert ours == theirs
    assert isdref(ours)
    assert ours.endswith("-same")
    assert len(ours.split(":")[1].split("-")[0]) == 32


def test_dref_depends_on_every_value_and_on_list_order(store):
    r = Registry(store)
    noop = build_wrapper(lambda b: None)
    drefs = {
        mkdrv({"a": 1}, match_only(), noop, r),
        mkdrv({"a": 2}, match_only(), noop, r),
        mkdrv({"a": 1.0}, match_only(), noop, r),
        mkdrv({"a": "1"}, match_only(), noop, r),
        mkdrv({"a": [1, 2]}, match_only(), noop, r),
        mkdrv({"a": [2, 1]}, match_only(), noop, r),
        mkdrv({"b": 1}, match_only(), noop, r),
    }
    assert len(drefs) == 7


def test_default_name_is_unnamed(store):
    dref = mkdrv({"a": 1}, match_only(), build_wrapper(lambda b: None), Registry(store))
    assert dref.endswith("-unnamed")


# -- rebuilding: deterministic and not -----------------------------------------


def test_deterministic_rebuild_gives_same_rref(S):
    calls: list[str] = []
    clo = instantiate(text_stage("det", "hello", calls), S=S)
    rref1 = realize1(clo)
    rref2 = realize1(clo, force_rebuild=True)
    assert calls == ["det", "det"]
    assert rref1 == rref2
    assert drefrrefs(rref2dref(rref1), S) == [rref1]
    assert read(os.path.join(rref2path(rref1, S), "out.txt")) == "hello"


def test_force_rebuild_accepts_a_list_of_drefs(S):
    calls: list[str] = []
    clo = instantiate(text_stage("det", "hello", calls), S=S)
    rref1 = realize1(clo)
    rref2 = realize1(clo, force_rebuild=[clo[1].targets[0]])
    assert calls == ["det", "det"]
    assert rref1 == rref2


def test_nondeterministic_rebuild_gives_distinct_rrefs(S):
    clo = instantiate(random_stage("rnd"), S=S)
    rrefs = [realize1(clo)]
    for _ in range(2):
        rrefs.append(realize1(clo, force_rebuild=True))
    assert len(set(rrefs)) == 3
    dref = rref2dref(rrefs[0])
    assert set(drefrrefs(dref, S)) == set(rrefs)
    # Without forcing, match_latest() picks the newest one and builds nothing.
    assert realize1(clo) == rrefs[-1]
    assert len(drefrrefs(dref, S)) == 3


@pytest.mark.parametrize("matcher", [match_some(3), match_all])
def test_nouts_gives_n_outputs(S, matcher):
    seen = []

    def stage(r):
        def real(b):
            outs = build_outpaths(b)
            seen.append(len(outs))
            for i, o in enumerate(outs):
                write(os.path.join(o, "out.txt"), f"output {i}")

        return mkdrv(
            {"name": "three", "out": [selfref, "out.txt"]}, matcher, build_wrapper(real, nouts=3), r
        )

    rrefs = realizeMany(instantiate(stage, S=S))
    assert seen == [3]
    assert len(rrefs) == 3 and len(set(rrefs)) == 3
    texts = sorted(read(os.path.join(rref2path(x, S), "out.txt")) for x in rrefs)
    assert texts == ["output 0", "output 1", "output 2"]
    # Cached: same answer, no new build.
    assert sorted(realizeMany(instantiate(stage, S=S))) == sorted(rrefs)
    assert seen == [3]
    with pytest.raises(LightstoreError):
        realize1(instantiate(stage, S=S))


def test_build_outpath_refuses_several_outputs(S):
    errors = []

    def stage(r):
        def real(b):
            try:
                build_outpath(b)
            except LightstoreError as e:
                errors.append(e)
            for i, o in enumerate(build_outpaths(b)):
                write(os.path.join(o, "f"), str(i))

        return mkdrv({"name": "two"}, match_all, build_wrapper(real, nouts=2), r)

    assert len(realizeMany(instantiate(stage, S=S))) == 2
    assert len(errors) == 1


@pytest.mark.parametrize("nouts", [0, -1, 1.5, True])
def test_build_wrapper_rejects_bad_nouts(nouts):
    with pytest.raises(InvalidConfigError):
        build_wrapper(lambda b: None, nouts=nouts)


# -- caching and reuse -----------------------------------------------------------


def test_cached_realize_does_not_call_the_realizer(store, S):
    calls: list[str] = []
    stage = text_stage("cached", "c", calls)
    rref1 = realize1(instantiate(stage, S=S))
    n_builds = len(builds_rows(store))
    rref2 = realize1(instantiate(stage, S=S))
    rref3 = realize1(instantiate(stage, S=S))
    assert rref1 == rref2 == rref3
    assert calls == ["cached"]
    assert len(builds_rows(store)) == n_builds
    assert os.listdir(store.tmp_dir) == []


def test_changed_config_gives_new_work_only_downstream(S):
    calls: list[str] = []

    def pipeline(a_value, c_value):
        a = text_stage("a", "A", calls, extra={"v": a_value})
        b = text_stage("b", "B", calls, deps=[a])
        c = text_stage("c", "C", calls, deps=[b], extra={"v": c_value})
        side = text_stage("side", "S", calls, deps=[a])

        def top(r):
            return [c(r=r), side(r=r)]

        return top

    (c1, side1), clo = instantiate(pipeline(1, 1), S=S)
    _, _, ctx1 = realize(clo)
    assert sorted(calls) == ["a", "b", "c", "side"]

    # Change only the last stage: only it runs again.
    calls.clear()
    (c2, side2), clo = instantiate(pipeline(1, 2), S=S)
    _, _, ctx2 = realize(clo)
    assert calls == ["c"]
    assert c2 != c1 and side2 == side1
    assert ctx2[side2] == ctx1[side1]

    # Change the first stage: its DRef changes, and so do all DRefs downstream.
    calls.clear()
    (c3, side3), clo = instantiate(pipeline(2, 2), S=S)
    realize(clo)
    assert sorted(calls) == ["a", "b", "c", "side"]
    assert c3 != c2 and side3 != side2


def test_realize_returns_result_closure_and_context(S):
    a = text_stage("a", "A")
    b = text_stage("b", "B", deps=[a])
    result, clo = instantiate(b, S=S)
    res, clo2, ctx = realize((result, clo))
    assert res == result and clo2 is clo
    assert set(ctx) == {d.dref for d in clo.derivations}
    assert len(clo.derivations) == 2
    # Dependencies come first in the closure.
    assert clo.derivations[-1].dref == result
    rref_b = ctx[result][0]
    rref_a = ctx[clo.derivations[0].dref][0]
    assert rrefctx(rref_b, S) == {rref2dref(rref_a): [rref_a]}
    assert rrefctx(rref_a, S) == {}
    # A bare Closure is accepted as well as the (result, closure) pair.
    assert realize1(clo) == rref_b


def test_realize_many_targets(S):
    a = text_stage("a", "A")
    b = text_stage("b", "B")

    def both(r):
        return [a(r=r), b(r=r)]

    (da, db), clo = instantiate(both, S=S)
    _, _, ctx = realize(clo)
    assert len(ctx[da]) == 1 and len(ctx[db]) == 1
    with pytest.raises(LightstoreError):
        realizeMany(clo)


def test_instantiate_accepts_drefs(S):
    r = Registry(S)
    dref = text_stage("a", "A")(r=r)
    rref = realize1(instantiate(dref, r=r))
    assert rref2dref(rref) == dref
    rref2 = realize1(instantiate([dref], r=r))
    assert rref2 == rref


def test_context_sensitive_reuse(S):
    calls: list[str] = []
    up = random_stage("up", calls, matcher=match_latest())
    down = text_stage("down", "D", calls, deps=[up])

    result, clo = instantiate(down, S=S)
    up_dref = clo.derivations[0].dref
    _, _, ctx1 = realize(clo)
    down1 = ctx1[result][0]
    up1 = ctx1[up_dref][0]
    assert calls == ["up", "down"]

    # A new upstream realization is chosen: the downstream stage runs again,
    # with the same DRef but a new context, so it is a new realization.
    calls.clear()
    _, _, ctx2 = realize(clo, force_rebuild=[up_dref])
    assert calls == ["up", "down"]
    up2, down2 = ctx2[up_dref][0], ctx2[result][0]
    assert up2 != up1 and down2 != down1
    assert rref2dref(down2) == rref2dref(down1)
    assert rrefctx(down2, S) == {up_dref: [up2]}
    assert set(drefrrefs(result, S)) == {down1, down2}

    # Cached with the newest upstream.
    calls.clear()
    assert realize1(clo) == down2
    assert calls == []

    # Switching back to the first upstream realization reuses the first downstream one.
    from lightstore import match_exact

    back = redefine(up, new_matcher=match_exact([up1]))
    down_back = text_stage("down", "D", calls, deps=[back])
    result_back, clo_back = instantiate(down_back, S=S)
    assert result_back == result  # matchers are not part of the DRef
    assert realize1(clo_back) == down1
    assert calls == []


# -- redefine, realized, options ------------------------------------------------


def test_redefine_config_matcher_realizer(S):
    calls: list[str] = []
    base = text_stage("base", "original", calls, extra={"n": 1})
    rref_base = realize1(instantiate(base, S=S))

    def bump(c):
        c["n"] = 2

    def other(b):
        calls.append("other")
        write(os.path.join(build_outpath(b), "out.txt"), f"n={build_cattrs(b).n}")

    changed = redefine(base, new_config=bump, new_realizer=build_wrapper(other))
    rref = realize1(instantiate(changed, S=S))
    assert rref2dref(rref) != rref2dref(rref_base)
    assert read(os.path.join(rref2path(rref, S), "out.txt")) == "n=2"
    assert calls == ["base", "other"]

    # Only a new matcher: same config, same DRef, the original realizer.
    seen = []

    def spy(S_, rrefs):
        seen.append(list(rrefs))
        return list(rrefs) or None

    same = redefine(base, new_matcher=spy)
    assert realize1(instantiate(same, S=S)) == rref_base
    assert seen == [[rref_base]]


def test_redefine_without_changes_keeps_the_dref(S):
    base = text_stage("base", "x")
    d1, _ = instantiate(base, S=S)
    d2, _ = instantiate(redefine(base), S=S)
    assert d1 == d2


def test_realized_raises_when_work_is_needed_and_returns_cached(store, S):
    calls: list[str] = []
    a = text_stage("a", "A", calls)
    b = text_stage("b", "B", calls, deps=[a])
    with pytest.raises(NotRealizedError):
        realize1(instantiate(realized(b), S=S))
    assert calls == []
    assert allrrefs(S) == []
    rref = realize1(instantiate(b, S=S))
    assert realize1(instantiate(realized(b), S=S)) == rref
    assert calls == ["a", "b"]


def test_assert_realized(S):
    calls: list[str] = []
    a = text_stage("a", "A", calls)
    b = text_stage("b", "B", calls, deps=[a])
    result, clo = instantiate(b, S=S)
    a_dref = clo.derivations[0].dref
    with pytest.raises(NotRealizedError) as info:
        realize1(clo, assert_realized=[a_dref])
    assert info.value.dref == a_dref
    assert calls == []
    realize1(instantiate(a, S=S))
    # `a` is there now; `b` is not asserted, so it builds.
    rref = realize1(clo, assert_realized=[a_dref])
    assert calls == ["a", "b"]
    assert realize1(clo, assert_realized=[a_dref, result]) == rref


def test_dry_run_builds_nothing(store, S):
    calls: list[str] = []
    a = text_stage("a", "A", calls)
    b = text_stage("b", "B", calls, deps=[a])
    c = text_stage("c", "C", calls, deps=[b])
    rref_a = realize1(instantiate(a, S=S))
    calls.clear()
    result, clo = instantiate(c, S=S)
    before = snapshot(store)

    assert realize1(clo, dry_run=True) is None
    assert realizeMany(clo, dry_run=True) == []
    _, _, ctx = realize(clo, dry_run=True)
    a_dref, b_dref = clo.derivations[0].dref, clo.derivations[1].dref
    assert ctx == {a_dref: [rref_a], b_dref: None, result: None}  # None, as in Pylightnix
    assert calls == []
    assert_unchanged(store, before)
    assert os.listdir(store.tmp_dir) == []
    # A dry run of something already realized returns it.
    assert realize1(instantiate(a, S=S), dry_run=True) == rref_a


def test_realize_args_reach_a_raw_realizer(store, S, tmp_path):
    received = []

    def raw_realizer(S_, dref, context, arg):
        received.append((dref, context, arg))
        out = tmp_path / "raw-out"
        out.mkdir()
        (out / "arg.json").write_text(json.dumps(arg))
        return [str(out)]

    def stage(r):
        return mkdrv({"name": "raw", "out": [selfref, "arg.json"]}, match_only(), raw_realizer, r)

    dref, clo = instantiate(stage, S=S)
    rref = realize1(clo, realize_args={dref: {"x": 1}})
    assert received == [(dref, {}, {"x": 1})]
    assert read(os.path.join(rref2path(rref, S), "arg.json")) == '{"x": 1}'
    # The output outside the store was copied, not moved, and nothing stays in tmp/.
    assert (tmp_path / "raw-out" / "arg.json").exists()
    assert os.listdir(store.tmp_dir) == []


def test_realize_args_reach_build_args(S):
    received = []

    def stage(r):
        def real(b: Build):
            received.append(b.args)

        return mkdrv({"name": "args"}, match_only(), build_wrapper(real), r)

    dref, clo = instantiate(stage, S=S)
    realize1(clo, realize_args={dref: "hello"})
    realize1(clo, force_rebuild=True)
    assert received == ["hello", None]


# -- failures ------------------------------------------------------------------------


def test_missing_promise_is_a_promise_error_and_nothing_is_stored(store, S):
    def stage(r):
        def real(b):
            os.makedirs(os.path.join(build_outpath(b), "dir"))
            write(os.path.join(build_outpath(b), "dir", "other"), "not the promised file")

        return mkdrv(
            {"name": "broken", "out": [selfref, "dir", "file"], "ok": [selfref, "dir", "other"]},
            match_only(),
            build_wrapper(real),
            r,
        )

    dref, clo = instantiate(stage, S=S)
    with pytest.raises(PromiseError) as info:
        realize1(clo)
    assert isinstance(info.value, BuildError)
    assert info.value.dref == dref
    assert [list(m) for m in info.value.missing] == [["dir", "file"]]
    assert allrrefs(S) == []
    assert os.listdir(store.tmp_dir) == []
    assert tree_files(store.dref_path(dref)) == ["config.json"]
    assert [row[1] for row in builds_rows(store)] == ["failed"]


def test_realizer_that_raises(store, S):
    calls: list[str] = []
    good = text_stage("good", "G", calls)

    class Boom(RuntimeError):
        pass

    def stage(r):
        dep = good(r=r)

        def real(b):
            write(os.path.join(build_outpath(b), "half.txt"), "half-written")
            raise Boom("the realizer exploded")

        return mkdrv({"name": "boom", "dep": dep}, match_only(), build_wrapper(real), r)

    rref_good = realize1(instantiate(good, S=S))
    files_before = tree_files(store.objects_dir)
    dref, clo = instantiate(stage, S=S)
    with pytest.raises(BuildError) as info:
        realize1(clo)
    err = info.value
    assert isinstance(err.cause, Boom)
    assert str(err.cause) == "the realizer exploded"
    assert err.dref == dref
    assert "the realizer exploded" in str(err)
    # The store is unchanged: no realization, no artifacts, no leftovers.
    assert allrrefs(S) == [rref_good]
    assert drefrrefs(dref, S) == []
    assert os.listdir(store.tmp_dir) == []
    assert tree_files(store.objects_dir) == sorted(
        [
            *files_before,
            os.path.relpath(os.path.join(store.dref_path(dref), "config.json"), store.objects_dir),
        ]
    )
    # The catalogue remembers the failed attempt with its error, through plain SQL.
    with sqlite3.connect(store.catalogue.path) as conn:
        rows = conn.execute(
            "SELECT status, error, stopped IS NOT NULL FROM builds WHERE dref = ?", (dref,)
        ).fetchall()
    assert len(rows) == 1
    status, error, stopped = rows[0]
    assert status == "failed" and stopped
    assert "the realizer exploded" in error and "Boom" in error
    # And in the documented view.
    names = store.catalogue.query("SELECT name, status FROM build_log WHERE dref = ?", (dref,))
    assert names == [("boom", "failed")]
    # The same realization can simply be run again once the realizer is fixed.
    assert calls == ["good"]


def test_failed_build_can_be_retried(S):
    attempts = []

    def stage(r):
        def real(b):
            attempts.append(1)
            if len(attempts) == 1:
                raise ValueError("first attempt fails")
            write(os.path.join(build_outpath(b), "out.txt"), "ok")

        return mkdrv(
            {"name": "flaky", "out": [selfref, "out.txt"]}, match_only(), build_wrapper(real), r
        )

    clo = instantiate(stage, S=S)
    with pytest.raises(BuildError):
        realize1(clo)
    rref = realize1(clo)
    assert isrref(rref) and len(attempts) == 2


def test_realizer_returning_no_output_is_a_build_error(S):
    def stage(r):
        return mkdrv({"name": "none"}, match_only(), lambda S_, d, c, a: [], r)

    with pytest.raises(BuildError):
        realize1(instantiate(stage, S=S))
    assert allrrefs(S) == []


def test_context_file_name_is_reserved(S):
    def stage(r):
        def real(b):
            write(os.path.join(build_outpath(b), "context.json"), "{}")

        return mkdrv({"name": "reserved"}, match_only(), build_wrapper(real), r)

    with pytest.raises(BuildError):
        realize1(instantiate(stage, S=S))
    assert allrrefs(S) == []


def test_unsatisfied_matcher_after_build(S):
    def stage(r):
        return mkdrv({"name": "never"}, lambda S_, rrefs: None, build_wrapper(lambda b: None), r)

    with pytest.raises(MatcherError):
        realize1(instantiate(stage, S=S))


# -- registry and config errors -------------------------------------------------------


def test_mkdrv_with_unknown_dependency(S, store):
    other = Registry(S)
    foreign = text_stage("foreign")(r=other)

    def stage(r):
        return mkdrv({"name": "x", "dep": foreign}, match_only(), build_wrapper(lambda b: None), r)

    with pytest.raises(UnknownReferenceError) as info:
        instantiate(stage, S=S)
    assert info.value.ref == foreign
    assert isinstance(info.value, KeyError)


@pytest.mark.parametrize(
    "config",
    [
        {"a": (1, 2)},
        {"a": {1, 2}},
        {"a": b"bytes"},
        {"a": float("nan")},
        {"a": float("inf")},
        {1: "non-str key"},
        {"a": object()},
        {"name": "bad name"},
        {"name": "slash/name"},
        {"a": [1, {"b": (3,)}]},
    ],
)
def test_invalid_configs(S, config):
    with pytest.raises(InvalidConfigError) as info:
        mkdrv(config, match_only(), build_wrapper(lambda b: None), Registry(S))
    assert isinstance(info.value, ValueError)


def test_config_with_rref_is_refused(S):
    rref = realize1(instantiate(text_stage("a"), S=S))
    with pytest.raises(InvalidConfigError):
        mkdrv({"a": rref}, match_only(), build_wrapper(lambda b: None), Registry(S))
    with pytest.raises(InvalidConfigError):
        mkdrv({"a": [[rref]]}, match_only(), build_wrapper(lambda b: None), Registry(S))


def test_config_object_is_validated_too(S):
    # Pylightnix code writes `mkdrv(Config({...}), ...)`; the check must not be skipped.
    with pytest.raises(InvalidConfigError):
        mkdrv(Config({"a": (1, 2)}), match_only(), build_wrapper(lambda b: None), Registry(S))


def test_instantiate_of_a_stage_without_dref(S):
    with pytest.raises(LightstoreError):
        instantiate(lambda r: None, S=S)
    with pytest.raises(LightstoreError):
        instantiate(lambda r: {"no": "drefs"}, S=S)


def test_mkdrv_without_a_registry():
    with pytest.raises(LightstoreError):
        mkdrv({"a": 1}, match_only(), build_wrapper(lambda b: None))


def test_last_registration_of_a_config_wins(S):
    """As in Pylightnix: registering the same config again replaces its realizer."""

    def stage(r):
        text_stage("same", "first")(r=r)
        return text_stage("same", "second")(r=r)

    rref = realize1(instantiate(stage, S=S))
    assert read(os.path.join(rref2path(rref, S), "out.txt")) == "second"
    assert len(alldrefs(S)) == 1


# -- build helpers --------------------------------------------------------------------


def test_build_helpers(S):
    seen = {}
    dep = text_stage("dep", "from the dependency")

    def stage(r):
        d = dep(r=r)

        def real(b):
            seen["outpath"] = build_outpath(b)
            seen["outpaths"] = build_outpaths(b)
            seen["cattrs"] = build_cattrs(b)
            seen["config"] = build_config(b)
            seen["context"] = build_context(b)
            seen["deref"] = build_deref(b, d)
            seen["own"] = build_path(b, build_cattrs(b).out)
            seen["dep_file"] = build_path(b, [d, "out.txt"])
            seen["dep_text"] = read(build_path(b, build_config(b)["dep_out"]))
            write(seen["own"], "own output")
            with pytest.raises(LightstoreError):
                build_deref(b, b.dref)

        return mkdrv(
            {
                "name": "user",
                "dep": d,
                "dep_out": [d, "out.txt"],
                "out": [selfref, "o.txt"],
                "k": 7,
            },
            match_only(),
            build_wrapper(real),
            r,
        )

    dref, clo = instantiate(stage, S=S)
    rref = realize1(clo)
    dep_dref = clo.derivations[0].dref
    dep_rref = drefrrefs(dep_dref, S)[0]
    assert seen["outpaths"] == [seen["outpath"]]
    assert seen["cattrs"].k == 7 and seen["cattrs"].name == "user"
    # Promises are resolved to the own DRef inside the build.
    assert seen["config"]["out"] == [dref, "o.txt"]
    assert seen["cattrs"].dep == dep_dref
    assert seen["context"] == {dep_dref: [dep_rref]}
    assert seen["deref"] == dep_rref
    assert seen["own"] == os.path.join(seen["outpath"], "o.txt")
    assert seen["dep_file"] == os.path.join(rref2path(dep_rref, S), "out.txt")
    assert seen["dep_text"] == "from the dependency"
    assert read(os.path.join(rref2path(rref, S), "o.txt")) == "own output"
    # The build folder was temporary.
    assert not os.path.exists(seen["outpath"])


def test_interrupted_realizer(store, S):
    def stage(r):
        def real(b):
            write(os.path.join(build_outpath(b), "partial"), "...")
            raise KeyboardInterrupt

        return mkdrv({"name": "interrupted"}, match_only(), build_wrapper(real), r)

    dref, clo = instantiate(stage, S=S)
    with pytest.raises(KeyboardInterrupt):
        realize1(clo)
    assert drefrrefs(dref, S) == []
    assert os.listdir(store.tmp_dir) == []
    assert [row[1] for row in builds_rows(store)] == ["interrupted"]


def test_force_rebuild_true_forces_every_target_only(S):
    calls: list[str] = []
    a = text_stage("a", "A", calls)
    b = text_stage("b", "B", calls, deps=[a])
    c = text_stage("c", "C", calls)

    def both(r):
        return [b(r=r), c(r=r)]

    clo = instantiate(both, S=S)
    realize(clo)
    calls.clear()
    realize(clo, force_rebuild=True)
    assert sorted(calls) == ["b", "c"]


def test_instantiate_refuses_a_registry_of_another_store(S, tmp_path):
    from lightstore import fsinit, mkSS

    other = fsinit(mkSS(str(tmp_path / "other"))).settings
    with pytest.raises(LightstoreError):
        instantiate(text_stage("a"), S=other, r=Registry(S))
