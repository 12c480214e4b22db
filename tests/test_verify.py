"""verify, repair and reindex against stores damaged in every way verify must catch (SPEC §5)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat

import pytest
from helpers import assert_unchanged, fails, ok, snapshot

from lightstore import (
    CatalogueCorruptError,
    alldrefs,
    allrrefs,
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkdrv,
    realize1,
    selfref,
)
from lightstore.cli.context import EXIT_REFUSED
from lightstore.facade import Store
from lightstore.maintenance import reindex


def pipeline(r):
    def writer(text):
        def real(b):
            with open(os.path.join(build_outpath(b), "f"), "w") as f:
                f.write(text)
            os.makedirs(os.path.join(build_outpath(b), "sub"))
            with open(os.path.join(build_outpath(b), "sub", "g"), "w") as f:
                f.write(text * 2)

        return build_wrapper(real)

    a = mkdrv({"name": "a", "out": [selfref, "f"]}, match_only(), writer("a"), r)
    b = mkdrv({"name": "b", "in": [a, "f"], "out": [selfref, "f"]}, match_only(), writer("b"), r)
    return mkdrv({"name": "c", "in": [b, "f"], "out": [selfref, "f"]}, match_only(), writer("c"), r)


@pytest.fixture
def built(store):
    top = realize1(instantiate(pipeline, S=store))
    store.pin("top", top)
    return store, top


def writable(path: str) -> None:
    for folder, _dirs, files in os.walk(path):
        os.chmod(folder, stat.S_IRWXU)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o644)


def kinds(report) -> set[tuple[str, str]]:
    return {(p.kind, p.ref) for p in report.problems}


def test_clean_store_verifies(built):
    store, _ = built
    report = store.verify(check_contents=True)
    assert report.ok and report.problems == []
    assert (report.derivations, report.realizations) == (3, 3)


def test_missing_realization_folder(built):
    store, top = built
    writable(store.rref_path(top))
    shutil.rmtree(store.rref_path(top))
    report = store.verify()
    assert kinds(report) == {("missing", top)}
    assert not report.ok
    store.unpin("top")
    repaired = store.verify(repair=True)
    assert repaired.ok and top not in allrrefs(store)
    assert store.verify().problems == []


def test_missing_dependency_folder_cannot_be_repaired(built):
    store, _top = built
    (dep,) = [r for r in allrrefs(store) if r.endswith("-b")]
    writable(store.rref_path(dep))
    shutil.rmtree(store.rref_path(dep))
    report = store.verify(repair=True)
    (problem,) = report.problems
    assert problem.kind == "missing" and not problem.repaired
    assert "depend on it" in problem.action


def test_edited_artifact_needs_check_contents(built):
    store, top = built
    path = os.path.join(store.rref_path(top), "sub", "g")
    writable(store.rref_path(top))
    with open(path, "a") as f:
        f.write("tampered")
    assert store.verify().problems == []
    report = store.verify(check_contents=True)
    assert kinds(report) == {("content", top)}
    store.unpin("top")
    assert store.verify(check_contents=True, repair=True).ok
    assert top not in allrrefs(store) and not os.path.exists(store.rref_path(top))


def test_unregistered_folders(built):
    store, top = built
    # A realization folder copied under a hash the catalogue does not know, and junk.
    dref_dir = os.path.dirname(store.rref_path(top))
    bogus = os.path.join(dref_dir, "f" * 32)
    shutil.copytree(store.rref_path(top), bogus)
    os.mkdir(os.path.join(store.objects_dir, "not-an-object"))
    report = store.verify()
    found = kinds(report)
    assert ("unregistered", f"rref:{'f' * 32}-{top.split('-', 1)[1]}") in found
    assert any(k == "unknown" for k, _ in found)
    assert store.verify(repair=True).ok
    assert not os.path.exists(bogus)
    assert store.verify().problems == []


def test_crash_leftover_is_registered_by_repair(built):
    """A complete folder that never reached the catalogue (killed before commit) is recovered by repair."""
    store, top = built
    with store.catalogue.write() as conn:
        conn.execute("DELETE FROM pins")
        conn.execute("DELETE FROM realization_deps WHERE rref = ?", (top,))
        conn.execute("DELETE FROM realizations WHERE rref = ?", (top,))
    assert kinds(store.verify()) == {("unregistered", top)}
    report = store.verify(repair=True)
    assert report.ok and report.problems[0].action.startswith("registered")
    assert top in allrrefs(store)


def test_dangling_catalogue_row(built):
    store, top = built
    with store.catalogue.write() as conn:
        conn.execute(
            "INSERT INTO realizations (rref, dref, context, context_hash, size, file_count, created) "
            "SELECT 'rref:' || ? || substr(rref, 38), dref, context, context_hash, size, file_count, created "
            "FROM realizations WHERE rref = ?",
            ("e" * 32, top),
        )
    ghost = f"rref:{'e' * 32}-{top.split('-', 1)[1]}"
    assert ghost in allrrefs(store)
    assert kinds(store.verify()) == {("missing", ghost)}
    assert store.verify(repair=True).ok
    assert ghost not in allrrefs(store)


def test_missing_config_file_is_rewritten(built):
    store, _top = built
    d = alldrefs(store)[0]
    path = os.path.join(store.dref_path(d), "config.json")
    os.chmod(path, 0o644)
    os.unlink(path)
    assert kinds(store.verify()) == {("config", d)}
    assert store.verify(repair=True).ok
    assert os.path.exists(path)


def test_corrupted_catalogue_names_reindex(built):
    store, _ = built
    path = store.catalogue.path
    store.catalogue.close()
    Store.forget_instances()
    with open(path, "r+b") as f:
        f.write(b"this is no longer a database" * 10)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    with pytest.raises(CatalogueCorruptError, match="reindex"):
        Store.open(store.root)


def test_reindex_rebuilds_everything(built):
    store, top = built
    before = {
        table: sorted(store.catalogue.query(f"SELECT * FROM {table}"))
        for table in ("derivation_deps", "realization_deps")
    }
    drefs, rrefs = sorted(alldrefs(store)), sorted(allrrefs(store))
    configs = sorted(store.catalogue.query("SELECT dref, config FROM derivations"))
    contexts = sorted(
        store.catalogue.query(
            "SELECT rref, context, context_hash, size, file_count FROM realizations"
        )
    )
    store.catalogue.close()
    os.unlink(store.catalogue.path)
    report = reindex(store.root)
    assert (report.derivations, report.realizations, report.pins) == (3, 3, 1)
    assert report.skipped == []
    fresh = Store.open(store.root)
    assert sorted(alldrefs(fresh)) == drefs and sorted(allrrefs(fresh)) == rrefs
    assert sorted(fresh.catalogue.query("SELECT dref, config FROM derivations")) == configs
    assert (
        sorted(
            fresh.catalogue.query(
                "SELECT rref, context, context_hash, size, file_count FROM realizations"
            )
        )
        == contexts
    )
    for table, rows in before.items():
        assert sorted(fresh.catalogue.query(f"SELECT * FROM {table}")) == rows
    assert fresh.pins() == {"top": top}
    assert fresh.verify(check_contents=True).ok
    # The rebuilt catalogue serves cached realizations.
    assert realize1(instantiate(pipeline, S=fresh)) == top


# -- reading a damaged catalogue -----------------------------------------------------------------


def _edit(store, sql: str) -> None:
    """Change the catalogue as a hand with sqlite3 could, checks off."""
    store.catalogue.close()
    Store.forget_instances()
    conn = sqlite3.connect(store.catalogue.path)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    with conn:
        conn.executescript(sql)
    conn.close()


@pytest.mark.parametrize(
    ("edit", "args"),
    [
        ("UPDATE derivations SET config = '{bad'", ["show", "c@latest"]),
        ("UPDATE derivations SET config = '[1]'", ["show", "c"]),
        ("UPDATE realizations SET size = 9e999; DELETE FROM pins", ["gc", "-n"]),
    ],
)
def test_a_hand_edited_catalogue_is_refused_as_damaged(built, edit, args):
    store, _ = built
    _edit(store, edit)
    result = fails(EXIT_REFUSED, store.root, *args)
    assert "damaged" in result.stderr and "reindex" in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_a_hand_edited_time_is_shown_as_it_is(built):
    store, top = built
    _edit(store, "UPDATE realizations SET build_stopped = 'soon'")
    out = ok(store.root, "show", top)
    assert "? ('soon')" in out and "duration" not in out
    assert json.loads(ok(store.root, "show", top, "--json"))["duration"] is None


@pytest.mark.parametrize("args", [["ls"], ["history"], ["show", "c"], ["sql", "SELECT 1"]])
def test_an_empty_catalogue_is_damage_that_reading_never_writes(built, args):
    store, _ = built
    store.catalogue.close()
    Store.forget_instances()
    for name in os.listdir(store.root):
        if name.startswith("catalogue.sqlite"):
            os.unlink(os.path.join(store.root, name))
    open(store.catalogue.path, "w").close()  # 0 bytes
    before = snapshot(store.root, catalogue_files=True)
    result = fails(EXIT_REFUSED, store.root, *args)
    assert "damaged" in result.stderr and "reindex" in result.stderr, result.stderr
    assert_unchanged(store.root, before, catalogue_files=True)
    assert "recorded 3 derivation(s)" in ok(store.root, "reindex")
    assert len(ok(store.root, "ls", "-q").split()) == 3


def test_a_damaged_catalogue_points_at_reindex_not_verify(built):
    store, _ = built
    store.catalogue.close()
    Store.forget_instances()
    with open(store.catalogue.path, "r+b") as f:
        f.write(b"this is no longer a database" * 10)
    for args in (["ls"], ["verify"]):
        result = fails(EXIT_REFUSED, store.root, *args)
        assert "reindex" in result.stderr and "`lightstore verify`" not in result.stderr
