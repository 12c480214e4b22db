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
  byte, and a failure to write the local copy is the store's, not the
  remote's;
- creates write-once objects exclusively where the filesystem can (a local
  folder: a hard link fails if the name exists), else checks first;
- turns driver errors into RemoteError with credentials removed: URLs lose
  their user info and option values never appear in a message.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

from blake3 import blake3

from lightstore.foundation.errors import (
    LightstoreError,
    RemoteError,
    RemoteIntegrityError,
    StoreError,
    disk_full,
)
from lightstore.foundation.failpoints import failpoint
from lightstore.foundation.files import pid_alive
from lightstore.remote._redact import redact_url, secrets_of

#: Protocols whose writes become visible atomically when complete (a PUT).
_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"}
#: Objects up to this size move in one request, held in memory; larger ones stream.
SMALL_OBJECT = 8 * 1024 * 1024
#: What one read of a streamed download asks for (one ranged request on object stores).
_CHUNK = 8 * 1024 * 1024
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
        """Open an object of a local remote; refuse anything but a regular file
        (a hostile remote's FIFO would block a pull forever, a device never end)."""
        path = self.path(key)
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise self._not_a_file(key)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            # Checked again on the open file: the name may have been swapped.
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise self._not_a_file(key)
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
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
                with (
                    self._open_local(key) if self.local else self.fs.open(self.path(key), "rb") as f
                ):
                    while chunk := f.read(1024 * 1024):
                        h.update(chunk)
            except FileNotFoundError:
                return None
        return str(h.hexdigest())

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
        tmp = f".tmp.{name}.{_HOST}.{os.getpid()}.{secrets.token_hex(6)}"
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

    def download_file(self, key: str, local_path: str, size: int | None = None) -> None:
        """Download `key` into the new local file `local_path`: small ones in one
        request, large ones streamed in bounded reads.

        Never more than `size` + 1 bytes are read (a hostile remote may serve a huge
        object under a small manifest entry, or swap it while it is read): the caller
        sees a wrong size and refuses it. A failure to write `local_path` is the
        store's (DiskFullError or StoreError), not the remote's.
        """
        limit = None if size is None else size + 1
        try:
            out = open(local_path, "xb")  # noqa: SIM115 - closed below; its errors are the store's
        except OSError as e:
            raise local_error(e, local_path) from None
        try:
            self._fill(key, out, limit, local_path)
        except BaseException:
            with contextlib.suppress(OSError):
                out.close()
            raise
        try:
            out.close()  # a full disk may show only now, when the buffer is written
        except OSError as e:
            raise local_error(e, local_path) from None

    def _fill(self, key: str, out: BinaryIO, limit: int | None, local_path: str) -> None:
        if not self.local and limit is not None and limit <= SMALL_OBJECT:
            with self.guard("cannot read (download)"):
                data = self.fs.cat_file(self.path(key), start=0, end=limit)
            self._write_local(out, data[:limit], local_path)
            return
        with self.guard("cannot read (download)"):
            source = self._open_local(key) if self.local else self._open_streamed(key)
        with source:
            self._copy(key, source.read, out, limit, local_path)

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
        out: BinaryIO,
        limit: int | None,
        local_path: str,
    ) -> None:
        """Copy at most `limit` bytes from `read` into `out` (errors writing `out` are the
        store's, see `local_error`)."""
        remaining = limit
        while remaining is None or remaining > 0:
            want = _CHUNK if remaining is None else min(_CHUNK, remaining)
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
                return
            chunk = chunk[:want]
            self._write_local(out, chunk, local_path)
            if remaining is not None:
                remaining -= len(chunk)

    @staticmethod
    def _write_local(out: BinaryIO, data: bytes, local_path: str) -> None:
        try:
            out.write(data)
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

    def _local_write(
        self, key: str, *, data: bytes | None = None, source: str | None = None, exclusive: bool
    ) -> bool:
        """Write on a local filesystem: a temporary file, then a link (exclusive) or a rename."""
        import shutil

        target = self.path(key)
        tmp = self.path(self._temporary(key))
        self._sweep(os.path.dirname(target))
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(tmp, "xb") as f:
                if data is not None:
                    f.write(data)
                elif source is not None:
                    with open(source, "rb") as fin:
                        shutil.copyfileobj(fin, f, 1024 * 1024)
            failpoint(f"remote:temporary:{key.split('/', 1)[0]}")
            os.chmod(tmp, 0o444)
            if exclusive:
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, target)
                tmp = ""
            return True
        except OSError as e:
            raise self.error("cannot write to", e) from None
        finally:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def open_remote(remote: Any, storage_options: Mapping[str, Any] | None = None) -> Remote:
    """A Remote for a URL (or the Remote itself)."""
    return remote if isinstance(remote, Remote) else Remote(remote, storage_options)
