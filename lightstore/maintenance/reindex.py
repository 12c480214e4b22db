"""Rebuilding the catalogue from the tree (configs, contexts, pins), keeping what only
the old catalogue knew (links, metrics) when it can be read."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lightstore.catalogue import Catalogue, NewDerivation, NewRealization, fold_wal
from lightstore.foundation.config import canonical_json, config_deps
from lightstore.foundation.errors import (
    CatalogueVersionError,
    LightstoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
)
from lightstore.foundation.refs import DRef, isdref
from lightstore.maintenance.pins import is_pin_name
from lightstore.maintenance.verify import Problem, Progress
from lightstore.store import CATALOGUE_FILE, CONFIG_FILE, DEFAULT_GC_TIMEOUT_S, LocalStore
from lightstore.store.layout import OBJECTS_DIR
from lightstore.store.tree import is_hash, read_config_file, read_realization


@dataclass
class ReindexReport:
    """What `reindex` rebuilt, and what it had to leave out."""

    derivations: int = 0
    realizations: int = 0
    pins: int = 0
    skipped: list[Problem] = field(default_factory=list)
    old_catalogue: str | None = None


def reindex(
    root: str | LocalStore, progress: Progress | None = None, *, force: bool = False
) -> ReindexReport:
    """Rebuild the catalogue from the tree (configs, contexts, pins).

    The new catalogue is built complete in ``catalogue.sqlite.new`` and then
    renamed into place, so a reindex killed half way leaves the old catalogue
    (or none) rather than a partial one. The old file is kept beside it as
    ``catalogue.sqlite.old-<time>``. Build records cannot be recovered from
    the tree; links and metrics are kept if the old catalogue is readable. Run it while no
    other process uses the store: a process that kept a connection open goes
    on writing to the old file.

    Raises CatalogueVersionError if the current catalogue was written by a
    newer lightstore (its records would be lost), unless `force`.
    """
    path = root.root if isinstance(root, LocalStore) else os.path.abspath(root)
    if not os.path.isdir(os.path.join(path, OBJECTS_DIR)):
        raise StoreNotFoundError(f"no lightstore store at {path} (no objects/ folder)")
    if not force:
        _check_not_newer(os.path.join(path, CATALOGUE_FILE))
    if not os.access(path, os.W_OK):
        raise StoreReadOnlyError(
            f"reindex needs write access to the store at {path}; run it as the store's owner"
        )
    try:
        return _reindex(path, progress)
    except PermissionError as e:
        raise StoreReadOnlyError(
            f"reindex needs write access to the store at {path} ({e.strerror}: {e.filename}); "
            "run it as the store's owner"
        ) from e


def _reindex(path: str, progress: Progress | None) -> ReindexReport:
    LocalStore.forget_instances()
    raw = LocalStore(path)
    report = ReindexReport()
    os.makedirs(raw.locks_dir, exist_ok=True)
    cat_path = os.path.join(path, CATALOGUE_FILE)
    new_path = cat_path + ".new"
    with raw._collector.exclusive(timeout=DEFAULT_GC_TIMEOUT_S):
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(new_path + suffix)
        new = Catalogue(new_path)
        new.migrate()
        _reindex_tree(raw, new, report, progress)
        new.copy_history_from(cat_path)
        new.checkpoint()
        new.close()
        if os.path.exists(cat_path):
            report.old_catalogue = f"{cat_path}.old-{int(time.time())}"
            fold_wal(cat_path)  # so that the kept copy is whole
            os.replace(cat_path, report.old_catalogue)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(cat_path + suffix):
                os.replace(cat_path + suffix, (report.old_catalogue or cat_path) + suffix)
        os.replace(new_path, cat_path)
    LocalStore.forget_instances()
    LocalStore.open(path)
    return report


def _check_not_newer(cat_path: str) -> None:
    """Refuse to replace a catalogue written by a newer lightstore; a damaged one is fine."""
    if not os.path.isfile(cat_path):
        return
    old = Catalogue(cat_path, readonly=True)
    try:
        old.check_version()
    except CatalogueVersionError as e:
        raise CatalogueVersionError(
            f"{e}; reindex would replace it by an older catalogue and lose what the newer "
            "version recorded. Upgrade lightstore, or force it (`lightstore reindex --force`)",
            found=e.found,
            supported=e.supported,
        ) from None
    except (LightstoreError, sqlite3.Error, OSError):
        pass  # damaged or unreadable: that is what reindex is for
    finally:
        old.close()


def _legacy_pin_name(name: str) -> bool:
    """A pin named '.x' by an older version (not a `.x.<8 hex>` temporary file)."""
    return (
        name.startswith(".")
        and is_pin_name(name[1:])
        and re.fullmatch(r"\..+\.[0-9a-f]{8}", name) is None
    )


_K = TypeVar("_K", bound=str)


def _dependencies_first(deps: Mapping[_K, Sequence[_K]]) -> tuple[list[_K], set[_K]]:
    """The nodes whose dependencies are all present, dependencies first; and the others.

    Iterative (an explicit stack), so a chain of thousands of stages is fine.
    """
    done: dict[_K, bool] = {}  # node -> whether it and all its dependencies are present
    order: list[_K] = []
    for start in sorted(deps):
        if start in done:
            continue
        stack: list[tuple[_K, int]] = [(start, 0)]
        active = {start}
        while stack:
            node, i = stack.pop()
            kids = deps[node]
            if i < len(kids):
                stack.append((node, i + 1))
                kid = kids[i]
                if kid not in done and kid in deps and kid not in active:
                    active.add(kid)
                    stack.append((kid, 0))
                continue
            active.discard(node)
            ok = all(done.get(k, False) for k in kids)
            done[node] = ok
            if ok:
                order.append(node)
    return order, {n for n, ok in done.items() if not ok}


def _reindex_tree(
    store: LocalStore, catalogue: Catalogue, report: ReindexReport, progress: Progress | None
) -> None:
    """Record in `catalogue` what the tree of `store` holds."""
    configs: dict[DRef, Any] = {}
    folders: list[tuple[str, str]] = []
    for dname in sorted(os.listdir(store.objects_dir)):
        head, _, name = dname.partition("-")
        dref = DRef(f"dref:{head}-{name}")
        dfolder = os.path.join(store.objects_dir, dname)
        if not isdref(dref) or not os.path.isdir(dfolder):
            continue
        config = read_config_file(os.path.join(dfolder, CONFIG_FILE), dref)
        if config is None:
            report.skipped.append(
                Problem("config", dref, "config.json missing or does not hash to the DRef")
            )
            continue
        configs[dref] = config
        folders += [
            (f"rref:{r}-{head}-{name}", os.path.join(dfolder, r))
            for r in sorted(os.listdir(dfolder))
            if is_hash(r)
        ]
    order, _ = _dependencies_first({d: config_deps(c) for d, c in configs.items()})
    seen: set[DRef] = set(order)
    for d in sorted(set(configs) - seen):
        report.skipped.append(Problem("config", d, "a dependency's config is missing"))
    ordered = [
        NewDerivation(d, configs[d].name, canonical_json(configs[d].val), config_deps(configs[d]))
        for d in order
    ]
    catalogue.add_derivations(ordered)
    report.derivations = len(ordered)
    records: dict[str, NewRealization] = {}
    for i, (rref, folder) in enumerate(folders):
        if progress is not None:
            progress(i + 1, len(folders))
        try:
            record = read_realization(rref, folder)
        except OSError as e:
            report.skipped.append(Problem("content", rref, f"cannot be read ({e})"))
            continue
        if record is None or record.dref not in seen:
            report.skipped.append(
                Problem("content", rref, "context.json or content does not match the RRef")
            )
            continue
        records[rref] = record
    order_r, failed_r = _dependencies_first({r: rec.deps for r, rec in records.items()})
    placed: set[str] = set(order_r)
    for r in sorted(failed_r):
        report.skipped.append(Problem("context", r, "a dependency realization is missing"))
    ordered_r = [records[r] for r in order_r]
    catalogue.add_realizations(ordered_r, None)
    report.realizations = len(ordered_r)
    pins_dir = store.pins_dir
    if os.path.isdir(pins_dir):
        for name in sorted(os.listdir(pins_dir)):
            if not is_pin_name(name) and not _legacy_pin_name(name):
                continue  # a temporary file of `pin`
            try:
                with open(os.path.join(pins_dir, name), encoding="utf-8") as f:
                    ref = f.read(4096).strip()
            except (OSError, ValueError):
                report.skipped.append(Problem("pin", name, "pins/ entry is not a readable file"))
                continue
            if ref in placed or ref in seen:
                catalogue.set_pin(name, ref)
                report.pins += 1
            else:
                report.skipped.append(Problem("pin", name, f"pinned object {ref} is gone"))
