"""A remote cache as seen through fsspec: keys under one root, written safely.

Every operation on the remote goes through `Remote`, which

- opens the fsspec filesystem for a URL with per-remote options (the
  driver's usual configuration applies otherwise: for S3 the AWS variables,
  profiles and instance roles);
- writes objects so that a reader never sees a torn one: object stores
  (S3, GCS, Azure, memory) make a PUT visible only when complete; on other
  filesystems an object is written under a temporary name
  (``.tmp.<name>.<host>.<pid>.<random>``) and renamed; on a local folder,
  the first write into a folder removes the temporaries killed writers left
  there (`stale_temporary`);
- downloads never read more than the size the caller expects, plus one
  byte, hash what they write as they write it (the caller compares), and a
  failure to write the local copy is the store's, not the remote's;
- on a local folder, a file moves in one pass: small ones in one read and
  one write, large ones copied by the kernel (`copy_file_range`) window by
  window while another thread hashes the window before (`copy_hashed`);
- creates write-once objects exclusively where the filesystem can (a local
  folder: a hard link fails if the name exists), else checks first;
- turns driver errors into RemoteError with credentials removed: URLs lose
  their user info and option values never appear in a message.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import mmap
import os
import re
import secrets
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from blake3 import blake3

from lightstore.foundation.errors import (
    LightstoreError,
    RemoteError,
    RemoteIntegrityError,
    StoreError,
    disk_full,
)
from lightstore.foundation.failpoints import VARIABLE as FAILPOINT_VARIABLE
from lightstore.foundation.failpoints import failpoint
from lightstore.foundation.files import pid_alive
from lightstore.remote._redact import redact_url, secrets_of

#: Protocols whose writes become visible atomically when complete (a PUT).
_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"}
#: Objects up to this size move in one request, held in memory; larger ones stream.
SMALL_OBJECT = 8 * 1024 * 1024
#: What one read of a streamed download asks for (one ranged request on object stores).
_CHUNK = 8 * 1024 * 1024
#: Local files up to this size move in one read and one write (held in memory); larger
#: ones are copied by the kernel in windows of `_WINDOW`, hashed by a second thread.
WHOLE_FILE = 1024 * 1024
_WINDOW = 8 * 1024 * 1024
#: Errors of copy_file_range that mean "not between these files": copied through memory.
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}
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


class CopyError(Exception):
    """A copy between two local files failed: `error` on its `source` side, or its
    destination's."""

    def __init__(self, error: OSError, source: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.source = source

    def __reduce__(self) -> tuple[type[CopyError], tuple[OSError, bool]]:
        return (CopyError, (self.error, self.source))  # pickles (a pool's worker raises it)


#: Errors of a kernel copy that are the destination's (copy_file_range does not say which
#: side failed).
_DESTINATION_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


def read_upto(fd: int, limit: int) -> bytes:
    """At most `limit` bytes from `fd` (fewer only at its end)."""
    data = os.read(fd, limit)
    if len(data) == limit or not data:
        return data
    parts = [data]
    got = len(data)
    while got < limit:
        more = os.read(fd, limit - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of `data` to `fd` (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _kernel_copy(src: int, dst: int, want: int) -> int | None:
    """Bytes copied by the kernel (copy_file_range), or None where it cannot copy
    between these files."""
    try:
        return os.copy_file_range(src, dst, want)
    except OSError as e:
        if e.errno in _NO_KERNEL_COPY:
            return None
        raise CopyError(e, source=e.errno not in _DESTINATION_ERRNOS) from None


def _memory_copy(src: int, dst: int, want: int) -> int:
    try:
        data = os.read(src, want)
    except OSError as e:
        raise CopyError(e, source=True) from None
    try:
        write_all(dst, data)
    except OSError as e:
        raise CopyError(e, source=False) from None
    return len(data)


def _hash_window(h: blake3, fd: int, offset: int, length: int) -> None:
    """Feed bytes [offset, offset + length) of the file `fd` to `h`, through a memory map
    (no copy) where the file system allows one."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    try:
        window = mmap.mmap(
            fd, offset + length - start, mmap.MAP_SHARED | _POPULATE, mmap.PROT_READ, offset=start
        )
    except (OSError, ValueError):
        h.update(os.pread(fd, length, offset))
        return
    with window, memoryview(window) as view, view[offset - start :] as part:
        h.update(part)


def copy_hashed(src: int, dst: int, limit: int, hash_written: bool) -> tuple[int, bytes]:
    """Copy at most `limit` bytes from the file `src` into the new file `dst` (both at
    offset 0) in one pass; return how many, with the blake3 of those bytes.

    With `hash_written`, what is hashed is what `dst` holds (it must be open for reading
    too): for a source that may change meanwhile, such as a remote's file. Otherwise the
    source is hashed (a store's file, which does not change). Up to `WHOLE_FILE` bytes
    are read whole; more are copied by the kernel, window by window, while a second
    thread hashes the window before through a memory map: memory stays bounded by the
    window, and copying and hashing use two cores. Raises CopyError.
    """
    if limit <= WHOLE_FILE:
        try:
            data = read_upto(src, limit)
        except OSError as e:
            raise CopyError(e, source=True) from None
        try:
            write_all(dst, data)
        except OSError as e:
            raise CopyError(e, source=False) from None
        return len(data), blake3(data).digest()
    h = blake3()
    hashed = dst if hash_written else src
    done = 0
    kernel = True
    pending: Future[None] | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="hash") as hasher:
        while done < limit:
            want = min(_WINDOW, limit - done)
            n = _kernel_copy(src, dst, want) if kernel else None
            if not n:
                # Not possible between these files, or the end: a file system whose files
                # report no size (procfs, some FUSE) is read through memory to be sure.
                kernel = False
                n = _memory_copy(src, dst, want)
                if not n:
                    break
            if pending is not None:
                _hash_result(pending, hash_written)
            pending = hasher.submit(_hash_window, h, hashed, done, n)
            done += n
        if pending is not None:
            _hash_result(pending, hash_written)
    return done, h.digest()


def copy_local(source: str, target: str, size: int) -> None:
    """Copy the local file `source` (`size` bytes, already checked) into the new file
    `target`, by the kernel where it can. Raises OSError."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            left = size
            kernel = True
            while left > 0:
                n = _kernel_copy(src, dst, min(left, 1 << 30)) if kernel else None
                if not n:
                    kernel = False
                    n = _memory_copy(src, dst, min(left, _WINDOW))
                    if not n:
                        break
                left -= n
        except CopyError as e:
            raise e.error from None
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _hash_result(pending: Future[None], hash_written: bool) -> None:
    try:
        pending.result()
    except OSError as e:
        raise CopyError(e, source=not hash_written) from None


#: File system types (Linux) whose operations are network round trips.
_NETWORK_FS = {
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "9p",
    "lustre",
    "gpfs",
    "beegfs",
    "afs",
    "davfs",
    "orangefs",
}


def file_system_type(path: str) -> str:
    """The type of the file system holding `path`, from /proc/self/mountinfo ("" where
    there is none)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    path = os.path.realpath(path)
    longest, kind = -1, ""
    for line in lines:
        fields, sep, rest = line.partition(" - ")
        parts = fields.split(" ")
        if not sep or len(parts) < 5:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= longest:  # the last mount on a point is the visible one
            longest, kind = len(point), rest.split(" ", 1)[0]
    return kind


_EXTRAS = {"s3": "s3", "s3a": "s3"}
_DRIVERS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs"}


class Remote:
    """One remote cache: an fsspec filesystem and the root path of the cache in it.

    Raises RemoteError if the URL is malformed or its driver is not installed.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        if not isinstance(url, str) or not url.strip():
            raise RemoteError(f"a remote is an fsspec URL such as file:///srv/cache, got {url!r}")
        self.options = dict(storage_options or {})
        self._secrets = secrets_of(url, self.options)
        self.url = url
        self.shown = redact_url(url)
        try:
            import fsspec
        except ImportError as e:  # pragma: no cover - fsspec is a dependency
            raise RemoteError("remote caches need fsspec: pip install fsspec") from e
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        try:
            fs, path = fsspec.core.url_to_fs(url, **self.options)
        except ImportError:
            extra = _EXTRAS.get(protocol)
            hint = (
                f"pip install 'lightstore[{extra}]'"
                if extra
                else f"install the fsspec driver for {protocol}:// ({_DRIVERS.get(protocol, 'see fsspec')})"
            )
            raise RemoteError(f"cannot open the remote {self.shown}: {hint}") from None
        except Exception as e:
            raise self.error("cannot open the remote", e) from None
        self.fs = fs
        self.protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
        self.root = path.rstrip("/")
        self.local = self.protocol in ("file", "local")
        self.fs.invalidate_cache()
        self.atomic_put = self.protocol in _ATOMIC_PUT
        self._swept: set[str] = set()  # local folders whose leftover temporaries are gone
        self._folders: set[str] = set()  # local folders known to exist
        # Armed (by a crash test) before the remote is opened: looked up once, not per file.
        self._failpoints = bool(os.environ.get(FAILPOINT_VARIABLE))
        # Temporary names: a random part per Remote, then a counter (no entropy per file).
        self._token = secrets.token_hex(4)
        self._serial = itertools.count()

    # -- errors ----------------------------------------------------------

    def redact(self, text: str) -> str:
        """`text` with every secret of this remote replaced by ***."""
        for s in self._secrets:
            text = text.replace(s, "***")
        # Credentials embedded in any URL the driver quotes back.
        return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)

    def error(self, what: str, cause: BaseException) -> RemoteError:
        """A RemoteError for `cause`, safe to show."""
        detail = self.redact(f"{type(cause).__name__}: {cause}")
        return RemoteError(f"{what} {self.shown}: {detail}")

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn driver errors inside the block into RemoteError (without credentials).

        FileNotFoundError passes through when reading (the caller knows what
        a missing object means); when writing it means a missing bucket or
        folder and becomes a RemoteError too.
        """
        try:
            yield
        except LightstoreError:
            raise
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            if isinstance(e, FileNotFoundError) and what.startswith("cannot read"):
                raise
            raise self.error(what, e) from None

    # -- keys --------------------------------------------------------------

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def exists(self, key: str) -> bool:
        with self.guard("cannot read"):
            return bool(self.fs.exists(self.path(key)))

    def size(self, key: str) -> int | None:
        """The size of an object, or None if it does not exist."""
        with self.guard("cannot read"):
            try:
                info = self.fs.info(self.path(key))
            except FileNotFoundError:
                return None
            if info.get("type") == "directory":
                return None
            return int(info.get("size") or 0)

    def _open_local(self, key: str) -> BinaryIO:
        """Open an object of a local remote (see `_open_local_fd`)."""
        fd = self._open_local_fd(key)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    @functools.cached_property
    def networked(self) -> bool:
        """Whether this local remote's folder is on a network file system (NFS, SMB, FUSE,
        ...), where each file operation is a round trip that threads can overlap."""
        if not self.local:
            return False
        kind = file_system_type(self.root or "/")
        return kind in _NETWORK_FS or kind.startswith("fuse")

    def _open_local_fd(self, key: str) -> int:
        """Open an object of a local remote; refuse anything but a regular file
        (a hostile remote's FIFO would block a pull forever, a device never end)."""
        path = self.path(key)
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise self._not_a_file(key)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            # Checked again on the open file: the name may have been swapped. (O_NONBLOCK
            # does nothing to a regular file.)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self._not_a_file(key)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _not_a_file(self, key: str) -> RemoteIntegrityError:
        # The object is damaged, not the remote unreachable: its readers refuse what
        # needs it and keep the rest.
        return RemoteIntegrityError(
            f"the object {key} of {self.shown} is not a regular file: the remote is damaged "
            "or hostile; nothing of it was added"
        )

    def read_prefix(self, key: str, limit: int) -> bytes | None:
        """At most `limit` + 1 bytes from the start of an object (more than `limit`: it
        is larger), or None if it does not exist."""
        with self.guard("cannot read"):
            try:
                with (
                    self._open_local(key) if self.local else self.fs.open(self.path(key), "rb") as f
                ):
                    return bytes(f.read(limit + 1))
            except FileNotFoundError:
                return None

    def read(self, key: str, limit: int = 64 * 1024 * 1024) -> bytes | None:
        """The bytes of a small object, or None if it does not exist.

        Raises RemoteIntegrityError if it is larger than `limit` or not a regular file
        (a problem of that object), RemoteError if the remote cannot be read.
        """
        data = self.read_prefix(key, limit)
        if data is not None and len(data) > limit:
            raise RemoteIntegrityError(
                f"the object {key} of {self.shown} is larger than {limit} bytes: the remote is "
                "damaged or hostile; nothing of it was added"
            )
        return data

    def digest(self, key: str) -> str | None:
        """The blake3 (hex) of an object, read in chunks; None if it does not exist.

        Reads the whole object: cheap on a local remote, a download elsewhere.
        """
        h = blake3()
        with self.guard("cannot read"):
            try:
                if self.local:
                    fd = self._open_local_fd(key)
                    try:
                        buffer = bytearray(min(_CHUNK, max(os.fstat(fd).st_size, 1)))
                        with memoryview(buffer) as view:
                            while n := os.readv(fd, [buffer]):
                                h.update(view[:n])
                    finally:
                        os.close(fd)
                else:
                    with self.fs.open(self.path(key), "rb") as f:
                        while chunk := f.read(1024 * 1024):
                            h.update(chunk)
            except FileNotFoundError:
                return None
        return str(h.hexdigest())

    def local_size(self, key: str) -> int | None:
        """The size of an object of a local remote (one stat), None if there is no file."""
        try:
            st = os.stat(self.path(key))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self.error("cannot read", e) from None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def listdir(self, key: str) -> list[str]:
        """Names directly below `key` ([] if there is nothing)."""
        with self.guard("cannot list"):
            # Other machines write the remote: never answer from a cached listing.
            self.fs.invalidate_cache()
            try:
                entries = self.fs.ls(self.path(key), detail=False)
            except FileNotFoundError:
                return []
        base = self.path(key).rstrip("/")
        out = []
        for e in entries:
            e = str(e).rstrip("/")
            name = e.rsplit("/", 1)[-1]
            if e != base and name:
                out.append(name)
        return sorted(set(out))

    def find(self, key: str) -> list[str]:
        """Every object below `key`, as keys relative to `key` (one recursive listing)."""
        with self.guard("cannot list"):
            self.fs.invalidate_cache()
            try:
                found = self.fs.find(self.path(key))
            except FileNotFoundError:
                return []
        base = self.path(key).rstrip("/") + "/"
        # fsspec may return paths with or without a leading "/" for memory://.
        out = []
        for p in found:
            p = str(p)
            for b in (base, base.lstrip("/"), "/" + base.lstrip("/")):
                if p.startswith(b):
                    out.append(p[len(b) :])
                    break
        return sorted(out)

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

    def list_sizes(self, key: str) -> dict[str, int]:
        """Name -> size of the objects directly below `key` (one listing)."""
        with self.guard("cannot list"):
            self.fs.invalidate_cache()
            try:
                entries = self.fs.ls(self.path(key), detail=True)
            except FileNotFoundError:
                return {}
        out = {}
        for e in entries:
            if e.get("type") == "file":
                out[str(e["name"]).rstrip("/").rsplit("/", 1)[-1]] = int(e.get("size") or 0)
        return out

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
