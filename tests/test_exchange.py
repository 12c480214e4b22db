"""Packing closures into archives and unpacking them into other stores."""

from __future__ import annotations

import os
import shutil
import zipfile

import pytest
from helpers import assert_unchanged, fails, holdings, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lightstore.exchange.packing as packing_module
from lightstore import (
    ArchiveError,
    StorageSettings,
    UnknownReferenceError,
    allrrefs,
    build_outpath,
    build_wrapper,
    fsinit,
    instantiate,
    match_only,
    mkdrv,
    mklens,
    mknode,
    mkSS,
    realize,
    realize1,
    rrefdeps,
    selfref,
    spack,
    sunpack,
)
from lightstore.cli.context import EXIT_BAD_INPUT
from lightstore.exchange import archive_kind

FORMATS = ["zip", "tar", "tar.gz", "tgz", "tar.bz2", "tar.xz"]


# -- helpers -------------------------------------------------------------------


def union(a: dict, b: dict) -> dict:
    for key in set(a) & set(b):
        assert a[key] == b[key], key
    return {**a, **b}


def rich_stage(tag: str, dep=None):
    """A stage whose output has folders, an empty folder, an executable and symlinks."""

    def stage(r):
        def real(b):
            out = build_outpath(b)
            os.makedirs(os.path.join(out, "sub", "deeper"))
            os.mkdir(os.path.join(out, "empty"))
            with open(os.path.join(out, "sub", "data.bin"), "wb") as f:
                f.write(bytes(range(256)) * 3 + tag.encode())
            with open(os.path.join(out, "run.sh"), "w") as f:
                f.write("#!/bin/sh\necho hi\n")
            os.chmod(os.path.join(out, "run.sh"), 0o755)
            os.symlink("sub/data.bin", os.path.join(out, "link"))
            os.symlink("../run.sh", os.path.join(out, "sub", "deeper", "up"))
            os.symlink("not-there", os.path.join(out, "dangling"))

        cfg = {"name": f"rich-{tag}", "out": [selfref, "sub", "data.bin"]}
        if dep is not None:
            cfg["dep"] = dep(r)
        return mkdrv(cfg, match_only(), build_wrapper(real), r)

    return stage


def pipeline(r):
    base = mknode(r, {"name": "base", "v": 1}, {"a.txt": "alpha", "b.bin": b"\x00\xff"})
    side = mknode(r, {"name": "side", "base": base}, {"s": "side"})
    return rich_stage("top", dep=lambda r: side)(r)


# -- round trips -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_roundtrip_keeps_every_rref_and_byte(store, tmp_path, fmt):
    top = realize1(instantiate(pipeline, S=store))
    archive = str(tmp_path / f"closure.{fmt}")
    spack([top], archive, store)
    dst = fsinit(mkSS(str(tmp_path / "dst")))
    assert sunpack(archive, dst) == [top]
    assert holdings(dst) == holdings(store)
    assert set(allrrefs(dst)) == {top} | rrefdeps([top], store)
    assert os.listdir(dst.tmp_dir) == []
    assert dst.verify(check_contents=True).ok
    with open(mklens(top, S=dst).out.syspath, "rb") as f:
        assert f.read().startswith(bytes(range(10)))


def test_archive_kind_by_name():
    assert archive_kind("a.ZIP") == "zip"
    assert archive_kind("x/y.tgz") == archive_kind("y.tar.gz") == "tar.gz"
    assert archive_kind("y.tar") == "tar"
    with pytest.raises(ArchiveError, match=r"\.zip"):
        archive_kind("y.rar")


def test_spack_is_reproducible(store, tmp_path):
    top = realize1(instantiate(pipeline, S=store))
    for fmt in ("zip", "tar.gz"):
        a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
        spack([top], str(a), store)
        spack([top], str(b), store)
        assert a.read_bytes() == b.read_bytes()


def test_archive_layout_and_manifest(store, tmp_path):
    top = realize1(instantiate(pipeline, S=store))
    spack([top], str(tmp_path / "a.zip"), store)
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        names = z.namelist()
    assert names[0] == "manifest.json"
    assert all(n == "manifest.json" or n.startswith("objects/") for n in names)
    assert sum(n.endswith("/config.json") for n in names) == 3
    assert sum(n.endswith("/context.json") for n in names) == 3


def test_sunpack_skips_what_is_present(store, tmp_path):
    top = realize1(instantiate(pipeline, S=store))
    archive = str(tmp_path / "a.tar")
    spack([top], archive, store)
    before = snapshot(store)
    assert sunpack(archive, store) == [top]
    assert_unchanged(store, before)


def test_pylightnix_call_shapes(store, tmp_path):
    """spack(rrefs, path, S) and sunpack(path, S) with S as settings, store or root path."""
    top = realize1(instantiate(pipeline, S=store))
    archive = str(tmp_path / "a.zip")
    spack([top], archive, store.settings)
    dst = fsinit(mkSS(str(tmp_path / "dst")))
    assert isinstance(dst.settings, StorageSettings)
    sunpack(archive, dst.settings)
    other = fsinit(mkSS(str(tmp_path / "other")))
    sunpack(archive, S=str(other.root))
    assert set(allrrefs(dst)) == set(allrrefs(other)) == set(allrrefs(store))


def test_spack_unknown_rref_or_type_writes_nothing(store, tmp_path):
    top = realize1(instantiate(pipeline, S=store))
    fake = top.replace(top[5:9], "0000" if top[5:9] != "0000" else "1111")
    with pytest.raises(UnknownReferenceError):
        spack([fake], str(tmp_path / "a.zip"), store)
    with pytest.raises(ArchiveError, match="unknown archive type"):
        spack([top], str(tmp_path / "a.rar"), store)
    assert os.listdir(tmp_path) == ["store"]


def test_spack_failure_keeps_previous_archive(store, tmp_path, monkeypatch):
    top = realize1(instantiate(pipeline, S=store))
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"previous")

    def broken(out, members):
        out.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(packing_module, "_write_zip", broken)
    with pytest.raises(ArchiveError, match="No space left"):
        spack([top], str(archive), store)
    assert archive.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["a.zip", "store"]


def test_spack_refuses_links_leaving_the_realization(store, tmp_path):
    def stage(r):
        def real(b):
            os.symlink("/etc/passwd", os.path.join(build_outpath(b), "abs"))

        return mkdrv({"name": "abslink"}, match_only(), build_wrapper(real), r)

    rref = realize1(instantiate(stage, S=store))
    with pytest.raises(ArchiveError, match="absolute path"):
        spack([rref], str(tmp_path / "a.tar"), store)
    assert not (tmp_path / "a.tar").exists()


def test_non_utf8_names_pack_to_tar_and_are_refused_by_zip(store, tmp_path):
    raw = os.fsdecode(b"caf\xe9.txt")

    def real(b):
        with open(os.path.join(build_outpath(b), raw), "w") as f:
            f.write("latin-1 name")

    def stage(r):
        return mkdrv({"name": "latin"}, match_only(), build_wrapper(real), r)

    rref = realize1(instantiate(stage, S=store.settings))
    spack([rref], str(tmp_path / "ok.tar"), store)
    with pytest.raises(ArchiveError, match=r"caf\\\\xe9.*tar"):
        spack([rref], str(tmp_path / "bad.zip"), store)
    assert not (tmp_path / "bad.zip").exists()
    assert [n for n in os.listdir(tmp_path) if n.endswith(".part")] == []
    result = fails(EXIT_BAD_INPUT, store.root, "pack", str(tmp_path / "bad2.zip"), rref)
    assert "tar" in result.output
    other = fsinit(mkSS(str(tmp_path / "other")))
    sunpack(str(tmp_path / "ok.tar"), other)
    assert os.path.isfile(os.path.join(other.rref_path(rref), raw))


def test_sunpack_missing_or_foreign_file(store, tmp_path):
    before = snapshot(store)
    with pytest.raises(ArchiveError, match="no such file"):
        sunpack(str(tmp_path / "missing.zip"), store)
    with zipfile.ZipFile(tmp_path / "foreign.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ArchiveError, match="manifest"):
        sunpack(str(tmp_path / "foreign.zip"), store)
    assert_unchanged(store, before)
    assert os.listdir(store.tmp_dir) == []


@pytest.mark.parametrize("valid", [True, False])
def test_sunpack_handles_unrecorded_folder_in_destination(store, tmp_path, valid):
    """A folder left in the tree without its row (a crash) is verified and kept, or replaced."""
    top = realize1(instantiate(pipeline, S=store))
    archive = str(tmp_path / "a.tgz")
    spack([top], archive, store)
    dst = fsinit(mkSS(str(tmp_path / "dst")))
    leftover = dst.rref_path(top)
    if valid:
        shutil.copytree(store.rref_path(top), leftover, symlinks=True)
    else:
        os.makedirs(leftover)
        with open(os.path.join(leftover, "junk"), "w") as f:
            f.write("junk")
        os.chmod(leftover, 0o555)
    sunpack(archive, dst)
    assert holdings(dst)["tree"] == holdings(store)["tree"]
    assert dst.verify(check_contents=True).ok


def test_unpacked_store_keeps_working(store, tmp_path):
    """Realizing the same pipeline in the destination reuses the unpacked results."""
    top = realize1(instantiate(pipeline, S=store))
    spack([top], str(tmp_path / "a.zip"), store)
    dst = fsinit(mkSS(str(tmp_path / "dst")))
    sunpack(str(tmp_path / "a.zip"), dst)
    assert realize1(instantiate(pipeline, S=dst)) == top
    assert not dst.catalogue.query("SELECT id FROM builds")


# -- property: pack random stores, unpack into empty and overlapping ones --------


@st.composite
def dags(draw):
    """A small DAG: each node names earlier nodes as dependencies and has random artifacts."""
    n = draw(st.integers(1, 7))
    nodes = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        artifacts = draw(
            st.dictionaries(
                st.sampled_from(["a", "b.txt", "c-d", "E_1"]), st.binary(max_size=40), max_size=3
            )
        )
        rich = draw(st.booleans())
        nodes.append((sorted(deps), artifacts, rich, draw(st.integers(0, 3))))
    return nodes


def dag_stage(nodes, count):
    """A stage defining the first `count` nodes; returns all their DRefs."""

    def stage(r):
        drefs = []
        for i, (deps, artifacts, rich, salt) in enumerate(nodes[:count]):
            cfg = {"name": f"n{i}", "deps": [drefs[j] for j in deps], "salt": salt}
            if rich:
                drefs.append(
                    rich_stage(f"n{i}-{salt}", dep=lambda r, c=cfg, a=artifacts: mknode(r, c, a))(r)
                )
            else:
                drefs.append(mknode(r, cfg, artifacts))
        return drefs

    return stage


def realize_all(stage, store):
    realize(instantiate(stage, S=store))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=dags(), overlap=st.integers(0, 7), fmt=st.sampled_from(["zip", "tar", "tar.gz"]))
def test_property_unpack_gives_exact_union(tmp_path_factory, nodes, overlap, fmt):
    base = tmp_path_factory.mktemp("prop")
    src = fsinit(mkSS(str(base / "src")))
    realize_all(dag_stage(nodes, len(nodes)), src)
    roots = sorted(src.catalogue.root_rrefs())
    archive = str(base / f"a.{fmt}")
    spack(roots, archive, src)

    empty = fsinit(mkSS(str(base / "empty")))
    assert sorted(sunpack(archive, empty)) == roots
    assert holdings(empty) == holdings(src)

    # A store holding part of the same DAG (same RRefs) and something unrelated.
    part = fsinit(mkSS(str(base / "part")))
    if overlap:
        realize_all(dag_stage(nodes, min(overlap, len(nodes))), part)
    realize1(instantiate(lambda r: mknode(r, {"name": "unrelated"}, {"u": "u"}), S=part))
    before, held_by_src = holdings(part), holdings(src)
    sunpack(archive, part)
    after = holdings(part)
    assert after["tree"] == union(before["tree"], held_by_src["tree"])
    rows_src = held_by_src["rows"]
    assert after["rows"] == {k: before["rows"][k] | rows_src[k] for k in rows_src}
    assert os.listdir(part.tmp_dir) == []


def test_progress_callbacks(store, tmp_path):
    top = realize1(instantiate(pipeline, S=store))
    packed: list[tuple] = []
    spack([top], str(tmp_path / "a.zip"), store, progress=lambda *a: packed.append(a))
    assert [a[:2] for a in packed] == [(1, 3), (2, 3), (3, 3)]
    assert {a[2] for a in packed} == set(allrrefs(store))
    dst = fsinit(mkSS(str(tmp_path / "dst")))
    unpacked: list[tuple] = []
    sunpack(str(tmp_path / "a.zip"), dst, progress=lambda *a: unpacked.append(a))
    assert [a[:2] for a in unpacked] == [(1, 3), (2, 3), (3, 3)]
    spack([top], str(tmp_path / "b.zip"), store, progress=None)


def test_empty_archive(store, tmp_path):
    spack([], str(tmp_path / "empty.tar"), store)
    assert sunpack(str(tmp_path / "empty.tar"), store) == []
    assert allrrefs(store) == []
