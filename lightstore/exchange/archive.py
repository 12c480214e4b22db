"""Packing realizations into archives (`pack`) and adding archives to a store (`unpack`).

An archive holds ``manifest.json`` first, then the ``objects/`` folders of
the closure of the packed realizations, laid out as in a store::

    manifest.json                       format, version, roots (the packed RRefs), configs,
                                        contexts
    objects/<H>-<name>/config.json      canonical config of each derivation
    objects/<H>-<name>/<R>/context.json canonical context of each realization
    objects/<H>-<name>/<R>/...          its artifacts (files, folders, relative symlinks)
    logs/<R>-<H>-<name>.log             the build log of a realization, if it has one
                                        (its size in the manifest; format version 2)

The format follows the file name: ``.zip``, ``.tar``, ``.tar.gz``/``.tgz``,
``.tar.bz2``, ``.tar.xz`` (Python's standard library only). Archives are
reproducible: members are sorted, times and owners are fixed.

Unpacking extracts into the destination's temporary area (see
`safe_extract`), checks that the layout is exactly what the manifest says,
recomputes every hash, and only then records the derivations and installs the
realizations in one catalogue transaction. A refused archive leaves the
destination as it was.
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from lightstore.exchange._ingest import (
    Annotations,
    Incoming,
    add_to_store,
    annotations_of,
    check_references,
    checked_config,
    checked_context,
    closure_of,
    verify_folder,
)
from lightstore.exchange._tree import COPY_CHUNK, check_links, check_utf8_name, walk_tree
from lightstore.exchange.extract import DEFAULT_MAX_BYTES, archive_kind, safe_extract
from lightstore.exchange.logs import (
    MAX_LOG_BYTES,
    archive_log_name,
    check_archive_logs,
    keep_imported_log,
    log_of,
)
from lightstore.foundation.config import Config, canonical_json
from lightstore.foundation.errors import ArchiveError, LightstoreError
from lightstore.foundation.files import remove_tree
from lightstore.foundation.metrics import (
    decode_metrics,
    decode_series,
    encode_metrics,
    encode_series,
)
from lightstore.foundation.refs import DRef, RRef, parse_rref, rref2dref, undref, unrref
from lightstore.foundation.tags import decode_notes, decode_tags, encode_notes, encode_tags
from lightstore.store import CONFIG_FILE, LocalStore
from lightstore.store.layout import CONTEXT_FILE, LOGS_DIR, OBJECTS_DIR

MANIFEST = "manifest.json"
FORMAT = "lightstore-archive"
#: 2: build logs travel in ``logs/`` (an archive without logs is still written as 1).
VERSION = 2
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

#: ``progress(done, total, rref)``, called once per realization.
Progress = Callable[[int, int, RRef], None]


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


# -- unpacking -----------------------------------------------------------------


def _read_manifest(area: str, archive: str) -> dict[str, Any]:
    path = os.path.join(area, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise ArchiveError(
            f"{archive} has no readable {MANIFEST}; is it an archive made by spack?"
        ) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"{archive} is not a lightstore archive (its manifest has no format)")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArchiveError(f"{archive}: the manifest has no valid version")
    if version > VERSION:
        raise ArchiveError(
            f"{archive} has archive format version {version} but this lightstore reads up to "
            f"{VERSION}; upgrade lightstore to unpack it"
        )
    for key in ("roots", "derivations", "realizations"):
        if not isinstance(manifest.get(key), list):
            raise ArchiveError(f"{archive}: the manifest's {key!r} is not a list")
    return manifest


#: The latest accepted build time: the end of year 9999, the limit of `datetime`.
MAX_TIME = 253402300799


def _time(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ArchiveError(f"{where}: a build time is not a number")
    # Compare before converting: a huge int would overflow float().
    if not (0 <= value <= MAX_TIME) or value != value:
        raise ArchiveError(
            f"{where}: build time {value!r} is not a time between 1970 and 9999; "
            "the archive is damaged or hostile"
        )
    return float(value)


def annotation_fields(said: Annotations) -> dict[str, Any]:
    """The optional fields of a realization's entry in a manifest (an archive's or a
    remote's) for its metrics, series, tags and notes: only those it has. JSON holds no
    NaN nor infinity: they are the texts "NaN", "Infinity" and "-Infinity"."""
    fields: dict[str, Any] = {}
    if said.metrics:
        fields["metrics"] = encode_metrics(said.metrics)
    if said.series:
        fields["series"] = encode_series(said.series)
    if said.tags:
        fields["tags"] = encode_tags(said.tags)
    if said.notes:
        fields["notes"] = encode_notes(said.notes)
    return fields


def read_annotations(entry: dict[str, Any], rref: RRef, where: str) -> Annotations:
    """The metrics, series, tags and notes of a manifest's entry (`annotation_fields`).

    Raises ArchiveError for a field that is malformed."""
    said = Annotations()
    for key, decode in (
        ("metrics", decode_metrics),
        ("series", decode_series),
        ("tags", decode_tags),
        ("notes", decode_notes),
    ):
        value = entry.get(key)
        if value is None:
            continue
        try:
            setattr(said, key, decode(value))
        except LightstoreError as e:
            raise ArchiveError(f"{where}: the {key} of {rref} are invalid: {e}") from e
    return said


def _plan(
    area: str, manifest: dict[str, Any], where: str
) -> tuple[dict[DRef, Config], dict[RRef, Incoming], list[RRef], dict[RRef, int]]:
    """Check the manifest against itself and against the extracted tree."""
    derivations: dict[DRef, Config] = {}
    for entry in manifest["derivations"]:
        if not isinstance(entry, dict):
            raise ArchiveError(f"{where}: a derivation entry of the manifest is not an object")
        dref, config = checked_config(entry.get("dref"), entry.get("config"), where)
        if dref in derivations:
            raise ArchiveError(f"{where}: the manifest lists {dref} twice")
        derivations[dref] = config
    incoming: dict[RRef, Incoming] = {}
    logs: dict[RRef, int] = {}
    objects = os.path.join(area, OBJECTS_DIR)
    for entry in manifest["realizations"]:
        if not isinstance(entry, dict):
            raise ArchiveError(f"{where}: a realization entry of the manifest is not an object")
        try:
            rref = parse_rref(entry.get("rref"))
        except LightstoreError as e:
            raise ArchiveError(f"{where}: {e}") from e
        if rref in incoming:
            raise ArchiveError(f"{where}: the manifest lists {rref} twice")
        dref = rref2dref(rref)
        if dref not in derivations:
            raise ArchiveError(f"{where}: {rref} has no derivation in the manifest")
        context = checked_context(rref, entry.get("context"), derivations[dref], where)
        rhash, dhash, name = unrref(rref)
        said = read_annotations(entry, rref, where)
        log_size = entry.get("log")
        if log_size is not None and (
            not isinstance(log_size, int)
            or isinstance(log_size, bool)
            or not 0 <= log_size <= MAX_LOG_BYTES
        ):
            raise ArchiveError(f"{where}: the build log of {rref} has the size {log_size!r}")
        if log_size is not None:
            logs[rref] = log_size
        incoming[rref] = Incoming(
            rref,
            dref,
            context,
            os.path.join(objects, f"{dhash}-{name}", rhash),
            _time(entry.get("build_started"), where),
            _time(entry.get("build_stopped"), where),
            host=_provenance(entry.get("host"), str),
            pid=_provenance(entry.get("pid"), int),
            metrics=said.metrics,
            series=said.series,
            tags=said.tags,
            notes=said.notes,
        )
    packed: list[RRef] = []
    for r in manifest["roots"]:
        if not isinstance(r, str) or r not in incoming:
            raise ArchiveError(f"{where}: the manifest's root {r!r} is not among its realizations")
        packed.append(RRef(r))
    _check_layout(area, derivations, incoming, where)
    check_archive_logs(os.path.join(area, LOGS_DIR), logs, where)
    return derivations, incoming, packed, logs


def _provenance(value: Any, kind: type) -> Any:
    """A builder's host or pid from a manifest, or None when absent or malformed (it is
    information only, not part of any hash)."""
    if isinstance(value, kind) and not isinstance(value, bool):
        return value if not isinstance(value, str) else value[:255]
    return None


def _regular_text(path: str) -> str | None:
    """The text of a regular file (not a symlink), or None."""
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _check_layout(
    area: str, derivations: dict[DRef, Config], incoming: dict[RRef, Incoming], where: str
) -> None:
    """The extracted tree holds exactly what the manifest lists, and agrees with it."""
    top = set(os.listdir(area))
    allowed = {MANIFEST, OBJECTS_DIR, LOGS_DIR}
    if not top <= allowed or os.path.islink(os.path.join(area, MANIFEST)):
        extra = sorted(top - allowed)
        raise ArchiveError(f"{where}: unexpected member(s) at the top: {extra or [MANIFEST]}")
    objects = os.path.join(area, OBJECTS_DIR)
    if os.path.lexists(objects) and (os.path.islink(objects) or not os.path.isdir(objects)):
        raise ArchiveError(f"{where}: {OBJECTS_DIR!r} is not a folder")
    expected: dict[str, set[str]] = {}
    for d in derivations:
        dhash, name = undref(d)
        expected[f"{dhash}-{name}"] = set()
    for inc in incoming.values():
        rhash, dhash, name = unrref(inc.rref)
        expected[f"{dhash}-{name}"].add(rhash)
    found = set(os.listdir(objects)) if os.path.isdir(objects) else set()
    if found != set(expected):
        extra, lacking = sorted(found - set(expected)), sorted(set(expected) - found)
        raise ArchiveError(
            f"{where}: the objects do not match the manifest "
            f"(not in the manifest: {extra}, missing: {lacking}); the archive lies or is truncated"
        )
    for folder_name, rhashes in expected.items():
        folder = os.path.join(objects, folder_name)
        if os.path.islink(folder) or not os.path.isdir(folder):
            raise ArchiveError(f"{where}: objects/{folder_name} is not a folder")
        dref = DRef(f"dref:{folder_name}")
        if _regular_text(os.path.join(folder, CONFIG_FILE)) != canonical_json(
            derivations[dref].val
        ):
            raise ArchiveError(
                f"{where}: objects/{folder_name}/{CONFIG_FILE} is missing or disagrees with the "
                "manifest; the archive lies or is damaged"
            )
        entries = set(os.listdir(folder)) - {CONFIG_FILE}
        if entries != rhashes:
            extra, lacking = sorted(entries - rhashes), sorted(rhashes - entries)
            raise ArchiveError(
                f"{where}: objects/{folder_name} does not match the manifest "
                f"(not in the manifest: {extra}, missing: {lacking}); the archive lies or is truncated"
            )
    for inc in incoming.values():
        if os.path.islink(inc.folder) or not os.path.isdir(inc.folder):
            raise ArchiveError(f"{where}: the folder of {inc.rref} is not a folder")
        if _regular_text(os.path.join(inc.folder, CONTEXT_FILE)) != inc.context_json:
            raise ArchiveError(
                f"{where}: the {CONTEXT_FILE} of {inc.rref} is missing or disagrees with the "
                "manifest; the archive lies or is damaged"
            )


def unpack(
    store: LocalStore,
    archive_path: str,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    progress: Progress | None = None,
) -> list[RRef]:
    """Add the contents of an archive made by `pack` to the store; return the RRefs it was
    packed from (the closure's others come along).

    Every RRef stays identical: each realization's content hash is recomputed
    and must match its RRef. Objects already in the store are skipped; the new
    ones enter the catalogue in one transaction. `max_bytes` limits how much
    the archive may unpack to (default 64 GiB; None for no limit).
    `progress(done, total, rref)` is called after each realization is verified.

    Raises ArchiveError, leaving the store as it was, for an unsafe member
    (absolute, ``..``, a link leaving its realization, a device), a damaged,
    truncated or oversized archive, or one whose manifest or content does not
    verify.
    """
    archive = os.path.abspath(os.fspath(archive_path))
    archive_kind(archive)
    if not os.path.isfile(archive):
        raise ArchiveError(f"cannot read the archive {archive}: no such file")
    area = store.new_build_area("unpack")
    try:
        safe_extract(archive, area, max_bytes=max_bytes)
        where = os.path.basename(archive)
        manifest = _read_manifest(area, archive)
        derivations, incoming, packed, logs = _plan(area, manifest, where)
        for done, inc in enumerate(incoming.values(), 1):
            verify_folder(inc, where)
            if progress is not None:
                progress(done, len(incoming), inc.rref)
        store.recover()
        with store.realizing():
            check_references(store, derivations, incoming, where)
            added = add_to_store(store, derivations, incoming.values())
        for r in added:
            if r in logs:
                keep_imported_log(store, r, os.path.join(area, LOGS_DIR, archive_log_name(r)))
        return packed
    finally:
        remove_tree(area)
