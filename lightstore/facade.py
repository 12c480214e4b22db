"""`Store`, the user-facing object of one store root.

It is a `LocalStore` (the tree, the catalogue, publishing, recovery) with the
housekeeping and exchange that are built on top of it: pins, garbage
collection, `forget`, `verify`/`reindex` (`lightstore.maintenance`) and
remote caches (`lightstore.remote`). Each method is the function of that
package with the store as its first argument; the lower layers never import
this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lightstore.foundation.errors import LightstoreError, QueryError
from lightstore.foundation.refs import DRef, RRef, isdref, isrref
from lightstore.maintenance.cancel import DEFAULT_CANCEL_TIMEOUT_S, CancelReport, cancel_build
from lightstore.maintenance.forget import ForgetReport, forget
from lightstore.maintenance.gc import collect
from lightstore.maintenance.marking import GCReport
from lightstore.maintenance.pins import pin, pins, unpin
from lightstore.maintenance.reindex import ReindexReport, reindex
from lightstore.maintenance.verify import VerifyReport, verify
from lightstore.query import resolve_all
from lightstore.query.among import needs_details, select_among, sort_runs
from lightstore.query.rows import Rows
from lightstore.remote._redact import redact_url
from lightstore.remote.pull import DEFAULT_MAX_BYTES, DEFAULT_MAX_MEMBERS, pull
from lightstore.remote.push import PushReport, push
from lightstore.remote.runs import RemoteRun, remote_runs
from lightstore.remote.transfers import DEFAULT_JOBS
from lightstore.store import DEFAULT_GC_TIMEOUT_S, LocalStore

Progress = Callable[[int, int], None]
_log = logging.getLogger("lightstore")


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
        `signing_key` (default ``$LIGHTSTORE_SIGNING_KEY``); see `lightstore.remote.push`.

        `refs` are what `resolve` takes in this store: references, hash prefixes, names,
        selectors (``train@latest``, ``'train[lr=0.01]@all'``)."""
        return push(
            self,
            url,
            [str(r) for r in resolve_all(self, list(refs))],
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
        sort: str | None = None,
        limit: int | None = None,
    ) -> list[RRef]:
        """Download the closures of `refs` from `url`, verified and bounded; see
        `lightstore.remote.pull`.

        `refs` designate runs of the remote (`find_on_remote`): references, hash prefixes,
        names, selectors (``train@latest``, ``'train[lr=0.01]@all'``), each ordered by
        `sort` (``loss``, ``-accuracy``, ``loss:min``, a config field, as `history
        --sort`) and cut to its first `limit` runs: ``pull(url, ["train@all"],
        sort="loss", limit=1)`` is the run of lowest loss."""
        targets = find_on_remote(
            url,
            refs,
            sort=sort,
            limit=limit,
            storage_options=storage_options,
            trusted_keys=trusted_keys,
            store_root=self.root,
            jobs=jobs,
        )
        return pull(
            self,
            url,
            targets,
            storage_options=storage_options,
            trusted_keys=trusted_keys,
            jobs=jobs,
            progress=progress,
            max_bytes=max_bytes,
            max_members=max_members,
        )


def find_on_remote(
    url: Any,
    refs: Iterable[str],
    *,
    sort: str | None = None,
    limit: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    trusted_keys: Iterable[str] | None = None,
    store_root: str | None = None,
    jobs: int = DEFAULT_JOBS,
) -> list[str]:
    """The runs of the remote at `url` that `refs` designate, as full references (a DRef
    standing for all its runs), in order, without repeats.

    Each ref is evaluated against the remote's index and manifests (never a blob; see
    `lightstore.query.among`): a full reference, a hash prefix unique on the remote, a
    derivation name, a selector. Selectors, and `sort`, read the manifests, trusted as
    a pull into the store at `store_root` trusts them (runs whose manifest does not
    verify are left out of the selection, with a warning). With `sort` each ref's runs
    are ordered as `history --sort` orders them and, with `limit`, cut to the first ones.

    Raises UnknownReferenceError when a ref matches nothing, AmbiguousReferenceError when
    a prefix or name matches several objects, InvalidReferenceError, QueryError for a
    malformed one, RemoteError if the remote cannot be read.
    """
    texts = [refs] if isinstance(refs, str) else [str(r) for r in refs]
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise QueryError(f"limit is a number of runs of at least 1, got {limit!r}")
    plain = sort is None and limit is None
    if plain and all(isrref(t.strip()) or isdref(t.strip()) for t in texts):
        return [t.strip() for t in texts]
    where = f"on the remote {redact_url(str(url))}"
    listed: dict[bool, list[RemoteRun]] = {}

    def runs(details: bool) -> list[RemoteRun]:
        if details not in listed:
            refused: dict[RRef, LightstoreError] = {}
            listed[details] = remote_runs(
                url,
                details=details,
                storage_options=storage_options,
                trusted_keys=trusted_keys,
                store_root=store_root,
                jobs=jobs,
                refused=refused,
            )
            if refused:
                _log.warning(
                    "%s: %d run(s) whose manifest does not verify (unsigned by a trusted key, "
                    "or damaged) were left out of the selection, e.g. %s: %s",
                    where,
                    len(refused),
                    min(refused),
                    refused[min(refused)],
                )
        return listed[details]

    out: list[str] = []
    for text in texts:
        if plain and (isrref(text.strip()) or isdref(text.strip())):
            found = [text.strip()]
        else:
            selected = select_among(text, runs(not plain or needs_details(text)), where)
            if sort is not None:
                selected = sort_runs(selected, sort)
            if limit is not None:
                selected = selected[:limit]
            found = [r.rref for r in selected]
        out += [r for r in found if r not in out]
    return out
