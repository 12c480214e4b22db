"""Hardening (issue 14): damaged trees are reported and repaired, never a crash of verify or a writer."""

from __future__ import annotations

import os
import shutil
import stat

import pytest
from helpers import fails, ok

from lightstore import (
    LightstoreError,
    StoreError,
    allrrefs,
    build_outpath,
    build_wrapper,
    fsinit,
    instantiate,
    match_only,
    mkdrv,
    mkSS,
    realize1,
    rref2dref,
)
from lightstore.cli.context import EXIT_REFUSED
from lightstore.facade import Store


def _stage(text: str = "x"):
    def real(b):
        os.makedirs(os.path.join(build_outpath(b), "sub"))
        with open(os.path.join(build_outpath(b), "sub", "f"), "w") as f:
            f.write(text)

    def stage(r):
        return mkdrv({"name": "thing", "text": text}, match_only(), build_wrapper(real), r)

    return stage


def _writable(path: str) -> None:
    for folder, _dirs, files in os.walk(path):
        os.chmod(folder, stat.S_IRWXU)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o644)


def _replace_by_folder(path: str) -> None:
    os.chmod(os.path.dirname(path), 0o755)
    os.chmod(path, 0o644)
    os.unlink(path)
    os.mkdir(path)


@pytest.mark.parametrize("which", ["config.json", "context.json"])
def test_metadata_file_replaced_by_a_folder_is_repaired(store, which):
    rref = realize1(instantiate(_stage(), S=store.settings))
    folder = store.rref_path(rref) if which == "context.json" else store.dref_path(rref2dref(rref))
    _replace_by_folder(os.path.join(folder, which))
    assert not store.verify().ok
    assert store.verify(repair=True).ok
    assert os.path.isfile(os.path.join(folder, which))
    assert store.verify(check_contents=True).problems == []


def test_derivation_folder_replaced_by_a_file(store):
    rref = realize1(instantiate(_stage(), S=store.settings))
    folder = store.dref_path(rref2dref(rref))
    _writable(folder)
    shutil.rmtree(folder)
    with open(folder, "w") as f:
        f.write("junk")
    Store.forget_instances()
    with pytest.raises(LightstoreError, match="verify --repair"):
        realize1(instantiate(_stage(), S=store.settings), force_rebuild=True)
    report = Store.open(store.root).verify(repair=True)
    assert report.ok, report.problems
    assert os.path.isdir(folder)
    assert rref not in allrrefs(store)
    assert realize1(instantiate(_stage(), S=store.settings)) == rref
    assert store.verify(check_contents=True).problems == []


@pytest.mark.parametrize("which", ["objects", "tmp", "locks"])
def test_store_folder_replaced_by_a_file_is_a_clear_error(store, which):
    path = os.path.join(store.root, which)
    _writable(path)
    shutil.rmtree(path)
    with open(path, "w") as f:
        f.write("junk")
    Store.forget_instances()
    with pytest.raises(StoreError, match="file where the store needs a folder"):
        Store.open(store.root)
    for args in (["gc"], ["verify", "--repair"], ["unpin", "x"]):
        assert "folder" in fails(EXIT_REFUSED, store.root, *args).output


def test_init_on_an_existing_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("not a store")
    with pytest.raises(StoreError):
        fsinit(mkSS(str(path)))
    fails(EXIT_REFUSED, str(path), "init")


def test_fifo_inside_a_realization_is_reported_for_that_realization(store):
    good = realize1(instantiate(_stage("good"), S=store.settings))
    bad = realize1(instantiate(_stage("bad"), S=store.settings))
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
    rref = realize1(instantiate(_stage(), S=store.settings))
    bogus = os.path.join(os.path.dirname(store.rref_path(rref)), "e" * 32)
    shutil.copytree(store.rref_path(rref), bogus)
    _writable(bogus)
    os.mkfifo(os.path.join(bogus, "sub", "pipe"))
    assert store.verify(repair=True).ok
    assert not os.path.exists(bogus)
