"""Uploading closures of realizations to a remote cache.

Before anything is uploaded, every realization to send is checked as `pack`
checks it: a symlink that is absolute or leaves its realization, or a name
that is not UTF-8, is refused (every pull would refuse it).

Realizations go dependencies first; for each one its files (and its build log,
see `lightstore.exchange.logs`) are hashed and uploaded (several at once, each streamed by the driver), skipping blobs the
remote already holds with the right size, then its manifest, then its index
marker and signatures (its own signed manifest, and a signature of the RRef
for older readers). To a local folder each file is read once: hashed as it
is copied (a small one read whole, a large one copied by the kernel into a
temporary file while a second thread hashes it), then named by its hash, or
dropped if the remote has that blob. A blob that is skipped is hashed on the
remote too when that is cheap (a local remote), or with `repair=True`: a
damaged one is uploaded again. A realization whose manifest is already there is skipped,
apart from signing it, unless `repair=True` (then its blobs are checked as
well, and its manifest and derivation records are written again if they do
not verify). Signatures are per key name: one under the key's name that the
key did not make (a rotated key, junk) is replaced. Every write is
idempotent and write-once objects are never replaced (damaged ones
excepted), so pushes from many machines can overlap and a killed push is
finished by running it again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from blake3 import blake3

from lightstore.exchange._ingest import annotations_of, closure_of, topological_rrefs
from lightstore.exchange._tree import check_links
from lightstore.exchange.logs import log_of
from lightstore.foundation.config import canonical_json, mkconfig
from lightstore.foundation.errors import IntegrityError, RemoteIntegrityError
from lightstore.foundation.failpoints import VARIABLE as FAILPOINT_VARIABLE
from lightstore.foundation.failpoints import failpoint
from lightstore.foundation.hashing import context_hash, file_digest, realization_hash
from lightstore.foundation.refs import DRef, RRef, rref2dref, unrref
from lightstore.remote._fs import WHOLE_FILE, Remote, open_remote, read_upto
from lightstore.remote._layout import (
    FileEntry,
    Manifest,
    blob_key,
    config_bytes_match,
    derivation_key,
    ensure_marker,
    entries_digest,
    index_key,
    local_entries,
    manifest_key,
    parse_manifest,
    signature_folder,
    signed_manifest_key,
)
from lightstore.remote._sign import SigningKey, TrustedKeys, signing_key_for
from lightstore.remote.transfers import DEFAULT_JOBS, Progress, expand_refs, run_all
from lightstore.store import LocalStore

log = logging.getLogger("lightstore")


@dataclass
class PushReport:
    """What a push did."""

    realizations: list[RRef]  # the closure that is now on the remote
    uploaded: list[RRef]  # realizations whose manifest this push wrote
    blobs_uploaded: int = 0
    bytes_uploaded: int = 0
    blobs_repaired: int = 0  # damaged blobs of the remote found and uploaded again
    records_repaired: int = 0  # damaged manifests and derivation records written again
    signatures_replaced: int = 0  # signatures under the key's name that it did not make


def local_rrefs(store: LocalStore, refs: Iterable[str]) -> list[RRef]:
    """RRefs for `refs`: an RRef stands for itself, a DRef for all its local realizations."""
    return expand_refs(
        refs, store.catalogue.realizations_any_context, f"in the store {store.root} to push"
    )


#: With more new blobs than this in a realization, the remote's blob folders are
#: listed (one listing per shard, with sizes) instead of asking for each blob.
LIST_THRESHOLD = 128


class _Uploader:
    """Hashes, checks and uploads the files of realizations with a pool of threads.

    Blobs uploaded (or found) by this push are remembered, so a file that
    repeats within or across realizations is sent once.
    """

    def __init__(
        self, remote: Remote, jobs: int, progress: Progress | None, total: int, verify: bool
    ) -> None:
        self.remote = remote
        self.verify = verify
        self.jobs = max(1, jobs)
        self.pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="push")
        # Small files of a local disk go through this thread (see `run_all`).
        self.here_below = WHOLE_FILE if remote.local and not remote.networked else 0
        self.failpoints = bool(os.environ.get(FAILPOINT_VARIABLE))  # armed before a push
        self.lock = threading.Lock()
        self.present: set[str] = set()
        self.progress = progress
        self.total = total
        self.done_bytes = 0
        self.blobs_uploaded = 0
        self.bytes_uploaded = 0
        self.blobs_repaired = 0

    def _run(
        self,
        fn: Callable[..., Any],
        items: list[Any],
        on_done: Callable[[Any], None],
        weight: Callable[[Any], int] | None = None,
        here: Callable[[Any], bool] | None = None,
    ) -> None:
        run_all(self.pool, fn, items, on_done, weight, self.jobs, here)

    def _hash(self, index: int, path: str, size: int) -> tuple[int, str]:
        return index, file_digest(path, size).hex()

    def _existing(self, digests: list[str], sizes: dict[str, int]) -> set[str]:
        """Which blobs the remote holds intact.

        A wrong size is a torn write by a killed pusher on a filesystem without
        atomic PUT: it is uploaded again. With `verify`, a blob of the right size
        is hashed as well, so a damaged one is uploaded again too.
        """
        found: set[str] = set()
        if len(digests) > LIST_THRESHOLD:
            shards = sorted({d[:2] for d in digests})
            listed: dict[str, int] = {}
            self._run(
                lambda shard: self.remote.list_sizes(f"blobs/{shard}"),
                [(sh,) for sh in shards],
                listed.update,
            )
            found = {d for d in digests if listed.get(d) == sizes[d]}
        else:

            def check(d: str) -> str | None:
                return d if self.remote.size(blob_key(d)) == sizes[d] else None

            self._run(check, [(d,) for d in digests], lambda d: found.add(d) if d else None)
        if not self.verify:
            return found
        intact: set[str] = set()
        self._run(
            lambda d: d if self._hashes_to(d) else None,
            [(d,) for d in sorted(found)],
            lambda d: intact.add(d) if d else None,
        )
        self.blobs_repaired += len(found) - len(intact)
        return intact

    def _hashes_to(self, digest: str) -> bool:
        """Whether the remote's blob `digest` hashes to its name."""
        try:
            return self.remote.digest(blob_key(digest)) == digest
        except RemoteIntegrityError:  # not a regular file: replaced like a damaged one
            return False

    def _upload(self, digest: str, path: str, size: int) -> int:
        self.remote.upload_file(blob_key(digest), path, size)
        return self._uploaded(size)

    def _uploaded(self, size: int) -> int:
        with self.lock:
            self.blobs_uploaded += 1
            self.bytes_uploaded += size
            count = self.blobs_uploaded
        if self.failpoints:
            failpoint(f"push:blob:{count}")
        return size

    def _claim(self, digest: str) -> bool:
        """Whether this thread is the one to upload `digest` (no other one of this push
        has it, or had it)."""
        with self.lock:
            if digest in self.present:
                return False
            self.present.add(digest)
            return True

    def _intact_on_local(self, digest: str, size: int) -> bool:
        """Whether the local remote holds the blob `digest` intact (with `verify`, hashed)."""
        if self.remote.local_size(blob_key(digest)) != size:
            return False  # missing, or torn by a killed pusher
        if not self.verify or self._hashes_to(digest):
            return True
        with self.lock:
            self.blobs_repaired += 1
        return False

    def _put_local(self, index: int, path: str, size: int) -> tuple[int, str, int, int]:
        """Hash and upload one file to a local remote in one read of it: (its index, blob,
        size, bytes uploaded). Small files are read whole; larger ones are copied into a
        temporary object while they are hashed, then named (or dropped if the remote has
        the blob)."""
        remote = self.remote
        if size < WHOLE_FILE:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = read_upto(fd, size + 1)
            finally:
                os.close(fd)
            digest, count = blake3(data).hexdigest(), len(data)
            if not self._claim(digest) or self._intact_on_local(digest, count):
                return index, digest, count, 0
            remote.write_bytes(blob_key(digest), data)
        else:
            tmp, count, digest = remote.stage_file("blobs", path, size)
            if not self._claim(digest) or self._intact_on_local(digest, count):
                remote.discard_staged(tmp)
                return index, digest, count, 0
            remote.commit_staged(tmp, blob_key(digest))
        return index, digest, count, self._uploaded(count)

    def _progressed(self, size: int) -> None:
        self.done_bytes += size
        if self.progress is not None and size:
            self.progress(self.done_bytes, self.total)

    def entries(self, folder: str) -> list[FileEntry]:
        """Every entry of the folder, with its blob on the remote; in the folder's order."""
        entries = local_entries(folder)
        paths = {
            i: os.path.join(folder, *e.path.split("/"))
            for i, e in enumerate(entries)
            if e.type == "file"
        }
        if self.remote.local:

            def placed(result: tuple[int, str, int, int]) -> None:
                i, digest, size, sent = result
                e = entries[i]
                entries[i] = FileEntry(e.path, "file", e.executable, size, digest)
                self._progressed(sent)

            items = [(i, path, entries[i].size) for i, path in paths.items()]
            small = self.here_below
            self._run(
                self._put_local,
                items,
                placed,
                weight=lambda item: item[2],
                here=lambda item: item[2] < small,
            )
            return entries

        def hashed(result: tuple[int, str]) -> None:
            i, digest = result
            e = entries[i]
            entries[i] = FileEntry(e.path, "file", e.executable, e.size, digest)

        items = [(i, path, entries[i].size) for i, path in paths.items()]
        self._run(self._hash, items, hashed, weight=lambda item: item[2])
        sizes: dict[str, int] = {}
        source: dict[str, str] = {}
        for i, path in paths.items():
            sizes[entries[i].blake3] = entries[i].size
            source.setdefault(entries[i].blake3, path)
        new = sorted(d for d in sizes if d not in self.present)
        missing = sorted(set(new) - self._existing(new, sizes))
        self._run(self._upload, [(d, source[d], sizes[d]) for d in missing], self._progressed)
        self.present.update(new)
        return entries

    def log_blob(self, path: str, size: int) -> tuple[str, int]:
        """Upload a build log as a blob unless the remote has it: (its blake3, its size)."""
        digest = file_digest(path, size).hex()
        if self._claim(digest) and self.remote.size(blob_key(digest)) != size:
            self._upload(digest, path, size)
        return digest, size

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def push(
    store: LocalStore,
    url: Any,
    refs: Iterable[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    signing_key: Any = None,
    jobs: int = DEFAULT_JOBS,
    progress: Progress | None = None,
    repair: bool = False,
) -> PushReport:
    """Upload the closures of `refs` (RRefs, or DRefs for all their realizations) to `url`.

    `signing_key` (a SigningKey, its secret text or a key file; default
    ``$LIGHTSTORE_SIGNING_KEY``, False for none) signs every realization of
    the closure, including the ones already on the remote; a signature under
    the key's name that the key did not make is replaced (with a warning),
    one it made stays. Blobs the remote already holds are hashed there when
    the remote is local; `repair` hashes them on any remote (a download each)
    and checks the realizations already on the remote too: damaged blobs are
    uploaded again, and manifests and derivation records that do not verify
    are written again. Returns a PushReport.

    Raises UnknownReferenceError for a reference the store does not hold,
    ArchiveError, before anything is uploaded, for a realization no pull
    would accept (a symlink that is absolute or leaves it, a name that is not
    UTF-8), IntegrityError if a local realization no longer hashes to its
    RRef (run `lightstore verify`), RemoteError if the remote cannot be written.
    """
    remote = open_remote(url, storage_options)
    key = signing_key_for(signing_key)
    requested = local_rrefs(store, refs)
    where = f"push to {remote.shown}"
    with store.realizing():  # gc keeps what is being read
        closure, drefs = closure_of(store, requested)
        contexts = {r: store.context(r) for r in closure}
        order = topological_rrefs(
            {r: [x for v in contexts[r].values() for x in v] for r in closure}
        )
        present = {r for r in order if remote.exists(manifest_key(r))}
        # With `repair`, a manifest that does not verify is written again.
        damaged = {r for r in present if repair and not _manifest_intact(remote, r, where)}
        todo = [r for r in order if repair or r not in present]
        unsigned: set[RRef] = set()
        forged: set[RRef] = set()
        if key is not None:
            unsigned, forged = _signatures_to_write(remote, key, order)
        for r in order:
            if r in unsigned or r in todo:
                _check_pushable(store, r)
        ensure_marker(remote, create=True)
        report = PushReport(closure, [])
        for d in drefs:
            dkey = derivation_key(d)
            data = canonical_json(store.config(d)).encode("utf-8")
            if not remote.exists(dkey):
                remote.write_bytes(dkey, data, exclusive=True)
            elif repair and not _derivation_intact(remote, d):
                remote.write_bytes(dkey, data)
                report.records_repaired += 1
        total = sum(
            int((store.catalogue.realization_record(r) or {}).get("size") or 0) for r in todo
        )  # an upper bound: blobs the remote has are not sent
        uploader = _Uploader(remote, jobs, progress, total, verify=repair or remote.local)
        try:
            for r in order:
                ctx = {str(k): sorted(str(x) for x in v) for k, v in contexts[r].items()}
                ctx_hash = context_hash(ctx)
                manifest = None
                if r not in present or repair:
                    written, manifest = _push_one(
                        store, remote, uploader, r, ctx, ctx_hash, replace=r in damaged
                    )
                    if written and r in damaged:
                        report.records_repaired += 1
                    elif written:
                        report.uploaded.append(r)
                # Markers and signatures after the manifest, and re-written if a
                # killed push wrote the manifest but not them.
                if r not in present or not remote.exists(index_key(r, ctx_hash)):
                    remote.write_bytes(index_key(r, ctx_hash), b"", exclusive=True)
                    failpoint("push:indexed")
                if key is not None and r in unsigned:
                    manifest = (
                        manifest
                        or _push_one(store, remote, uploader, r, ctx, ctx_hash, write=False)[1]
                    )
                    signed = key.sign_manifest(r, manifest)
                    if r in forged:
                        remote.write_bytes(signed_manifest_key(r, key.name), signed)
                    else:
                        remote.write_bytes(signed_manifest_key(r, key.name), signed, exclusive=True)
                if key is not None and _sign_rref(remote, key, r):
                    forged.add(r)
        finally:
            uploader.close()
        if key is not None and forged:
            report.signatures_replaced = len(forged)
            log.warning(
                "%s: replaced the signatures under the key name %s of %d realization(s), which "
                "this key did not make (a rotated key, junk, or another signer using the same "
                "name: give each signer its own key name)",
                where,
                key.name,
                len(forged),
            )
        report.blobs_uploaded = uploader.blobs_uploaded
        report.bytes_uploaded = uploader.bytes_uploaded
        report.blobs_repaired = uploader.blobs_repaired
        return report


def _manifest_intact(remote: Remote, rref: RRef, where: str) -> bool:
    """Whether the remote's manifest of `rref` verifies (it may be another store's)."""
    try:
        data = remote.read(manifest_key(rref))
        if data is None:
            return True  # removed meanwhile: written as new
        parse_manifest(data, rref, where)
    except RemoteIntegrityError:
        return False
    return True


def _derivation_intact(remote: Remote, dref: DRef) -> bool:
    """Whether the remote's record of `dref` is its canonical config (what pulls check)."""
    try:
        data = remote.read(derivation_key(dref))
    except RemoteIntegrityError:
        return False
    return data is None or config_bytes_match(dref, data)


def _signatures_to_write(
    remote: Remote, key: SigningKey, order: list[RRef]
) -> tuple[set[RRef], set[RRef]]:
    """The realizations `key` must sign (no signed manifest under its name that verifies
    with it), and among them those where another key's (or junk) is in the way.

    Signatures are per key name: one under this name that this key made stays (it may
    vouch for another store's build times); anything else there is replaced, else
    every pull that trusts this key would find it forged."""
    mine = TrustedKeys([key.public])
    unsigned: set[RRef] = set()
    forged: set[RRef] = set()
    for r in order:
        try:
            data = remote.read(signed_manifest_key(r, key.name))
        except RemoteIntegrityError:  # not a file, or far too large
            data = b""
        if data is None:
            unsigned.add(r)
        elif mine.signed_manifest(r, key.name, data) is None:
            unsigned.add(r)
            forged.add(r)
    return unsigned, forged


def _sign_rref(remote: Remote, key: SigningKey, rref: RRef) -> bool:
    """Write `key`'s signature of `rref` alone (what older lightstores check) unless one
    by `key` is there; whether it replaced one that `key` did not make."""
    sig_key = f"{signature_folder(rref)}/{key.name}"
    try:
        old = remote.read(sig_key, limit=4096)
    except RemoteIntegrityError:  # not a file, or far too large
        old = b""
    if old is None:
        remote.write_bytes(sig_key, key.sign(rref).encode("ascii"), exclusive=True)
        return False
    if TrustedKeys([key.public]).valid(rref, key.name, old):
        return False
    remote.write_bytes(sig_key, key.sign(rref).encode("ascii"))
    return True


#: What to do about a name a remote cannot hold.
_UTF8_HINT = (
    "remote caches hold UTF-8 names only (a tar archive keeps any name: `lightstore pack X.tar`)"
)


def _damaged(rref: RRef, e: OSError) -> IntegrityError:
    return IntegrityError(
        f"{rref} is recorded but its folder is damaged ({e.strerror}: {e.filename}); "
        "run `lightstore verify --repair`"
    )


def _check_pushable(store: LocalStore, rref: RRef) -> None:
    """Refuse what every pull would refuse, with the check `pack` makes (and UTF-8 names)."""
    try:
        check_links(
            store.rref_path(rref), f"cannot push {rref}", portable=True, utf8_hint=_UTF8_HINT
        )
    except OSError as e:
        raise _damaged(rref, e) from None


def _push_one(
    store: LocalStore,
    remote: Remote,
    uploader: _Uploader,
    rref: RRef,
    ctx: dict[str, list[str]],
    ctx_hash: str,
    write: bool = True,
    replace: bool = False,
) -> tuple[bool, bytes]:
    """Upload the blobs of `rref`, then (if `write`) its manifest (over a damaged one if
    `replace`); whether this push wrote the manifest, and the manifest."""
    folder = store.rref_path(rref)
    try:
        entries = uploader.entries(folder)
    except FileNotFoundError as e:
        raise _damaged(rref, e) from None
    if realization_hash(ctx_hash, entries_digest(entries)) != unrref(rref)[0]:
        raise IntegrityError(
            f"{rref} no longer hashes to its RRef in the store {store.root}; it was not pushed "
            "(run `lightstore verify --check-contents`)"
        )
    record = store.catalogue.realization_record(rref) or {}
    found = log_of(store, rref)
    try:
        log_blob = uploader.log_blob(*found) if found is not None else None
    except FileNotFoundError:
        log_blob = None  # forgotten meanwhile: the realization goes without it
    manifest = Manifest(
        rref,
        rref2dref(rref),
        mkconfig(store.config(rref2dref(rref))),
        ctx,
        entries,
        record.get("build_started"),
        record.get("build_stopped"),
        annotations_of(store, [rref])[rref],
        log_blob,
    )
    data = manifest.to_bytes()
    if not write:
        return False, data
    written = remote.write_bytes(manifest_key(rref), data, exclusive=not replace)
    failpoint("push:manifest")
    return written, data
