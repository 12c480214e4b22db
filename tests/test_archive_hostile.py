"""Hostile and damaged archives are refused and leave the destination exactly as it was.

Each archive is built by hand with zipfile/tarfile, usually by editing the
members of a valid archive made by `spack`.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import zipfile
from dataclasses import dataclass, replace

import pytest
from helpers import assert_unchanged, fails, snapshot

from lightstore import (
    ArchiveError,
    Store,
    build_outpath,
    build_wrapper,
    fsinit,
    instantiate,
    match_only,
    mkdrv,
    mknode,
    mkSS,
    realize1,
    selfref,
    spack,
    sunpack,
)
from lightstore.cli.context import EXIT_BAD_INPUT
from lightstore.exchange import safe_extract

# -- building archives by hand -------------------------------------------------


@dataclass(frozen=True)
class M:
    """An archive member: kind is file, dir, sym, hard, chr or fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644


def read_tar(path: str) -> list[M]:
    out = []
    with tarfile.open(path) as t:
        for m in t:
            if m.isdir():
                out.append(M(m.name, "dir", mode=0o755))
            elif m.issym():
                out.append(M(m.name, "sym", target=m.linkname))
            else:
                f = t.extractfile(m)
                assert f is not None
                out.append(M(m.name, "file", f.read(), mode=m.mode))
    return out


_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "sym": tarfile.SYMTYPE,
    "hard": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "fifo": tarfile.FIFOTYPE,
}
_ZIP_MODES = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "sym": stat.S_IFLNK,
    "chr": stat.S_IFCHR,
    "fifo": stat.S_IFIFO,
}


def write_archive(path: str, members: list[M]) -> str:
    if path.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for m in members:
                info = zipfile.ZipInfo(m.name + ("/" if m.kind == "dir" else ""))
                info.external_attr = (_ZIP_MODES[m.kind] | m.mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, m.target.encode() if m.kind == "sym" else m.data)
    else:
        with tarfile.open(path, "w:gz" if path.endswith(".tar.gz") else "w") as t:
            for m in members:
                info = tarfile.TarInfo(m.name)
                info.type = _TAR_TYPES[m.kind]
                info.mode = m.mode
                info.linkname = m.target
                info.size = len(m.data) if m.kind == "file" else 0
                t.addfile(info, io.BytesIO(m.data) if m.kind == "file" else None)
    return path


def manifest_of(members: list[M]) -> dict:
    return json.loads(next(m for m in members if m.name == "manifest.json").data)


def with_manifest(members: list[M], manifest: dict) -> list[M]:
    data = json.dumps(manifest).encode()
    return [replace(m, data=data) if m.name == "manifest.json" else m for m in members]


def realization_dir(members: list[M], name: str) -> str:
    """The folder (in the archive) of the realization whose derivation is called `name`."""
    return next(
        m.name
        for m in members
        if m.kind == "dir" and m.name.count("/") == 2 and f"-{name}/" in m.name
    )


# -- fixtures and the refusal check ------------------------------------------


@pytest.fixture
def src(tmp_path) -> Store:
    """A store with a chain base <- top; top has a file in a sub-folder."""
    store = fsinit(mkSS(str(tmp_path / "src")))

    def stage(r):
        base = mknode(r, {"name": "base"}, {"base.txt": "base contents"})

        def real(b):
            os.mkdir(os.path.join(build_outpath(b), "sub"))
            with open(os.path.join(build_outpath(b), "sub", "f.txt"), "w") as f:
                f.write("top contents")

        return mkdrv(
            {"name": "top", "base": base, "out": [selfref, "sub", "f.txt"]},
            match_only(),
            build_wrapper(real),
            r,
        )

    store.top = realize1(instantiate(stage, S=store))  # type: ignore[attr-defined]
    return store


@pytest.fixture
def dst(tmp_path) -> Store:
    """A destination that already holds something, which must survive untouched."""
    store = fsinit(mkSS(str(tmp_path / "dst")))
    realize1(instantiate(lambda r: mknode(r, {"name": "resident"}, {"r": "resident"}), S=store))
    return store


@pytest.fixture
def members(src, tmp_path) -> list[M]:
    path = str(tmp_path / "valid.tar")
    spack([src.top], path, src)
    return read_tar(path)


def refused(dst: Store, path: str, match: str | None = None, **kw) -> ArchiveError:
    before = snapshot(dst)
    with pytest.raises(ArchiveError, match=match) as e:
        sunpack(path, dst, **kw)
    assert_unchanged(dst, before)
    assert os.listdir(dst.tmp_dir) == []
    return e.value


def test_valid_edited_archive_is_accepted(dst, members, tmp_path):
    """The hand-made writer itself produces acceptable archives (guards every test below)."""
    for suffix in ("zip", "tar", "tar.gz"):
        other = fsinit(mkSS(str(tmp_path / f"ok-{suffix}")))
        sunpack(write_archive(str(tmp_path / f"ok.{suffix}"), members), other)
        assert other.verify(check_contents=True).ok


# -- unsafe member names and types ---------------------------------------------------


@pytest.mark.parametrize("suffix", ["zip", "tar"])
def test_absolute_member(dst, members, tmp_path, suffix):
    evil = str(tmp_path / "evil-absolute")
    path = write_archive(str(tmp_path / f"a.{suffix}"), [*members, M(evil, data=b"x")])
    refused(dst, path, "absolute")
    assert not os.path.exists(evil)


@pytest.mark.parametrize("suffix", ["zip", "tar"])
@pytest.mark.parametrize("name", ["../x", "objects/../../x", "objects/a/../../../../x"])
def test_dotdot_member(dst, members, tmp_path, suffix, name):
    path = write_archive(str(tmp_path / f"a.{suffix}"), [*members, M(name, data=b"x")])
    refused(dst, path, r"'\.\.'")
    assert not os.path.exists(os.path.join(dst.tmp_dir, "x"))
    assert not os.path.exists(os.path.join(dst.root, "x"))


@pytest.mark.parametrize("suffix", ["zip", "tar"])
@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("/etc/passwd", "absolute"),
        ("../../../../../../etc/passwd", "outside"),
        ("../../..", "outside"),
        ("..", "outside its realization"),  # inside the archive, outside the realization
    ],
)
def test_symlink_pointing_outside(dst, members, tmp_path, suffix, target, match):
    folder = realization_dir(members, "top")
    path = write_archive(
        str(tmp_path / f"a.{suffix}"), [*members, M(f"{folder}/link", "sym", target=target)]
    )
    refused(dst, path, match)


def test_symlink_chain_leaving_the_archive(dst, members, tmp_path):
    """Each link alone stays inside; resolved together they leave: caught on disk."""
    folder = realization_dir(members, "top")
    path = write_archive(
        str(tmp_path / "a.tar"),
        [
            *members,
            M(f"{folder}/sub/up", "sym", target=".."),
            M(f"{folder}/l", "sym", target="sub/up/../../../../.."),
        ],
    )
    refused(dst, path, "outside")


def test_write_through_symlink(dst, members, tmp_path):
    folder = realization_dir(members, "top")
    path = write_archive(
        str(tmp_path / "a.tar"),
        [*members, M(f"{folder}/l", "sym", target="sub"), M(f"{folder}/l/evil", data=b"x")],
    )
    refused(dst, path, "through")


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "objects/missing"])
def test_hard_link(dst, members, tmp_path, target):
    folder = realization_dir(members, "top")
    path = write_archive(
        str(tmp_path / "a.tar"), [*members, M(f"{folder}/h", "hard", target=target)]
    )
    refused(dst, path, "hard link|absolute|'\\.\\.'")


@pytest.mark.parametrize("suffix", ["zip", "tar"])
@pytest.mark.parametrize("kind", ["chr", "fifo"])
def test_device_member(dst, members, tmp_path, suffix, kind):
    folder = realization_dir(members, "top")
    path = write_archive(str(tmp_path / f"a.{suffix}"), [*members, M(f"{folder}/dev", kind)])
    refused(dst, path, "device|fifo")


@pytest.mark.parametrize("suffix", ["zip", "tar"])
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicate_member(dst, members, tmp_path, suffix):
    dup = next(m for m in members if m.name.endswith("f.txt"))
    path = write_archive(str(tmp_path / f"a.{suffix}"), [*members, replace(dup, data=b"other")])
    refused(dst, path, "twice")


# -- content and manifest that do not verify ---------------------------------------


@pytest.mark.parametrize("suffix", ["zip", "tar"])
@pytest.mark.parametrize("which", ["f.txt", "base.txt"])
def test_tampered_content(dst, members, tmp_path, suffix, which):
    edited = [replace(m, data=m.data.upper()) if m.name.endswith(which) else m for m in members]
    refused(dst, write_archive(str(tmp_path / f"a.{suffix}"), edited), "does not hash")


def test_extra_file_in_a_realization(dst, members, tmp_path):
    folder = realization_dir(members, "base")
    path = write_archive(str(tmp_path / "a.tar"), [*members, M(f"{folder}/extra", data=b"x")])
    refused(dst, path, "does not hash")


def test_manifest_lies_about_a_config(dst, members, tmp_path):
    manifest = manifest_of(members)
    manifest["derivations"][0]["config"]["injected"] = True
    path = write_archive(str(tmp_path / "a.tar"), with_manifest(members, manifest))
    refused(dst, path, "does not hash")


def test_config_file_disagrees_with_manifest(dst, members, tmp_path):
    edited = [
        replace(m, data=b'{"name":"base","x":1}') if m.name.endswith("-base/config.json") else m
        for m in members
    ]
    refused(dst, write_archive(str(tmp_path / "a.tar"), edited), "config.json")


def test_manifest_lies_about_a_context(dst, members, tmp_path):
    manifest = manifest_of(members)
    top = next(e for e in manifest["realizations"] if e["rref"].endswith("-top"))
    (dep,) = top["context"]
    rref = top["context"][dep][0]
    top["context"][dep] = [rref.replace(rref[5:13], "0" * 8)]
    path = write_archive(str(tmp_path / "a.tar"), with_manifest(members, manifest))
    refused(dst, path, "context|does not hash|needed")


def test_context_file_disagrees_with_manifest(dst, members, tmp_path):
    edited = [
        replace(m, data=b"{}") if m.name.endswith("context.json") and "-top/" in m.name else m
        for m in members
    ]
    refused(dst, write_archive(str(tmp_path / "a.tar"), edited), "context.json")


def test_manifest_omits_a_realization(dst, members, tmp_path):
    manifest = manifest_of(members)
    manifest["realizations"] = [
        e for e in manifest["realizations"] if not e["rref"].endswith("-base")
    ]
    path = write_archive(str(tmp_path / "a.tar"), with_manifest(members, manifest))
    refused(dst, path, "not in the manifest|needed")


def test_dependency_neither_included_nor_present(dst, members, tmp_path):
    """Drop base's realization from manifest and tree: top's context names a missing RRef."""
    manifest = manifest_of(members)
    manifest["realizations"] = [
        e for e in manifest["realizations"] if not e["rref"].endswith("-base")
    ]
    folder = realization_dir(members, "base")
    kept = [m for m in with_manifest(members, manifest) if not m.name.startswith(folder)]
    refused(
        dst, write_archive(str(tmp_path / "a.tar"), kept), "neither included nor in the destination"
    )


def test_manifest_lists_a_missing_realization(dst, members, tmp_path):
    folder = realization_dir(members, "top")
    kept = [m for m in members if not m.name.startswith(folder)]
    refused(dst, write_archive(str(tmp_path / "a.tar"), kept), "missing")


def test_manifest_lies_about_roots(dst, members, tmp_path):
    manifest = manifest_of(members)
    manifest["roots"] = ["rref:" + "1" * 32 + "-" + "2" * 32 + "-ghost"]
    refused(dst, write_archive(str(tmp_path / "a.tar"), with_manifest(members, manifest)), "root")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"not json", "manifest"),
        (b'{"format": "something-else"}', "not a lightstore archive"),
        (
            b'{"format": "lightstore-archive", "version": 99, "roots": [], "derivations": [], "realizations": []}',
            "upgrade",
        ),
        (
            b'{"format": "lightstore-archive", "version": 1, "roots": {}, "derivations": [], "realizations": []}',
            "roots",
        ),
        (
            b'{"format": "lightstore-archive", "version": 1, "roots": [], "derivations": [7], "realizations": []}',
            "not an object",
        ),
    ],
)
def test_malformed_manifest(dst, members, tmp_path, data, match):
    edited = [replace(m, data=data) if m.name == "manifest.json" else m for m in members]
    refused(dst, write_archive(str(tmp_path / "a.tar"), edited), match)


def test_no_manifest(dst, members, tmp_path):
    kept = [m for m in members if m.name != "manifest.json"]
    refused(dst, write_archive(str(tmp_path / "a.zip"), kept), "manifest")


# -- truncated archives and bombs ------------------------------------------------------


def _data_end(tar_path: str) -> int:
    with tarfile.open(tar_path) as t:
        last = t.getmembers()[-1]
        return last.offset_data + last.size


@pytest.mark.parametrize("suffix", ["zip", "tar", "tar.gz", "tar.xz"])
def test_truncated_archive(src, dst, tmp_path, suffix):
    valid = str(tmp_path / f"valid.{suffix}")
    spack([src.top], valid, src)
    with open(valid, "rb") as f:
        data = f.read()
    # Cut anywhere in a compressed archive; in a plain tar, only where content is lost
    # (its trailing zero blocks are padding).
    end = _data_end(valid) if suffix == "tar" else len(data)
    for cut in sorted({1, end // 4, end // 2, end - 9, end - 1}):
        path = str(tmp_path / f"cut{cut}.{suffix}")
        with open(path, "wb") as f:
            f.write(data[:cut])
        refused(dst, path)


@pytest.mark.parametrize("suffix", ["zip", "tar.gz"])
def test_bomb_refused_by_declared_size(dst, members, tmp_path, suffix):
    folder = realization_dir(members, "top")
    bomb = M(f"{folder}/zeros", data=bytes(4 * 1024 * 1024))
    path = write_archive(str(tmp_path / f"bomb.{suffix}"), [*members, bomb])
    assert os.path.getsize(path) < 64 * 1024
    err = refused(dst, path, "bomb", max_bytes=1024 * 1024)
    assert "max_bytes" in str(err)


def test_zip_lying_about_its_sizes(tmp_path):
    """Declared sizes patched to be tiny: the bytes actually written are counted too."""
    path = str(tmp_path / "liar.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros", bytes(2 * 1024 * 1024))
    with open(path, "rb") as f:
        data = bytearray(f.read())
    size = (2 * 1024 * 1024).to_bytes(4, "little")
    # Uncompressed size in the local header (offset 22) and the central directory (offset 24).
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    assert data[local + 22 : local + 26] == size == data[central + 24 : central + 28]
    data[local + 22 : local + 26] = (100).to_bytes(4, "little")
    data[central + 24 : central + 28] = (100).to_bytes(4, "little")
    with open(path, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(ArchiveError):
        safe_extract(path, str(tmp_path / "out"), max_bytes=1024 * 1024)
    out = tmp_path / "out" / "zeros"
    assert not out.exists() or out.stat().st_size <= 1024 * 1024


def test_too_many_members(tmp_path):
    path = write_archive(str(tmp_path / "many.zip"), [M(f"f{i}", data=b"") for i in range(50)])
    with pytest.raises(ArchiveError, match="more than 10 members"):
        safe_extract(path, str(tmp_path / "out"), max_members=10)


# -- safe_extract on ordinary archives (as fetchurl uses it) -------------------------------


def test_safe_extract_accepts_ordinary_archives(tmp_path):
    members = [
        M("./pkg", "dir", mode=0o755),
        M("./pkg/bin/tool", data=b"#!/bin/sh\n", mode=0o4755),
        M("./pkg/lib", "sym", target="bin"),
        M("./pkg/copy", "hard", target="pkg/bin/tool"),
    ]
    path = write_archive(str(tmp_path / "pkg.tar"), members)
    out = tmp_path / "out"
    safe_extract(path, str(out))
    tool = out / "pkg" / "bin" / "tool"
    assert stat.S_IMODE(tool.stat().st_mode) == 0o755  # setuid dropped
    assert os.readlink(out / "pkg" / "lib") == "bin"
    assert (out / "pkg" / "copy").read_bytes() == b"#!/bin/sh\n"
    assert (out / "pkg" / "copy").stat().st_ino != tool.stat().st_ino


@pytest.mark.parametrize("value", [1e300, -1e300, float("nan"), float("inf"), 10**30, -1])
@pytest.mark.parametrize("key", ["build_started", "build_stopped"])
def test_absurd_build_times_are_refused(dst, members, tmp_path, key, value):
    manifest = manifest_of(members)
    manifest["realizations"][0][key] = value
    path = write_archive(str(tmp_path / "a.tar"), with_manifest(members, manifest))
    refused(dst, path, "build time")


def test_deeply_nested_archive_manifest_is_refused(dst, tmp_path):
    path = str(tmp_path / "deep.tar")
    data = ('{"format": "lightstore-archive", "x": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    refused(dst, path)
    before = snapshot(dst)
    assert fails(EXIT_BAD_INPUT, dst.root, "unpack", path)
    assert_unchanged(dst, before)
