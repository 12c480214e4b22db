"""Schema version 2: a catalogue written by the version-1 release opens, upgrades in place, and
keeps every row. The fixture (tests/data/v1_store.*) is made by tools/make_v1_fixture.py with
the library as of commit be1666d."""

from __future__ import annotations

import json
import os
import sqlite3
import tarfile
from pathlib import Path

import pytest

from lightstore import allrrefs, rmref
from lightstore.catalogue import schema_files
from lightstore.facade import Store
from lightstore.query import history

DATA = Path(__file__).resolve().parent / "data"
V1_TABLES = (
    "derivations",
    "derivation_deps",
    "builds",
    "build_inputs",
    "realizations",
    "realization_deps",
    "pins",
    "links",
    "intents",
)


@pytest.fixture
def v1_root(tmp_path) -> str:
    with tarfile.open(DATA / "v1_store.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    return str(tmp_path / "store")


@pytest.fixture
def v1_rows() -> dict:
    return json.loads((DATA / "v1_store.json").read_text())


def rows_of(path: str, table: str, columns: list[str]) -> list[list[object]]:
    conn = sqlite3.connect(path)
    try:
        return [
            list(r) for r in conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY 1, 2")
        ]
    finally:
        conn.close()


def test_the_fixture_is_a_version_1_catalogue(v1_root, v1_rows):
    conn = sqlite3.connect(os.path.join(v1_root, "catalogue.sqlite"))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    assert v1_rows["user_version"] == 1
    # The scenario covered what the migration has to carry: a multi-output
    # build, a failed build, a pin, an import.
    assert len(v1_rows["realizations"]["rows"]) == 5
    assert any(r[4] == "failed" for r in v1_rows["builds"]["rows"])
    assert v1_rows["pins"]["rows"]


def test_opening_upgrades_and_keeps_every_row(v1_root, v1_rows):
    store = Store.open(v1_root)
    assert store.catalogue.schema_version() == len(schema_files())
    assert "0002_history" in store.catalogue.applied_migrations()
    for table in V1_TABLES:
        columns = v1_rows[table]["columns"]
        assert rows_of(store.catalogue.path, table, columns) == v1_rows[table]["rows"], table
    # The new columns are empty for old rows; nothing was guessed.
    assert store.catalogue.query(
        "SELECT count(*) FROM realizations WHERE imported IS NOT NULL"
    ) == [(0,)]
    assert store.catalogue.query("PRAGMA foreign_key_check") == []
    assert store.verify(check_contents=True).ok
    rows = history(store)
    assert len(rows) == 5 and all(r["collected"] is None for r in rows)
    assert {r["build_id"] for r in rows if r["name"] == "train"} == {2}  # one build, two outputs
    per_build = store.catalogue.query(
        "SELECT outputs FROM build_history WHERE name = 'train' AND status = 'succeeded'"
    )
    assert per_build == [(2,)]


def test_an_upgraded_store_keeps_history_through_gc(v1_root, v1_rows):
    store = Store.open(v1_root)
    before = {r["rref"]: r for r in history(store)}
    store.unpin("best")
    report = store.gc()
    assert set(report.rrefs) == set(before) and allrrefs(store) == []
    after = {r["rref"]: r for r in history(store, include_collected=True)}
    assert set(after) == set(before)
    for rref, row in after.items():
        assert row["collected_reason"] == "gc"
        for key in ("dref", "name", "started", "stopped", "size", "host", "pid", "build_id"):
            assert row[key] == before[rref][key], (rref, key)
    # Plain SQL sees the same records, configs and contexts included.
    conn = sqlite3.connect(store.catalogue.path)
    kept = conn.execute(
        "SELECT h.rref, h.config, h.context FROM history AS h WHERE collected IS NOT NULL"
    ).fetchall()
    conn.close()
    v1_configs = {r[0]: r[2] for r in v1_rows["derivations"]["rows"]}
    v1_contexts = {r[0]: r[2] for r in v1_rows["realizations"]["rows"]}
    assert len(kept) == len(before)
    for rref, config, context in kept:
        assert config == v1_configs[before[rref]["dref"]] and context == v1_contexts[rref]
    # Build attempts outlive their derivations (version 1 deleted them with it).
    assert len(store.catalogue.query("SELECT * FROM build_log")) == len(v1_rows["builds"]["rows"])
    assert store.verify().ok


def test_migration_runs_once_and_a_reopen_is_a_no_op(v1_root):
    store = Store.open(v1_root)
    first = store.catalogue.applied_migrations()
    Store.forget_instances()
    again = Store.open(v1_root)
    assert again.catalogue.applied_migrations() == first
    again.unpin("best")
    rmref(history(again, name="evaluate")[0]["rref"], again)
    assert [
        r["collected_reason"] for r in history(again, include_collected=True) if r["collected"]
    ] == ["rmref"]
