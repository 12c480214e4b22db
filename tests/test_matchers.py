"""Matchers: built-ins, custom ones, and how misuse fails."""

from __future__ import annotations

import itertools
import os

import pytest

from lightstore import (
    InvalidConfigError,
    MatcherError,
    Registry,
    RRef,
    build_outpaths,
    build_wrapper,
    drefrrefs,
    instantiate,
    match,
    match_all,
    match_exact,
    match_latest,
    match_only,
    match_some,
    mkdrv,
    mkrref,
    realize,
    realize1,
    realizeMany,
    redefine,
    rref2dref,
    rref2path,
    selfref,
    undref,
)


def read_number(S, rref) -> int:
    with open(os.path.join(rref2path(rref, S), "n.txt"), encoding="utf-8") as f:
        return int(f.read())


def number_stage(numbers, matcher, name="num", nouts=1, deps=()):
    """A stage writing the next numbers of the iterator `numbers`, one per output."""

    def stage(r):
        cfg = {"name": name, "n": [selfref, "n.txt"]}
        for i, dep in enumerate(deps):
            cfg[f"dep{i}"] = dep(r=r)

        def real(b):
            for o in build_outpaths(b):
                with open(os.path.join(o, "n.txt"), "w", encoding="utf-8") as f:
                    f.write(str(next(numbers)))

        return mkdrv(cfg, matcher, build_wrapper(real, nouts=nouts), r)

    return stage


def built(S, numbers, count, name="num"):
    """Realize `count` realizations of a number stage (with match_latest) and return them."""
    clo = instantiate(number_stage(numbers, match_latest(), name), S=S)
    rrefs = [realize1(clo)]
    for _ in range(count - 1):
        rrefs.append(realize1(clo, force_rebuild=True))
    return rrefs


def test_match_only_one(S):
    stage = number_stage(itertools.count(), match_only())
    rref = realize1(instantiate(stage, S=S))
    assert realize1(instantiate(stage, S=S)) == rref


def test_match_only_fails_when_several_exist_in_the_context(S):
    numbers = itertools.count()
    rrefs = built(S, numbers, 2)
    stage = redefine(number_stage(numbers, match_latest()), new_matcher=match_only())
    with pytest.raises(MatcherError) as info:
        realize1(instantiate(stage, S=S))
    assert info.value.dref == rref2dref(rrefs[0])


def test_match_only_after_a_nondeterministic_rebuild(S):
    clo = instantiate(number_stage(itertools.count(), match_only()), S=S)
    realize1(clo)
    with pytest.raises(MatcherError):
        realize1(clo, force_rebuild=True)


def test_match_only_counts_only_the_current_context(S):
    numbers = itertools.count()
    up = number_stage(numbers, match_latest(), name="up")
    down = number_stage(numbers, match_only(), name="down", deps=[up])
    result, clo = instantiate(down, S=S)
    up_dref = clo.derivations[0].dref
    realize1(clo)
    down2 = realize1(clo, force_rebuild=[up_dref])
    # Two realizations of `down` exist, but one per context: match_only is satisfied.
    assert len(drefrrefs(result, S)) == 2
    assert realize1(clo) == down2


def test_match_all(S):
    numbers = itertools.count()
    rrefs = built(S, numbers, 3)
    stage = redefine(number_stage(numbers, match_latest()), new_matcher=match_all)
    assert sorted(realizeMany(instantiate(stage, S=S))) == sorted(rrefs)


def test_match_all_builds_when_there_is_none(S):
    calls = []

    def stage(r):
        def real(b):
            calls.append(1)

        return mkdrv({"name": "all"}, match_all, build_wrapper(real), r)

    assert len(realizeMany(instantiate(stage, S=S))) == 1
    assert len(realizeMany(instantiate(stage, S=S))) == 1
    assert calls == [1]


def test_match_some_with_nouts(S):
    stage = number_stage(itertools.count(10), match_some(2), nouts=2)
    rrefs = realizeMany(instantiate(stage, S=S))
    assert len(rrefs) == 2
    assert sorted(read_number(S, r) for r in rrefs) == [10, 11]


def test_match_some_with_a_key_picks_the_best(S):
    numbers = iter([5, 2, 9, 7])
    built(S, numbers, 4)
    stage = redefine(
        number_stage(numbers, match_latest()), new_matcher=match_some(2, key=read_number)
    )
    best = realizeMany(instantiate(stage, S=S))
    assert [read_number(S, r) for r in best] == [9, 7]


def test_match_some_key_returning_none_excludes(S):
    numbers = iter([5, 2, 9])
    built(S, numbers, 3)

    def odd_only(S_, rref):
        n = read_number(S_, rref)
        return n if n % 2 else None

    stage = redefine(
        number_stage(iter([11]), match_latest()), new_matcher=match_some(3, key=odd_only)
    )
    # Only two odd ones exist: the matcher asks for a build, which gives 11.
    rrefs = realizeMany(instantiate(stage, S=S))
    assert [read_number(S, r) for r in rrefs] == [11, 9, 5]


def test_match_some_unsatisfiable(S):
    # One output per build, but two asked for: still unsatisfied after the build.
    stage = number_stage(itertools.count(), match_some(2))
    with pytest.raises(MatcherError):
        realizeMany(instantiate(stage, S=S))


def test_match_latest_is_newest_by_build_time(store, S):
    rrefs = built(S, itertools.count(), 4)
    stage = redefine(
        number_stage(itertools.count(100), match_latest()), new_matcher=match_latest(2)
    )
    latest = realizeMany(instantiate(stage, S=S))
    assert latest == [rrefs[3], rrefs[2]]
    stopped = dict(
        store.catalogue.query(
            "SELECT rref, stopped FROM history WHERE dref = ?", (rref2dref(rrefs[0]),)
        )
    )
    assert stopped[rrefs[3]] >= stopped[rrefs[2]] >= stopped[rrefs[1]]
    one = redefine(number_stage(itertools.count(100), match_latest()), new_matcher=match_latest())
    assert realize1(instantiate(one, S=S)) == rrefs[3]


def test_match_latest_builds_until_there_are_enough(S):
    stage = number_stage(itertools.count(), match_latest(2), nouts=2)
    assert len(realizeMany(instantiate(stage, S=S))) == 2


def test_match_exact(S):
    numbers = itertools.count()
    rrefs = built(S, numbers, 3)
    stage = redefine(number_stage(numbers, match_latest()), new_matcher=match_exact([rrefs[1]]))
    assert realize1(instantiate(stage, S=S)) == rrefs[1]
    two = redefine(
        number_stage(numbers, match_latest()), new_matcher=match_exact([rrefs[2], rrefs[0]])
    )
    assert sorted(realizeMany(instantiate(two, S=S))) == sorted([rrefs[2], rrefs[0]])


def test_match_exact_of_an_absent_realization_fails(S):
    rrefs = built(S, itertools.count(), 1)
    dhash, name = undref(rref2dref(rrefs[0]))
    ghost = mkrref("0" * 32, dhash, name)
    stage = redefine(
        number_stage(itertools.count(), match_latest()), new_matcher=match_exact([ghost])
    )
    with pytest.raises(MatcherError):
        realize1(instantiate(stage, S=S))


def test_match_with_key_and_trim(S):
    numbers = iter([4, 8, 1])
    built(S, numbers, 3)
    smallest_first = match(key=lambda S_, r: -read_number(S_, r), trim=lambda rs: rs[:1] or None)
    stage = redefine(number_stage(numbers, match_latest()), new_matcher=smallest_first)
    (rref,) = realizeMany(instantiate(stage, S=S))
    assert read_number(S, rref) == 1


def test_match_with_trim_building_until_enough(S):
    calls = []
    numbers = itertools.count()

    def trim(rrefs):
        calls.append(len(rrefs))
        return rrefs if len(rrefs) >= 2 else None

    stage = number_stage(numbers, match(key=read_number, trim=trim), nouts=2)
    rrefs = realizeMany(instantiate(stage, S=S))
    assert [read_number(S, r) for r in rrefs] == [1, 0]
    # Asked before the build (maybe twice: before and after taking the build lock), then after.
    assert set(calls[:-1]) == {0} and calls[-1] == 2


def test_custom_matcher_picks_the_smallest_number(S):
    def smallest(S_, rrefs):
        if not rrefs:
            return None
        return [min(rrefs, key=lambda r: read_number(S_, r))]

    numbers = iter([5, 2, 9])
    clo = instantiate(number_stage(numbers, smallest), S=S)
    first = realize1(clo)
    assert read_number(S, first) == 5
    second = realize1(clo, force_rebuild=True)
    assert read_number(S, second) == 2
    third = realize1(clo, force_rebuild=True)
    assert third == second  # 9 was built but 2 is still the smallest
    assert len(drefrrefs(rref2dref(first), S)) == 3


def test_matcher_receives_storage_and_current_context_only(S):
    seen = []
    numbers = itertools.count()
    up = number_stage(numbers, match_latest(), name="up")

    def spy(S_, rrefs):
        seen.append((S_, list(rrefs)))
        return list(rrefs) or None

    down = number_stage(numbers, spy, name="down", deps=[up])
    _, clo = instantiate(down, S=S)
    up_dref = clo.derivations[0].dref
    realize1(clo)
    realize1(clo, force_rebuild=[up_dref])
    # Each run sees nothing, builds, then sees exactly the one built in its own
    # context (the engine may ask twice before building: before and after the lock).
    nonempty = [rs for _, rs in seen if rs]
    assert [len(rs) for rs in nonempty] == [1, 1]
    assert nonempty[0] != nonempty[1]
    assert all(s == S for s, _ in seen)


def test_matcher_still_unsatisfied_after_the_build(S):
    stage = number_stage(itertools.count(), lambda S_, rrefs: None)
    with pytest.raises(MatcherError):
        realize1(instantiate(stage, S=S))


@pytest.mark.parametrize(
    "bad",
    [
        lambda S_, rrefs: (
            [RRef("rref:" + "1" * 32 + "-" + "2" * 32 + "-forged")] if rrefs else None
        ),
        lambda S_, rrefs: tuple(rrefs) or None,
        lambda S_, rrefs: rrefs[0] if rrefs else None,
        lambda S_, rrefs: [*rrefs, *rrefs, "junk"] if rrefs else None,
    ],
)
def test_matcher_returning_something_not_in_its_input(S, bad):
    stage = number_stage(itertools.count(), bad)
    with pytest.raises(MatcherError):
        realize1(instantiate(stage, S=S))


def test_matcher_returning_other_derivations_realization(S):
    other = realize1(instantiate(number_stage(itertools.count(), match_only(), name="other"), S=S))
    stage = number_stage(itertools.count(), lambda S_, rrefs: [other] if rrefs else None)
    with pytest.raises(MatcherError):
        realize1(instantiate(stage, S=S))


def test_matcher_error_on_cached_path(S):
    """A matcher that turns bad later is caught on the cached path too (no build)."""
    numbers = itertools.count()
    rref = realize1(instantiate(number_stage(numbers, match_only()), S=S))
    bad = redefine(number_stage(numbers, match_only()), new_matcher=lambda S_, rs: ["junk"])
    with pytest.raises(MatcherError):
        realize1(instantiate(bad, S=S))
    assert drefrrefs(rref2dref(rref), S) == [rref]


@pytest.mark.parametrize("factory", [match_some, match_latest])
@pytest.mark.parametrize("n", [0, -2, 1.5, True])
def test_matcher_factories_reject_bad_n(factory, n):
    with pytest.raises(InvalidConfigError):
        factory(n)


def test_match_exact_rejects_malformed_rrefs():
    from lightstore import InvalidReferenceError

    with pytest.raises(InvalidReferenceError):
        match_exact(["not an rref"])


def test_matchers_in_realize_context(S):
    """`realize` reports each derivation's chosen realizations."""
    numbers = itertools.count()
    stage = number_stage(numbers, match_some(3), nouts=3)
    dref, clo = instantiate(stage, S=S)
    _, _, ctx = realize(clo)
    assert len(ctx[dref]) == 3
    assert Registry(S) is not None
