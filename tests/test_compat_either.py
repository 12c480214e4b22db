"""Pylightnix's `either` module: failures recorded as LEFT results, visible in SQL."""

from __future__ import annotations

import os
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lightstore as ls

BROKEN = {"flag": True}


def _stage(r, name, fail, dep=None, text="ok"):
    def realizer(S, dref, ctx, ra):
        if fail():
            raise ValueError(f"deliberate failure in {name}")
        out = _area(S)
        with open(os.path.join(out, "f"), "w") as f:
            f.write(text)
        return ls.Output([out])

    cfg = {"name": name, "f": [ls.selfref, "f"]}
    if dep is not None:
        cfg["dep"] = dep
    return ls.mkdrvE(ls.mkconfig(cfg), ls.match_only(), realizer, r)


def _area(S):
    from lightstore.compat.current import store_of as resolve_store

    return resolve_store(S).new_build_area("t")


def test_failure_is_a_left_result_and_propagates(S):
    r = ls.Registry(S)
    a = _stage(r, "a", lambda: BROKEN["flag"])
    b = _stage(r, "b", lambda: False, dep=a)
    e = ls.realizeE(ls.instantiate(b, r=r))
    assert ls.either_isLeft(e) and not ls.either_isRight(e)
    status = ls.either_status(e)
    assert status is not None and "deliberate failure in a" in status and a in status
    # The dependent did not run its realizer: its LEFT names the failed dependency.
    rb = ls.either_paths(e)[0]
    ra = ls.rrefctx(rb, S)[a][0]
    assert ls.either_isLeft(ls.either_loadR([ra], S))
    # Both failures are failed build records, with their error text.
    db = sqlite3.connect(os.path.join(S.root, "catalogue.sqlite"))
    rows = db.execute(
        "SELECT name, error FROM build_log WHERE status = 'failed' ORDER BY id"
    ).fetchall()
    assert [n for n, _ in rows] == ["a", "b"]
    assert "ValueError: deliberate failure in a" in rows[0][1]
    # The query of docs/schema.md ("Failed experiments") finds them with their LEFT realizations.
    doc_path = os.path.join(os.path.dirname(__file__), "..", "docs", "schema.md")
    with open(doc_path, encoding="utf-8") as f:
        doc = f.read()
    query = doc.split("#### Failed experiments")[1].split("```sql")[1].split("```")[0]
    found = db.execute(query.replace("'train'", "'a'")).fetchall()
    assert len(found) == 1 and found[0][3] == ra and "deliberate failure in a" in found[0][4]
    found_b = db.execute(query.replace("'train'", "'b'")).fetchall()
    assert found_b[0][3] == rb
    # Realizing again without changes gives the cached LEFT, without running anything.
    assert ls.either_paths(ls.realizeE(ls.instantiate(b, r=r))) == [rb]
    assert len(db.execute("SELECT * FROM builds WHERE status = 'failed'").fetchall()) == 2


def test_fixing_the_stage_and_realizing_again(S):
    BROKEN["flag"] = True
    r = ls.Registry(S)
    a = _stage(r, "a", lambda: BROKEN["flag"])
    b = _stage(r, "b", lambda: False, dep=a)
    assert ls.either_isLeft(ls.realizeE(ls.instantiate(b, r=r)))
    BROKEN["flag"] = False  # the fix
    e = ls.realizeManyE(ls.instantiate(b, r=r), force_rebuild=[a, b])
    assert ls.either_isRight(e) and ls.either_status(e) is None
    rb = ls.either_paths(e)[0]
    assert ls.mklens(rb, S=S).f.contents == "ok"
    # From now on the RIGHT results are chosen, LEFT ones ignored.
    assert ls.either_paths(ls.realizeE(ls.instantiate(b, r=r))) == [rb]


def test_either_values():
    e = ls.mkright(ls.Output(["x"]))
    assert ls.either_paths(e) == ["x"] and ls.either_isRight(e)
    with pytest.raises(AssertionError):
        ls.Either()


def test_mkleft_writes_status(tmp_path):
    e = ls.mkleft([ls.Path(str(tmp_path))], "trace")
    assert (tmp_path / "either_status.txt").read_text() == "trace"
    assert ls.either_status(e) == "trace"
    with pytest.raises(AssertionError):
        ls.mkleft([ls.Path(str(tmp_path))], "again")


def test_right_results_keep_promises(S):
    r = ls.Registry(S)

    def forgets(S_, dref, ctx, ra):
        return ls.Output([_area(S_)])

    d = ls.mkdrvE({"name": "p", "f": [ls.selfref, "f"]}, ls.match_only(), forgets, r)
    with pytest.raises(ls.PromiseException):
        ls.realizeE(ls.instantiate(d, r=r))
    assert ls.either_validate(d, ls.Either(None, ([ls.Path("/x")], "e")), S) == ["/x"]
    wrapped = ls.either_matcher(lambda S_, o: ls.Output(o.val[:1]) if o.val else None)
    assert wrapped(S, []) is None


@settings(max_examples=10, deadline=None)
@given(fails=st.lists(st.booleans(), min_size=1, max_size=4))
def test_either_invariant(tmp_path_factory, fails):
    """A RIGHT result never depends on a LEFT one; LEFT exactly when some stage in the chain failed."""
    S = ls.fsinit(ls.mkSS(str(tmp_path_factory.mktemp("either") / "s"))).settings
    r = ls.Registry(S)
    dref = None
    for i, fail in enumerate(fails):
        dref = _stage(r, f"s{i}", lambda fail=fail: fail, dep=dref, text=str(i))
    e = ls.realizeManyE(ls.instantiate(dref, r=r))
    assert ls.either_isLeft(e) == any(fails)
    for rref in ls.allrrefs(S):
        if ls.either_isRight(ls.either_loadR([rref], S)):
            deps = list(ls.rrefdeps1([rref], S))
            assert not deps or ls.either_isRight(ls.either_loadR(deps, S))
