"""Downloading closures of realizations from a remote cache, verified.

A pull reads the manifests of the closure first and checks each one (config
hashes to the DRef, context fits the config, paths stay inside and are UTF-8,
entries and context hash to the RRef, a trusted signature when keys are
configured), so a lying manifest is refused before any data moves (that
plan is `lightstore.remote.plan`, reading manifests `lightstore.remote.manifests`). The
closure is bounded as archives are (`max_bytes`, `max_members`, the free
space), counting every path (a blob listed under many paths is written once
per path) as each manifest is read. Then the blobs are downloaded into the
store's temporary area (several at once, streamed, never past their size),
each hashed and compared with its name; the realizations are assembled,
their folders hashed once more as archive imports do, and published by the
same atomic install (intents, build locks, one catalogue transaction).

Each requested realization stands alone: one whose closure does not verify
(a manifest, config, signature or file) or does not fit the limits next to
the ones before it is left out with its reason, and the others are added.
Anything refused leaves the local store as it was.
"""

from __future__ import annotations

import collections
import os
import shutil
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lightstore.exchange._ingest import Incoming, add_to_store, check_references, verify_folder
from lightstore.exchange.extract import DEFAULT_MAX_BYTES, DEFAULT_MAX_MEMBERS, Limits
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
from lightstore.foundation.files import remove_tree
from lightstore.foundation.hashing import file_digest
from lightstore.foundation.refs import RRef
from lightstore.remote._fs import Remote, open_remote
from lightstore.remote._layout import Manifest, blob_key, ensure_marker
from lightstore.remote._sign import TrustedKeys, trusted_keys_for
from lightstore.remote.listing import remote_realizations_of
from lightstore.remote.plan import PullPlan, plan_pull
from lightstore.remote.transfers import DEFAULT_JOBS, Progress, expand_refs, run_all
from lightstore.store import LocalStore

_CHUNK = 1024 * 1024


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


class _Downloader:
    """Downloads blobs into a folder with a pool of threads, checking each hash."""

    def __init__(self, remote: Remote, folder: str, jobs: int) -> None:
        self.remote = remote
        self.folder = folder
        self.jobs = max(1, jobs)

    def path(self, digest: str) -> str:
        return os.path.join(self.folder, digest)

    def _one(self, digest: str, size: int, used_by: str) -> tuple[str, int, LightstoreError | None]:
        """Download one blob: (digest, size, None), or the RemoteIntegrityError that
        refuses it (the realizations using it are left out, not the whole pull)."""
        try:
            return digest, self._download(digest, size, used_by), None
        except RemoteIntegrityError as e:
            return digest, 0, e

    def _download(self, digest: str, size: int, used_by: str) -> int:
        part = self.path(digest) + ".part"
        try:
            self.remote.download_file(blob_key(digest), part, size)
        except FileNotFoundError:
            raise RemoteIntegrityError(
                f"the blob {digest} ({used_by}) is missing on the remote {self.remote.shown}; "
                "nothing was added"
            ) from None
        got = os.path.getsize(part)
        if got != size or file_digest(part).hex() != digest:
            what = "its content" if got == size else f"its size ({got} bytes, {size} expected)"
            raise RemoteIntegrityError(
                f"the blob {digest} ({used_by}) on the remote {self.remote.shown} does not match "
                f"its hash: {what} differs, tampered or truncated; nothing was added (a store "
                "that holds it repairs the remote with `lightstore push --repair`)"
            )
        os.rename(part, self.path(digest))
        return size

    def fetch(
        self, wanted: Mapping[str, tuple[int, str]], progress: Progress | None
    ) -> dict[str, LightstoreError]:
        """Download the `wanted` blobs; the ones refused (missing, not matching their
        hash), with why. Any other failure stops them all."""
        total = sum(size for size, _ in wanted.values())
        done = 0
        refused: dict[str, LightstoreError] = {}

        def advanced(result: tuple[str, int, LightstoreError | None]) -> None:
            nonlocal done
            digest, size, error = result
            if error is not None:
                refused[digest] = error
            done += size
            if progress is not None:
                progress(done, total)

        with ThreadPoolExecutor(self.jobs, thread_name_prefix="pull") as pool:
            items = [(d, size, used) for d, (size, used) in wanted.items()]
            run_all(pool, self._one, items, advanced)
        return refused


def _assemble(m: Manifest, out: str, blobs: _Downloader, uses: collections.Counter[str]) -> None:
    """Make the folder of `m` from downloaded blobs (moved on their last use, else copied)."""
    os.mkdir(out, 0o755)
    for e in m.files:
        target = os.path.join(out, *e.path.split("/"))
        if e.type == "dir":
            os.mkdir(target, 0o755)
        elif e.type == "link":
            os.symlink(e.target, target)
        else:
            uses[e.blake3] -= 1
            source = blobs.path(e.blake3)
            if uses[e.blake3] == 0:
                os.rename(source, target)
            else:
                with open(source, "rb") as fin, open(target, "xb") as fout:
                    shutil.copyfileobj(fin, fout, _CHUNK)
            os.chmod(target, 0o755 if e.executable else 0o644)


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
        blobs = _Downloader(remote, os.path.join(area, "blobs"), jobs)
        os.mkdir(blobs.folder)
        wanted: dict[str, tuple[int, str]] = {}
        for r, m in plan.manifests.items():
            for e in m.files:
                if e.type == "file":
                    wanted.setdefault(e.blake3, (e.size, f"the file {e.path!r} of {r}"))
        bad_blobs = blobs.fetch(wanted, progress)
        if bad_blobs:
            plan.leave_out(
                {
                    r: bad_blobs[e.blake3]
                    for r, m in plan.manifests.items()
                    for e in m.files
                    if e.blake3 in bad_blobs
                }
            )
            if not plan.manifests:
                return _left_out(plan.failures, [], refused, where)
        incoming = _incoming(plan)
        uses = collections.Counter(
            e.blake3 for m in plan.manifests.values() for e in m.files if e.type == "file"
        )
        for i, (r, m) in enumerate(sorted(plan.manifests.items())):
            inc = incoming[r]
            inc.folder = os.path.join(area, f"r{i}")
            _assemble(m, inc.folder, blobs, uses)
            try:
                verify_folder(inc, where)  # the same check as an archive import
            except ArchiveError as e:
                if isinstance(e, RemoteIntegrityError):
                    raise
                raise RemoteIntegrityError(str(e)) from None
        failpoint("pull:assembled")
        with store.realizing():
            check_references(store, plan.derivations, incoming, where)
            added = add_to_store(store, plan.derivations, incoming.values(), held_locks)
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
        r: Incoming(r, m.dref, m.context, "", m.build_started, m.build_stopped, metrics=m.metrics)
        for r, m in plan.manifests.items()
    }
