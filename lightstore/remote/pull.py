"""Downloading closures of realizations from a remote cache, verified.

A pull reads the manifests of the closure first and checks each one (config
hashes to the DRef, context fits the config, paths stay inside and are UTF-8,
entries and context hash to the RRef, a trusted signature when keys are
configured), so a lying manifest is refused before any data moves (that
plan is `lightstore.remote.plan`, reading manifests `lightstore.remote.manifests`). The
closure is bounded as archives are (`max_bytes`, `max_members`, the free
space), counting every path (a blob listed under many paths is written once
per path) as each manifest is read. Then the folders and links of the new
realizations are made in the store's temporary area, and each blob is
downloaded straight into the first place that uses it (several at once,
streamed, never past its size), hashed as it is written and compared with
its name and size, then copied locally to its other places. As the entries
of each manifest hash to its RRef, and each file now holds the blob its entry
names, the folder's tree digest is the RRef's without reading it again.
The new realizations are published by the same atomic install as archives
(intents, build locks, one catalogue transaction), their files already
read-only. The build log a manifest names is a blob like the files (counted in
the limits, checked against its hash), kept in the store's ``logs/imported/``.

Each requested realization stands alone: one whose closure does not verify
(a manifest, config, signature or file) or does not fit the limits next to
the ones before it is left out with its reason, and the others are added.
Anything refused leaves the local store as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lightstore.exchange._ingest import Incoming, add_to_store, check_references
from lightstore.exchange._tree import inside
from lightstore.exchange.extract import DEFAULT_MAX_BYTES, DEFAULT_MAX_MEMBERS, Limits
from lightstore.exchange.logs import keep_imported_log
from lightstore.foundation.errors import (
    ArchiveError,
    LightstoreError,
    RemoteIntegrityError,
    StoreError,
    UnknownReferenceError,
    UntrustedError,
    disk_full,
)
from lightstore.foundation.failpoints import failpoint
from lightstore.foundation.files import MAX_RELATIVE_PATH, MAX_SYMLINKS, remove_tree
from lightstore.foundation.refs import RRef
from lightstore.remote._fs import WHOLE_FILE, Remote, copy_local, open_remote
from lightstore.remote._layout import Manifest, blob_key, ensure_marker
from lightstore.remote._sign import TrustedKeys, trusted_keys_for
from lightstore.remote.listing import remote_realizations_of
from lightstore.remote.plan import PullPlan, plan_pull
from lightstore.remote.transfers import DEFAULT_JOBS, Progress, expand_refs, run_all
from lightstore.store import LocalStore


def _expand_remote_refs(remote: Remote, refs: Iterable[str]) -> list[RRef]:
    return expand_refs(
        refs, lambda d: remote_realizations_of(remote, d), f"on the remote {remote.shown}"
    )


def _left_out(
    failures: Mapping[RRef, LightstoreError],
    added: list[RRef],
    refused: dict[RRef, LightstoreError] | None,
    where: str,
) -> list[RRef]:
    """`added`, after recording `failures` in `refused`, or raising them if it is None."""
    if refused is not None:
        refused.update(failures)
        return added
    if not failures:
        return added
    errors = list(failures.values())
    if len(errors) == 1 and not added:
        raise errors[0]
    kind: type[ArchiveError]
    if all(isinstance(e, UntrustedError) for e in errors):
        kind = UntrustedError
    elif any(isinstance(e, RemoteIntegrityError) for e in errors):
        kind = RemoteIntegrityError
    else:
        kind = ArchiveError  # only the limits refused them
    lines = "\n".join(f"  {r}: {e}" for r, e in sorted(failures.items()))
    error = kind(
        f"{where}: added {len(added)} realization(s); left out {len(errors)} of the "
        f"realizations asked for, which do not verify or do not fit the limits (nothing of "
        f"theirs was added):\n{lines}"
    )
    error.added = tuple(added)  # type: ignore[attr-defined]
    raise error


#: Modes of pulled files: final (read-only) at once, so publishing need not walk the tree.
_MODES = {False: 0o444, True: 0o555}

#: A blob as a manifest names it: its hash and size (a size no hash covers: entries that
#: claim another size for the same hash are downloaded and checked on their own).
_Blob = tuple[str, int]


class _Downloader:
    """Downloads blobs with a pool of threads, each straight into the first place that
    uses it, hashed as it is written and compared with its name; then copied locally to
    the other places that use it."""

    def __init__(self, remote: Remote, jobs: int) -> None:
        self.remote = remote
        self.jobs = max(1, jobs)

    def _one(
        self, blob: _Blob, used_by: str, places: list[tuple[str, bool]]
    ) -> tuple[_Blob, LightstoreError | None]:
        """Download one blob: (blob, None), or the RemoteIntegrityError that refuses it
        (the realizations using it are left out, not the whole pull)."""
        try:
            self._download(blob, used_by, places)
            return blob, None
        except RemoteIntegrityError as e:
            return blob, e

    def _download(self, blob: _Blob, used_by: str, places: list[tuple[str, bool]]) -> None:
        digest, size = blob
        first, executable = places[0]
        try:
            got, found = self.remote.download_file(blob_key(digest), first, size)
        except FileNotFoundError:
            raise RemoteIntegrityError(
                f"the blob {digest} ({used_by}) is missing on the remote {self.remote.shown}; "
                "nothing was added"
            ) from None
        if got != size or found != digest:
            what = "its content" if got == size else f"its size ({got} bytes, {size} expected)"
            raise RemoteIntegrityError(
                f"the blob {digest} ({used_by}) on the remote {self.remote.shown} does not match "
                f"its hash: {what} differs, tampered or truncated; nothing was added (a store "
                "that holds it repairs the remote with `lightstore push --repair`)"
            )
        os.chmod(first, _MODES[executable])
        for path, exe in places[1:]:
            copy_local(first, path, size)
            os.chmod(path, _MODES[exe])

    def fetch(
        self, wanted: Mapping[_Blob, tuple[str, list[tuple[str, bool]]]], progress: Progress | None
    ) -> dict[_Blob, LightstoreError]:
        """Download the `wanted` blobs to their places; the ones refused (missing, not
        matching their hash), with why. Any other failure stops them all."""
        total = sum(size for _, size in wanted)
        done = 0
        refused: dict[_Blob, LightstoreError] = {}

        def advanced(result: tuple[_Blob, LightstoreError | None]) -> None:
            nonlocal done
            blob, error = result
            if error is not None:
                refused[blob] = error
            else:
                done += blob[1]
            if progress is not None:
                progress(done, total)

        # Small files of a local disk go through this thread (see `run_all`).
        small = WHOLE_FILE if self.remote.local and not self.remote.networked else 0
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="pull") as pool:
            items = [(blob, used, places) for blob, (used, places) in wanted.items()]
            run_all(
                pool,
                self._one,
                items,
                advanced,
                weight=lambda item: item[0][1] * len(item[2]),
                workers=self.jobs,
                here=lambda item: item[0][1] < small,
            )
        return refused


def _skeleton(m: Manifest, out: str, where: str) -> None:
    """Make the folders and links of `m` in the new folder `out` (its files come from the
    downloads), and check that its links stay inside it on disk (a chain of links that
    each stay inside by their text may leave it)."""
    os.mkdir(out, 0o755)
    for e in m.files:
        raw = len(e.path.encode("utf-8", "surrogateescape"))
        if raw > MAX_RELATIVE_PATH:
            raise RemoteIntegrityError(
                f"{where}: {m.rref}: the path {e.path[:60]!r}... is {raw} bytes long; paths "
                f"inside a realization are at most {MAX_RELATIVE_PATH} bytes"
            )
        target = os.path.join(out, *e.path.split("/"))
        if e.type == "dir":
            os.mkdir(target, 0o755)
        elif e.type == "link":
            os.symlink(e.target, target)
    for e in m.files:
        if e.type == "link" and not inside(os.path.join(out, *e.path.split("/")), out):
            raise RemoteIntegrityError(
                f"{where}: {m.rref}: {e.path!r} is a symlink pointing outside its realization "
                f"({e.target!r}), or through more than {MAX_SYMLINKS} links; refused"
            )


def _finish(m: Manifest, inc: Incoming) -> None:
    """Make the folders of `m` (in place, at `inc.folder`) read-only, deepest first, and
    fill in the size and count of `inc`."""
    for e in reversed(m.files):
        if e.type == "dir":
            path = os.path.join(inc.folder, *e.path.split("/"))
            os.chmod(path, os.lstat(path).st_mode & ~0o222)
    inc.size = sum(e.size for e in m.files if e.type == "file")
    inc.file_count = sum(1 for e in m.files if e.type != "dir")


def pull(
    store: LocalStore,
    url: Any,
    refs: Iterable[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    trusted_keys: Iterable[str] | TrustedKeys | None = None,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
    held_locks: Iterable[tuple[str, str]] = (),
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_members: int | None = DEFAULT_MAX_MEMBERS,
    refused: dict[RRef, LightstoreError] | None = None,
) -> list[RRef]:
    """Download the closures of `refs` (RRefs, or DRefs for all their remote realizations).

    Realizations already in the store are skipped (nothing is transferred).
    As for archives, the new realizations may hold at most `max_bytes` of
    files (default 64 GiB; None for no limit), counted per path, and at most
    `max_members` entries, and no more than the free space of the store's
    filesystem; this is checked as the manifests are read, before anything
    is downloaded.
    With trusted keys (the call's, else ``$LIGHTSTORE_TRUSTED_KEYS`` and the
    store's ``trusted-keys`` file; an empty list requires none) every new
    realization must carry a valid signature by one of them, checked before
    its manifest is parsed. `held_locks`: (DRef, context hash) build locks
    the caller holds. Returns the RRefs added, dependencies first.

    A requested realization whose manifest, config, signature or files (or a
    dependency's) do not verify, or that does not fit the limits next to the
    ones before it, is left out; the others are added, then the refusal is
    raised: RemoteIntegrityError (UntrustedError when only signatures
    failed, ArchiveError when only the limits refused), its `added` naming
    what was added (a single refusal with nothing added is raised as is).
    With `refused` (a dict) the refusals are recorded there instead, by
    requested RRef.

    Raises UnknownReferenceError if the remote lacks a requested reference,
    UsageError for a limit that is not a number, RemoteError if the remote
    cannot be read, DiskFullError or StoreError if the store cannot be
    written; the store is then unchanged.
    """
    remote = open_remote(url, storage_options)
    trusted = trusted_keys_for(store.root, trusted_keys)
    where = f"pull from {remote.shown}"
    # Checked now, not only when there is something to pull.
    limits = Limits(
        f"{where}: the closure",
        store.tmp_dir,
        max_bytes,
        max_members,
        noun="files, folders and links",
        why="before downloading anything",
    )
    if not ensure_marker(remote, create=False):
        raise UnknownReferenceError(
            f"{remote.shown} is not a lightstore remote (nothing was pushed there)"
        )
    requested = _expand_remote_refs(remote, refs)
    plan = plan_pull(store, remote, requested, trusted, where, limits)
    if refused is None:
        for failure in plan.failures.values():
            if isinstance(failure, UnknownReferenceError):
                raise failure  # asked for something the remote does not hold
    if not plan.manifests:
        if plan.derivations:
            store.record_derivations(list(plan.derivations.items()))
        return _left_out(plan.failures, [], refused, where)
    check_references(store, plan.derivations, _incoming(plan), where)
    store.recover()
    area = store.new_build_area("pull")
    try:
        # Folders and links first, then every blob downloaded straight into its places:
        # each is hashed as it is written, and the manifests' entries already hash to
        # their RRefs, so nothing is read again before publishing.
        folders = {r: os.path.join(area, f"r{i}") for i, r in enumerate(sorted(plan.manifests))}
        logs = {r: f"{folder}.log" for r, folder in folders.items()}
        wanted: dict[_Blob, tuple[str, list[tuple[str, bool]]]] = {}
        for r, m in plan.manifests.items():
            _skeleton(m, folders[r], where)
            for e in m.files:
                if e.type == "file":
                    _, places = wanted.setdefault(
                        (e.blake3, e.size), (f"the file {e.path!r} of {r}", [])
                    )
                    places.append((os.path.join(folders[r], *e.path.split("/")), e.executable))
            if m.log is not None:
                _, places = wanted.setdefault(m.log, (f"the build log of {r}", []))
                places.append((logs[r], False))
        bad_blobs = _Downloader(remote, jobs).fetch(wanted, progress)
        if bad_blobs:
            plan.leave_out(
                {
                    r: bad_blobs[blob]
                    for r, m in plan.manifests.items()
                    for blob in [*((e.blake3, e.size) for e in m.files if e.type == "file"), m.log]
                    if blob in bad_blobs
                }
            )
            if not plan.manifests:
                return _left_out(plan.failures, [], refused, where)
        incoming = _incoming(plan)
        for r, m in plan.manifests.items():
            incoming[r].folder = folders[r]
            _finish(m, incoming[r])
        failpoint("pull:assembled")
        with store.realizing():
            check_references(store, plan.derivations, incoming, where)
            added = add_to_store(
                store, plan.derivations, incoming.values(), held_locks, readonly_done=True
            )
        for r in added:
            if plan.manifests[r].log is not None:
                keep_imported_log(store, r, logs[r])
        return _left_out(plan.failures, added, refused, where)
    except OSError as e:
        if isinstance(e, LightstoreError):
            raise
        what = f"assembling the realizations pulled from {remote.shown}"
        raise disk_full(e, what) or StoreError(
            f"{where}: cannot assemble the realizations in {store.root}: {e.strerror or e}"
        ) from None
    finally:
        remove_tree(area)


def _incoming(plan: PullPlan) -> dict[RRef, Incoming]:
    return {
        r: Incoming(
            r,
            m.dref,
            m.context,
            "",
            m.build_started,
            m.build_stopped,
            metrics=m.said.metrics,
            series=m.said.series,
            tags=m.said.tags,
            notes=m.said.notes,
        )
        for r, m in plan.manifests.items()
    }
