"""Checking the catalogue against the tree, and repairing what can be repaired.

`verify` holds the collector lock exclusively, so that a realization being
published (renamed into the tree, not yet committed) is never mistaken for
an unregistered folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from lightstore.catalogue import NewDerivation, NewRealization
from lightstore.foundation.config import canonical_json, config_deps
from lightstore.foundation.errors import BuildError, IntegrityError
from lightstore.foundation.files import remove_tree
from lightstore.foundation.hashing import TreeDigest, realization_hash
from lightstore.foundation.refs import DRef, isdref, isrref
from lightstore.foundation.times import parse_timeout
from lightstore.maintenance.pins import gc_keeps
from lightstore.store import CONFIG_FILE, CONTEXT_FILE, DEFAULT_GC_TIMEOUT_S, LocalStore
from lightstore.store.layout import realization_digest
from lightstore.store.tree import is_hash, read_config_file, read_json, read_realization

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
        for path in gc_keeps(store).stale_links:
            p = Problem("stale_link", path, "the symlink no longer points at its object")
            if repair:
                store.catalogue.forget_links([path])
                p.repaired, p.action = True, "forgot the link"
            report.problems.append(p)
    return report


def _check_sqlite(store: LocalStore, report: VerifyReport) -> None:
    damage, dangling = store.catalogue.integrity_problems()
    if damage:
        report.problems.append(
            Problem("catalogue", store.catalogue.path, "; ".join(damage[:5]) + " (run `reindex`)")
        )
    for table, rowid, parent in dangling:
        report.problems.append(
            Problem(
                "foreign_key",
                f"{table}:{rowid}",
                f"refers to a missing row of {parent} (run `reindex`)",
            )
        )


def _check_derivations(store: LocalStore, report: VerifyReport, repair: bool) -> None:
    for dref, text in store.catalogue.configs():
        report.derivations += 1
        path = store.config_path(dref)
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
    rows = store.catalogue.contexts()
    for i, (rref, ctx_text, ctx_hash) in enumerate(rows):
        report.realizations += 1
        if progress is not None:
            progress(i + 1, len(rows))
        folder = store.rref_path(rref)
        if not os.path.isdir(folder):
            p = Problem("missing", rref, f"{folder} does not exist")
            if repair:
                why = _delete_rows(store, rref)
                p.repaired, p.action = why is None, why or "forgot the realization"
            report.problems.append(p)
            continue
        if read_json(os.path.join(folder, CONTEXT_FILE)) != json.loads(ctx_text):
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
    known_d: set[str] = set(store.catalogue.all_drefs())
    known_r: set[str] = set(store.catalogue.all_rrefs())
    new_d: list[tuple[DRef, Problem]] = []
    new_r: list[tuple[str, str, Problem]] = []
    for dname in sorted(os.listdir(store.objects_dir)):
        dfolder = os.path.join(store.objects_dir, dname)
        head, _, name = dname.partition("-")
        dref = f"dref:{head}-{name}"
        if not (is_hash(head) and isdref(dref)) or not os.path.isdir(dfolder):
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
                read_realization(rref, folder)
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
    config = read_config_file(store.config_path(dref), dref)
    if config is None:
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
