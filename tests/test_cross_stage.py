"""Analysing a sweep across its stages: dataset -> train (lr x hidden x seed) -> evaluate ->
report, built by real realizers into a real store.

`history` reads fields across stages (through a reference in the config, or through the runs a
run was built on), filters and sorts by them and finds the fields that vary; `diff` shows
the upstream fields that differ; collected runs stay reachable by their record (`show`,
`log`, `diff`, selectors with --all); tables print numbers to a sensible precision; `ls`
marks failed derivations; `keep_going` works without Dask.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import fails, ok, run

from lightstore import (
    BuildError,
    build_cattrs,
    build_metric,
    build_outpath,
    build_wrapper,
    fsinit,
    instantiate,
    match_only,
    mkdrv,
    mkSS,
    realize1,
    selfref,
)
from lightstore.facade import Store
from lightstore.query import QueryError, describe, history, resolve, select
from lightstore.query.buildlog import build_log
from lightstore.query.compare import compare
from lightstore.query.upstream import Several, upstream_fields

LRS = (0.1, 0.01, 0.001)
HIDDEN = (16, 64)
SEEDS = (1, 2)
PARAMS = [(lr, h, s) for lr in LRS for h in HIDDEN for s in SEEDS]


def r2_of(lr: float, hidden: int, seed: int) -> float:
    """evaluate's metric: many digits, so that precision shows."""
    return 0.9 - abs(lr - 0.01) * 2 + hidden / 1000 + seed / 10000 + 1 / 3000


def dataset_stage(r):
    def real(b):
        with open(os.path.join(build_outpath(b), "data.csv"), "w") as f:
            f.write("x,y\n1,2\n")

    config = {"name": "dataset", "rows": 100, "out": [selfref, "data.csv"]}
    return mkdrv(config, match_only(), build_wrapper(real), r)


def train_stage(lr, hidden, seed):
    def stage(r):
        data = dataset_stage(r)

        def real(b):
            c = build_cattrs(b)
            if c.lr == "boom":
                raise FloatingPointError("the loss diverged")
            print(f"training lr={c.lr} hidden={c.hidden} seed={c.seed}")
            with open(os.path.join(build_outpath(b), "model.json"), "w") as f:
                json.dump({"weights": [c.hidden]}, f)
            build_metric(b, "loss", 1 / (1 + c.hidden))

        config = {
            "name": "train",
            "lr": lr,
            "hidden": hidden,
            "seed": seed,
            "epochs": 3,
            "data": data,
            "out": [selfref, "model.json"],
        }
        return mkdrv(config, match_only(), build_wrapper(real), r)

    return stage


def evaluate_stage(lr, hidden, seed):
    def stage(r):
        model = train_stage(lr, hidden, seed)(r)

        def real(b):
            print(f"evaluating lr={lr}")
            r2 = r2_of(lr, hidden, seed)
            with open(os.path.join(build_outpath(b), "scores.json"), "w") as f:
                f.write(repr(r2))
            if math.isfinite(r2):  # the property test's learning rates go to 1e308
                build_metric(b, "r2", r2)

        config = {"name": "evaluate", "model": model, "split": "test"}
        config["out"] = [selfref, "scores.json"]
        return mkdrv(config, match_only(), build_wrapper(real), r)

    return stage


def report_stage(params):
    def stage(r):
        runs = [evaluate_stage(*p)(r) for p in params]

        def real(b):
            with open(os.path.join(build_outpath(b), "report.md"), "w") as f:
                f.write(f"{len(runs)} runs\n")

        config = {"name": "report", "runs": runs, "out": [selfref, "report.md"]}
        return mkdrv(config, match_only(), build_wrapper(real), r)

    return stage


def make_sweep(root: str, params=PARAMS) -> dict:
    S = fsinit(mkSS(root)).settings
    evaluate = {p: realize1(instantiate(evaluate_stage(*p), S=S)) for p in params}
    report = realize1(instantiate(report_stage(params), S=S))
    return {"root": root, "S": S, "store": Store.open(root), "evaluate": evaluate, "report": report}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return make_sweep(str(tmp_path_factory.mktemp("sweep") / "store"))


def by_rref(rows):
    return {r["rref"]: r for r in rows}


# -- fields across stages ----------------------------------------------------------------------


def test_evaluate_is_read_by_the_parameters_of_the_train_run_it_used(sweep):
    rows = history(sweep["store"], "evaluate", fields=["train.lr", "train.hidden"], metrics=["r2"])
    assert len(rows) == len(PARAMS)
    got = by_rref(rows)
    for (lr, hidden, seed), rref in sweep["evaluate"].items():
        row = got[rref]
        assert (row["train.lr"], row["train.hidden"]) == (lr, hidden)
        assert row["r2"] == r2_of(lr, hidden, seed)
    assert rows.columns[-3:] == ["train.lr", "train.hidden", "r2"]


def test_a_reference_in_the_config_is_followed_to_its_config(sweep):
    rows = history(sweep["store"], "evaluate", fields=["model.lr", "model.data.rows", "model"])
    for (lr, _, _), rref in sweep["evaluate"].items():
        row = by_rref(rows)[rref]
        assert row["model.lr"] == lr and row["model.data.rows"] == 100
        assert row["model"].startswith("dref:")  # the reference itself, as before
    [report] = history(sweep["store"], "report", fields=["runs.model.lr", "runs.split"])
    assert report["runs.model.lr"] == Several([0.001, 0.01, 0.1])
    assert report["runs.split"] == "test"  # the same in all of them: one value


def test_a_run_built_on_several_runs_of_a_stage_gets_all_their_values(sweep):
    [report] = history(
        sweep["store"], "report", fields=["train.lr", "train.hidden", "dataset.rows", "train"]
    )
    assert isinstance(report["train.lr"], Several) and report["train.lr"] == [0.001, 0.01, 0.1]
    assert report["train.hidden"] == [16, 64]
    assert report["dataset.rows"] == 100 and not isinstance(report["dataset.rows"], Several)
    assert report["train"] is None  # a stage is not a value
    out = ok(sweep["root"], "history", "-n", "report", "-f", "train.lr")
    assert "0.001 | 0.01 | 0.1" in out
    data = json.loads(ok(sweep["root"], "history", "-n", "report", "-f", "train.lr", "--json"))
    assert data[0]["train.lr"] == [0.001, 0.01, 0.1]


def test_a_config_field_wins_over_a_stage_of_the_same_name(tmp_path):
    """`a.b` reads the config's `a` when there is one, even where a stage is named `a`."""
    S = fsinit(mkSS(str(tmp_path / "s"))).settings

    def stage(r):
        data = dataset_stage(r)
        config = {"name": "odd", "dataset": {"rows": 7}, "input": data}
        return mkdrv(config, match_only(), build_wrapper(lambda b: None), r)

    realize1(instantiate(stage, S=S))
    [row] = history(Store.open(str(tmp_path / "s")), "odd", fields=["dataset.rows", "input.rows"])
    assert row["dataset.rows"] == 7 and row["input.rows"] == 100


def test_conditions_across_stages(sweep):
    store = sweep["store"]
    small = history(store, "evaluate", config=["train.lr<0.05"], fields=["train.lr"])
    assert sorted({r["train.lr"] for r in small}) == [0.001, 0.01] and len(small) == 8
    both = history(store, "evaluate", config=["train.lr=0.01", "model.hidden>=64"])
    assert {r["rref"] for r in both} == {
        rref for (lr, h, _), rref in sweep["evaluate"].items() if lr == 0.01 and h == 64
    }
    # Several values: the report matches if one of its train runs does.
    assert len(history(store, "report", config=["train.lr=0.1"])) == 1
    assert len(history(store, "report", config=["train.lr>1"])) == 0
    # A field that names nothing is missing: only =null holds.
    assert len(history(store, "evaluate", config=["nothing.x=null"])) == len(PARAMS)
    assert len(history(store, "evaluate", config=["nothing.x!=null"])) == 0
    assert len(history(store, "evaluate", config=["train.lr=null"])) == 0
    out = ok(sweep["root"], "history", "-n", "evaluate", "-c", "train.lr<0.005", "--csv")
    assert len(out.strip().splitlines()) == 1 + 4


def test_sort_and_limit_by_a_field_across_stages(sweep):
    store = sweep["store"]
    rows = history(store, "evaluate", fields=["train.lr"], sort="-train.lr", limit=5)
    assert [r["train.lr"] for r in rows] == [0.1, 0.1, 0.1, 0.1, 0.01]
    rows = history(
        store, "evaluate", fields=["train.lr"], metrics=["r2"], sort="-r2", config=["train.lr<1"]
    )
    assert [r["r2"] for r in rows] == sorted((r["r2"] for r in rows), reverse=True)
    newest = history(store, "evaluate", config=["train.hidden=16"], limit=2)
    assert [r["rref"] for r in newest] == [
        r["rref"] for r in history(store, "evaluate", config=["train.hidden=16"])
    ][-2:]


def test_varying_adds_every_field_that_varies_own_then_upstream(sweep):
    rows = history(sweep["store"], "evaluate", metrics=["r2"], varying=True)
    extra = [c for c in rows.columns if c not in history(sweep["store"], "dataset").columns]
    # model (a reference) and split (the same everywhere) are left out; so are train.epochs
    # and dataset.rows (constant) and train.data (a reference).
    assert extra == ["r2", "train.hidden", "train.lr", "train.seed"]
    assert history(sweep["store"], "evaluate", fields=["*"]).columns == [
        *history(sweep["store"], "evaluate").columns,
        "train.hidden",
        "train.lr",
        "train.seed",
    ]
    train = history(sweep["store"], "train", varying=True, sort="lr")
    assert train.columns[-3:] == ["lr", "hidden", "seed"] and train[0]["lr"] == 0.001
    out = ok(sweep["root"], "history", "-n", "evaluate", "--varying", "-m", "r2")
    assert out.splitlines()[0].split()[-4:] == ["r2", "train.hidden", "train.lr", "train.seed"]


def test_the_cli_answers_in_one_line(sweep):
    out = ok(
        sweep["root"], "history", "-n", "evaluate", "-f", "train.lr", "-f", "train.hidden",
        "-m", "r2", "--sort", "-r2",
    )  # fmt: skip
    lines = out.splitlines()
    assert lines[0].split()[-3:] == ["train.lr", "train.hidden", "r2"]
    best = max(PARAMS, key=lambda p: r2_of(*p))
    first = lines[2].split()
    assert first[-3:] == [repr(best[0]), str(best[1]), f"{r2_of(*best):.6g}"]


def test_an_empty_column_says_what_the_runs_have(sweep):
    result = run(sweep["root"], "history", "-n", "evaluate", "-m", "acc", "-f", "lr")
    assert result.exit_code == 0
    assert "no run listed has a metric 'acc'; their metrics: r2" in result.stderr
    assert "no run listed has a value for 'lr'" in result.stderr
    assert "model, out, split" in result.stderr and "dataset, train" in result.stderr
    json_out = run(sweep["root"], "history", "-n", "evaluate", "-m", "acc", "--json")
    assert json_out.stderr == ""  # only tables for people get notes


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=1, max_size=12))
def test_any_field_path_is_read_or_refused_cleanly(sweep, field):
    try:
        rows = history(sweep["store"], "report", fields=[field], config=[f"{field}=1"])
    except QueryError:
        return
    assert all(set(r) >= set(rows.columns) for r in rows)


NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)


@pytest.mark.slow
@settings(max_examples=12, deadline=None)
@given(
    lrs=st.lists(NUMBERS, min_size=1, max_size=4, unique_by=lambda x: json.dumps(x)),
    bound=NUMBERS,
    op=st.sampled_from(["<", "<=", ">", ">=", "=", "!="]),
)
def test_conditions_and_order_across_stages_match_the_numbers(lrs, bound, op):
    """`-c train.lr OP X` on evaluate keeps exactly the runs whose train lr satisfies it, as
    `-c lr OP X` on train does, and `--sort train.lr` orders them by value."""
    with tempfile.TemporaryDirectory() as tmp:
        made = make_sweep(os.path.join(tmp, "s"), [(lr, 16, 1) for lr in lrs])
        store = made["store"]
        text = repr(bound) if isinstance(bound, float) else str(bound)
        rows = history(store, "evaluate", fields=["train.lr"], config=[f"train.lr{op}{text}"])
        exact = Decimal(text)
        check = {
            "<": exact.__gt__,
            "<=": exact.__ge__,
            ">": exact.__lt__,
            ">=": exact.__le__,
            "=": exact.__eq__,
            "!=": exact.__ne__,
        }[op]
        expected = {lr for lr in map(lambda x: json.dumps(x), lrs) if check(Decimal(lr))}
        assert {json.dumps(r["train.lr"]) for r in rows} == expected
        direct = history(store, "train", fields=["lr"], config=[f"lr{op}{text}"])
        assert {json.dumps(r["lr"]) for r in direct} == expected
        ordered = history(store, "evaluate", fields=["train.lr"], sort="train.lr")
        assert [r["train.lr"] for r in ordered] == sorted(lrs)
        reverse = history(store, "evaluate", fields=["train.lr"], sort="-train.lr")
        assert [r["train.lr"] for r in reverse] == sorted(lrs, reverse=True)


# -- precision ---------------------------------------------------------------------------------


def test_history_prints_six_significant_digits_unless_asked(sweep):
    r2 = r2_of(*PARAMS[0])
    args = ["history", "-n", "evaluate", "-c", "train.lr=0.1", "-c", "train.hidden=16"]
    args += ["-c", "train.seed=1", "-m", "r2"]
    assert f"{r2:.6g}" in ok(sweep["root"], *args) and repr(r2) not in ok(sweep["root"], *args)
    assert f"{r2:.3g}" in ok(sweep["root"], *args, "--precision", "3")
    assert repr(r2) in ok(sweep["root"], *args, "--full")
    assert json.loads(ok(sweep["root"], *args, "--json"))[0]["r2"] == r2
    assert repr(r2) in ok(sweep["root"], *args, "--csv")
    fails(2, sweep["root"], *args, "--precision", "0")


# -- diff --------------------------------------------------------------------------------------


def test_diff_of_two_evaluate_runs_shows_the_upstream_fields_that_differ(sweep):
    a, b = sweep["evaluate"][(0.01, 16, 1)], sweep["evaluate"][(0.001, 16, 1)]
    out = ok(sweep["root"], "diff", a, b)
    assert "upstream:\n  train.lr  0.01 -> 0.001\n" in out
    assert "train.hidden" not in out and "train.data" not in out
    result = compare(sweep["store"], a, b)
    assert [c["field"] for c in result["upstream"]] == ["train.lr"]
    assert result["collected"] == {"a": None, "b": None}
    # Two derivations: through the derivations their configs name.
    da, db = a.replace("rref:", "dref:").split("-", 1)[1], b.split("-", 1)[1]
    result = compare(sweep["store"], "dref:" + da, "dref:" + db)
    assert [c["field"] for c in result["upstream"]] == ["train.lr"]


# -- collected runs ----------------------------------------------------------------------------


@pytest.fixture
def collected(tmp_path):
    """A small sweep after gc kept one evaluate run: the others and their train runs are
    collected records."""
    params = [(lr, 16, 1) for lr in LRS]
    made = make_sweep(str(tmp_path / "store"), params)
    store = made["store"]
    kept = made["evaluate"][(0.01, 16, 1)]
    store.pin("keep", kept)
    store.gc()
    gone = made["evaluate"][(0.1, 16, 1)]
    return {**made, "kept": kept, "gone": gone}


def test_a_collected_run_is_shown_from_its_record(collected):
    root, gone = collected["root"], collected["gone"]
    out = ok(root, "show", gone)
    assert "collected   collected by gc on " in out
    assert "kept until `lightstore forget`" in out and "files: gone (collected)" in out
    assert '"split": "test"' in out and "r2  " in out
    short = gone.split(":")[1][:8]
    assert "collected by gc" in ok(root, "show", short)  # a hash prefix finds it too
    info = json.loads(ok(root, "show", gone, "--json"))
    assert info["collected"]["reason"] == "gc" and info["files"] is None
    assert info["metrics"] == {"r2": r2_of(0.1, 16, 1)}
    assert describe(collected["store"], collected["kept"])["collected"] is None


def test_a_collected_run_keeps_its_log(collected):
    result = run(collected["root"], "log", collected["gone"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "evaluating lr=0.1\n"
    assert "was collected by gc on" in result.stderr
    found = build_log(collected["store"], collected["gone"], include_collected=True)
    assert found["log"] == "evaluating lr=0.1\n"


def test_diff_compares_a_collected_run_by_its_record(collected):
    out = ok(collected["root"], "diff", collected["gone"], collected["kept"])
    assert out.splitlines()[0].endswith(")") and "(collected by gc on" in out.splitlines()[0]
    assert "train.lr  0.1 -> 0.01" in out and "r2  " in out


def test_selectors_pick_collected_runs_only_when_asked(collected):
    store, root = collected["store"], collected["root"]
    assert select(store, "evaluate@all") == [collected["kept"]]
    every = select(store, "evaluate@all", include_collected=True)
    assert sorted(every) == sorted(collected["evaluate"].values())
    one = select(store, "evaluate[split=test]@latest", include_collected=True)
    assert len(one) == 1
    assert resolve(store, "evaluate@latest") == collected["kept"]
    assert "collected" not in ok(root, "show", "evaluate@latest").splitlines()[2]
    fails(2, root, "show", "--all", "evaluate@all")  # several: ambiguous
    assert ok(root, "show", "evaluate@all").startswith(collected["kept"])  # only the present
    ok(root, "log", "--all", "evaluate[split=test]@latest")


def test_commands_that_need_the_files_say_the_run_was_collected(collected):
    result = fails(3, collected["root"], "cat", collected["gone"], "scores.json")
    assert "collected by gc on" in result.output and "record is kept" in result.output


def test_history_reads_upstream_fields_of_collected_runs_at_any_depth(collected):
    """A collected evaluate run whose train run is collected too still has train.lr and
    dataset.rows: its record's context, then the train record's, are followed."""
    rows = history(
        collected["store"], "evaluate", fields=["train.lr", "dataset.rows", "model.lr"],
        include_collected=True,
    )  # fmt: skip
    row = by_rref(rows)[collected["gone"]]
    assert row["collected"] is not None
    assert (row["train.lr"], row["dataset.rows"], row["model.lr"]) == (0.1, 100, 0.1)
    up = upstream_fields(collected["store"], [collected["gone"]])[collected["gone"]]
    assert up["train.lr"] == 0.1 and up["dataset.rows"] == 100
    from lightstore.ui.data import upstream_fields as browser_fields

    assert browser_fields(collected["store"], [collected["gone"]])[collected["gone"]] == up


# -- failures ----------------------------------------------------------------------------------


def test_ls_marks_failed_derivations_and_keep_going_works_serially(tmp_path):
    root = str(tmp_path / "store")
    S = fsinit(mkSS(root)).settings

    def both(r):
        return [evaluate_stage("boom", 16, 1)(r), evaluate_stage(0.01, 16, 1)(r)]

    with pytest.raises(BuildError) as caught:
        realize1(instantiate(report_over(both), S=S), keep_going=True)
    assert "the loss diverged" in str(caught.value)
    # The branch that did not fail was built and published.
    assert [r["train.lr"] for r in history(Store.open(root), "evaluate", fields=["train.lr"])] == [
        0.01
    ]
    out = ok(root, "ls", "-n", "train")
    header, _, *lines = out.splitlines()
    assert header.split()[-1] == "failed"
    assert sorted(ln.split()[-2:] for ln in lines if "(only)" in ln) == [["1", "(only)"]]
    data = json.loads(ok(root, "ls", "--json"))
    assert sorted(d["failures"] for d in data if d["name"] == "train") == [0, 1]
    assert "failed" not in ok(root, "ls", "-n", "dataset").splitlines()[0]


def report_over(stages):
    def stage(r):
        runs = stages(r)
        config = {"name": "report", "runs": runs}
        return mkdrv(config, match_only(), build_wrapper(lambda b: None), r)

    return stage


def test_non_finite_digits_stay_readable():
    from lightstore.query.rows import cell_text

    assert cell_text(math.inf) == "inf" and cell_text(math.nan) == "nan"
    assert cell_text(1 / 3) == "0.333333" and cell_text(1 / 3, None) == repr(1 / 3)
    assert cell_text(Several([1e-7, 0.5])) == "1e-07 | 0.5"


def test_fields_across_long_lineages_are_refused_not_read_for_minutes(sweep, monkeypatch):
    """A chain of checkpoints, each built on the one before, has N * N / 2 (run, upstream
    run) pairs: past `MAX_PAIRS` a field across stages is a QueryError naming what to do,
    not minutes and gigabytes (the browser reads at most that many too)."""
    from lightstore.query import upstream

    store = sweep["store"]
    monkeypatch.setattr(upstream, "MAX_PAIRS", 5)
    for asked in (
        {"fields": ["train.lr"]},
        {"config": ["train.lr<0.05"]},
        {"varying": True},
    ):
        with pytest.raises(QueryError, match="--limit"):
            history(store, "evaluate", **asked)
    assert history(store, "evaluate", fields=["lr"])  # own fields need no lineage
    monkeypatch.setattr(upstream, "MAX_PAIRS", 200_000)
    assert history(store, "evaluate", fields=["train.lr"], varying=True)
