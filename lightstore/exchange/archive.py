"""Archives of realizations: their layout, and adding one to a store (`unpack`);
`lightstore.exchange.packing` writes them (`pack`, re-exported here).

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

import os
from typing import Any

from lightstore.exchange._ingest import (
    Incoming,
    add_to_store,
    check_references,
    checked_config,
    checked_context,
    verify_folder,
)
from lightstore.exchange.extract import DEFAULT_MAX_BYTES, archive_kind, safe_extract
from lightstore.exchange.logs import (
    MAX_LOG_BYTES,
    archive_log_name,
    check_archive_logs,
    keep_imported_log,
)
from lightstore.exchange.manifest import (
    MANIFEST,
    Progress,
    build_time,
    read_annotations,
    read_manifest,
)
from lightstore.exchange.packing import pack as pack  # re-exported: pack and unpack, one place
from lightstore.foundation.config import Config, canonical_json
from lightstore.foundation.errors import ArchiveError, LightstoreError
from lightstore.foundation.files import remove_tree
from lightstore.foundation.refs import DRef, RRef, parse_rref, rref2dref, undref, unrref
from lightstore.store import CONFIG_FILE, LocalStore
from lightstore.store.layout import CONTEXT_FILE, LOGS_DIR, OBJECTS_DIR


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
            build_time(entry.get("build_started"), where),
            build_time(entry.get("build_stopped"), where),
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
        manifest = read_manifest(area, archive)
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
