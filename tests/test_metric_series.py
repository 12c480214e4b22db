"""Metrics that are not finite (a diverged run is a result) and metrics that are series over
steps (curves): recorded by realizers and afterwards, read back exactly, summarised by
history and show, printed by `lightstore metrics`, carried by pack/unpack and push/pull
under the signature, kept through gc until forget, and migrated from older catalogues."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sqlite3
import uuid
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import ok, run

from lightstore import (
    BuildError,
    InvalidMetricError,
    Store,
    build_metric,
    build_metrics,
    build_outpath,
    build_wrapper,
    fsinit,
    instantiate,
    match_only,
    mkdrv,
    mkSS,
    realize1,
    selfref,
    spack,
    sunpack,
)
from lightstore.catalogue import Catalogue, schema_files, split_sql
from lightstore.foundation.errors import ArchiveError
from lightstore.query import history, metric_points, metric_table

#: Any value a metric may take: floats of every kind (NaN, infinities, -0.0, subnormals)
#: and 64-bit integers.
VALUES = st.one_of(st.floats(), st.integers(-(2**63), 2**63 - 1))
STEPS = st.integers(-(2**63), 2**63 - 1)


def same(a, b) -> bool:
    """Equal values of the same type, NaN equal to NaN (and -0.0 told from 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (a != a and b != b) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return a == b


def same_series(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(
        len(got[k]) == len(want[k])
        and all(
            gs == ws and same(gv, wv) for (gs, gv), (ws, wv) in zip(got[k], want[k], strict=True)
        )
        for k in got
    )


def _train(lr: float, epochs: int = 4, diverge_at: int | None = None, name: str = "train"):
    """A stage whose realizer logs a loss per epoch, NaN from `diverge_at` on, and its
    final loss (NaN too if it diverged)."""

    def real(b):
        with open(os.path.join(build_outpath(b), "model.txt"), "w") as f:
            f.write(f"lr={lr}\n")
        loss = 1.0
        for epoch in range(epochs):
            loss = math.nan if diverge_at is not None and epoch >= diverge_at else loss / 2
            build_metric(b, "loss", loss, step=epoch)
        build_metrics(
            b, {"final_loss": loss, "grad_norm": math.inf if diverge_at is not None else 1.5}
        )

    def stage(r):
        return mkdrv(
            {"name": name, "lr": lr, "out": [selfref, "model.txt"]},
            match_only(),
            build_wrapper(real),
            r,
        )

    return stage


# -- non-finite values -----------------------------------------------------------------------


def test_a_diverged_run_is_recorded_not_failed(store, S):
    # A serial sweep: the diverged run in the middle no longer stops the ones after it.
    rrefs = [realize1(instantiate(_train(lr, diverge_at=2 if lr == 1.0 else None), S=S))
             for lr in (0.1, 1.0, 0.01)]  # fmt: skip
    assert len(set(rrefs)) == 3
    diverged = store.metrics(rrefs[1])
    assert math.isnan(diverged["final_loss"]) and diverged["grad_norm"] == math.inf
    assert math.isnan(diverged["loss"])  # a series' value is the one at its last step
    # SQLite has no NaN: it is a NULL value; infinities stay REALs.
    rows = dict(
        store.catalogue.query("SELECT name, typeof(value) FROM metrics WHERE rref = ?", (rrefs[1],))
    )
    assert rows == {"final_loss": "null", "grad_norm": "real", "loss": "null"}
    # The runs view stays valid JSON.
    text = store.catalogue.query("SELECT metrics FROM runs WHERE rref = ?", (rrefs[1],))[0][0]
    doc = json.loads(text)
    assert doc["final_loss"] == "NaN" and doc["grad_norm"] == math.inf


def test_non_finite_values_in_every_output(store, S):
    rrefs = [realize1(instantiate(_train(lr, diverge_at=0 if lr > 0.5 else None), S=S))
             for lr in (0.1, 0.9)]  # fmt: skip
    rows = history(store, "train", fields=["lr"], metrics=["final_loss", "grad_norm"],
                   sort="final_loss")  # fmt: skip
    assert [r["lr"] for r in rows] == [0.1, 0.9]  # NaN sorts with the missing values, last
    assert math.isnan(rows[1]["final_loss"]) and rows[1]["grad_norm"] == math.inf
    data = json.loads(ok(store.root, "history", "-m", "final_loss", "-m", "grad_norm", "--json"))
    assert [(r["final_loss"], r["grad_norm"]) for r in data] == [(0.0625, 1.5), ("NaN", "Infinity")]
    table = ok(store.root, "history", "-m", "final_loss")
    assert "nan" in table
    lines = list(csv.DictReader(io.StringIO(ok(store.root, "history", "-m", "grad_norm", "--csv"))))
    assert [float(r["grad_norm"]) for r in lines] == [1.5, math.inf]
    shown = json.loads(ok(store.root, "show", rrefs[1], "--json", "--no-files"))
    assert shown["metrics"]["final_loss"] == "NaN" and shown["series"]["loss"]["last"] == "NaN"
    assert shown["series"]["loss"]["min"] is None  # every value NaN: no smallest
    sql = json.loads(ok(store.root, "sql", "--json", "SELECT value FROM metrics WHERE "
                        "name = 'grad_norm' ORDER BY value"))  # fmt: skip
    assert sql == [{"value": 1.5}, {"value": "Infinity"}]


@settings(max_examples=40, deadline=None)
@given(value=VALUES)
def test_any_value_round_trips_through_the_catalogue(tmp_path_factory, value):
    store = _one_run_store(tmp_path_factory)
    rref = store.catalogue.all_rrefs()[0]
    store.set_metric(rref, "v", value)
    assert same(store.metrics(rref)["v"], value)
    store.remove_metric(rref, "v")


_STORES: dict[str, Store] = {}


def _one_run_store(tmp_path_factory) -> Store:
    """A store holding one run, made once per session for the property tests."""
    if "one" not in _STORES:
        root = str(tmp_path_factory.mktemp("one-run") / "store")
        fsinit(mkSS(root))
        realize1(instantiate(_train(0.3), S=mkSS(root)))
        _STORES["one"] = Store.open(root)
    return _STORES["one"]


# -- series ----------------------------------------------------------------------------------


def test_a_series_recorded_by_a_build(store, S):
    rref = realize1(instantiate(_train(0.1, epochs=5), S=S))
    assert store.metric_series(rref) == {"loss": [(0, 0.5), (1, 0.25), (2, 0.125), (3, 0.0625),
                                                  (4, 0.03125)]}  # fmt: skip
    # Its row in metrics: the value at its last step, and that step.
    row = store.catalogue.query("SELECT value, step FROM metrics WHERE name = 'loss'")
    assert row == [(0.03125, 4)]
    assert store.metrics(rref)["loss"] == 0.03125
    rows = history(store, metrics=["loss", "loss:min", "loss:max", "loss:first", "loss:steps",
                                   "final_loss:steps"])  # fmt: skip
    got = {k: rows[0][k] for k in ("loss", "loss:min", "loss:max", "loss:first", "loss:steps")}
    assert got == {"loss": 0.03125, "loss:min": 0.03125, "loss:max": 0.5, "loss:first": 0.5,
                   "loss:steps": 5}  # fmt: skip
    assert rows[0]["final_loss:steps"] == 0
    with pytest.raises(Exception, match="unknown summary"):
        history(store, metrics=["loss:median"])


def test_a_series_set_afterwards_keeps_its_last_step(store, S):
    rref = realize1(instantiate(_train(0.1, epochs=2), S=S))
    store.set_metric(rref, "val", 3.0, step=10)
    store.set_metric(rref, "val", 2.0, step=5)  # an earlier step: the last stays step 10
    assert store.metrics(rref)["val"] == 3.0
    store.set_metric(rref, "val", math.nan, step=10)  # the last step replaced
    assert math.isnan(store.metrics(rref)["val"])
    store.set_metric_series(rref, "val", [(11, 1), (12, 0.5)])
    assert store.metric_series(rref, ["val"])["val"][-2:] == [(11, 1), (12, 0.5)]
    assert store.catalogue.query("SELECT value, step FROM metrics WHERE name = 'val'") == [
        (0.5, 12)
    ]
    assert store.remove_metric(rref, "val") and not store.remove_metric(rref, "val")
    assert "val" not in store.metric_series(rref)
    assert store.catalogue.query("SELECT count(*) FROM metric_steps WHERE name = 'val'") == [(0,)]


def test_a_metric_is_one_number_or_a_series(store, S):
    def real(b):
        open(os.path.join(build_outpath(b), "f"), "w").close()
        build_metric(b, "loss", 1.0, step=0)
        build_metric(b, "loss", 0.5)

    def stage(r):
        return mkdrv({"name": "mixed", "out": [selfref, "f"]}, match_only(), build_wrapper(real), r)

    with pytest.raises(BuildError) as info:
        realize1(instantiate(stage, S=S))
    assert isinstance(info.value.cause, InvalidMetricError)
    assert "series" in str(info.value.cause)
    assert store.pending_metrics == {}
    rref = realize1(instantiate(_train(0.1), S=S))
    before = store.catalogue.query("SELECT * FROM metrics ORDER BY name")
    with pytest.raises(InvalidMetricError, match="series"):
        store.set_metrics(rref, {"new": 1, "loss": 0.3})
    with pytest.raises(InvalidMetricError, match="one number"):
        store.set_metrics(rref, {"new": 1, "final_loss": 0.3}, step=3)
    with pytest.raises(InvalidMetricError, match="step"):
        store.set_metric(rref, "x", 1.0, step=1.5)
    with pytest.raises(InvalidMetricError, match="step"):
        store.set_metric(rref, "x", 1.0, step=2**63)
    assert store.catalogue.query("SELECT * FROM metrics ORDER BY name") == before


@settings(max_examples=40, deadline=None)
@given(points=st.dictionaries(STEPS, VALUES, min_size=1, max_size=12))
def test_any_series_round_trips_through_the_catalogue(tmp_path_factory, points):
    store = _one_run_store(tmp_path_factory)
    rref = store.catalogue.all_rrefs()[0]
    store.set_metric_series(rref, "curve", points.items())
    want = {"curve": sorted(points.items())}
    assert same_series(store.metric_series(rref, ["curve"]), want)
    last = max(points)
    assert same(store.metrics(rref)["curve"], points[last])
    store.remove_metric(rref, "curve")


def test_numpy_steps_and_values(store, S):
    np = pytest.importorskip("numpy")
    rref = realize1(instantiate(_train(0.1), S=S))
    store.set_metric(rref, "np", np.float32(0.25), step=np.int64(3))
    assert store.metric_series(rref, ["np"]) == {"np": [(3, 0.25)]}


# -- reading -----------------------------------------------------------------------------------


def test_metric_rows_and_pandas(store, S):
    a = realize1(instantiate(_train(0.1, epochs=3), S=S))
    b = realize1(instantiate(_train(0.2, epochs=2, diverge_at=1), S=S))
    points = metric_points(store, [a, b], ["loss"])
    assert [(p["rref"], p["step"]) for p in points] == [(a, 0), (a, 1), (a, 2), (b, 0), (b, 1)]
    table = metric_table(store, [a])
    assert table.columns == ["rref", "step", "final_loss", "grad_norm", "loss"]
    assert table[0] == {"rref": a, "step": None, "final_loss": 0.125, "grad_norm": 1.5}
    assert [r["loss"] for r in table[1:]] == [0.5, 0.25, 0.125]
    pd = pytest.importorskip("pandas")
    frame = metric_points(store, [a, b], ["loss"], plain=False).to_pandas()
    wide = frame.pivot(index="step", columns="rref", values="value")
    assert wide[a].tolist() == [0.5, 0.25, 0.125] and math.isnan(wide[b][1])
    runs = history(store, "train", metrics=["loss:min"]).to_pandas()
    assert isinstance(runs, pd.DataFrame) and runs["loss:min"].tolist() == [0.125, 0.5]


def test_the_metrics_command(store, S):
    a = realize1(instantiate(_train(0.1, epochs=3), S=S))
    b = realize1(instantiate(_train(0.2, epochs=2, diverge_at=1), S=S))
    out = ok(store.root, "metrics", a)
    header, _, *body = out.splitlines()
    assert header.split() == ["step", "final_loss", "grad_norm", "loss"]
    assert [line.split() for line in body] == [["0.125", "1.5"], ["0", "0.5"], ["1", "0.25"],
                                               ["2", "0.125"]]  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(ok(store.root, "metrics", "train@all", "-m", "loss",
                                              "--csv"))))  # fmt: skip
    assert [(r["rref"], r["step"], r["loss"]) for r in rows] == [
        (a, "0", "0.5"), (a, "1", "0.25"), (a, "2", "0.125"), (b, "0", "0.5"), (b, "1", "nan")
    ]  # fmt: skip
    long = json.loads(ok(store.root, "metrics", b, "--long", "--json"))
    assert {"rref": b, "metric": "loss", "step": 1, "value": "NaN"} in long
    assert {"rref": b, "metric": "grad_norm", "step": None, "value": "Infinity"} in long
    shown = ok(store.root, "show", b, "--no-files")
    assert "loss" in shown and "series: 2 step(s) 0..1" in shown and "min 0.5 at step 0" in shown
    assert "no metrics recorded" in ok(store.root, "metrics", a, "-m", "nothing")
    assert run(store.root, "metrics", "train").exit_code == 2  # a derivation (ambiguous here)


def test_the_metric_command(store, S):
    rref = realize1(instantiate(_train(0.1, epochs=2), S=S))
    ok(store.root, "metric", rref, "acc=0.9", "count=3", "bad=-inf")
    got = store.metrics(rref)
    assert (got["acc"], got["count"], got["bad"]) == (0.9, 3, -math.inf)
    assert type(got["count"]) is int
    ok(store.root, "metric", rref, "val=nan", "--step", "7")
    assert math.isnan(store.metric_series(rref)["val"][0][1])
    assert run(store.root, "metric", rref, "loss=1").exit_code == 2  # a series needs a step
    assert run(store.root, "metric", rref, "x=abc").exit_code == 2
    assert run(store.root, "metric", rref, "x").exit_code == 2
    ok(store.root, "metric", rref, "--remove", "acc")
    assert "acc" not in store.metrics(rref)
    assert run(store.root, "metric", rref, "--remove", "acc").exit_code == 3


# -- history and forget ------------------------------------------------------------------------


def test_series_outlive_gc_and_go_with_forget(store, S):
    rref = realize1(instantiate(_train(0.1, epochs=3), S=S))
    store.gc()
    assert store.catalogue.known_rrefs([rref]) == set()
    assert [s for s, _ in store.metric_series(rref)["loss"]] == [0, 1, 2]
    store.set_metric(rref, "late", 1.0, step=0)  # a collected record may still be annotated
    ok(store.root, "metric", rref, "later=2")  # its full RRef designates it on the command line
    rows = json.loads(ok(store.root, "metrics", rref, "-m", "loss", "--json"))
    assert [r["step"] for r in rows] == [0, 1, 2]
    store.forget(everything=True)
    for table in ("metrics", "metric_steps"):
        assert store.catalogue.query(f"SELECT count(*) FROM {table}") == [(0,)]


def test_reindex_keeps_series(store, S):
    rref = realize1(instantiate(_train(0.1, epochs=3), S=S))
    store.reindex()
    again = Store.open(store.root)
    assert [s for s, _ in again.metric_series(rref)["loss"]] == [0, 1, 2]
    assert again.catalogue.query("SELECT step FROM metrics WHERE name = 'loss'") == [(2,)]


def test_a_version_5_catalogue_keeps_its_metrics(tmp_path):
    """Migration 6 rebuilds `metrics`: every row stays, as one number."""
    path = str(tmp_path / "catalogue.sqlite")
    conn = sqlite3.connect(path, isolation_level=None)
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

    migrations = Migrations("lightstore")
    for name, text in schema_files()[:5]:

        def apply(db, text=text):
            for stmt in split_sql(text):
                db.execute(stmt)

        migrations(name=name)(apply)
    migrations.apply(Database(conn))
    conn.execute("PRAGMA user_version = 5")
    conn.execute("INSERT INTO derivations VALUES ('dref:" + "a" * 32 + "-x', 'x', '{}', 0)")
    rref = "rref:" + "b" * 32 + "-" + "a" * 32 + "-x"
    conn.execute(
        "INSERT INTO realizations (rref, dref, context, context_hash, size, file_count, created) "
        "VALUES (?, 'dref:" + "a" * 32 + "-x', '{}', 'h', 0, 0, 0)",
        (rref,),
    )
    conn.executemany(
        "INSERT INTO metrics (rref, name, value, recorded) VALUES (?, ?, ?, 1)",
        [(rref, "loss", 0.5), (rref, "steps", 12)],
    )
    conn.close()
    cat = Catalogue(path)
    assert cat.migrate() == len(schema_files())
    assert cat.query("SELECT name, value, typeof(value), step FROM metrics ORDER BY name") == [
        ("loss", 0.5, "real", None),
        ("steps", 12, "integer", None),
    ]
    assert json.loads(cat.query("SELECT metrics FROM runs")[0][0]) == {"loss": 0.5, "steps": 12}
    assert cat.set_series(rref, {"curve": {0: 1.0}})
    assert cat.series_of([rref]) == {rref: {"curve": {0: 1.0}}}


# -- exchange ----------------------------------------------------------------------------------


def _fresh(tmp_path_factory, label: str) -> Store:
    return fsinit(mkSS(str(tmp_path_factory.mktemp(label) / uuid.uuid4().hex)))


def test_pack_unpack_and_copy_carry_series(tmp_path, store, S):
    from lightstore import copy_closure

    rref = realize1(instantiate(_train(0.1, epochs=3, diverge_at=2), S=S))
    archive = str(tmp_path / "a.zip")
    spack([rref], archive, S)
    with zipfile.ZipFile(archive) as z:
        entry = json.loads(z.read("manifest.json"))["realizations"][0]
    assert entry["series"] == {"loss": [[0, 0.5], [1, 0.25], [2, "NaN"]]}
    assert entry["metrics"]["grad_norm"] == "Infinity"
    assert entry["metrics"]["loss"] == "NaN"  # its last value, for readers without series
    for target in ("unpacked", "copied"):
        other = fsinit(mkSS(str(tmp_path / target)))
        if target == "unpacked":
            sunpack(archive, other.settings)
        else:
            copy_closure([rref], store, other)
        assert same_series(other.metric_series(rref), store.metric_series(rref))
        assert other.catalogue.query("SELECT name, step FROM metrics ORDER BY name") == [
            ("final_loss", None), ("grad_norm", None), ("loss", 2)
        ]  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [{"loss": [[0, "x"]]}, {"loss": [[0.5, 1]]}, {"loss": [[0, 1], [0, 2]]}, {"loss": []},
     {"bad name": [[0, 1]]}, {"loss": [[2**63, 1]]}, [1]],
)  # fmt: skip
def test_unpack_refuses_invalid_series(tmp_path, store, S, bad):
    rref = realize1(instantiate(_train(0.1), S=S))
    archive = str(tmp_path / "a.zip")
    spack([rref], archive, S)
    forged = str(tmp_path / "forged.zip")
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                manifest["realizations"][0]["series"] = bad
                data = json.dumps(manifest).encode()
            dst.writestr(info, data)
    other = fsinit(mkSS(str(tmp_path / "other")))
    with pytest.raises(ArchiveError, match="series"):
        sunpack(forged, other.settings)
    assert other.catalogue.query("SELECT count(*) FROM realizations") == [(0,)]


def test_an_archive_without_series_still_unpacks(tmp_path, store, S):
    rref = realize1(instantiate(_train(0.1), S=S))
    archive = str(tmp_path / "a.zip")
    spack([rref], archive, S)
    old = str(tmp_path / "old.zip")
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(old, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                del manifest["realizations"][0]["series"]
                manifest["realizations"][0]["metrics"] = {"loss": 0.0625}
                data = json.dumps(manifest).encode()
            dst.writestr(info, data)
    other = fsinit(mkSS(str(tmp_path / "other")))
    sunpack(old, other.settings)
    assert other.metrics(rref) == {"loss": 0.0625} and other.metric_series(rref) == {}


@settings(max_examples=15, deadline=None)
@given(points=st.dictionaries(STEPS, VALUES, min_size=1, max_size=8), value=VALUES)
def test_any_series_round_trips_through_pack_and_unpack(tmp_path_factory, points, value):
    store = _one_run_store(tmp_path_factory)
    rref = store.catalogue.all_rrefs()[0]
    store.set_metric_series(rref, "curve", points.items())
    store.set_metric(rref, "number", value)
    archive = str(tmp_path_factory.mktemp("archives") / "a.tar")
    spack([rref], archive, store.settings)
    other = _fresh(tmp_path_factory, "unpacked")
    sunpack(archive, other.settings)
    assert same_series(other.metric_series(rref), store.metric_series(rref))
    assert same(other.metrics(rref)["number"], value)
    assert same(other.metrics(rref)["curve"], points[max(points)])
    store.remove_metric(rref, "curve")


@settings(max_examples=10, deadline=None)
@given(points=st.dictionaries(STEPS, VALUES, min_size=1, max_size=8), value=VALUES)
def test_any_series_round_trips_through_push_and_pull(tmp_path_factory, points, value):
    pytest.importorskip("fsspec")
    store = _one_run_store(tmp_path_factory)
    rref = store.catalogue.all_rrefs()[0]
    store.set_metric_series(rref, "curve", points.items())
    store.set_metric(rref, "number", value)
    url = (tmp_path_factory.mktemp("remote") / "cache").as_uri()
    store.push(url, [rref])
    other = _fresh(tmp_path_factory, "pulled")
    other.pull(url, [rref])
    assert same_series(other.metric_series(rref), store.metric_series(rref))
    assert same(other.metrics(rref)["number"], value)
    store.remove_metric(rref, "curve")


def test_push_and_pull_through_s3_carry_series(tmp_path, store, S, s3_url):
    rref = realize1(instantiate(_train(0.1, epochs=3, diverge_at=1), S=S))
    store.set_tag(rref, "diverged", "epoch 1")
    store.push(s3_url, [rref])
    other = fsinit(mkSS(str(tmp_path / "pulled")))
    other.pull(s3_url, [rref])
    assert same_series(other.metric_series(rref), store.metric_series(rref))
    assert math.isnan(other.metrics(rref)["final_loss"])
    assert other.tags(rref) == {"diverged": "epoch 1"}


def test_the_signature_covers_series(tmp_path, store, S, caplog):
    pytest.importorskip("cryptography")
    from lightstore.remote import generate_signing_key
    from lightstore.remote._layout import manifest_key, signed_manifest_key

    key = generate_signing_key("alice-1")
    rref = realize1(instantiate(_train(0.1, epochs=3), S=S))
    folder = tmp_path / "remote"
    url = folder.as_uri()
    store.push(url, [rref], signing_key=key)

    def rewrite(path, fn):
        p = folder / path
        os.chmod(p, 0o644)
        p.write_bytes(fn(p.read_bytes()))

    def better(body: bytes) -> bytes:
        doc = json.loads(body)
        doc["series"] = {"loss": [[0, 1e-9]]}
        return json.dumps(doc).encode()

    # The shared manifest improved: a pull that trusts the key reads the signed copy.
    rewrite(manifest_key(rref), better)
    bob = fsinit(mkSS(str(tmp_path / "bob")))
    bob.pull(url, [rref], trusted_keys=[key.public])
    assert same_series(bob.metric_series(rref), store.metric_series(rref))
    # The signed copy improved too: its signature fails, the RRef's signature still vouches
    # for the files, and the series (which it does not cover) is dropped.
    rewrite(
        signed_manifest_key(rref, "alice-1"),
        lambda data: data.partition(b"\n")[0] + b"\n" + better(data.partition(b"\n")[2]),
    )
    carol = fsinit(mkSS(str(tmp_path / "carol")))
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        carol.pull(url, [rref], trusted_keys=[key.public])
    assert carol.metric_series(rref) == {} and carol.metrics(rref) == {}
    assert "series" in caplog.text and "does not verify" in caplog.text


def test_diff_shows_non_finite_metrics(store, S):
    a = realize1(instantiate(_train(0.1), S=S))
    b = realize1(instantiate(_train(0.2, diverge_at=1), S=S))
    result = json.loads(ok(store.root, "diff", a, b, "--json"))
    changes = {c["field"]: (c["a"], c["b"]) for c in result["metrics"]}
    assert changes["final_loss"] == (0.0625, "NaN") and changes["grad_norm"] == (1.5, "Infinity")


def test_the_demo_matcher_never_picks_a_nan(store, S):
    pytest.importorskip("numpy")
    from lightstore.demo.pipeline import match_lowest_value

    nan_run = realize1(instantiate(_train(0.1), S=S))
    fine_run = realize1(instantiate(_train(0.2), S=S))
    store.set_metric(nan_run, "final_value", math.nan)
    store.set_metric(fine_run, "final_value", 3.0)
    assert match_lowest_value(S, [nan_run, fine_run]) == [fine_run]
