"""Hardening (issue 14): repair and reindex never lose valid data, whatever order names sort in."""

from __future__ import annotations

import os
import sqlite3

import pytest
from helpers import fails, ok

from lightstore import (
    allrrefs,
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkdrv,
    realize1,
    rref2dref,
    selfref,
)
from lightstore.cli.context import EXIT_BAD_INPUT, EXIT_REFUSED
from lightstore.facade import Store
from lightstore.foundation.config import mkconfig
from lightstore.foundation.errors import CatalogueVersionError, InvalidReferenceError
from lightstore.foundation.hashing import config_hash
from lightstore.foundation.refs import mkdref
from lightstore.maintenance import reindex
from lightstore.store import CATALOGUE_FILE


def _writer(text):
    def real(b):
        with open(os.path.join(build_outpath(b), "f"), "w") as f:
            f.write(text)

    return build_wrapper(real)


def _dref(config):
    return mkdref(config_hash(mkconfig(config).val), config["name"])


def _two_stage(store, dependent_first: bool):
    """A realized pipeline dep <- top whose folder names sort as asked."""
    for salt in range(200):
        dep_config = {"name": "dep", "salt": salt, "out": [selfref, "f"]}
        top_config = {"name": "top", "in": [_dref(dep_config), "f"]}
        top_hash, dep_hash = _dref(top_config)[5:], _dref(dep_config)[5:]
        if (top_hash < dep_hash) == dependent_first:

            def stages(r, dep_config=dep_config, top_config=top_config):
                dep = mkdrv(dep_config, match_only(), _writer("d"), r)
                return mkdrv({**top_config, "in": [dep, "f"]}, match_only(), _writer("t"), r)

            return realize1(instantiate(stages, S=store.settings))
    raise AssertionError("no salt gave the wanted order")


def _empty_catalogue(store) -> None:
    path = os.path.join(store.root, CATALOGUE_FILE)
    Store.forget_instances()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    open(path, "w").close()


def test_repair_registers_dependencies_first_and_keeps_valid_realizations(store):
    top = _two_stage(store, dependent_first=True)
    folder = store.rref_path(top)
    _empty_catalogue(store)
    out = ok(store.root, "verify", "--repair")
    assert os.path.isdir(folder), out
    repaired = Store.open(store.root)
    assert top in allrrefs(repaired)
    assert rref2dref(top) in repaired.catalogue.column("SELECT dref FROM derivations")
    assert repaired.verify(check_contents=True).problems == []


def test_repair_keeps_a_valid_realization_it_cannot_register(store):
    top = _two_stage(store, dependent_first=False)
    dep = store.context(top)
    (dep_rref,) = next(iter(dep.values()))
    # The dependency's config is gone: neither can be registered, but top's content verifies.
    dep_folder = os.path.dirname(store.rref_path(dep_rref))
    _empty_catalogue(store)
    os.chmod(dep_folder, 0o755)
    os.chmod(os.path.join(dep_folder, "config.json"), 0o644)
    os.unlink(os.path.join(dep_folder, "config.json"))
    repaired = Store.open(store.root)
    report = repaired.verify(repair=True)
    assert os.path.isdir(repaired.rref_path(top))
    assert not report.ok


@pytest.mark.parametrize("name", [".best", "..", ".", ".x.1234abcd"])
def test_pin_names_never_look_like_temporary_files(store, name):
    top = _two_stage(store, dependent_first=True)
    with pytest.raises(InvalidReferenceError):
        store.pin(name, top)
    assert fails(EXIT_BAD_INPUT, store.root, "pin", name, top)


def test_reindex_restores_every_pin_and_gc_keeps_them(store):
    top = _two_stage(store, dependent_first=True)
    store.pin("best.v1", top)
    store.pin("a-b_c", rref2dref(top))
    report = reindex(store.root)
    assert report.pins == 2
    fresh = Store.open(store.root)
    assert fresh.pins() == {"best.v1": top, "a-b_c": rref2dref(top)}
    fresh.gc()
    assert os.path.isdir(fresh.rref_path(top))


def test_reindex_restores_a_legacy_dot_pin_but_not_temporary_files(store):
    top = _two_stage(store, dependent_first=True)
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
    top = _two_stage(store, dependent_first=True)
    cat = os.path.join(store.root, CATALOGUE_FILE)
    for opened in set(Store._instances.values()):
        opened.catalogue.close()
    Store.forget_instances()
    conn = sqlite3.connect(cat)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(CatalogueVersionError, match="--force"):
        reindex(store.root)
    result = fails(EXIT_REFUSED, store.root, "reindex")
    assert "newer" in result.output or "99" in result.output
    conn = sqlite3.connect(cat)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
    conn.close()
    assert not [n for n in os.listdir(store.root) if ".old-" in n]
    ok(store.root, "reindex", "--force")
    assert top in allrrefs(Store.open(store.root))
