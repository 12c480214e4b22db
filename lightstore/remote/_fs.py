"""A remote cache written safely, and downloaded from into the store.

`Remote` (reading is `RemoteReader`'s)

- writes objects so that a reader never sees a torn one: object stores
  (S3, GCS, Azure, memory) make a PUT visible only when complete; on other
  filesystems an object is written under a temporary name
  (``.tmp.<name>.<host>.<pid>.<random>``) and renamed; on a local folder,
  the first write into a folder removes the temporaries killed writers left
  there (`stale_temporary`);
- downloads never read more than the size the caller expects, plus one
  byte, hash what they write as they write it (the caller compares), and a
  failure to write the local copy is the store's, not the remote's;
- on a local folder, moves a file in one pass (`copy_hashed`);
- creates write-once objects exclusively where the filesystem can (a local
  folder: a hard link fails if the name exists), else checks first.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from blake3 import blake3

from lightstore.foundation.errors import RemoteIntegrityError, StoreError, disk_full
from lightstore.foundation.failpoints import VARIABLE as FAILPOINT_VARIABLE
from lightstore.foundation.failpoints import failpoint
from lightstore.foundation.files import pid_alive, write_all
from lightstore.remote._localcopy import CopyError, copy_hashed
from lightstore.remote._reading import _CHUNK, RemoteReader

#: Objects up to this size move in one request, held in memory; larger ones stream.
SMALL_OBJECT = 8 * 1024 * 1024
#: A temporary file of a writer untouched for this long is removed by the next push
#: that writes next to it, whoever left it (a killed push on another machine).
STALE_TEMPORARY = 3600.0


def _host_tag() -> str:
    """Names this machine in temporary files, so a push on it can tell that the process
    that left one has died. The boot id keeps two machines with one host name apart."""
    boot = ""
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id", "rb") as f:
        boot = f.read().decode("ascii", "replace").strip()
    return str(blake3(f"{socket.gethostname()}\0{boot}".encode()).hexdigest()[:12])


_HOST = _host_tag()


def stale_temporary(name: str, age: float) -> bool:
    """Whether the temporary file `name`, last written `age` seconds ago, is left over:
    old enough, or written on this machine by a process that no longer exists."""
    if age > STALE_TEMPORARY:
        return True
    parts = name.rsplit(".", 3)  # .tmp.<name>.<host>.<pid>.<random>
    if len(parts) == 4 and parts[1] == _HOST and parts[2].isdigit():
        pid = int(parts[2])
        return pid != os.getpid() and not pid_alive(pid)
    return False


def local_error(error: OSError, path: str) -> StoreError:
    """A failure to write `path` in the store (not the remote's fault): DiskFullError
    for a full disk, else a StoreError naming the file."""
    full = disk_full(error, f"downloading into {os.path.dirname(path)}")
    if full is not None:
        return full
    return StoreError(f"cannot write {path}: {error.strerror or error}")


class Remote(RemoteReader):
    """One remote cache: an fsspec filesystem and the root path of the cache in it.

    Raises RemoteError if the URL is malformed or its driver is not installed.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, storage_options)
        self._swept: set[str] = set()  # local folders whose leftover temporaries are gone
        self._folders: set[str] = set()  # local folders known to exist
        # Armed (by a crash test) before the remote is opened: looked up once, not per file.
        self._failpoints = bool(os.environ.get(FAILPOINT_VARIABLE))
        # Temporary names: a random part per Remote, then a counter (no entropy per file).
        self._token = secrets.token_hex(4)
        self._serial = itertools.count()

    # -- writing -----------------------------------------------------------

    def _temporary(self, key: str) -> str:
        folder, _, name = key.rpartition("/")
        unique = f"{self._token}{next(self._serial):x}"
        tmp = f".tmp.{name}.{_HOST}.{os.getpid()}.{unique}"
        return f"{folder}/{tmp}" if folder else tmp

    def _sweep(self, folder: str) -> None:
        """Remove the temporary files killed writers left in the local `folder` (once
        per folder and Remote): see `stale_temporary`."""
        if folder in self._swept:
            return
        self._swept.add(folder)
        now = time.time()
        try:
            with os.scandir(folder) as entries:
                found = [e for e in entries if e.name.startswith(".tmp.")]
        except OSError:
            return  # not there yet: nothing to sweep
        for e in found:
            with contextlib.suppress(OSError):
                if stale_temporary(e.name, now - e.stat(follow_symlinks=False).st_mtime):
                    os.unlink(e.path)

    def write_bytes(self, key: str, data: bytes, exclusive: bool = False) -> bool:
        """Write a small object; with `exclusive`, never replace an existing one.

        Returns False if `exclusive` and the object already existed.
        """
        if self.local:
            return self._local_write(key, data=data, exclusive=exclusive)
        with self.guard("cannot write to"):
            if not exclusive:
                self.fs.pipe_file(self.path(key), data)
                return True
            if self.fs.exists(self.path(key)):
                return False
            try:
                # S3 (If-None-Match) and memory:// create exclusively; drivers
                # without the mode fall back to the check above.
                self.fs.pipe_file(self.path(key), data, mode="create")
            except FileExistsError:
                return False
            except TypeError:
                self.fs.pipe_file(self.path(key), data)
        return True

    def upload_file(self, key: str, local_path: str, size: int | None = None) -> None:
        """Upload a local file as `key`: small ones in one request, large ones streamed
        by the driver in chunks (bounded memory)."""
        if self.local:
            self._local_write(key, source=local_path, exclusive=False)
            return
        with self.guard("cannot upload to"):
            target = self.path(key) if self.atomic_put else self.path(self._temporary(key))
            if size is not None and size <= SMALL_OBJECT:
                with open(local_path, "rb") as f:
                    self.fs.pipe_file(target, f.read())
            else:
                self.fs.put_file(local_path, target)
            if not self.atomic_put:
                self.fs.mv(target, self.path(key))

    def stage_file(self, folder: str, local_path: str, size: int) -> tuple[str, int, str]:
        """Copy the file `local_path` of the store into a temporary object in `folder` of
        this local remote, hashing it on the way (one read of it): its temporary key, the
        bytes copied and their blake3 (hex). `commit_staged` names it, `discard_staged`
        drops it.

        Raises OSError if the local file cannot be read (the store's problem),
        RemoteError if the remote cannot be written.
        """
        tmp_key = self._temporary(f"{folder}/staged")
        tmp = self.path(tmp_key)
        src = os.open(local_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                dst = self._create(tmp)
            except OSError as e:
                raise self.error("cannot write to", e) from None
            try:
                count, digest = copy_hashed(src, dst, size + 1, hash_written=False)
                os.fchmod(dst, 0o444)
            except CopyError as e:
                self._unlink(tmp)
                if e.source:
                    raise e.error from None
                raise self.error("cannot write to", e.error) from None
            except OSError as e:
                self._unlink(tmp)
                raise self.error("cannot write to", e) from None
            finally:
                os.close(dst)
        finally:
            os.close(src)
        return tmp_key, count, digest.hex()

    def commit_staged(self, tmp_key: str, key: str) -> None:
        """Name a staged temporary object `key` (replacing what is there)."""
        target = self.path(key)
        tmp = self.path(tmp_key)
        try:
            self._prepare(os.path.dirname(target))
            if self._failpoints:
                failpoint(f"remote:temporary:{key.split('/', 1)[0]}")
            try:
                os.replace(tmp, target)
            except FileNotFoundError:  # the target's folder was removed since
                self._folders.discard(os.path.dirname(target))
                self._prepare(os.path.dirname(target))
                os.replace(tmp, target)
        except OSError as e:
            self._unlink(tmp)
            raise self.error("cannot write to", e) from None

    def discard_staged(self, tmp_key: str) -> None:
        """Remove a staged temporary object."""
        self._unlink(self.path(tmp_key))

    @staticmethod
    def _unlink(path: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)

    def download_file(self, key: str, local_path: str, size: int | None = None) -> tuple[int, str]:
        """Download `key` into the new local file `local_path`, hashing it as it is
        written: the bytes written and their blake3 (hex), for the caller to compare.
        From a local folder in one pass (see `copy_hashed`); elsewhere small objects in
        one request, large ones streamed in bounded reads.

        Never more than `size` + 1 bytes are read (a hostile remote may serve a huge
        object under a small manifest entry, or swap it while it is read): the caller
        sees a wrong size and refuses it. A failure to write `local_path` is the
        store's (DiskFullError or StoreError), not the remote's.
        """
        limit = sys.maxsize if size is None else size + 1
        try:
            fd = os.open(local_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise local_error(e, local_path) from None
        try:
            count, digest = self._fill(key, fd, limit, local_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        try:
            os.close(fd)
        except OSError as e:
            raise local_error(e, local_path) from None
        return count, digest.hex()

    def _fill(self, key: str, out: int, limit: int, local_path: str) -> tuple[int, bytes]:
        if self.local:
            with self.guard("cannot read (download)"):
                src = self._open_local_fd(key)
            try:
                return copy_hashed(src, out, limit, hash_written=True)
            except CopyError as e:
                if e.source:
                    raise self.error("cannot read (download)", e.error) from None
                raise local_error(e.error, local_path) from None
            finally:
                os.close(src)
        if limit <= SMALL_OBJECT:
            with self.guard("cannot read (download)"):
                data = self.fs.cat_file(self.path(key), start=0, end=limit)[:limit]
            self._write_local(out, data, local_path)
            return len(data), blake3(data).digest()
        with self.guard("cannot read (download)"):
            source = self._open_streamed(key)
        with source:
            return self._copy(key, source.read, out, limit, local_path)

    def _open_streamed(self, key: str) -> Any:
        """A remote object opened so that each read asks for exactly its bytes (no
        read-ahead past what the caller wants)."""
        path = self.path(key)
        try:
            return self.fs.open(path, "rb", block_size=_CHUNK, cache_type="none")
        except TypeError:  # a driver without these options
            return self.fs.open(path, "rb")

    def _copy(
        self,
        key: str,
        read: Callable[[int], bytes],
        out: int,
        limit: int,
        local_path: str,
    ) -> tuple[int, bytes]:
        """Copy at most `limit` bytes from `read` into `out`, hashing them: how many, and
        their blake3 (errors writing `out` are the store's, see `local_error`)."""
        h = blake3()
        done = 0
        while done < limit:
            want = min(_CHUNK, limit - done)
            with self.guard("cannot read (download)"):
                try:
                    chunk = read(want)
                except OSError as e:
                    # s3fs and fsspec: the object's ETag changed since it was opened.
                    if type(e).__name__ == "FileExpired":
                        raise RemoteIntegrityError(
                            f"the object {key} of {self.shown} changed while it was read; "
                            "nothing of it was added"
                        ) from None
                    raise
            if not chunk:
                break
            chunk = chunk[:want]
            self._write_local(out, chunk, local_path)
            h.update(chunk)
            done += len(chunk)
        return done, h.digest()

    @staticmethod
    def _write_local(out: int, data: bytes, local_path: str) -> None:
        try:
            write_all(out, data)
        except OSError as e:
            raise local_error(e, local_path) from None

    def _prepare(self, folder: str) -> None:
        """Make a local folder exist, and sweep it (both once per folder and Remote)."""
        if folder in self._folders:
            return
        self._sweep(folder)
        os.makedirs(folder, exist_ok=True)
        self._folders.add(folder)

    def _create(self, path: str) -> int:
        """Create the new local file `path` (its folder made if need be) for writing."""
        folder = os.path.dirname(path)
        self._prepare(folder)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            return os.open(path, flags, 0o644)
        except FileNotFoundError:  # removed since this Remote made it
            self._folders.discard(folder)
            self._prepare(folder)
            return os.open(path, flags, 0o644)

    def _local_write(
        self, key: str, *, data: bytes | None = None, source: str | None = None, exclusive: bool
    ) -> bool:
        """Write on a local filesystem: a temporary file, then a link (exclusive) or a rename."""
        target = self.path(key)
        tmp = self.path(self._temporary(key))
        try:
            fd = self._create(tmp)
        except OSError as e:
            raise self.error("cannot write to", e) from None
        try:
            try:
                if data is not None:
                    write_all(fd, data)
                elif source is not None:
                    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        copy_hashed(src, fd, sys.maxsize, hash_written=False)
                    finally:
                        os.close(src)
                os.fchmod(fd, 0o444)
            finally:
                os.close(fd)
            if self._failpoints:
                failpoint(f"remote:temporary:{key.split('/', 1)[0]}")
            if exclusive:
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, target)
                tmp = ""
            return True
        except CopyError as e:
            raise self.error("cannot write to", e.error) from None
        except OSError as e:
            raise self.error("cannot write to", e) from None
        finally:
            if tmp:
                self._unlink(tmp)


def open_remote(remote: Any, storage_options: Mapping[str, Any] | None = None) -> Remote:
    """A Remote for a URL (or the Remote itself)."""
    return remote if isinstance(remote, Remote) else Remote(remote, storage_options)
