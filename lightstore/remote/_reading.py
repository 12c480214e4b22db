"""A remote cache as seen through fsspec: opened, its keys, and reading them.

`RemoteReader` (the reading half of `Remote`)

- opens the fsspec filesystem for a URL with per-remote options (the
  driver's usual configuration applies otherwise: for S3 the AWS variables,
  profiles and instance roles);
- reads objects: never more than the caller allows, and on a local folder
  only regular files (a hostile remote's FIFO or device is refused);
- tells whether a local remote's folder is on a network file system
  (`file_system_type`), where threads overlap round trips;
- turns driver errors into RemoteError with credentials removed: URLs lose
  their user info and option values never appear in a message.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import stat
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from blake3 import blake3

from lightstore.foundation.errors import LightstoreError, RemoteError, RemoteIntegrityError
from lightstore.remote._redact import redact_url, secrets_of

#: Protocols whose writes become visible atomically when complete (a PUT).
_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"}
#: What one read of a streamed download asks for (one ranged request on object stores).
_CHUNK = 8 * 1024 * 1024


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


class RemoteReader:
    """The reading half of `Remote`: an fsspec filesystem and the root path of the cache
    in it.

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
