"""The engine's scheduler (Plan), its build step (execute) and its drivers.

Real stores in tmp folders; the lock tests hold build locks from a real
child process.
"""

from __future__ import annotations

import os

import pytest
from helpers import Worker

from lightstore import (
    BuildError,
    NotRealizedError,
    Registry,
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkdrv,
    realize,
    selfref,
)
from lightstore.engine.plan import BuildsFailed, Plan, RealizeOptions
from lightstore.engine.realize import realize_closure
from lightstore.engine.serial import build_requests
from lightstore.engine.step import BUSY, _build, execute


def stage_of(name, calls, deps=(), fail=False, extra=None):
    """A stage writing its name; appends to `calls` when it builds; `fail` raises."""

    def real(b):
        calls.append(name)
        if fail:
            raise RuntimeError(f"{name} broke")
        with open(os.path.join(build_outpath(b), "out.txt"), "w") as f:
            f.write(name)

    def stage(r):
        cfg = {"name": name, "out": [selfref, "out.txt"], **(extra or {})}
        for i, d in enumerate(deps):
            cfg[f"dep{i}"] = d(r)
        return mkdrv(cfg, match_only(), build_wrapper(real), r)

    return stage


def diamond(calls, fail=()):
    a = stage_of("a", calls, fail="a" in fail)
    b = stage_of("b", calls, [a], fail="b" in fail)
    c = stage_of("c", calls, [a], fail="c" in fail)
    d = stage_of("d", calls, [b, c], fail="d" in fail)
    return a, b, c, d


def test_plan_hands_out_ready_tasks_and_dependents_follow(S):
    calls: list[str] = []
    *_, d = diamond(calls)
    _, cl = instantiate(d, r=Registry(S))
    plan = Plan(cl)
    names = lambda ts: [t.derivation.config.val["name"] for t in ts]  # noqa: E731
    first = plan.next_tasks()
    assert names(first) == ["a"] and plan.next_tasks() == []
    rrefs = execute(cl.store, first[0], plan.options)
    plan.done(first[0], rrefs)
    second = plan.next_tasks()
    assert names(second) == ["b", "c"]
    assert second[0].context == {first[0].dref: rrefs}
    for t in second:
        plan.done(t, execute(cl.store, t, plan.options))
    third = plan.next_tasks()
    assert names(third) == ["d"]
    plan.done(third[0], execute(cl.store, third[0], plan.options))
    assert plan.finished and len(plan.result()) == 4
    # The same closure again: everything resolves from the catalogue, nothing to build.
    again = Plan(cl)
    assert again.next_tasks() == [] and again.finished
    assert again.result() == plan.result()


def test_cached_plan_writes_nothing(S, store):
    calls: list[str] = []
    *_, d = diamond(calls)
    _, cl = instantiate(d, r=Registry(S))
    first = realize_closure(cl)
    before = os.stat(store.catalogue.path).st_mtime_ns, os.path.getsize(store.catalogue.path)
    wal = store.catalogue.path + "-wal"
    wal_before = os.path.getsize(wal) if os.path.exists(wal) else 0
    assert realize_closure(cl) == first
    assert (
        os.stat(store.catalogue.path).st_mtime_ns,
        os.path.getsize(store.catalogue.path),
    ) == before
    assert (os.path.getsize(wal) if os.path.exists(wal) else 0) == wal_before
    assert calls == ["a", "b", "c", "d"]


def test_build_requests_generator_matches_serial(S, tmp_path):
    calls: list[str] = []
    *_, d = diamond(calls)
    _, cl = instantiate(d, r=Registry(S))
    steps = build_requests(cl)
    seen = []
    outcome = None
    try:
        while True:
            task = steps.send(outcome)
            seen.append(task.derivation.config.val["name"])
            outcome = execute(cl.store, task, RealizeOptions())
    except StopIteration as stop:
        ctx = stop.value
    assert seen == ["a", "b", "c", "d"]
    assert ctx == realize_closure(cl)


def test_build_requests_receives_errors(S):
    calls: list[str] = []
    *_, d = diamond(calls)
    _, cl = instantiate(d, r=Registry(S))
    steps = build_requests(cl)
    next(steps)
    with pytest.raises(ValueError, match="from the driver"):
        steps.send(ValueError("from the driver"))


def test_keep_going_builds_independent_branches_and_names_every_failure(S, store):
    calls: list[str] = []
    a = stage_of("a", calls)
    b = stage_of("b", calls, [a], fail=True)
    c = stage_of("c", calls, [a], fail=True)
    e = stage_of("e", calls, [a])
    d = stage_of("d", calls, [b, c])

    def top(r):
        return [d(r), e(r)]

    r = Registry(S)
    _, cl = instantiate(top, r=r)
    with pytest.raises(BuildsFailed) as info:
        realize_closure(cl, RealizeOptions(keep_going=True))
    err = info.value
    assert isinstance(err, BuildError)
    assert set(err.failures) == {b(r), c(r)}
    assert "b broke" in str(err) and "c broke" in str(err) and "1 dependent" in str(err)
    # The failures with their errors, then the dependents that were not built.
    failed, _, skipped = str(err).partition("1 dependent(s) were not built:")
    assert failed.startswith("2 builds failed:\n")
    assert [line.split(": BuildError: ")[0].strip() for line in failed.splitlines()[1:]] == [
        b(r),
        c(r),
    ]
    assert skipped.splitlines()[1].strip().startswith(f"{d(r)} (needs ")
    assert err.skipped.keys() == {d(r)}
    assert sorted(calls) == ["a", "b", "c", "e"]  # d skipped, e built
    # e stayed published: realizing it now builds nothing.
    realize(instantiate(e, r=r), assert_realized=[e(r)])


def test_keep_going_with_one_failure_raises_it_naming_the_dependents_not_built(S, store):
    calls: list[str] = []
    a = stage_of("a", calls)
    b = stage_of("b", calls, [a], fail=True)
    c = stage_of("c", calls, [b])
    d = stage_of("d", calls, [c])
    e = stage_of("e", calls, [a])

    def top(r):
        return [d(r), e(r)]

    r = Registry(S)
    _, cl = instantiate(top, r=r)
    with pytest.raises(BuildError) as info:
        realize_closure(cl, RealizeOptions(keep_going=True))
    err = info.value
    assert not isinstance(err, BuildsFailed) and err.dref == b(r)  # the failure itself
    text = str(err)
    assert text.startswith(f"building {b(r)}") or "b broke" in text.splitlines()[0]
    _, _, skipped = text.partition("2 dependent(s) were not built:\n")
    assert sorted(line.strip() for line in skipped.splitlines()) == sorted(
        [f"{c(r)} (needs {b(r)})", f"{d(r)} (needs {b(r)})"]
    )
    assert sorted(calls) == ["a", "b", "e"]


def test_a_foreign_error_gets_the_dependents_not_built_as_a_note(S, store):
    calls: list[str] = []
    a = stage_of("a", calls)
    b = stage_of("b", calls, [a])
    r = Registry(S)
    _, cl = instantiate(b, r=r)
    steps = build_requests(cl, RealizeOptions(keep_going=True))
    next(steps)
    with pytest.raises(ValueError, match="from the driver") as info:
        steps.send(ValueError("from the driver"))
    assert info.value.__notes__ == [f"1 dependent(s) were not built:\n  {b(r)} (needs {a(r)})"]


def test_serial_default_stops_at_first_failure(S):
    calls: list[str] = []
    a = stage_of("a", calls)
    b = stage_of("b", calls, [a], fail=True)
    c = stage_of("c", calls, [a])

    def top(r):
        return [b(r), c(r)]

    _, cl = instantiate(top, r=Registry(S))
    with pytest.raises(BuildError, match="b broke"):
        realize_closure(cl)
    assert calls == ["a", "b"]


def test_substitute_is_asked_under_the_lock_before_building(S, store):
    calls: list[str] = []
    asked = []

    def substitute(st, task):
        asked.append(task.dref)
        # Stand in for a remote cache: publish a realization made elsewhere
        # (the caller holds the build lock, so no execute() here).
        _build(st, task.derivation, task.context, task.context_hash, RealizeOptions())
        return True

    _, cl = instantiate(stage_of("a", calls), r=Registry(S))
    ctx = realize_closure(cl, RealizeOptions(substitute=substitute))
    assert asked == [cl.targets[0]] and len(ctx[cl.targets[0]]) == 1
    assert calls == ["a"]  # built once, by the substitute; the engine did not build again
    asked.clear()
    realize_closure(cl, RealizeOptions(substitute=substitute))
    assert asked == []  # cached: never asked


def test_dry_run_assert_realized_and_force_rebuild_keep_their_meaning(S):
    calls: list[str] = []
    *_, d = diamond(calls)
    _, cl = instantiate(d, r=Registry(S))
    assert realize_closure(cl, RealizeOptions(dry_run=True)) == {x.dref: [] for x in cl.derivations}
    with pytest.raises(NotRealizedError):
        realize_closure(cl, RealizeOptions(assert_realized=set(cl.targets)))
    assert calls == ["a", "b", "c"]  # what comes before the asserted target is built
    first = realize(cl)[2]
    second = realize(cl, force_rebuild=True)[2]
    assert calls == ["a", "b", "c", "d", "d"]
    assert first[cl.targets[0]] == second[cl.targets[0]]  # deterministic: same RRef


def test_execute_without_waiting_returns_busy_while_another_process_builds(S, store):
    calls: list[str] = []
    _, cl = instantiate(stage_of("a", calls), r=Registry(S))
    plan = Plan(cl)
    (task,) = plan.next_tasks()
    with Worker("hold_build_lock", store.root, task.dref, task.context_hash) as child:
        child.wait_for("held")
        assert execute(store, task, plan.options, wait=False) is BUSY
        assert calls == []
        child.release()
        child.finish(timeout=30)
        assert execute(store, task, plan.options, wait=False) != BUSY
        assert calls == ["a"]


def test_build_requests_refuses_a_wrong_outcome(S):
    from lightstore.foundation.errors import UsageError

    _, cl = instantiate(stage_of("a", []), r=Registry(S))
    steps = build_requests(cl)
    next(steps)
    with pytest.raises(UsageError, match="expects the RRefs"):
        steps.send(None)


def test_a_new_build_reads_outside_its_transactions_only_to_ask_questions(S, store):
    """The catalogue work of one new realization, a guard of its cost: four write
    transactions (the derivation's intent, its record, the build's start, the publish),
    and outside them only the questions a realize must ask (is the derivation known,
    at instantiate and at realize; what exists in its context, planning, under the build
    lock and after the build). Checks made where a transaction is open anyway are made
    inside it: each read on its own is a read transaction of its own."""
    statements: list[str] = []
    conn = store.catalogue.conn
    conn.set_trace_callback(statements.append)
    try:
        realize(instantiate(stage_of("solo", []), r=Registry(S)))
    finally:
        conn.set_trace_callback(None)
    outside, depth = [], 0
    for s in statements:
        if s.startswith("BEGIN"):
            depth += 1
        elif s.startswith(("COMMIT", "ROLLBACK")):
            depth -= 1
        elif depth == 0:
            outside.append(s.split(" WHERE")[0])
    assert sum(s.startswith("BEGIN IMMEDIATE") for s in statements) == 4
    assert sorted(outside) == [
        "SELECT dref FROM derivations",
        "SELECT dref FROM derivations",
        "SELECT rref FROM realizations",
        "SELECT rref FROM realizations",
        "SELECT rref FROM realizations",
    ]
