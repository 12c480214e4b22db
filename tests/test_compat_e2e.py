"""End to end: a pipeline using Either stages, Output-typed matchers and the REPL together."""

from __future__ import annotations

import os
import sqlite3

import lightstore as ls

ATTEMPT = {"n": 0}


def _area(S):
    from lightstore.compat.current import store_of as resolve_store

    return resolve_store(S).new_build_area("e2e")


def best_score(S, o: ls.Output) -> ls.Output | None:
    """A MatcherO: the realization with the highest score.txt."""
    scored = []
    for rref in o.val:
        text = ls.tryread(ls.Path(os.path.join(ls.rref2path(rref, S), "score.txt")))
        if text is not None:
            scored.append((float(text), rref))
    return ls.Output([max(scored)[1]]) if scored else None


def pipeline(r):
    def make_data(S, dref, ctx, ra) -> ls.Output:
        outs = []
        for i in range(3):  # three candidate datasets in one run
            out = _area(S)
            with open(os.path.join(out, "score.txt"), "w") as f:
                f.write(str(i * 10))
            outs.append(out)
        return ls.Output(outs)

    data = ls.mkdrvE({"name": "data", "score": [ls.selfref, "score.txt"]}, best_score, make_data, r)

    def train(S, dref, ctx, ra) -> ls.Output:
        ATTEMPT["n"] += 1
        if ATTEMPT["n"] == 1:
            raise RuntimeError("diverged")
        chosen = ctx[data][0]
        out = _area(S)
        with open(os.path.join(out, "score.txt"), "w") as f:
            f.write(ls.tryread(ls.Path(os.path.join(ls.rref2path(chosen, S), "score.txt"))))
        return ls.Output([out])

    model = ls.mkdrvE({"name": "model", "data": data}, best_score, train, r)

    def report(b):
        with open(os.path.join(ls.build_outpath(b), "report.txt"), "w") as f:
            f.write("model scored " + ls.mklens(b).model.rref)

    return ls.mkdrvE(
        {"name": "report", "model": model, "out": [ls.selfref, "report.txt"]},
        ls.match_only(),
        ls.build_wrapper(report),
        r,
    )


def test_either_output_and_repl_together(S):
    r = ls.Registry(S)
    top = pipeline(r)
    model = ls.drefcfg(top, S)["model"]
    data = ls.drefcfg(model, S)["data"]
    # 1. The first training fails: the whole pipeline is LEFT, nothing raised.
    e = ls.realizeManyE(ls.instantiate(top, r=r))
    assert ls.either_isLeft(e) and "diverged" in ls.either_status(e)
    assert len(ls.drefrrefs(data, S)) == 3  # three datasets, the Output matcher chose one
    # 2. In the REPL, pause before the model, let its (now working) realizer run,
    #    and stop before the report to do that step by hand.
    rh = ls.repl_realize(ls.instantiate(top, r=r), force_interrupt=[model, top])
    assert rh.dref == model
    ls.repl_continue(rh=rh)  # runs train: RIGHT this time
    assert rh.dref == top
    rmodel = rh.context[model][0]
    assert ls.either_isRight(ls.either_loadR([rmodel], S))
    assert (
        ls.mklens(rmodel, S=S).syspath
        and float(ls.tryread(ls.Path(os.path.join(ls.rref2path(rmodel, S), "score.txt")))) == 20.0
    )  # trained on the best dataset
    b = ls.repl_build(rh)
    with open(os.path.join(ls.build_outpath(b), "report.txt"), "w") as f:
        f.write("written by hand")
    rtop = ls.repl_continueBuild(b, rh)
    assert rtop is not None
    # 3. Now the pipeline is RIGHT and cached: RIGHT results win over the old LEFT ones.
    e2 = ls.realizeE(ls.instantiate(top, r=r))
    assert ls.either_isRight(e2) and ls.either_paths(e2) == [rtop]
    assert ls.mklens(rtop, S=S).out.contents == "written by hand"
    assert ATTEMPT["n"] == 2
    # 4. The history is in SQL: one failed training with its error, one REPL build.
    db = sqlite3.connect(os.path.join(S.root, "catalogue.sqlite"))
    rows = db.execute("SELECT name, status FROM build_log ORDER BY id").fetchall()
    assert ("model", "failed") in rows and ("report", "failed") in rows
    assert rows.count(("report", "succeeded")) == 2  # the LEFT report, then the hand-made one
    assert db.execute("SELECT count(*) FROM build_log WHERE status = 'running'").fetchone() == (0,)
    db.close()
