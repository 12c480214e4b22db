"""The files of realizations pushed to a remote: hashed, checked against what the
remote holds, and uploaded by a pool of threads (`Uploader`, used by `push`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from blake3 import blake3

from lightstore.foundation.errors import RemoteIntegrityError
from lightstore.foundation.failpoints import VARIABLE as FAILPOINT_VARIABLE
from lightstore.foundation.failpoints import failpoint
from lightstore.foundation.hashing import file_digest
from lightstore.remote._fs import Remote
from lightstore.remote._layout import (
    FileEntry,
    blob_key,
    local_entries,
)
from lightstore.remote._localcopy import WHOLE_FILE, read_upto
from lightstore.remote.transfers import Progress, run_all

#: With more new blobs than this in a realization, the remote's blob folders are
#: listed (one listing per shard, with sizes) instead of asking for each blob.
LIST_THRESHOLD = 128


class Uploader:
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
