"""Metrics: recorded by realizers or afterwards, queried in SQL and by `history`, carried by
pack/unpack and copy, never part of a hash."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import zipfile

import pytest
from helpers import ok, run, run_job
from hypothesis import given
from hypothesis import strategies as st

from lightstore import (
    BuildError,
    InvalidConfigError,
    InvalidMetricError,
    LightstoreError,
    Store,
    UnknownReferenceError,
    build_metric,
    build_metrics,
    build_outpath,
    build_wrapper,
    copy_closure,
    fsinit,
    instantiate,
    match_all,
    match_only,
    mkdrv,
    mkSS,
    realize1,
    realizeMany,
    selfref,
    spack,
    sunpack,
)
from lightstore.foundation.errors import ArchiveError, IntegrityError, QueryError
from lightstore.foundation.metrics import check_metric_name, check_metric_value
from lightstore.query import history, open_view


def _train(lr: float, loss: float | None = None, *, extra: dict | None = None, fail: bool = False):
    """A deterministic stage whose realizer records metrics (its output ignores them)."""

    def real(b):
        with open(os.path.join(build_outpath(b), "model.txt"), "w") as f:
            f.write(f"lr={lr}\n")
        build_metric(b, "loss", loss if loss is not None else lr * 10)
        if extra:
            build_metrics(b, extra)
        if fail:
            raise RuntimeError("diverged")

    def stage(r):
        return mkdrv(
            {"name": "train", "lr": lr, "out": [selfref, "model.txt"]},
            match_only(),
            build_wrapper(real),
            r,
        )

    return stage


def metric_rows(store: Store) -> list[tuple]:
    return store.catalogue.query("SELECT rref, name, value FROM metrics ORDER BY rref, name")


def test_build_metrics_are_recorded_with_the_realization(store, S):
    rref = realize1(instantiate(_train(0.1, extra={"steps": 12, "acc": 0.5}), S=S))
    assert store.metrics(rref) == {"loss": 1.0, "steps": 12, "acc": 0.5}
    # integers stay integers, floats stay floats
    types = dict(store.catalogue.query("SELECT name, typeof(value) FROM metrics"))
    assert types == {"loss": "real", "steps": "integer", "acc": "real"}
    row = store.catalogue.query("SELECT metrics FROM runs WHERE rref = ?", (rref,))[0][0]
    assert json.loads(row) == {"loss": 1.0, "steps": 12, "acc": 0.5}


def test_metrics_are_not_part_of_the_hash(tmp_path):
    a = fsinit(mkSS(str(tmp_path / "a"))).settings
    b = fsinit(mkSS(str(tmp_path / "b"))).settings
    ra = realize1(instantiate(_train(0.1, loss=1.0), S=a))
    rb = realize1(instantiate(_train(0.1, loss=2.0), S=b))
    assert ra == rb
    assert Store.open(a).metrics(ra) == {"loss": 1.0}
    assert Store.open(b).metrics(rb) == {"loss": 2.0}


def test_a_failed_build_records_no_metrics_and_leaves_none_pending(store, S):
    with pytest.raises(BuildError):
        realize1(instantiate(_train(0.1, fail=True), S=S))
    assert metric_rows(store) == []
    assert store.pending_metrics == {}


@pytest.mark.parametrize(
    "name", ["", "1loss", "lo ss", "a" * 129, "loss;drop", None, 3, "l\u00f6ss", "x\n"]
)
def test_bad_metric_names_are_refused(store, S, name):
    def real(b):
        open(os.path.join(build_outpath(b), "f"), "w").close()
        build_metric(b, name, 1.0)

    def stage(r):
        return mkdrv({"name": "bad", "out": [selfref, "f"]}, match_only(), build_wrapper(real), r)

    with pytest.raises(BuildError) as info:
        realize1(instantiate(stage, S=S))
    assert isinstance(info.value.cause, InvalidMetricError)
    assert isinstance(info.value.cause, InvalidConfigError)
    assert store.catalogue.all_rrefs() == []
    assert metric_rows(store) == []


@pytest.mark.parametrize("value", [True, "1.0", None, [1], 2**63, -(2**63) - 1, 1j])
def test_bad_metric_values_are_refused(value):
    with pytest.raises(InvalidMetricError) as info:
        check_metric_value("loss", value)
    assert "loss" in str(info.value)


def test_numpy_scalars_are_accepted():
    np = pytest.importorskip("numpy")
    assert check_metric_value("m", np.float32(0.5)) == 0.5
    assert type(check_metric_value("m", np.int64(7))) is int
    assert math.isnan(check_metric_value("m", np.float64("nan")))
    with pytest.raises(InvalidMetricError):
        check_metric_value("m", np.array([1.0, 2.0]))


def test_finite_values_round_trip_exactly(store, S):
    rref = realize1(instantiate(_train(0.5), S=S))

    @given(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63 - 1)
        )
    )
    def round_trip(value):
        store.set_metric(rref, "v", value)
        got = store.metrics(rref)["v"]
        assert got == value and type(got) is type(value)

    round_trip()


@given(st.text(max_size=140))
def test_name_check_agrees_with_the_pattern(name):
    import re

    valid = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-/]{0,127}", name) is not None
    if valid:
        assert check_metric_name(name) == name
    else:
        with pytest.raises(InvalidMetricError):
            check_metric_name(name)


def test_metrics_of_several_outputs(store, S):
    def real(b):
        for i, out in enumerate(b.outpaths):
            with open(os.path.join(out, "f"), "w") as f:
                f.write(str(i))
            build_metric(b, "index", i, output=i)
        build_metric(b, "shared", 1.5)
        with pytest.raises(InvalidMetricError):
            build_metric(b, "x", 1, output=2)

    def stage(r):
        return mkdrv(
            {"name": "two", "out": [selfref, "f"]}, match_all, build_wrapper(real, nouts=2), r
        )

    rrefs = realizeMany(instantiate(stage, S=S))
    got = sorted(store.metrics(r)["index"] for r in rrefs)
    assert got == [0, 1]
    assert all(store.metrics(r)["shared"] == 1.5 for r in rrefs)


def test_set_metric_after_the_fact(store, S):
    rref = realize1(instantiate(_train(0.1), S=S))
    store.set_metric(rref, "loss", 0.25)
    store.set_metric(rref, "val/acc", 3)
    assert store.metrics(rref) == {"loss": 0.25, "val/acc": 3}
    with pytest.raises(InvalidMetricError):
        store.set_metrics(rref, {"ok": 1, "bad": "x"})
    assert store.metrics(rref) == {"loss": 0.25, "val/acc": 3}  # nothing of a refused call
    missing = rref.replace(rref[5:9], "0000" if rref[5:9] != "0000" else "1111")
    with pytest.raises(UnknownReferenceError):
        store.set_metric(missing, "loss", 1.0)


def test_the_database_refuses_bad_rows(store, S):
    rref = realize1(instantiate(_train(0.1), S=S))
    for value in ("text", b"blob"):  # NULL is NaN
        with pytest.raises(IntegrityError), store.catalogue.write() as conn:
            conn.execute(
                "INSERT INTO metrics (rref, name, value, recorded) VALUES (?, 'x', ?, 0)",
                (rref, value),
            )
    with pytest.raises(IntegrityError), store.catalogue.write() as conn:
        conn.execute(
            "INSERT INTO metrics (rref, name, value, recorded) VALUES ('rref:nope', 'x', 1, 0)"
        )


def test_metrics_outlive_gc_and_go_with_forget(store, S):
    rref = realize1(instantiate(_train(0.1), S=S))
    store.gc()
    assert store.catalogue.known_rrefs([rref]) == set()  # collected
    assert store.metrics(rref) == {"loss": 1.0}  # still history
    store.set_metric(rref, "late", 2)  # a collected record may still be annotated
    row = store.catalogue.query(
        "SELECT collected IS NOT NULL, metrics FROM runs WHERE rref = ?", (rref,)
    )
    assert row[0][0] == 1 and json.loads(row[0][1]) == {"loss": 1.0, "late": 2}
    # Built again: present and collected records share the metrics.
    again = realize1(instantiate(_train(0.1), S=S))
    assert again == rref
    store.forget(everything=True)
    assert store.metrics(rref) == {"loss": 1.0, "late": 2}  # the present record keeps them
    store.gc()
    # The record of a collected run keeps its metrics...
    (row,) = [r for r in history(store, metrics=["loss"], include_collected=True) if r["collected"]]
    assert row["rref"] == rref and row["loss"] == 1.0 and row["collected"] is not None
    # ...until the record itself is forgotten.
    store.forget(everything=True)
    assert metric_rows(store) == []


# -- queries ---------------------------------------------------------------------------------


@pytest.fixture
def sweep(store, S):
    losses = {0.1: 0.3, 0.01: 0.1, 0.001: 0.2, 0.5: None}
    rrefs = {}
    for lr, loss in losses.items():
        rrefs[lr] = realize1(instantiate(_train(lr, loss if loss is not None else 0.0), S=S))
    store.catalogue.conn.execute("DELETE FROM metrics WHERE rref = ?", (rrefs[0.5],))
    return rrefs


def test_history_with_metrics_sorted(store, sweep):
    rows = history(store, "train", fields=["lr"], metrics=["loss"], sort="loss")
    assert [r["lr"] for r in rows] == [0.01, 0.001, 0.1, 0.5]  # missing last
    assert rows[-1]["loss"] is None
    desc = history(store, "train", fields=["lr"], metrics=["loss"], sort="-loss", limit=2)
    assert [r["lr"] for r in desc] == [0.1, 0.001]
    by_field = history(store, "train", fields=["lr"], sort="lr")
    assert [r["lr"] for r in by_field] == [0.001, 0.01, 0.1, 0.5]
    clash = history(store, fields=["lr"], metrics=["lr", "size"])
    assert "metric.lr" in clash[0] and "metric.size" in clash[0]
    with pytest.raises(QueryError):
        history(store, metrics=["bad name"])
    with pytest.raises(QueryError):
        history(store, metrics=["loss"], sort="nope")
    with pytest.raises(QueryError):
        history(store, sort='loss" --')


def test_history_to_pandas(store, sweep):
    pytest.importorskip("pandas")
    frame = history(store, "train", fields=["lr"], metrics=["loss"], sort="loss").to_pandas()
    assert list(frame.columns)[-2:] == ["lr", "loss"]
    assert frame["lr"].tolist() == [0.01, 0.001, 0.1, 0.5]
    assert len(history(store, "nothing").to_pandas()) == 0


def test_to_pandas_without_pandas_names_it(store, sweep, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(LightstoreError, match="pip install pandas"):
        history(store, "train").to_pandas()


def test_runs_view_answers_best_first_in_one_short_query(store, sweep):
    rows = store.catalogue.query(
        "SELECT json_extract(config, '$.lr') AS lr, json_extract(metrics, '$.loss') AS loss "
        "FROM runs WHERE name = 'train' AND loss IS NOT NULL ORDER BY loss"
    )
    assert rows == [(0.01, 0.1), (0.001, 0.2), (0.1, 0.3)]


def test_cli_history_metric_and_sort(store, sweep):
    out = ok(store.root, "history", "-n", "train", "-f", "lr", "-m", "loss", "--sort", "loss")
    lines = out.strip().splitlines()
    assert lines[0].split()[-2:] == ["lr", "loss"]
    body = [line.split() for line in lines if line.startswith("train")]
    assert [cells[-2:] for cells in body[:3]] == [["0.01", "0.1"], ["0.001", "0.2"], ["0.1", "0.3"]]
    assert body[3][-1] == "0.5"  # no loss: last, with an empty cell
    data = json.loads(ok(store.root, "history", "-m", "loss", "--sort", "-loss", "--json"))
    assert [r["loss"] for r in data] == [0.3, 0.2, 0.1, None]
    bad = run(store.root, "history", "--sort", "nope")
    assert bad.exit_code == 2 and "cannot sort" in bad.output
    bad = run(store.root, "history", "-m", "no pe")
    assert bad.exit_code == 2


def test_read_only_view_reads_metrics(store, sweep):
    view = open_view(store.root)
    assert history(view, metrics=["loss"], sort="loss")[0]["loss"] == 0.1


# -- exchange ------------------------------------------------------------------------------------


def test_pack_unpack_and_copy_carry_metrics(tmp_path, store, sweep):
    archive = str(tmp_path / "a.zip")
    spack([sweep[0.01], sweep[0.5]], archive, store.settings)
    with zipfile.ZipFile(archive) as z:
        manifest = json.loads(z.read("manifest.json"))
    carried = {e["rref"]: e.get("metrics") for e in manifest["realizations"]}
    assert carried == {sweep[0.01]: {"loss": 0.1}, sweep[0.5]: None}
    other = fsinit(mkSS(str(tmp_path / "other")))
    sunpack(archive, other.settings)
    assert other.metrics(sweep[0.01]) == {"loss": 0.1}
    assert other.metrics(sweep[0.5]) == {}
    third = fsinit(mkSS(str(tmp_path / "third")))
    copy_closure([sweep[0.001]], store, third)
    assert third.metrics(sweep[0.001]) == {"loss": 0.2}


@pytest.mark.parametrize("bad", [{"loss": "x"}, {"bad name": 1}, [1, 2], {"loss": "nan"}])
def test_unpack_refuses_invalid_metrics(tmp_path, store, sweep, bad):
    archive = str(tmp_path / "a.zip")
    spack([sweep[0.01]], archive, store.settings)
    forged = str(tmp_path / "forged.zip")
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                manifest["realizations"][0]["metrics"] = bad
                data = json.dumps(manifest).encode()
            dst.writestr(info, data)
    other = fsinit(mkSS(str(tmp_path / "other")))
    with pytest.raises(ArchiveError, match="metrics"):
        sunpack(forged, other.settings)
    assert other.catalogue.query("SELECT count(*) FROM realizations")[0][0] == 0


def test_push_and_pull_carry_metrics(tmp_path, store, sweep):
    pytest.importorskip("fsspec")
    url = (tmp_path / "remote").as_uri()
    store.set_metric(sweep[0.01], "bad_later", 1)
    store.push(url, [sweep[0.01], sweep[0.5]])
    other = fsinit(mkSS(str(tmp_path / "pulled")))
    other.pull(url, [sweep[0.01], sweep[0.5]])
    assert other.metrics(sweep[0.01]) == {"loss": 0.1, "bad_later": 1}
    assert type(other.metrics(sweep[0.01])["bad_later"]) is int
    assert other.metrics(sweep[0.5]) == {}


def test_reindex_keeps_metrics_of_a_readable_catalogue(store, sweep):
    store.reindex()
    again = Store.open(store.root)
    assert again.metrics(sweep[0.01]) == {"loss": 0.1}
    assert again.metrics(sweep[0.5]) == {}


# -- processes -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_many_processes_record_metrics_at_once(store, workers):
    lrs = (0.1, 0.2, 0.3)
    results = workers.results([workers.start("metrics", store.root, str(lr)) for lr in lrs])
    shared = {r["shared"] for r in results}
    assert len(shared) == 1  # one build of the shared derivation, reused by the others
    for r, lr in zip(results, lrs, strict=True):
        assert store.metrics(r["rref"])["loss"] == lr * 2
    assert store.metrics(shared.pop()) == {"loss": 1.0, "counter": 9}
    assert store.verify(check_contents=True).ok


@pytest.mark.slow
@pytest.mark.parametrize("point", ["publish:renamed", "publish:committed"])
def test_killed_while_publishing_leaves_metrics_with_their_realization(store, point):
    assert run_job("metrics", store.root, "0.7", failpoint=point).returncode == -signal.SIGKILL
    Store.forget_instances()
    again = Store.open(store.root)
    rows = again.catalogue.query("SELECT rref FROM realizations")
    metric_rrefs = {r for (r,) in again.catalogue.query("SELECT DISTINCT rref FROM metrics")}
    assert metric_rrefs == {r for (r,) in rows}  # both or neither
    assert again.verify().ok
