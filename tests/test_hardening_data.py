"""Hardening (issue 14): repair and reindex never lose valid data, whatever order names sort in."""

from __future__ import annotations

import os

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
from lightstore.config import mkconfig
from lightstore.hashing import config_hash
from lightstore.refs import mkdref
from lightstore.store import CATALOGUE_FILE, Store
from tests.test_cli import ok


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
