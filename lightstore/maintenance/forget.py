"""Forgetting: deleting the records of collected objects, and the logs of forgotten builds."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lightstore.foundation.errors import QueryError
from lightstore.foundation.times import parse_optional_time
from lightstore.store.layout import IMPORTED_LOGS_DIR, Layout, log_build_id

if TYPE_CHECKING:
    from lightstore.store import LocalStore


@dataclass
class ForgetReport:
    """How many records `forget` deleted (or, for a dry run, would delete)."""

    realizations: int = 0
    derivations: int = 0
    builds: int = 0
    dry_run: bool = False


def forget(
    store: LocalStore,
    *,
    before: float | str | None = None,
    name: str | None = None,
    everything: bool = False,
    dry_run: bool = False,
) -> ForgetReport:
    """Delete the records of collected objects (what `history --all` shows as collected).

    Selects collected realization records removed before `before` (Unix
    time) and/or whose derivation's `name` matches (exact, or a GLOB with
    ``*?[``); `everything` selects every collected record. A collected
    derivation's record goes once none of its realization records is left
    and it matches the same filters; build attempts go with the last record
    of their derivation. Present objects are never touched. Raises QueryError
    if no filter is given (and not `everything`), or for a malformed name.
    """
    before = parse_optional_time(before, "before")
    if name is not None and not isinstance(name, str):
        raise QueryError(f"forget takes a derivation name (or a glob), not {name!r}")
    if not everything and before is None and name is None:
        raise QueryError(
            "forget needs a filter: a name, an age (records collected before a time), "
            "or everything collected"
        )
    report = ForgetReport(dry_run=dry_run)
    report.realizations, report.derivations, report.builds = store.catalogue.forget_collected(
        before=before, name=name, dry_run=dry_run
    )
    if not dry_run:
        remove_orphan_logs(store, store.catalogue.build_ids)
        remove_orphan_imported_logs(store)
        store.catalogue.shrink()
    return report


def remove_orphan_logs(store: Layout, known_build_ids: Callable[[], set[int]] | set[int]) -> int:
    """Delete the logs whose build is not in `known_build_ids`; return how many went.

    Give a function that reads the build ids from the catalogue: it is called
    after the folder is listed, so a build that started meanwhile (its row is
    committed before its log is created) keeps its log. `forget` and gc call it.
    """
    folder = store.logs_dir
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    known = known_build_ids() if callable(known_build_ids) else known_build_ids
    removed = 0
    for name in names:
        build_id = log_build_id(name)
        if build_id is None or build_id in known:
            continue
        try:
            os.remove(os.path.join(folder, name))
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def remove_orphan_imported_logs(store: LocalStore) -> int:
    """Delete the logs that came with imported realizations whose record (present or
    collected) is gone; return how many went. The folder is listed before the records are
    read, so a pull that records a realization before placing its log keeps it."""
    folder = os.path.join(store.logs_dir, IMPORTED_LOGS_DIR)
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".log")]
    except FileNotFoundError:
        return 0
    rrefs = {f"rref:{n[: -len('.log')]}": n for n in names}
    known = set(
        store.catalogue.column(
            "SELECT rref FROM realizations WHERE rref IN (SELECT value FROM json_each(:r)) "
            "UNION SELECT rref FROM collected_realizations "
            "WHERE rref IN (SELECT value FROM json_each(:r))",
            {"r": json.dumps(sorted(rrefs))},
        )
    )
    removed = 0
    for rref, name in rrefs.items():
        if rref not in known:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
                removed += 1
    return removed
