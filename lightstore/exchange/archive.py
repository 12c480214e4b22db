"""Packing realizations into archives and unpacking them into another store.

An archive holds ``manifest.json`` and the ``objects/`` folders of the closure
of the packed realizations (configs, contexts, artifacts). Unpacking extracts
into the destination's temporary area, refuses unsafe members, recomputes
every hash, and only then moves objects into place and records them in one
transaction, so a bad archive leaves the destination as it was.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterable
from typing import Any

from lightstore.catalogue import NewRealization
from lightstore.config import canonical_json, config_deps, mkconfig
from lightstore.defaults import resolve_store
from lightstore.errors import ArchiveError
from lightstore.hashing import (
    CONTEXT_FILE,
    canonical_context,
    config_hash,
    context_hash,
    realization_hash,
    tree_digest,
)
from lightstore.refs import DRef, RRef, mkdref, parse_dref, parse_rref, rref2dref, unrref
from lightstore.store import CONFIG_FILE, Store, make_readonly, remove_tree

MANIFEST = "manifest.json"
FORMAT = "lightstore-archive"
_COPY_CHUNK = 1024 * 1024


def archive_kind(path: str) -> str:
    """'zip', 'tar' or 'tar.gz', from the file name; raises ArchiveError otherwise."""
    lower = path.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if lower.endswith(".tar"):
        return "tar"
    raise ArchiveError(
        f"unknown archive type for {path!r}; use a name ending in .zip, .tar, .tar.gz or .tgz"
    )


def _relpath_of(store: Store, path: str) -> str:
    return os.path.relpath(path, store.root).replace(os.sep, "/")


def spack(rrefs: Iterable[RRef], archive_path: str, S: Any = None) -> None:
    """Pack the given realizations and everything they depend on into `archive_path`.

    The format follows the file name (.zip, .tar, .tar.gz/.tgz). The archive is
    written under a temporary name and renamed when complete.
    """
    store = resolve_store(S)
    roots = [parse_rref(r) for r in rrefs]
    missing = set(roots) - store.catalogue.known_rrefs(roots)
    if missing:
        raise ArchiveError(f"cannot pack {sorted(missing)[0]}: it is not in the store {store.root}")
    closure = sorted(set(roots) | store.catalogue.rrefdeps(roots))
    drefs = sorted({rref2dref(r) for r in closure})
    manifest = {
        "format": FORMAT,
        "version": 1,
        "roots": roots,
        "derivations": [{"dref": d, "config": store.config(d)} for d in drefs],
        "realizations": [
            {
                "rref": r,
                "context": store.context(r),
                "build_started": (rec := store.catalogue.realization_record(r) or {}).get(
                    "build_started"
                ),
                "build_stopped": rec.get("build_stopped"),
            }
            for r in closure
        ],
    }
    files: list[tuple[str, str]] = []  # (path in store, name in archive)
    for d in drefs:
        p = os.path.join(store.dref_path(d), CONFIG_FILE)
        files.append((p, _relpath_of(store, p)))
    for r in closure:
        base = store.rref_path(r)
        files.append((base, _relpath_of(store, base)))
        for folder, dirs, names in os.walk(base):
            dirs.sort()
            for n in sorted(dirs) + sorted(names):
                p = os.path.join(folder, n)
                files.append((p, _relpath_of(store, p)))
    kind = archive_kind(archive_path)
    tmp = f"{archive_path}.part-{os.getpid()}"
    data = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
    try:
        if kind == "zip":
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr(MANIFEST, data)
                for p, name in files:
                    st = os.lstat(p)
                    if stat.S_ISLNK(st.st_mode):
                        info = zipfile.ZipInfo(name)
                        info.external_attr = (stat.S_IFLNK | 0o777) << 16
                        z.writestr(info, os.readlink(p))
                    else:
                        z.write(p, name)
        else:
            with tarfile.open(tmp, "w:gz" if kind == "tar.gz" else "w") as t:
                tinfo = tarfile.TarInfo(MANIFEST)
                tinfo.size = len(data)
                t.addfile(tinfo, io.BytesIO(data))
                for p, name in files:
                    t.add(p, name, recursive=False)
        os.replace(tmp, archive_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _safe_name(name: str) -> str:
    if (
        name.startswith("/")
        or "\\" in name
        or any(part in ("..", "") for part in name.rstrip("/").split("/"))
    ):
        raise ArchiveError(
            f"unsafe member name {name!r} (absolute, '..' or empty parts); the archive is refused"
        )
    return name.rstrip("/")


def _check_link(name: str, target: str, floor: int) -> None:
    if os.path.isabs(target):
        raise ArchiveError(f"member {name!r} is a symlink to an absolute path {target!r}; refused")
    # The link may not climb above `floor` folders from the top of the archive
    # (3 for store archives: a link stays inside objects/<dref>/<rref>/).
    level = len(name.split("/")) - 1
    for part in target.split("/"):
        level += -1 if part == ".." else (0 if part in ("", ".") else 1)
        if level < floor:
            raise ArchiveError(
                f"member {name!r} is a symlink pointing outside its realization ({target!r}); refused"
            )


def safe_extract(
    archive_path: str, dest: str, max_bytes: int | None = None, link_floor: int = 0
) -> None:
    """Extract a .zip/.tar/.tar.gz into `dest`, refusing absolute or `..` names,
    links leaving the archive, hard links, devices, and more than `max_bytes` of data.

    Raises ArchiveError; `dest` may then hold a partial extraction (callers
    extract into a temporary folder).
    """
    kind = archive_kind(archive_path)
    total = 0

    def count(n: int) -> None:
        nonlocal total
        total += n
        if max_bytes is not None and total > max_bytes:
            raise ArchiveError(
                f"the archive unpacks to more than {max_bytes} bytes; refused (raise max_bytes to allow)"
            )

    try:
        if kind == "zip":
            with zipfile.ZipFile(archive_path) as z:
                for info in z.infolist():
                    name = _safe_name(info.filename)
                    mode = info.external_attr >> 16
                    target = os.path.join(dest, name)
                    if info.is_dir():
                        os.makedirs(target, exist_ok=True)
                        continue
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    if stat.S_ISLNK(mode):
                        link = z.read(info).decode("utf-8")
                        _check_link(name, link, link_floor)
                        os.symlink(link, target)
                        continue
                    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                        raise ArchiveError(
                            f"member {name!r} is not a regular file, folder or symlink; refused"
                        )
                    with z.open(info) as src, open(target, "wb") as out:
                        while chunk := src.read(_COPY_CHUNK):
                            count(len(chunk))
                            out.write(chunk)
                    if mode & 0o111:
                        os.chmod(target, 0o755)
        else:
            with tarfile.open(archive_path, "r:*") as t:
                for m in t:
                    name = _safe_name(m.name)
                    target = os.path.join(dest, name)
                    if m.isdir():
                        os.makedirs(target, exist_ok=True)
                    elif m.issym():
                        _check_link(name, m.linkname, link_floor)
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        os.symlink(m.linkname, target)
                    elif m.isfile():
                        count(m.size)
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        data_file = t.extractfile(m)
                        if data_file is None:
                            raise ArchiveError(f"member {name!r} has no data")
                        with data_file, open(target, "wb") as out:
                            shutil.copyfileobj(data_file, out, _COPY_CHUNK)
                        if m.mode & 0o111:
                            os.chmod(target, 0o755)
                    else:
                        raise ArchiveError(f"member {name!r} is a hard link or device; refused")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as e:
        if isinstance(e, ArchiveError):
            raise
        raise ArchiveError(f"cannot read the archive {archive_path}: {e}") from e


def sunpack(archive_path: str, S: Any = None, max_bytes: int | None = None) -> list[RRef]:
    """Add the contents of an archive made by `spack` to the store; return its root RRefs.

    Every realization's content hash is recomputed and must match its RRef;
    objects already present are skipped. Raises ArchiveError (store unchanged)
    for unsafe, damaged or lying archives.
    """
    store = resolve_store(S)
    area = store.new_build_area("unpack")
    try:
        safe_extract(archive_path, area, max_bytes, link_floor=3)
        try:
            with open(os.path.join(area, MANIFEST), encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, ValueError) as e:
            raise ArchiveError(
                f"{archive_path} has no valid {MANIFEST}; is it a lightstore archive?"
            ) from e
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ArchiveError(f"{archive_path} is not a lightstore archive")
        return _import(store, area, manifest)
    finally:
        remove_tree(area)


def _import(store: Store, area: str, manifest: dict[str, Any]) -> list[RRef]:
    derivations = []
    for entry in manifest.get("derivations", []):
        dref = parse_dref(entry.get("dref"))
        config = mkconfig(entry.get("config"))
        if mkdref(config_hash(config.val), config.name) != dref:
            raise ArchiveError(
                f"the manifest's config for {dref} does not hash to it; the archive lies"
            )
        derivations.append((dref, config))
    known_drefs = {d for d, _ in derivations}
    records: list[NewRealization] = []
    moves: list[tuple[str, str]] = []
    have = store.catalogue.known_rrefs([e.get("rref") for e in manifest.get("realizations", [])])
    for entry in manifest.get("realizations", []):
        rref = parse_rref(entry.get("rref"))
        dref = rref2dref(rref)
        if dref not in known_drefs:
            raise ArchiveError(f"{rref} has no derivation in the manifest")
        ctx = canonical_context(
            {parse_dref(k): [parse_rref(r) for r in v] for k, v in entry["context"].items()}
        )
        rhash, dhash, name = unrref(rref)
        folder = os.path.join(area, "objects", f"{dhash}-{name}", rhash)
        if not os.path.isdir(folder):
            raise ArchiveError(f"the archive lacks the folder of {rref}")
        digest = tree_digest(folder)
        ctx_hash = context_hash(ctx)
        if realization_hash(ctx_hash, digest.digest) != rhash:
            raise ArchiveError(
                f"the content of {rref} in the archive does not hash to its RRef; refused"
            )
        deps = sorted({r for rrefs in ctx.values() for r in rrefs})
        if rref in have:
            continue
        with open(os.path.join(folder, CONTEXT_FILE), "w", encoding="utf-8") as f:
            f.write(canonical_json(ctx))
        records.append(
            NewRealization(
                rref,
                dref,
                canonical_json(ctx),
                ctx_hash,
                deps,
                digest.size,
                digest.files,
                entry.get("build_started"),
                entry.get("build_stopped"),
            )
        )
        moves.append((folder, store.rref_path(rref)))
    store.record_derivations(_topological(derivations))
    for src, dst in moves:
        make_readonly(src, include_root=False)
        try:
            os.rename(src, dst)
            os.chmod(dst, os.stat(dst).st_mode & ~0o222)
        except OSError:
            if not os.path.isdir(dst):
                raise
    store.catalogue.add_realizations(_topological_rrefs(records), None)
    return [parse_rref(r) for r in manifest.get("roots", [])]


def _topological(derivations: list[tuple[DRef, Any]]) -> list[tuple[DRef, Any]]:
    by = dict(derivations)
    done: set[DRef] = set()
    out: list[tuple[DRef, Any]] = []

    def visit(d: DRef) -> None:
        if d in done or d not in by:
            return
        done.add(d)
        for dep in config_deps(by[d]):
            visit(dep)
        out.append((d, by[d]))

    for d in sorted(by):
        visit(d)
    return out


def _topological_rrefs(records: list[NewRealization]) -> list[NewRealization]:
    by: dict[str, NewRealization] = {r.rref: r for r in records}
    done: set[str] = set()
    out: list[NewRealization] = []

    def visit(r: str) -> None:
        if r in done or r not in by:
            return
        done.add(r)
        for dep in by[r].deps:
            visit(dep)
        out.append(by[r])

    for r in sorted(by):
        visit(r)
    return out
