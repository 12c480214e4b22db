"""verify, repair and reindex against stores damaged in every way verify must catch: files,
folders and catalogues, whatever order names sort in; never a crash, never valid data lost."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest
from helpers import assert_unchanged, fails, make_writable, ok, snapshot

from lightstore import (
    CatalogueCorruptError,
    LightstoreError,
    alldrefs,
    allrrefs,
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkconfig,
    mkdrv,
    realize1,
    rref2dref,
    selfref,
)
from lightstore.cli.context import EXIT_REFUSED
from lightstore.facade import Store
from lightstore.foundation.errors import CatalogueVersionError
from lightstore.foundation.hashing import config_hash
from lightstore.foundation.refs import mkdref
from lightstore.maintenance import reindex
from lightstore.store import CATALOGUE_FILE


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


def kinds(report) -> set[tuple[str, str]]:
    return {(p.kind, p.ref) for p in report.problems}


def test_clean_store_verifies(built):
    store, _ = built
    report = store.verify(check_contents=True)
    assert report.ok and report.problems == []
    assert (report.derivations, report.realizations) == (3, 3)


def test_missing_realization_folder(built):
    store, top = built
    make_writable(store.rref_path(top))
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
    make_writable(store.rref_path(dep))
    shutil.rmtree(store.rref_path(dep))
    report = store.verify(repair=True)
    (problem,) = report.problems
    assert problem.kind == "missing" and not problem.repaired
    assert "depend on it" in problem.action


def test_edited_artifact_needs_check_contents(built):
    store, top = built
    path = os.path.join(store.rref_path(top), "sub", "g")
    make_writable(store.rref_path(top))
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


# -- damaged trees: reported and repaired, never a crash of verify or of a writer --------------


def thing(text: str = "x"):
    """A stage whose output has a file in a sub-folder."""

    def real(b):
        os.makedirs(os.path.join(build_outpath(b), "sub"))
        with open(os.path.join(build_outpath(b), "sub", "f"), "w") as f:
            f.write(text)

    def stage(r):
        return mkdrv({"name": "thing", "text": text}, match_only(), build_wrapper(real), r)

    return stage


def replace_by_folder(path: str) -> None:
    os.chmod(os.path.dirname(path), 0o755)
    os.chmod(path, 0o644)
    os.unlink(path)
    os.mkdir(path)


@pytest.mark.parametrize("which", ["config.json", "context.json"])
def test_metadata_file_replaced_by_a_folder_is_repaired(store, which):
    rref = realize1(instantiate(thing(), S=store.settings))
    folder = store.rref_path(rref) if which == "context.json" else store.dref_path(rref2dref(rref))
    replace_by_folder(os.path.join(folder, which))
    assert not store.verify().ok
    assert store.verify(repair=True).ok
    assert os.path.isfile(os.path.join(folder, which))
    assert store.verify(check_contents=True).problems == []


def test_derivation_folder_replaced_by_a_file(store):
    rref = realize1(instantiate(thing(), S=store.settings))
    folder = store.dref_path(rref2dref(rref))
    make_writable(folder)
    shutil.rmtree(folder)
    with open(folder, "w") as f:
        f.write("junk")
    Store.forget_instances()
    with pytest.raises(LightstoreError, match="verify --repair"):
        realize1(instantiate(thing(), S=store.settings), force_rebuild=True)
    report = Store.open(store.root).verify(repair=True)
    assert report.ok, report.problems
    assert os.path.isdir(folder)
    assert rref not in allrrefs(store)
    assert realize1(instantiate(thing(), S=store.settings)) == rref
    assert store.verify(check_contents=True).problems == []


def test_fifo_inside_a_realization_is_reported_for_that_realization(store):
    good = realize1(instantiate(thing("good"), S=store.settings))
    bad = realize1(instantiate(thing("bad"), S=store.settings))
    sub = os.path.join(store.rref_path(bad), "sub")
    os.chmod(sub, 0o755)
    os.mkfifo(os.path.join(sub, "pipe"))
    report = store.verify(check_contents=True)
    assert {(p.kind, p.ref) for p in report.problems} == {("content", bad)}
    assert "cannot be hashed" in report.problems[0].detail
    out = fails(4, store.root, "verify", "--check-contents").output
    assert bad in out or bad.split(":")[1][:8] in out
    assert store.verify(check_contents=True, repair=True).ok
    assert allrrefs(store) == [good]
    ok(store.root, "verify", "--check-contents")


def test_unregistered_folder_with_a_fifo_is_removed_by_repair(store):
    rref = realize1(instantiate(thing(), S=store.settings))
    bogus = os.path.join(os.path.dirname(store.rref_path(rref)), "e" * 32)
    shutil.copytree(store.rref_path(rref), bogus)
    make_writable(bogus)
    os.mkfifo(os.path.join(bogus, "sub", "pipe"))
    assert store.verify(repair=True).ok
    assert not os.path.exists(bogus)


# -- repair and reindex never lose valid data, whatever order names sort in ----------------------


def writes_f(text):
    def real(b):
        with open(os.path.join(build_outpath(b), "f"), "w") as f:
            f.write(text)

    return build_wrapper(real)


def dref_of(config):
    return mkdref(config_hash(mkconfig(config).val), config["name"])


def sorted_pipeline(store, dependent_first: bool):
    """A realized pipeline dep <- top whose folder names sort as asked."""
    for salt in range(200):
        dep_config = {"name": "dep", "salt": salt, "out": [selfref, "f"]}
        top_config = {"name": "top", "in": [dref_of(dep_config), "f"]}
        top_hash, dep_hash = dref_of(top_config)[5:], dref_of(dep_config)[5:]
        if (top_hash < dep_hash) == dependent_first:

            def stages(r, dep_config=dep_config, top_config=top_config):
                dep = mkdrv(dep_config, match_only(), writes_f("d"), r)
                return mkdrv({**top_config, "in": [dep, "f"]}, match_only(), writes_f("t"), r)

            return realize1(instantiate(stages, S=store.settings))
    raise AssertionError("no salt gave the wanted order")


def empty_catalogue(store) -> None:
    path = os.path.join(store.root, CATALOGUE_FILE)
    Store.forget_instances()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    open(path, "w").close()


def test_repair_registers_dependencies_first_and_keeps_valid_realizations(store):
    top = sorted_pipeline(store, dependent_first=True)
    folder = store.rref_path(top)
    empty_catalogue(store)
    out = ok(store.root, "verify", "--repair")
    assert os.path.isdir(folder), out
    repaired = Store.open(store.root)
    assert top in allrrefs(repaired)
    assert rref2dref(top) in repaired.catalogue.column("SELECT dref FROM derivations")
    assert repaired.verify(check_contents=True).problems == []


def test_repair_keeps_a_valid_realization_it_cannot_register(store):
    top = sorted_pipeline(store, dependent_first=False)
    dep = store.context(top)
    (dep_rref,) = next(iter(dep.values()))
    # The dependency's config is gone: neither can be registered, but top's content verifies.
    dep_folder = os.path.dirname(store.rref_path(dep_rref))
    empty_catalogue(store)
    os.chmod(dep_folder, 0o755)
    os.chmod(os.path.join(dep_folder, "config.json"), 0o644)
    os.unlink(os.path.join(dep_folder, "config.json"))
    repaired = Store.open(store.root, repair=True)
    report = repaired.verify(repair=True)
    assert os.path.isdir(repaired.rref_path(top))
    assert not report.ok


def test_reindex_restores_every_pin_and_gc_keeps_them(store):
    top = sorted_pipeline(store, dependent_first=True)
    store.pin("best.v1", top)
    store.pin("a-b_c", rref2dref(top))
    report = reindex(store.root)
    assert report.pins == 2
    fresh = Store.open(store.root)
    assert fresh.pins() == {"best.v1": top, "a-b_c": rref2dref(top)}
    fresh.gc()
    assert os.path.isdir(fresh.rref_path(top))


def test_reindex_restores_a_legacy_dot_pin_but_not_temporary_files(store):
    top = sorted_pipeline(store, dependent_first=True)
    os.makedirs(os.path.join(store.root, "pins"), exist_ok=True)
    with open(os.path.join(store.root, "pins", ".best"), "w") as f:
        f.write(top + "\n")  # as written by older versions
    with open(os.path.join(store.root, "pins", ".best.0123abcd"), "w") as f:
        f.write(top[:20])  # a temporary file left by a crash
    assert reindex(store.root).pins == 1
    fresh = Store.open(store.root)
    assert fresh.pins() == {".best": top}
    assert fresh.unpin(".best")


def test_reindex_refuses_a_newer_catalogue_unless_forced(store):
    top = sorted_pipeline(store, dependent_first=True)
    cat = os.path.join(store.root, CATALOGUE_FILE)
    for opened in set(Store._instances.values()):
        opened.catalogue.close()
    Store.forget_instances()
    conn = sqlite3.connect(cat)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = snapshot(store.root)
    with pytest.raises(CatalogueVersionError, match="--force"):
        reindex(store.root)
    result = fails(EXIT_REFUSED, store.root, "reindex")
    assert "newer" in result.output or "99" in result.output
    assert_unchanged(store.root, before)
    assert before["catalogue"]["user_version"] == 99
    assert not [n for n in os.listdir(store.root) if ".old-" in n]
    ok(store.root, "reindex", "--force")
    assert top in allrrefs(Store.open(store.root))


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
