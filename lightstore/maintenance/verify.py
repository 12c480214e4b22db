"""Checking the catalogue against the tree, repairing what can be repaired, and reindexing.

`verify` holds the collector lock exclusively, so that a realization being
published (renamed into the tree, not yet committed) is never mistaken for
an unregistered folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lightstore.catalogue import Catalogue, NewDerivation, NewRealization
from lightstore.catalogue.database import sqlite_uri
from lightstore.foundation.config import canonical_json, config_deps, mkconfig
from lightstore.foundation.errors import (
    BuildError,
    CatalogueCorruptError,
    CatalogueVersionError,
    IntegrityError,
    LightstoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
)
from lightstore.foundation.files import remove_tree
from lightstore.foundation.hashing import (
    TreeDigest,
    canonical_context,
    config_hash,
    context_hash,
    realization_hash,
)
from lightstore.foundation.refs import HASH_LEN, DRef, RRef, isdref, isrref, mkdref
from lightstore.foundation.times import parse_timeout
from lightstore.maintenance.roots import is_pin_name, roots
from lightstore.store import CATALOGUE_FILE, CONFIG_FILE, DEFAULT_GC_TIMEOUT_S, LocalStore
from lightstore.store.layout import CONTEXT_FILE, OBJECTS_DIR, realization_digest

Progress = Callable[[int, int], None]


@dataclass
class Problem:
    """One inconsistency: its kind, the object, what is wrong, and what repair did."""

    kind: str
    ref: str
    detail: str
    repaired: bool = False
    action: str = ""


@dataclass
class VerifyReport:
    """The result of `verify`."""

    problems: list[Problem] = field(default_factory=list)
    derivations: int = 0
    realizations: int = 0

    @property
    def ok(self) -> bool:
        """True if nothing is wrong (or everything wrong was repaired)."""
        return all(p.repaired for p in self.problems)


def _hex(s: str) -> bool:
    return len(s) == HASH_LEN and all(c in "0123456789abcdef" for c in s)


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError, RecursionError):
        return None


def _write_readonly(path: str, text: str) -> None:
    folder = os.path.dirname(path)
    if os.path.lexists(folder) and (os.path.islink(folder) or not os.path.isdir(folder)):
        remove_tree(folder)  # a file (or link) where the object's folder belongs
    os.makedirs(folder, exist_ok=True)
    if os.path.lexists(path) and (os.path.islink(path) or not os.path.isfile(path)):
        mode = os.stat(folder).st_mode
        os.chmod(folder, mode | 0o200)
        try:
            remove_tree(path)  # a folder (or link) where the file belongs
        finally:
            os.chmod(folder, mode)
    mode = os.stat(folder).st_mode
    os.chmod(folder, mode | 0o200)
    try:
        if os.path.exists(path):
            os.chmod(path, 0o644)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, 0o444)
    finally:
        os.chmod(folder, mode)


def _delete_rows(store: LocalStore, rref: str) -> str | None:
    """Delete a realization's rows; return why not if something still refers to it."""
    users = store.catalogue.rref_referrers([rref])
    if users:
        return f"{len(users)} realization(s) depend on it (e.g. {sorted(users)[0]}); rebuild or remove them"
    try:
        store.catalogue.delete_objects([rref], reason="repair")
    except IntegrityError:
        return "it is pinned or used by a running build; unpin it first"
    return None


def verify(
    store: LocalStore,
    check_contents: bool = False,
    repair: bool = False,
    progress: Progress | None = None,
    timeout: float | None = DEFAULT_GC_TIMEOUT_S,
) -> VerifyReport:
    """Check the catalogue against the tree; with `repair`, fix what can be fixed.

    Raises QueryError for a `timeout` that is NaN or negative.
    """
    timeout = parse_timeout(timeout)
    store.recover()
    report = VerifyReport()
    with store.collecting(timeout=timeout):
        _check_sqlite(store, report)
        _check_derivations(store, report, repair)
        _check_realizations(store, report, check_contents, repair, progress)
        _check_unregistered(store, report, repair)
        for path in roots(store).stale_links:
            p = Problem("stale_link", path, "the symlink no longer points at its object")
            if repair:
                with store.catalogue.write() as conn:
                    conn.execute("DELETE FROM links WHERE path = ?", (path,))
                p.repaired, p.action = True, "forgot the link"
            report.problems.append(p)
    return report


def _check_sqlite(store: LocalStore, report: VerifyReport) -> None:
    try:
        rows = store.catalogue.column("PRAGMA quick_check")
        if rows != ["ok"]:
            report.problems.append(
                Problem(
                    "catalogue",
                    store.catalogue.path,
                    "; ".join(map(str, rows[:5])) + " (run `reindex`)",
                )
            )
        for table, rowid, parent, _ in store.catalogue.query("PRAGMA foreign_key_check"):
            report.problems.append(
                Problem(
                    "foreign_key",
                    f"{table}:{rowid}",
                    f"refers to a missing row of {parent} (run `reindex`)",
                )
            )
    except sqlite3.DatabaseError as e:
        raise CatalogueCorruptError(
            f"the catalogue is damaged ({e}); run `lightstore reindex`"
        ) from e


def _check_derivations(store: LocalStore, report: VerifyReport, repair: bool) -> None:
    for dref, text in store.catalogue.query("SELECT dref, config FROM derivations"):
        report.derivations += 1
        path = os.path.join(store.dref_path(DRef(dref)), CONFIG_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                ok = f.read() == text
        except OSError:
            ok = False
        if not ok:
            p = Problem("config", dref, f"{path} is missing or differs from the catalogue")
            if repair:
                _write_readonly(path, text)
                p.repaired, p.action = True, "rewrote config.json from the catalogue"
            report.problems.append(p)


def _check_realizations(
    store: LocalStore,
    report: VerifyReport,
    check_contents: bool,
    repair: bool,
    progress: Progress | None,
) -> None:
    rows = store.catalogue.query(
        "SELECT rref, context, context_hash FROM realizations ORDER BY rref"
    )
    for i, (rref, ctx_text, ctx_hash) in enumerate(rows):
        report.realizations += 1
        if progress is not None:
            progress(i + 1, len(rows))
        folder = store.rref_path(RRef(rref))
        if not os.path.isdir(folder):
            p = Problem("missing", rref, f"{folder} does not exist")
            if repair:
                why = _delete_rows(store, rref)
                p.repaired, p.action = why is None, why or "forgot the realization"
            report.problems.append(p)
            continue
        if _read_json(os.path.join(folder, CONTEXT_FILE)) != json.loads(ctx_text):
            p = Problem("context", rref, f"{CONTEXT_FILE} differs from the catalogue")
            if repair:
                _write_readonly(os.path.join(folder, CONTEXT_FILE), ctx_text)
                p.repaired, p.action = True, f"rewrote {CONTEXT_FILE} from the catalogue"
            report.problems.append(p)
        if check_contents:
            try:
                digest: TreeDigest | None = realization_digest(folder)
                detail = "the artifacts do not hash to the RRef (edited after publication)"
            except (BuildError, OSError) as e:
                # A FIFO or an unreadable folder: this realization is damaged, the run goes on.
                digest, detail = None, f"the artifacts cannot be hashed ({e})"
            if (
                digest is None
                or realization_hash(ctx_hash, digest.digest)
                != rref.split(":", 1)[1].split("-", 1)[0]
            ):
                p = Problem("content", rref, detail)
                if repair:
                    why = _delete_rows(store, rref)
                    if why is None:
                        remove_tree(folder)
                    p.repaired, p.action = why is None, why or "removed the damaged realization"
                report.problems.append(p)


def _check_unregistered(store: LocalStore, report: VerifyReport, repair: bool) -> None:
    known_d = set(store.catalogue.column("SELECT dref FROM derivations"))
    known_r = set(store.catalogue.column("SELECT rref FROM realizations"))
    new_d: list[tuple[DRef, Problem]] = []
    new_r: list[tuple[str, str, Problem]] = []
    for dname in sorted(os.listdir(store.objects_dir)):
        dfolder = os.path.join(store.objects_dir, dname)
        head, _, name = dname.partition("-")
        dref = f"dref:{head}-{name}"
        if not (_hex(head) and isdref(dref)) or not os.path.isdir(dfolder):
            p = Problem("unknown", dfolder, "not a lightstore object")
            if repair:
                remove_tree(dfolder)
                p.repaired, p.action = True, "removed"
            report.problems.append(p)
            continue
        if dref not in known_d:
            p = Problem("unregistered", dref, "derivation folder not in the catalogue")
            new_d.append((DRef(dref), p))
            report.problems.append(p)
        for rname in _listdir(dfolder):
            rfolder = os.path.join(dfolder, rname)
            if rname == CONFIG_FILE or rname.startswith(f".{CONFIG_FILE}"):
                continue
            rref = f"rref:{rname}-{head}-{name}"
            if rref in known_r:
                continue
            p = Problem(
                "unregistered",
                rref if isrref(rref) else rfolder,
                "realization folder not in the catalogue",
            )
            new_r.append((rref, rfolder, p))
            report.problems.append(p)
    if repair:
        _register_all(store, new_d, new_r, known_d, known_r)


def _listdir(folder: str) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _register_all(
    store: LocalStore,
    new_d: list[tuple[DRef, Problem]],
    new_r: list[tuple[str, str, Problem]],
    known_d: set[str],
    known_r: set[str],
) -> None:
    """Register unregistered folders dependencies first, whatever order their names sort in.

    Rounds repeat until one registers nothing, so a dependency whose folder
    sorts later is registered before its dependents. A realization whose
    content verifies is never deleted, even when it cannot be registered.
    """
    pending_d = list(new_d)
    while pending_d:
        left = []
        for dref, p in pending_d:
            p.repaired, p.action = _register_derivation(store, dref, known_d)
            if not p.repaired:
                left.append((dref, p))
        if len(left) == len(pending_d):
            break
        pending_d = left
    valid: list[tuple[NewRealization, Problem]] = []
    for rref, folder, p in new_r:
        try:
            record = (
                _realization_record(rref, folder)
                if isrref(rref) and os.path.isdir(folder) and not os.path.islink(folder)
                else None
            )
        except OSError as e:
            p.action = f"cannot be read ({e}); kept, fix its permissions and run again"
            continue
        if record is None:
            remove_tree(folder)
            p.repaired, p.action = True, "removed (not a realization, or damaged)"
        else:
            valid.append((record, p))
    while valid:
        left_r = []
        for record, p in valid:
            if record.dref in known_d and all(d in known_r for d in record.deps):
                store.catalogue.add_realizations([record], None)
                known_r.add(record.rref)
                p.repaired, p.action = True, "registered (content verified)"
            else:
                left_r.append((record, p))
        if len(left_r) == len(valid):
            break
        valid = left_r
    for _record, p in valid:
        p.repaired, p.action = (
            False,
            "content verified but its derivation or dependencies are not in the catalogue; "
            "kept (run `reindex`)",
        )


def _register_derivation(store: LocalStore, dref: DRef, known: set[str]) -> tuple[bool, str]:
    folder = store.dref_path(dref)
    raw = _read_json(os.path.join(folder, CONFIG_FILE))
    try:
        config = mkconfig(raw)
    except LightstoreError:
        config = None
    if config is None or mkdref(config_hash(config.val), config.name) != dref:
        return (
            False,
            "config.json is missing or does not hash to the DRef; remove the folder by hand",
        )
    deps = config_deps(config)
    if any(d not in known for d in deps):
        return False, "its dependencies are not in the catalogue; run `reindex`"
    store.catalogue.add_derivations(
        [NewDerivation(dref, config.name, canonical_json(config.val), deps)]
    )
    known.add(dref)
    return True, "registered from config.json"


def _realization_record(rref: str, folder: str) -> NewRealization | None:
    """A catalogue record for a realization folder, if its content matches its RRef."""
    raw = _read_json(os.path.join(folder, CONTEXT_FILE))
    if not isinstance(raw, dict) or not all(
        isdref(k) and isinstance(v, list) for k, v in raw.items()
    ):
        return None
    ctx = canonical_context(raw)
    ctx_hash = context_hash(ctx)
    try:
        digest = realization_digest(folder)
    except BuildError:
        return None  # holds a FIFO, socket or device: never a valid realization
    rhash, _, rest = rref.removeprefix("rref:").partition("-")
    if realization_hash(ctx_hash, digest.digest) != rhash:
        return None
    mtime = os.stat(folder).st_mtime
    deps = sorted({r for rs in ctx.values() for r in rs})
    return NewRealization(
        RRef(rref),
        DRef(f"dref:{rest}"),
        canonical_json(ctx),
        ctx_hash,
        deps,
        digest.size,
        digest.files,
        None,
        mtime,
    )


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
        _carry_links(cat_path, new)
        _carry_metrics(cat_path, new)
        new.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        new.close()
        if os.path.exists(cat_path):
            report.old_catalogue = f"{cat_path}.old-{int(time.time())}"
            with contextlib.suppress(Exception):
                # Fold the old WAL into its file, so the kept copy is whole.
                old = sqlite3.connect(cat_path, timeout=1)
                old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                old.close()
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


def _carry_links(old_path: str, new: Catalogue) -> None:
    """Copy the registered links of a readable old catalogue whose objects still exist."""
    try:
        old = sqlite3.connect(sqlite_uri(old_path, mode="ro"), uri=True, timeout=1)
        rows = old.execute("SELECT path, dref, rref, created FROM links").fetchall()
        old.close()
    except sqlite3.Error:
        return
    with new.write() as conn:
        for path, dref, rref, created in rows:
            with contextlib.suppress(sqlite3.IntegrityError):
                conn.execute(
                    "INSERT INTO links (path, dref, rref, created) VALUES (?, ?, ?, ?)",
                    (path, dref, rref, created),
                )


def _carry_metrics(old_path: str, new: Catalogue) -> None:
    """Copy the metrics of a readable old catalogue (they are not in the tree) for the
    realizations the new one holds; rows its constraints refuse are dropped."""
    try:
        old = sqlite3.connect(sqlite_uri(old_path, mode="ro"), uri=True, timeout=1)
        rows = old.execute("SELECT rref, name, value, recorded FROM metrics").fetchall()
        old.close()
    except sqlite3.Error:
        return
    with new.write() as conn:
        for row in rows:
            with contextlib.suppress(sqlite3.IntegrityError):
                conn.execute(
                    "INSERT INTO metrics (rref, name, value, recorded) VALUES (?, ?, ?, ?)", row
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
        try:
            config = mkconfig(_read_json(os.path.join(dfolder, CONFIG_FILE)))
        except LightstoreError:
            config = None
        if config is None or mkdref(config_hash(config.val), config.name) != dref:
            report.skipped.append(
                Problem("config", dref, "config.json missing or does not hash to the DRef")
            )
            continue
        configs[dref] = config
        folders += [
            (f"rref:{r}-{head}-{name}", os.path.join(dfolder, r))
            for r in sorted(os.listdir(dfolder))
            if _hex(r)
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
            record = _realization_record(rref, folder)
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
                column = "rref" if isrref(ref) else "dref"
                with catalogue.write() as conn:
                    conn.execute(
                        f"INSERT OR REPLACE INTO pins (name, {column}, created) VALUES (?, ?, ?)",
                        (name, ref, time.time()),
                    )
                report.pins += 1
            else:
                report.skipped.append(Problem("pin", name, f"pinned object {ref} is gone"))
