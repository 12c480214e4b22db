"""Pylightnix's `repl` module and generator realization (`realizeSeq`, `evaluate`),
as drivers of lightstore's one realization engine."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest
from helpers import Worker

import lightstore as ls


def _stage(r, cfg, text="x"):
    def make(b):
        with open(os.path.join(ls.build_outpath(b), "artifact"), "w") as f:
            f.write(text)

    return ls.mkdrv(ls.mkconfig(cfg), ls.match_only(), ls.build_wrapper(make), r)


def _pair(r):
    n1 = _stage(r, {"name": "n1", "a": "1"}, "33")
    n2 = _stage(r, {"name": "n2", "maman": n1}, "42")
    return n1, n2


def _builds(S):
    db = sqlite3.connect(os.path.join(S.root, "catalogue.sqlite"))
    try:
        return db.execute("SELECT dref, status, error, pid FROM builds ORDER BY id").fetchall()
    finally:
        db.close()


def test_realizeSeq_drives_the_engine(S):
    r = ls.Registry(S)
    n1, n2 = _pair(r)
    _, clo = ls.instantiate([n1, n2], r=r)
    gen = ls.realizeSeq(clo, force_interrupt=[n2])
    _, dref, ctx, drv, rarg = next(gen)
    assert dref == n2 and list(ctx) == [n1] and drv.dref == n2 and rarg is None
    with pytest.raises(StopIteration) as stop:
        gen.send((None, False))  # run the realizer
    ctx = stop.value.value
    assert set(ctx) == {n1, n2}
    # The same plan realize follows: a cached realize agrees.
    assert ls.realize(clo)[2] == ctx
    assert ls.evaluate(lambda r: _stage(r, {"name": "n1", "a": "1"}, "33"), S=S) == ctx[n1][0]


def test_repl_basic(S):
    r = ls.Registry(S)
    n1, n2 = _pair(r)
    x = ls.instantiate([n1, n2], r=r)
    rh = ls.repl_realize(x, force_interrupt=False)
    assert ls.repl_result(rh) is not None
    rh = ls.repl_realize(x, force_interrupt=[n1, n2])
    assert ls.repl_result(rh) is None and rh.dref == n1
    ls.repl_continue(rh=rh)
    assert ls.repl_result(rh) is None and rh.dref == n2
    ls.repl_continue(rh=rh)
    res = ls.repl_result(rh)
    assert ls.rref2dref(res[0][0]) == n1 and ls.rref2dref(res[1][0]) == n2
    with pytest.raises(AssertionError):
        ls.repl_continue(rh=rh)  # finished


def test_repl_override_publishes_what_the_user_built(S):
    r = ls.Registry(S)
    n1, n2 = _pair(r)
    rh = ls.repl_realize(ls.instantiate(n2, r=r), force_interrupt=[n1])
    b = ls.repl_build(rh)
    with open(os.path.join(ls.build_outpath(b), "artifact"), "w") as f:
        f.write("777")
    ls.repl_continue1(ls.output_validate(b.dref, ls.Output(b.outpaths), S=b.S), rh=rh)
    rref = ls.repl_rref(rh)
    assert rref is not None
    rn1 = ls.context_deref(ls.rrefctx(rref, S), n1)[0]
    assert ls.tryread(ls.Path(os.path.join(ls.rref2path(rn1, S), "artifact"))) == "777"
    rows = _builds(S)
    assert (n1, "succeeded") in [(d, s) for d, s, _, _ in rows]


def test_repl_global_helper_and_continue_build(S):
    r = ls.Registry(S)
    _, n2 = _pair(r)
    rh = ls.repl_realize(ls.instantiate(n2, r=r), force_interrupt=True)
    assert ls.repl_rref(rh) is None
    b = ls.repl_build()
    with open(os.path.join(ls.build_outpath(b), "artifact"), "w") as f:
        f.write("Fooo")
    ls.repl_continueBuild(b)
    rref = ls.repl_rref(rh)
    assert rref is not None and ls.mklens(rref, S=S).syspath
    assert os.path.isfile(os.path.join(ls.rref2path(rref, S), "artifact"))


def test_paused_build_is_running_holds_its_inputs_and_its_lock(S):
    r = ls.Registry(S)
    n1, n2 = _pair(r)
    rh = ls.repl_realize(ls.instantiate(n2, r=r), force_interrupt=True)
    running = [row for row in _builds(S) if row[1] == "running"]
    assert running == [(n2, "running", None, os.getpid())]
    rn1 = rh.context[n1][0]
    store = ls.Store.open(S.root)
    assert store.catalogue.query("SELECT count(*) FROM build_inputs WHERE rref = ?", [rn1]) == [
        (1,)
    ]
    # Another process needing n2 waits on the build lock while the session is paused.
    with Worker("repl_pair", S.root) as proc:
        time.sleep(1.5)
        assert proc.running  # still waiting for the paused build
        b = ls.repl_build(rh)
        with open(os.path.join(ls.build_outpath(b), "artifact"), "w") as f:
            f.write("mine")
        mine = ls.repl_continueBuild(b, rh)
        assert proc.result(timeout=60)["rref"] == mine  # it reused what the REPL published


def test_same_thread_builds_its_own_paused_derivation(S):
    r = ls.Registry(S)
    _, n2 = _pair(r)
    x = ls.instantiate(n2, r=r)
    rh = ls.repl_realize(x, force_interrupt=True)
    # Another thread waits for the session...
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("r", ls.realize1(x)))
    t.start()
    time.sleep(0.5)
    assert t.is_alive()
    # ...while the thread holding the pause builds it under that hold, as Pylightnix would.
    mine = ls.realize1(x)
    assert [s for d, s, _, _ in _builds(S) if d == n2] == ["running", "succeeded"]
    assert t.is_alive()
    ls.repl_cancel(rh)
    t.join(30)
    assert got["r"] == mine  # the waiter reuses it
    assert [s for d, s, _, _ in _builds(S) if d == n2] == ["interrupted", "succeeded"]
    # Pausing it twice in one thread is refused: both pauses cannot hold the lock.
    rh = ls.repl_realize(ls.instantiate(n2, r=r), force_interrupt=True)
    with pytest.raises(AssertionError, match="already paused in a REPL session"):
        ls.repl_realize(ls.instantiate(n2, r=r), force_interrupt=True)
    ls.repl_cancel(rh)


def test_cancel_leaves_no_trace_and_is_recorded(S):
    r = ls.Registry(S)
    _, n2 = _pair(r)
    rh = ls.repl_realize(ls.instantiate(n2, r=r), force_interrupt=True)
    b = ls.repl_build(rh)
    out = ls.build_outpath(b)
    ls.repl_cancel()
    assert rh.gen is None and not os.path.exists(out)
    assert [s for d, s, _, _ in _builds(S) if d == n2] == ["interrupted"]
    assert [e for d, _, e, _ in _builds(S) if d == n2] == ["cancelled in the REPL"]
    assert ls.drefrrefs(n2, S) == []
    assert os.listdir(S.tmpdir) == []
    # The lock is free again: a plain realize builds it.
    assert ls.isrref(ls.realize1(ls.instantiate(n2, r=r)))
    rh = ls.repl_realize(ls.instantiate(n2, r=r), force_interrupt=True)
    b = ls.repl_build(rh)
    ls.repl_cancelBuild(b, rh)
    assert not os.path.exists(ls.build_outpath(b))


def test_abandoned_session_is_recorded(S):
    r = ls.Registry(S)
    _, n2 = _pair(r)
    rh = ls.repl_realize(ls.instantiate(n2, r=r), force_interrupt=True)
    rh.gen.close()  # what garbage collection of a forgotten session does
    assert [e for d, _, e, _ in _builds(S) if d == n2] == ["REPL session abandoned while paused"]


def test_process_killed_while_paused(S):
    with Worker("repl_paused", S.root) as proc:
        proc.wait_for("paused")
        proc.kill()
    ls.Store.forget_instances()
    store = ls.Store.open(S.root)
    store.recover()
    assert [s for _, s, _, _ in _builds(S)] == ["interrupted"]
    assert os.listdir(S.tmpdir) == []
    report = store.verify()
    assert report.ok, report.problems


def test_continue_with_no_output_is_refused_and_the_session_stays_paused(S):
    r = ls.Registry(S)
    _, n2 = _pair(r)
    rh = ls.repl_realize(ls.instantiate(n2, r=r), force_interrupt=True)
    for empty in ({"out_paths": []}, {"out_rrefs": []}):
        with pytest.raises(ls.UsageError, match="no output"):
            ls.repl_continue(rh=rh, **empty)
        assert rh.gen is not None and rh.dref == n2
    assert ls.drefrrefs(n2, S) == []
    assert "succeeded" not in {s for d, s, _, _ in _builds(S) if d == n2}
    rref = ls.repl_continue1(rh=rh)  # still paused: run the realizer
    assert rref is not None and ls.rref2dref(rref) == n2


def test_realizeSeq_refuses_an_empty_reply_and_records_no_success(S):
    r = ls.Registry(S)
    _, n2 = _pair(r)
    _, clo = ls.instantiate(n2, r=r)
    gen = ls.realizeSeq(clo, force_interrupt=[n2])
    next(gen)
    with pytest.raises(ls.UsageError, match="no output"):
        gen.send(([], False))
    assert [s for d, s, _, _ in _builds(S) if d == n2] == ["interrupted"]
    assert ls.drefrrefs(n2, S) == []


def test_published_folders_go_through_the_matcher(S):
    """A matcher that wants two realizations is not satisfied by one folder published by hand."""
    r = ls.Registry(S)

    def make(b):
        pass

    two = ls.mkdrv(ls.mkconfig({"name": "two"}), ls.match_some(2), ls.build_wrapper(make), r)
    rh = ls.repl_realize(ls.instantiate(two, r=r), force_interrupt=True)
    b = ls.repl_build(rh)
    with pytest.raises(ls.MatcherError, match="unsatisfied"):
        ls.repl_continueBuild(b, rh)


def test_repl_errors(S):
    r = ls.Registry(S)
    _, n2 = _pair(r)
    with pytest.raises(AssertionError):
        ls.repl_realize(ls.instantiate(n2, r=r), force_interrupt=33)  # type: ignore[arg-type]
    rh = ls.repl_realize(ls.instantiate(n2, r=r), force_interrupt=True)
    with pytest.raises(AssertionError):
        ls.repl_continue(out_paths=[], out_rrefs=[], rh=rh)
    ba = ls.repl_buildargs(rh)
    assert ba.dref == n2
    ls.repl_cancel(rh)
    with pytest.raises(AssertionError):
        ls.repl_buildargs(rh)
    assert ls.ERR_INACTIVE_RH and ls.ERR_INVALID_RH
    assert ls.repl_continueAll is not None and ls.repl_continueMany is not None
