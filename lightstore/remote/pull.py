"""Downloading closures of realizations from a remote cache, verified.

A pull reads the manifests of the closure first and checks each one (config
hashes to the DRef, context fits the config, paths stay inside and are UTF-8,
entries and context hash to the RRef, a trusted signature when keys are
configured), so a lying manifest is refused before any data moves. The
closure is bounded as archives are (`max_bytes`, `max_members`, the free
space), counting every path: a blob listed under many paths is written once
per path. Then the blobs are
downloaded into the store's temporary area (several at once, streamed), each
hashed and compared with its name; the realizations are assembled, their
folders hashed once more as archive imports do, and published by the same
atomic install (intents, build locks, one catalogue transaction). Anything
refused leaves the local store as it was.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
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


def read_manifest(remote: Remote, rref: RRef, where: str, dependency_of: str | None) -> Manifest:
    """The remote's manifest of `rref`, parsed and checked (no signature involved)."""
    data = remote.read(manifest_key(rref))
    if data is None:
        if dependency_of is None:
            raise UnknownReferenceError(f"the remote {remote.shown} does not hold {rref}", rref)
        raise RemoteIntegrityError(
            f"{where}: the manifest of {rref}, a dependency of {dependency_of}, is missing; the "
            "remote is incomplete (push it again from a store that has it); nothing was added"
        )
    return parse_manifest(data, rref, where)


def read_trusted_manifest(
    remote: Remote, trusted: TrustedKeys, rref: RRef, where: str, dependency_of: str | None
) -> Manifest:
    """The manifest of `rref`; with trusted keys, only one a trusted key signed.

    A signed manifest's signature is checked over its raw bytes before they
    are parsed, and covers everything the pull imports. A signature by an
    older lightstore covers the RRef alone: it is checked before the shared
    manifest is parsed, and the build times and metrics, which it does not
    cover, are dropped with a warning. Raises UntrustedError otherwise.
    """
    if not trusted:
        return read_manifest(remote, rref, where, dependency_of)
    names = sorted(trusted.keys)
    signed_seen = False
    for name in names:
        data = remote.read(signed_manifest_key(rref, name))
        if data is None:
            continue
        signed_seen = True
        body = trusted.signed_manifest(rref, name, data)
        if body is not None:
            return parse_manifest(body, rref, where)
    # Signed by an older lightstore (or the signed manifest is damaged): a
    # signature of the RRef alone, checked before the shared manifest is parsed.
    rref_seen = False
    for name in names:
        sig = remote.read(f"{signature_folder(rref)}/{name}", limit=4096)
        if sig is None:
            continue
        rref_seen = True
        if trusted.valid(rref, name, sig):
            manifest, dropped = read_manifest(remote, rref, where, dependency_of).without_unsigned()
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
#: manifests or signatures do not verify, or whose closure holds such a one.
_PER_REALIZATION = (RemoteIntegrityError, UnknownReferenceError)


def plan_pull(
    store: LocalStore, remote: Remote, roots: list[RRef], trusted: TrustedKeys, where: str
) -> tuple[dict[DRef, Config], dict[RRef, Manifest], dict[RRef, LightstoreError]]:
    """The manifests of the closures of `roots` not yet in `store`, checked, their configs,
    and the roots left out with the reason (their closure did not verify)."""
    read: dict[RRef, Manifest] = {}
    bad: dict[RRef, LightstoreError] = {}
    local: set[RRef] = set()
    manifests: dict[RRef, Manifest] = {}
    failures: dict[RRef, LightstoreError] = {}
    for root in roots:
        closure: dict[RRef, Manifest] = {}
        queue: collections.deque[tuple[RRef, str | None]] = collections.deque([(root, None)])
        try:
            while queue:
                rref, parent = queue.popleft()
                if rref in closure or rref in local:
                    continue
                if rref in bad:
                    raise bad[rref]
                if rref not in read:
                    if store.catalogue.known_rrefs([rref]):
                        local.add(rref)
                        continue
                    try:
                        read[rref] = read_trusted_manifest(remote, trusted, rref, where, parent)
                    except _PER_REALIZATION as e:
                        bad[rref] = e
                        raise
                closure[rref] = read[rref]
                queue.extend((d, rref) for d in read[rref].deps)
        except _PER_REALIZATION as e:
            failures[root] = e
            continue
        manifests.update(closure)
    derivations: dict[DRef, Config] = {m.dref: m.config for m in manifests.values()}
    pending = [d for cfg in list(derivations.values()) for d in config_deps(cfg)]
    while pending:
        d = pending.pop()
        if d in derivations or store.catalogue.known_drefs([d]):
            continue
        data = remote.read(derivation_key(d))
        if data is None:
            raise RemoteIntegrityError(
                f"{where}: the config of {d} is missing on the remote; nothing was added"
            )
        if trusted and not config_bytes_match(d, data):
            # Named by a signed config: checked by its hash before it is parsed.
            raise RemoteIntegrityError(
                f"{where}: the config of {d} on the remote does not hash to it; nothing was added"
            )
        try:
            import json

            raw = json.loads(data.decode("utf-8"))
        except (UnicodeError, ValueError, RecursionError):
            raise RemoteIntegrityError(f"{where}: the config of {d} is not JSON") from None
        try:
            derivations[d] = checked_config(d, raw, where)[1]
        except LightstoreError as e:
            raise RemoteIntegrityError(str(e)) from None
        pending.extend(config_deps(derivations[d]))
    return derivations, manifests, failures


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
    kind = UntrustedError if all(isinstance(e, UntrustedError) for e in errors) else None
    lines = "\n".join(f"  {r}: {e}" for r, e in sorted(failures.items()))
    error = (kind or RemoteIntegrityError)(
        f"{where}: added {len(added)} realization(s) that verify; left out {len(errors)} of "
        f"the realizations asked for, which do not (nothing of theirs was added):\n{lines}"
    )
    error.added = tuple(added)
    raise error


class _Downloader:
    """Downloads blobs into a folder with a pool of threads, checking each hash."""

    def __init__(self, remote: Remote, folder: str, jobs: int) -> None:
        self.remote = remote
        self.folder = folder
        self.jobs = max(1, jobs)

    def path(self, digest: str) -> str:
        return os.path.join(self.folder, digest)

    def _one(self, digest: str, size: int, used_by: str) -> int:
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

    def fetch(self, wanted: Mapping[str, tuple[int, str]], progress: Progress | None) -> None:
        total = sum(size for size, _ in wanted.values())
        done = 0

        def advanced(size: int) -> None:
            nonlocal done
            done += size
            if progress is not None:
                progress(done, total)

        with ThreadPoolExecutor(self.jobs, thread_name_prefix="pull") as pool:
            items = [(d, size, used) for d, (size, used) in wanted.items()]
            run_all(pool, self._one, items, advanced)


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
    filesystem; this is checked before anything is downloaded.
    With trusted keys (the call's, else ``$LIGHTSTORE_TRUSTED_KEYS`` and the
    store's ``trusted-keys`` file; an empty list requires none) every new
    realization must carry a valid signature by one of them, checked before
    its manifest is parsed. `held_locks`: (DRef, context hash) build locks
    the caller holds. Returns the RRefs added, dependencies first.

    A requested realization whose manifest or signature (or a dependency's)
    does not verify is left out; the others are added, then the refusal is
    raised: RemoteIntegrityError (UntrustedError when only signatures
    failed), its `added` naming what was added. With `refused` (a dict) the
    refusals are recorded there instead, by requested RRef.

    Raises UnknownReferenceError if the remote lacks a requested reference,
    RemoteIntegrityError if a file does not match its hash, ArchiveError if
    the limits are exceeded, UsageError for a limit that is not a number,
    RemoteError if the remote cannot be read; the store is then unchanged.
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
    derivations, manifests, failures = plan_pull(store, remote, roots, trusted, where)
    if refused is None:
        for failure in failures.values():
            if isinstance(failure, UnknownReferenceError):
                raise failure  # asked for something the remote does not hold
    if not manifests:
        if derivations:
            store.record_derivations(list(derivations.items()))
        return _left_out(failures, [], refused, where)
    incoming = {
        r: Incoming(r, m.dref, m.context, "", m.build_started, m.build_stopped, metrics=m.metrics)
        for r, m in manifests.items()
    }
    check_references(store, derivations, incoming, where)
    for r, m in sorted(manifests.items()):
        for e in m.files:
            limits.count_member(f"{e.path} of {r}")
            if e.type == "file":
                limits.declare(e.size, f"{e.path} of {r}")
    store.recover()
    area = store.new_build_area("pull")
    try:
        uses: collections.Counter[str] = collections.Counter()
        wanted: dict[str, tuple[int, str]] = {}
        for r, m in manifests.items():
            for e in m.files:
                if e.type == "file":
                    uses[e.blake3] += 1
                    wanted.setdefault(e.blake3, (e.size, f"the file {e.path!r} of {r}"))
        blobs = _Downloader(remote, os.path.join(area, "blobs"), jobs)
        os.mkdir(blobs.folder)
        blobs.fetch(wanted, progress)
        for i, (r, m) in enumerate(sorted(manifests.items())):
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
            check_references(store, derivations, incoming, where)
            added = add_to_store(store, derivations, incoming.values(), held_locks)
        return _left_out(failures, added, refused, where)
    except OSError as e:
        if isinstance(e, LightstoreError):
            raise
        raise StoreError(
            f"{where}: cannot assemble the realizations in {store.root}: {e.strerror or e}"
        ) from None
    finally:
        remove_tree(area)
