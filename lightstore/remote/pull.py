"""Downloading closures of realizations from a remote cache, verified.

A pull reads the manifests of the closure first and checks each one (config
hashes to the DRef, context fits the config, paths stay inside and are UTF-8,
entries and context hash to the RRef, a trusted signature when keys are
configured), so a lying manifest is refused before any data moves. The
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
import copy
import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lightstore.exchange._ingest import (
    Incoming,
    add_to_store,
    check_references,
    checked_config,
    verify_folder,
)
from lightstore.exchange.extract import DEFAULT_MAX_BYTES, DEFAULT_MAX_MEMBERS, Limits
from lightstore.foundation.config import Config, config_deps
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
from lightstore.foundation.refs import DRef, RRef
from lightstore.remote._fs import Remote
from lightstore.remote._layout import (
    Manifest,
    blob_key,
    config_bytes_match,
    derivation_key,
    dref_folder,
    manifest_key,
    parse_manifest,
    parse_rref_key,
    signature_folder,
    signed_manifest_key,
)
from lightstore.remote._sign import TrustedKeys, trusted_keys_for
from lightstore.remote.push import (
    DEFAULT_JOBS,
    Progress,
    ensure_marker,
    expand_refs,
    open_remote,
    run_all,
)
from lightstore.store import LocalStore

_CHUNK = 1024 * 1024
log = logging.getLogger("lightstore")


def remote_realizations_of(remote: Remote, dref: DRef) -> list[RRef]:
    """Every realization of `dref` the remote holds (one listing)."""
    folder = dref_folder(dref)
    out = []
    for name in remote.listdir(f"realizations/{folder}"):
        if name.endswith(".json"):
            r = parse_rref_key(folder, name)
            if r is not None:
                out.append(r)
    return out


def _resolve_remote_refs(remote: Remote, refs: Iterable[str]) -> list[RRef]:
    return expand_refs(
        refs, lambda d: remote_realizations_of(remote, d), f"on the remote {remote.shown}"
    )


#: No manifest is larger than this, whatever the limits.
MAX_MANIFEST = 64 * 1024 * 1024
#: What a manifest may hold besides its entries (config, context, times, metrics).
_MANIFEST_OVERHEAD = 4 * 1024 * 1024
#: The most one entry takes in a manifest: a path and a link target of PATH_MAX bytes,
#: every character escaped, and the other fields.
_ENTRY_BYTES = 2 * 6 * 4096 + 256
#: The signature line in front of a signed manifest (base64 of 64 bytes, a newline).
_SIGNATURE_LINE = 129


def _members_left(limits: Limits | None) -> int | None:
    if limits is None or limits.max_members is None:
        return None
    return max(0, int(limits.max_members) - limits.members)


def _read_bounded(
    remote: Remote, key: str, rref: RRef, where: str, limits: Limits | None, extra: int = 0
) -> bytes | None:
    """The object `key` holding the manifest of `rref`, read only if its size fits what the
    limits leave (its entries cannot all fit otherwise): ArchiveError if not, and
    RemoteIntegrityError over `MAX_MANIFEST` or if it is not a regular file."""
    left = _members_left(limits)
    cap = MAX_MANIFEST
    if left is not None:
        cap = min(cap, _MANIFEST_OVERHEAD + left * _ENTRY_BYTES)
    data = remote.read_prefix(key, cap + extra)
    if data is None or len(data) <= cap + extra:
        return data
    if cap < MAX_MANIFEST:
        raise ArchiveError(
            f"{where}: the manifest of {rref} is larger than {cap} bytes, too large to list "
            f"at most {left} files, folders and links (what max_members leaves); refused "
            "before reading it (raise max_members to allow it)"
        )
    raise RemoteIntegrityError(
        f"{where}: the manifest of {rref} is larger than {MAX_MANIFEST} bytes; the remote is "
        "damaged or hostile, nothing of it was added"
    )


def _counted(m: Manifest, limits: Limits | None) -> Manifest:
    """`m`, once its entries are counted against `limits` (ArchiveError past them)."""
    if limits is not None:
        for e in m.files:
            limits.count_member(f"{e.path} of {m.rref}")
            if e.type == "file":
                limits.declare(e.size, f"{e.path} of {m.rref}")
    return m


def read_manifest(
    remote: Remote,
    rref: RRef,
    where: str,
    dependency_of: str | None,
    limits: Limits | None = None,
) -> Manifest:
    """The remote's manifest of `rref`, parsed and checked (no signature involved), its
    entries counted against `limits`."""
    data = _read_bounded(remote, manifest_key(rref), rref, where, limits)
    if data is None:
        if dependency_of is None:
            raise UnknownReferenceError(f"the remote {remote.shown} does not hold {rref}", rref)
        raise RemoteIntegrityError(
            f"{where}: the manifest of {rref}, a dependency of {dependency_of}, is missing; the "
            "remote is incomplete (push it again from a store that has it); nothing was added"
        )
    return _counted(parse_manifest(data, rref, where, _members_left(limits)), limits)


def read_trusted_manifest(
    remote: Remote,
    trusted: TrustedKeys,
    rref: RRef,
    where: str,
    dependency_of: str | None,
    limits: Limits | None = None,
) -> Manifest:
    """The manifest of `rref`; with trusted keys, only one a trusted key signed. Its
    entries are counted against `limits` as it is read (ArchiveError past them).

    A signed manifest's signature is checked over its raw bytes before they
    are parsed, and covers everything the pull imports. A signature by an
    older lightstore covers the RRef alone: it is checked before the shared
    manifest is parsed, and the build times and metrics, which it does not
    cover, are dropped with a warning. A signature object that is damaged (too
    large, not a file) counts as one that does not verify. Raises
    UntrustedError otherwise.
    """
    if not trusted:
        return read_manifest(remote, rref, where, dependency_of, limits)
    names = sorted(trusted.keys)
    signed_seen = False
    too_large: ArchiveError | None = None
    for name in names:
        try:
            data = _read_bounded(
                remote, signed_manifest_key(rref, name), rref, where, limits, _SIGNATURE_LINE
            )
        except ArchiveError as e:
            signed_seen = True
            if not isinstance(e, RemoteIntegrityError):
                too_large = e  # the limits' refusal, unless another signature verifies
            continue
        if data is None:
            continue
        signed_seen = True
        body = trusted.signed_manifest(rref, name, data)
        if body is not None:
            return _counted(parse_manifest(body, rref, where, _members_left(limits)), limits)
    # Signed by an older lightstore (or the signed manifest is damaged): a
    # signature of the RRef alone, checked before the shared manifest is parsed.
    rref_seen = False
    for name in names:
        try:
            sig = remote.read(f"{signature_folder(rref)}/{name}", limit=4096)
        except RemoteIntegrityError:
            rref_seen = True
            continue
        if sig is None:
            continue
        rref_seen = True
        if trusted.valid(rref, name, sig):
            manifest, dropped = read_manifest(
                remote, rref, where, dependency_of, limits
            ).without_unsigned()
            if dropped and signed_seen:
                log.warning(
                    "%s: the signed manifest of %s does not verify (forged or damaged); it is "
                    "taken on %s's signature of its RRef alone, which does not cover its %s: "
                    "they were dropped",
                    where,
                    rref,
                    name,
                    " and ".join(dropped),
                )
            elif dropped:
                log.warning(
                    "%s: %s is signed by %s with an older lightstore (its RRef alone), which "
                    "does not cover its %s: they were dropped (push it again with this "
                    "lightstore and the key to sign them)",
                    where,
                    rref,
                    name,
                    " and ".join(dropped),
                )
            return manifest
    if too_large is not None:
        raise too_large
    keys = ", ".join(names)
    if signed_seen or rref_seen:
        raise UntrustedError(
            f"{where}: the signature of {rref} does not verify with the trusted key(s) "
            f"{keys}: forged or damaged"
        )
    if not remote.exists(manifest_key(rref)):
        read_manifest(remote, rref, where, dependency_of)  # raises: not on the remote
    raise UntrustedError(
        f"{where}: {rref} is not signed by any trusted key ({keys}) (push it with a trusted "
        "signing key, or trust its signer's key)"
    )


#: What a pull leaves out of several realizations, and reports: the ones whose
#: manifests, configs or signatures do not verify, whose closure holds such a one,
#: or that do not fit the limits next to the ones before them.
_PER_REALIZATION = (ArchiveError, UnknownReferenceError)
#: What is wrong with a realization (or derivation) itself, whatever else is pulled.
_OF_ITS_OWN = (RemoteIntegrityError, UnknownReferenceError)


@dataclass
class PullPlan:
    """What a pull will add: checked manifests and configs, and for each requested
    realization the new ones it needs; and the requested ones left out, with why."""

    derivations: dict[DRef, Config] = field(default_factory=dict)
    manifests: dict[RRef, Manifest] = field(default_factory=dict)
    needs: dict[RRef, set[RRef]] = field(default_factory=dict)
    failures: dict[RRef, LightstoreError] = field(default_factory=dict)

    def leave_out(self, bad: Mapping[RRef, LightstoreError]) -> None:
        """Leave out the requested realizations that need one of `bad` (with its error),
        and every realization only they need."""
        for root, needed in list(self.needs.items()):
            found = sorted(needed & set(bad))
            if found:
                self.failures[root] = bad[found[0]]
                del self.needs[root]
        kept = set().union(*self.needs.values()) if self.needs else set()
        self.manifests = {r: m for r, m in self.manifests.items() if r in kept}


def _read_config(remote: Remote, trusted: TrustedKeys, d: DRef, where: str) -> Config:
    data = remote.read(derivation_key(d))
    if data is None:
        raise RemoteIntegrityError(
            f"{where}: the config of {d} is missing on the remote; nothing of what needs it "
            "was added"
        )
    if trusted and not config_bytes_match(d, data):
        # Named by a signed config: checked by its hash before it is parsed.
        raise RemoteIntegrityError(
            f"{where}: the config of {d} on the remote does not hash to it; nothing of what "
            "needs it was added"
        )
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeError, ValueError, RecursionError):
        raise RemoteIntegrityError(f"{where}: the config of {d} is not JSON") from None
    try:
        return checked_config(d, raw, where)[1]
    except LightstoreError as e:
        raise RemoteIntegrityError(str(e)) from None


def plan_pull(
    store: LocalStore,
    remote: Remote,
    roots: list[RRef],
    trusted: TrustedKeys,
    where: str,
    limits: Limits | None = None,
) -> PullPlan:
    """The manifests of the closures of `roots` not yet in `store`, checked, their configs,
    and the roots left out with the reason.

    Each root is planned on its own: one whose closure does not verify, or does not
    fit `limits` next to the roots before it, is left out and the others are
    kept. Entries are counted while manifests are read, so a closure far over the
    limits is refused before it is read whole."""
    plan = PullPlan()
    bad: dict[RRef, LightstoreError] = {}
    bad_configs: dict[DRef, LightstoreError] = {}
    local: set[RRef] = set()
    local_drefs: set[DRef] = set()
    for root in roots:
        budget = copy.copy(limits)  # what is left once the roots kept so far are counted
        if budget is not None:
            budget.subject = (
                f"{where}: the closure of {root}, with the ones pulled before it,"
                if plan.manifests
                else f"{where}: the closure" + (f" of {root}" if len(roots) > 1 else "")
            )
        closure: dict[RRef, Manifest] = {}
        needed: set[RRef] = set()
        queue: collections.deque[tuple[RRef, str | None]] = collections.deque([(root, None)])
        try:
            while queue:
                rref, parent = queue.popleft()
                if rref in needed or rref in local:
                    continue
                if rref in bad:
                    raise bad[rref]
                m = plan.manifests.get(rref)
                if m is None:
                    if store.catalogue.known_rrefs([rref]):
                        local.add(rref)
                        continue
                    try:
                        m = read_trusted_manifest(remote, trusted, rref, where, parent, budget)
                    except _OF_ITS_OWN as e:
                        bad[rref] = e
                        raise
                    closure[rref] = m
                needed.add(rref)
                queue.extend((d, rref) for d in m.deps)
            configs = {m.dref: m.config for m in closure.values()}
            pending = [d for cfg in configs.values() for d in config_deps(cfg)]
            while pending:
                d = pending.pop()
                if d in configs or d in plan.derivations or d in local_drefs:
                    continue
                if d in bad_configs:
                    raise bad_configs[d]
                if store.catalogue.known_drefs([d]):
                    local_drefs.add(d)
                    continue
                try:
                    configs[d] = _read_config(remote, trusted, d, where)
                except _OF_ITS_OWN as e:
                    bad_configs[d] = e
                    raise
                pending.extend(config_deps(configs[d]))
        except _PER_REALIZATION as e:
            plan.failures[root] = e
            continue
        plan.manifests.update(closure)
        plan.derivations.update(configs)
        plan.needs[root] = needed
        limits = budget
    return plan


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
    roots = _resolve_remote_refs(remote, refs)
    plan = plan_pull(store, remote, roots, trusted, where, limits)
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
