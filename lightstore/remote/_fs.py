"""A remote cache as seen through fsspec: keys under one root, written safely.

Every operation on the remote goes through `Remote`, which

- opens the fsspec filesystem for a URL with per-remote options (the
  driver's usual configuration applies otherwise: for S3 the AWS variables,
  profiles and instance roles);
- writes objects so that a reader never sees a torn one: object stores
  (S3, GCS, Azure, memory) make a PUT visible only when complete; on other
  filesystems an object is written under a temporary name and renamed;
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
import stat
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from blake3 import blake3

from lightstore.foundation.errors import RemoteError

#: Protocols whose writes become visible atomically when complete (a PUT).
_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"}
#: Objects up to this size move in one request, held in memory; larger ones stream.
SMALL_OBJECT = 8 * 1024 * 1024
_EXTRAS = {"s3": "s3", "s3a": "s3"}
_DRIVERS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs"}


def redact_url(url: str) -> str:
    """`url` without user name, password or query string (which may hold tokens)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username or parts.password:
        netloc = "***@" + netloc
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _secrets_of(url: str, options: Mapping[str, Any]) -> list[str]:
    """Strings that must never be shown: option values and URL credentials."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str) and len(value) >= 4:
            found.append(value)
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk(dict(options))
    with contextlib.suppress(ValueError):
        parts = urllib.parse.urlsplit(url)
        for s in (parts.username, parts.password, parts.query):
            if s and len(s) >= 4:
                found.append(s)
    # Longest first, so a secret containing another is removed whole.
    return sorted(set(found), key=len, reverse=True)


class Remote:
    """One remote cache: an fsspec filesystem and the root path of the cache in it.

    Raises RemoteError if the URL is malformed or its driver is not installed.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        if not isinstance(url, str) or not url.strip():
            raise RemoteError(f"a remote is an fsspec URL such as file:///srv/cache, got {url!r}")
        self.options = dict(storage_options or {})
        self._secrets = _secrets_of(url, self.options)
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
        except RemoteError:
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

    def _not_a_file(self, key: str) -> RemoteError:
        return RemoteError(
            f"the object {key} of {self.shown} is not a regular file: the remote is damaged "
            "or hostile; nothing was added"
        )

    def read(self, key: str, limit: int = 64 * 1024 * 1024) -> bytes | None:
        """The bytes of a small object, or None if it does not exist."""
        with self.guard("cannot read"):
            try:
                with (
                    self._open_local(key) if self.local else self.fs.open(self.path(key), "rb") as f
                ):
                    data = f.read(limit + 1)
            except FileNotFoundError:
                return None
        if len(data) > limit:
            raise RemoteError(f"the object {key} of {self.shown} is larger than {limit} bytes")
        return bytes(data)

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
        tmp = f".tmp.{name}.{os.getpid()}.{secrets.token_hex(6)}"
        return f"{folder}/{tmp}" if folder else tmp

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
        request, large ones streamed by the driver."""
        with self.guard("cannot read (download)"):
            if self.local:
                # Never more than `size` + 1 bytes, from a regular file only.
                remaining = -1 if size is None else size + 1
                with self._open_local(key) as fin, open(local_path, "xb") as fout:
                    while remaining != 0:
                        chunk = fin.read(
                            1024 * 1024 if remaining < 0 else min(remaining, 1024 * 1024)
                        )
                        if not chunk:
                            break
                        fout.write(chunk)
                        remaining -= 0 if remaining < 0 else len(chunk)
                return
            # Never read more than `size` + 1 bytes: a hostile remote may serve a
            # huge object under a small manifest entry.
            if size is not None and size <= SMALL_OBJECT:
                data = self.fs.cat_file(self.path(key), start=0, end=size + 1)
                with open(local_path, "xb") as f:
                    f.write(data)
                return
            if size is not None:
                actual = self.size(key)
                if actual is None:
                    raise FileNotFoundError(key)
                if actual != size:
                    with open(local_path, "xb"):
                        pass  # the caller sees the wrong size and refuses the blob
                    return
            self.fs.get_file(self.path(key), local_path)

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
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(tmp, "xb") as f:
                if data is not None:
                    f.write(data)
                elif source is not None:
                    with open(source, "rb") as fin:
                        shutil.copyfileobj(fin, f, 1024 * 1024)
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
