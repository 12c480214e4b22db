"""Packing realizations into archives (`pack`): the layout of an archive is
`lightstore.exchange.archive`'s; archives are reproducible (members sorted, times
and owners fixed).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from lightstore.exchange._ingest import annotations_of, closure_of
from lightstore.exchange._tree import COPY_CHUNK, check_links, check_utf8_name, walk_tree
from lightstore.exchange.extract import archive_kind
from lightstore.exchange.logs import archive_log_name, log_of
from lightstore.exchange.manifest import FORMAT, MANIFEST, VERSION, Progress, annotation_fields
from lightstore.foundation.config import canonical_json
from lightstore.foundation.errors import ArchiveError, LightstoreError
from lightstore.foundation.refs import DRef, RRef, parse_rref, rref2dref, undref, unrref
from lightstore.store import CONFIG_FILE, LocalStore
from lightstore.store.layout import CONTEXT_FILE, LOGS_DIR

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class _Member:
    """One archive member: its name, kind, and where its bytes come from."""

    name: str
    kind: str  # "dir", "file" or "link"
    data: bytes | None = None
    source: str | None = None
    size: int = 0
    executable: bool = False
    target: str = ""


def _members(store: LocalStore, packed: list[RRef], progress: Progress | None) -> Iterator[_Member]:
    rrefs, drefs = closure_of(store, packed)
    said = annotations_of(store, rrefs)
    logs = {r: found for r in rrefs if (found := log_of(store, r)) is not None}
    manifest = {
        "format": FORMAT,
        # Older readers refuse a `logs/` folder: only an archive that has one says so.
        "version": VERSION if logs else 1,
        "roots": sorted(set(packed)),
        "derivations": [{"dref": d, "config": store.config(d)} for d in drefs],
        "realizations": [
            {
                "rref": r,
                "context": store.context(r),
                "build_started": (rec := store.catalogue.realization_record(r) or {}).get(
                    "build_started"
                ),
                "build_stopped": rec.get("build_stopped"),
                "host": rec.get("host"),
                "pid": rec.get("pid"),
                # Optional: only realizations with metrics (series, tags, notes) carry
                # the field.
                **annotation_fields(said[r]),
                **({"log": logs[r][1]} if r in logs else {}),
            }
            for r in rrefs
        ],
    }
    yield _Member(MANIFEST, "file", json.dumps(manifest, indent=1, sort_keys=True).encode())
    done = 0
    by_dref: dict[DRef, list[RRef]] = {d: [] for d in drefs}
    for r in rrefs:
        by_dref[rref2dref(r)].append(r)
    for d in drefs:
        dhash, name = undref(d)
        base = f"objects/{dhash}-{name}"
        yield _Member(base, "dir")
        yield _Member(f"{base}/{CONFIG_FILE}", "file", canonical_json(store.config(d)).encode())
        for r in by_dref[d]:
            folder = store.rref_path(r)
            if not os.path.isdir(folder):
                raise ArchiveError(
                    f"cannot pack {r}: its folder {folder} is missing from the store; "
                    "run `lightstore verify` on it"
                )
            check_links(folder, f"cannot pack {r}", portable=True)
            rbase = f"{base}/{unrref(r)[0]}"
            yield _Member(rbase, "dir")
            yield _Member(
                f"{rbase}/{CONTEXT_FILE}", "file", canonical_json(store.context(r)).encode()
            )
            for e in walk_tree(folder, skip_top=frozenset({CONTEXT_FILE})):
                yield _Member(
                    f"{rbase}/{e.rel}", e.kind, None, e.path, e.size, e.executable, e.target
                )
            done += 1
            if progress is not None:
                progress(done, len(rrefs), r)
    if logs:
        yield _Member(LOGS_DIR, "dir")
        for r, (path, size) in sorted(logs.items()):
            yield _Member(f"{LOGS_DIR}/{archive_log_name(r)}", "file", None, path, size)


def _open_source(m: _Member) -> IO[bytes]:
    if m.data is not None:
        return io.BytesIO(m.data)
    if m.source is None:
        raise ArchiveError(f"internal error: member {m.name!r} has no content")
    return open(m.source, "rb")


def _size(m: _Member) -> int:
    return len(m.data) if m.data is not None else m.size


def _check_zip_name(m: _Member) -> None:
    """Zip stores names as UTF-8 (or cp437): a name that is not valid UTF-8 cannot go in."""
    hint = (
        "zip archives cannot hold it; pack to a tar archive instead (.tar, .tar.gz), "
        "which keeps the bytes"
    )
    check_utf8_name(m.name, "the file name", hint)
    if m.kind == "link":
        check_utf8_name(m.target, f"the symlink target of {m.name!r}", hint)


def _write_zip(out: IO[bytes], members: Iterable[_Member]) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for m in members:
            _check_zip_name(m)
            if m.kind == "dir":
                info = zipfile.ZipInfo(m.name + "/", _ZIP_EPOCH)
                info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10
                z.writestr(info, b"")
            elif m.kind == "link":
                info = zipfile.ZipInfo(m.name, _ZIP_EPOCH)
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                z.writestr(info, m.target.encode("utf-8", "surrogateescape"))
            else:
                info = zipfile.ZipInfo(m.name, _ZIP_EPOCH)
                info.external_attr = (stat.S_IFREG | (0o755 if m.executable else 0o644)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                info.file_size = _size(m)
                with _open_source(m) as src, z.open(info, "w") as dst:
                    shutil.copyfileobj(src, dst, COPY_CHUNK)


def _write_tar(out: IO[bytes], kind: str, members: Iterable[_Member]) -> None:
    # gzip stores a time in its header: fix it, so the same closure gives the same bytes.
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) if kind == "tar.gz" else None
    mode = {"tar.bz2": "w:bz2", "tar.xz": "w:xz"}.get(kind, "w")
    try:
        with tarfile.open(
            fileobj=gz or out,
            mode=mode,
            format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
        ) as t:
            for m in members:
                info = tarfile.TarInfo(m.name)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if m.kind == "dir":
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    t.addfile(info)
                elif m.kind == "link":
                    info.type, info.mode = tarfile.SYMTYPE, 0o777
                    info.linkname = m.target
                    t.addfile(info)
                else:
                    info.mode = 0o755 if m.executable else 0o644
                    info.size = _size(m)
                    with _open_source(m) as src:
                        t.addfile(info, src)
    finally:
        if gz is not None:
            gz.close()


def pack(
    store: LocalStore,
    rrefs: Iterable[RRef],
    archive_path: str,
    *,
    progress: Progress | None = None,
) -> None:
    """Pack the realizations `rrefs` and everything they depend on into `archive_path`.

    The format follows the file name (.zip, .tar, .tar.gz/.tgz, .tar.bz2,
    .tar.xz). The archive is written under a temporary name in the same folder
    and renamed when complete, so `archive_path` is never half-written.
    `progress(done, total, rref)` is called after each realization is packed.

    Raises UnknownReferenceError if a realization is not in the store, and
    ArchiveError for an unknown archive type, a realization holding a symlink
    that leaves it or a name with a backslash (`sunpack` would refuse it), or
    a write error.
    """
    packed = [parse_rref(r) for r in rrefs]
    path = os.path.abspath(os.fspath(archive_path))
    kind = archive_kind(path)
    tmp = os.path.join(
        os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(4)}.part"
    )
    try:
        with store.realizing(), open(tmp, "xb") as out:
            members = _members(store, packed, progress)
            if kind == "zip":
                _write_zip(out, members)
            else:
                _write_tar(out, kind, members)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except LightstoreError:
        raise
    except OSError as e:
        raise ArchiveError(f"cannot write the archive {path}: {e}") from e
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
