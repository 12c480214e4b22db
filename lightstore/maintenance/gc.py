"""Garbage collection's sweep: remove from the tree what marking found, keep its record.

Sweeping holds the collector lock exclusively, so no realization runs
meanwhile, and goes in an order that a crash at any instant leaves
recoverable:

1. move the doomed folders into a trash area ``tmp/<host>.<pid>.<r>.gc/``;
2. move their catalogue rows to the collected_* tables in one transaction
   (the record of past experiments outlives the artifacts; `forget` deletes it);
3. delete the trash.

If the process dies after 1, `lightstore.store.recovery.restore_trash` (run by
the next open's recovery) moves back what the catalogue still lists; after 2,
it deletes the trash. What to remove is `marking`'s plan.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from lightstore.foundation.errors import UsageError
from lightstore.foundation.failpoints import failpoint
from lightstore.foundation.files import remove_tree
from lightstore.foundation.times import parse_timeout
from lightstore.maintenance.forget import remove_orphan_logs
from lightstore.maintenance.marking import GCReport, garbage
from lightstore.store import CONFIG_FILE, DEFAULT_GC_TIMEOUT_S
from lightstore.store.recovery import restore_trash

if TYPE_CHECKING:
    from lightstore.store import LocalStore

__all__ = ["GCReport", "collect", "garbage"]


def collect(
    store: LocalStore,
    dry_run: bool = False,
    timeout: float | None = DEFAULT_GC_TIMEOUT_S,
    progress: Callable[[int, int], None] | None = None,
    keep_since: float | str | None = None,
    only: GCReport | None = None,
    keep_drefs: Iterable[str] = (),
    keep_rrefs: Iterable[str] = (),
) -> GCReport:
    """Remove everything not reachable from what gc keeps from the tree; keep its record.

    Realizations built or imported at or after `keep_since` (Unix time), and `keep_drefs` /
    `keep_rrefs`, are kept as if pinned. With `only` (a dry run's report),
    nothing outside that report is removed. Waits up to `timeout` seconds for
    running realizations (they hold the collector lock shared), then raises
    LockTimeout (QueryError for a NaN or negative `timeout`). Raises
    UsageError inside an open catalogue transaction (the removal commits on
    its own, after the folders are moved).
    """
    timeout = parse_timeout(timeout)
    keep_drefs, keep_rrefs = list(keep_drefs), list(keep_rrefs)
    if dry_run:
        return garbage(store, keep_drefs, keep_rrefs, keep_since=keep_since)
    if store.catalogue.in_transaction:
        raise UsageError(
            "gc cannot run inside an open catalogue transaction: its removal commits on its "
            "own, after the folders are moved; run it after the transaction ends"
        )
    with store.collecting(timeout=timeout):
        store.recover()  # finish an earlier gc that died, before marking
        report = garbage(store, keep_drefs, keep_rrefs, keep_since=keep_since, only=only)
        report.dry_run = False
        # Logs follow build records, which outlive gc; this only clears logs
        # whose record is gone (forgotten, or lost to a reindex).
        remove_orphan_logs(store, store.catalogue.build_ids)
        if not report.rrefs and not report.drefs and not report.stale_links:
            return report
        area = store.new_build_area("gc")
        try:
            moved = _sweep(store, area, report)
        except BaseException:
            # Nothing was deleted: put back whatever the catalogue still lists.
            restore_trash(store, area)
            remove_tree(area)
            raise
        # Deleting files is the slow part on a big store: one object at a time, with progress.
        for i, folder in enumerate(moved):
            remove_tree(folder)
            if progress is not None:
                progress(i + 1, len(moved))
        remove_tree(area)
    store.catalogue.shrink()
    return report


def _sweep(store: LocalStore, area: str, report: GCReport) -> list[str]:
    """Move the doomed objects into the trash area, then delete their rows in one transaction."""
    moved = [_trash(store, area, store.rref_path(r)) for r in report.rrefs]
    for dref in report.drefs:
        # Only what the catalogue knows goes: a folder unknown to it is left for verify.
        moved.append(_trash(store, area, os.path.join(store.dref_path(dref), CONFIG_FILE)))
        with contextlib.suppress(OSError):
            os.rmdir(store.dref_path(dref))
    failpoint("gc:moved")
    with store.catalogue.write("recording what gc removed"):
        # Both join this transaction; the rows move to the collected_* tables.
        store.catalogue.forget_links(report.stale_links)
        store.catalogue.delete_objects(report.rrefs, report.drefs, reason="gc")
    store.evict([*report.rrefs, *report.drefs])
    failpoint("gc:committed")
    return moved


def _trash(store: LocalStore, area: str, path: str) -> str:
    """Move an object folder into the trash area, keeping its layout; return where it went."""
    dst = os.path.join(area, os.path.relpath(path, store.root))
    _move(path, dst)
    return dst


def _move(src: str, dst: str) -> None:
    if not os.path.lexists(src):
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    # Moving a folder to another parent rewrites its `..`: it must be writable.
    os.chmod(src, os.stat(src).st_mode | stat.S_IWUSR)
    os.rename(src, dst)
