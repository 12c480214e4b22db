"""`Store`, the user-facing object of one store root.

It is a `LocalStore` (the tree, the catalogue, publishing, recovery) with the
housekeeping and exchange that are built on top of it: pins, garbage
collection, `forget`, `verify`/`reindex` (`lightstore.maintenance`) and
remote caches (`lightstore.remote`). Each method is the function of that
package with the store as its first argument; the lower layers never import
this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lightstore.foundation.refs import DRef, RRef
from lightstore.maintenance.cancel import DEFAULT_CANCEL_TIMEOUT_S, CancelReport, cancel_build
from lightstore.maintenance.forget import ForgetReport, forget
from lightstore.maintenance.gc import collect
from lightstore.maintenance.marking import GCReport
from lightstore.maintenance.pins import pin, pins, unpin
from lightstore.maintenance.reindex import ReindexReport, reindex
from lightstore.maintenance.verify import VerifyReport, verify
from lightstore.query.rows import Rows
from lightstore.remote.pull import DEFAULT_MAX_BYTES, DEFAULT_MAX_MEMBERS, pull
from lightstore.remote.push import PushReport, push
from lightstore.remote.transfers import DEFAULT_JOBS
from lightstore.store import DEFAULT_GC_TIMEOUT_S, LocalStore

Progress = Callable[[int, int], None]


class Store(LocalStore):
    """A lightstore store: the tree under `root`, its catalogue, and what is done with them.

    Open one with `Store.open(root)`; instances are shared per process and root.
    """

    # -- pins (what gc keeps) --------------------------------------------------

    def pin(self, name: str, ref: DRef | RRef | str) -> None:
        """Pin a DRef or RRef under `name`: gc keeps it and everything it depends on."""
        pin(self, name, ref)

    def unpin(self, name: str) -> bool:
        """Remove a pin; return whether it existed."""
        return unpin(self, name)

    def pins(self) -> dict[str, str]:
        """Every pin: name -> reference."""
        return pins(self)

    # -- running builds --------------------------------------------------------

    def builds(self, recent: int = 0) -> Rows:
        """The builds running now, then the `recent` that finished last (see
        `lightstore.query.buildlog.builds`)."""
        from lightstore.query.buildlog import builds

        return builds(self, recent)

    def cancel(self, build_id: int, timeout: float = DEFAULT_CANCEL_TIMEOUT_S) -> CancelReport:
        """Stop the process of this host running build #`build_id` (SIGTERM) and record the
        build as interrupted (see `lightstore.maintenance.cancel.cancel_build`)."""
        return cancel_build(self, build_id, timeout)

    # -- garbage collection and history -------------------------------------

    def gc(
        self,
        dry_run: bool = False,
        timeout: float | None = DEFAULT_GC_TIMEOUT_S,
        progress: Progress | None = None,
        keep_since: float | str | None = None,
        only: GCReport | None = None,
        keep_drefs: Iterable[str] = (),
        keep_rrefs: Iterable[str] = (),
    ) -> GCReport:
        """Collect garbage: keep the closure of pins, live links, running builds and
        `keep_drefs`/`keep_rrefs`; remove the rest from the tree. Their catalogue records
        stay, marked collected (see `forget`).

        `keep_since` (Unix seconds, or a time such as ``'7d'`` or ``'2024-05-01'``)
        also keeps what was built or imported since then; `only` (a dry run's
        report) removes at most what it listed. Returns a GCReport (what went,
        or would go with `dry_run`, and bytes freed). Raises QueryError for a
        malformed or non-finite time, LockTimeout if running realizations hold
        the store past `timeout`.
        """
        return collect(
            self,
            dry_run=dry_run,
            timeout=timeout,
            progress=progress,
            keep_since=keep_since,
            only=only,
            keep_drefs=keep_drefs,
            keep_rrefs=keep_rrefs,
        )

    def forget(
        self,
        *,
        before: float | str | None = None,
        name: str | None = None,
        everything: bool = False,
        dry_run: bool = False,
    ) -> ForgetReport:
        """Delete the records of collected objects (by age, by name, or all).

        Returns a ForgetReport; raises QueryError without a filter.
        """
        return forget(self, before=before, name=name, everything=everything, dry_run=dry_run)

    # -- integrity ------------------------------------------------------------

    def verify(
        self,
        check_contents: bool = False,
        repair: bool = False,
        progress: Progress | None = None,
        timeout: float | None = DEFAULT_GC_TIMEOUT_S,
    ) -> VerifyReport:
        """Check catalogue against tree (and hashes, with `check_contents`); `repair` fixes
        what can be fixed. Returns a VerifyReport."""
        return verify(
            self, check_contents=check_contents, repair=repair, progress=progress, timeout=timeout
        )

    def reindex(self, progress: Progress | None = None) -> ReindexReport:
        """Rebuild the catalogue from the tree; returns a ReindexReport."""
        return reindex(self, progress=progress)

    # -- remote caches ---------------------------------------------------------

    def push(
        self,
        url: Any,
        refs: Iterable[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
        signing_key: Any = None,
        jobs: int = DEFAULT_JOBS,
        progress: Progress | None = None,
        repair: bool = False,
    ) -> PushReport:
        """Upload the closures of `refs` to the remote cache at `url`, signed with
        `signing_key` (default ``$LIGHTSTORE_SIGNING_KEY``); see `lightstore.remote.push`."""
        return push(
            self,
            url,
            refs,
            storage_options=storage_options,
            signing_key=signing_key,
            jobs=jobs,
            progress=progress,
            repair=repair,
        )

    def pull(
        self,
        url: Any,
        refs: Iterable[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
        trusted_keys: Iterable[str] | None = None,
        jobs: int = DEFAULT_JOBS,
        progress: Progress | None = None,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        max_members: int | None = DEFAULT_MAX_MEMBERS,
    ) -> list[RRef]:
        """Download the closures of `refs` from `url`, verified and bounded; see
        `lightstore.remote.pull`."""
        return pull(
            self,
            url,
            refs,
            storage_options=storage_options,
            trusted_keys=trusted_keys,
            jobs=jobs,
            progress=progress,
            max_bytes=max_bytes,
            max_members=max_members,
        )
