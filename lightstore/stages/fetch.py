"""Stages that bring outside data into the store, checked against a sha256.

`fetchurl` downloads an http, https or file URL with the standard library
(or with a program the caller names, see `lightstore.stages.download`);
`fetchlocal` copies a local file. Either writes into the build area, checks
the sha256 the caller gave (what upstreams publish), and optionally unpacks a
.zip/.tar archive with the same safety rules as `sunpack` (see
`lightstore.exchange.extract`). A wrong checksum, an HTTP or I/O error, or a
hostile archive fails the build: nothing is stored. On a terminal, large
transfers show their progress on stderr.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any

from lightstore.engine.matchers import match_only
from lightstore.engine.outputs import BuildContext, filling
from lightstore.engine.registry import Registry
from lightstore.exchange.extract import DEFAULT_MAX_BYTES, archive_kind, safe_extract
from lightstore.foundation.errors import ArchiveError, BuildError, ChecksumError, InvalidConfigError
from lightstore.foundation.files import remove_tree
from lightstore.foundation.refs import DRef, check_file_name, mkname, selfref
from lightstore.stages.download import DownloadCommand, download_with
from lightstore.store.layout import CONTEXT_FILE

_CHUNK = 1024 * 1024
#: Transfers at least this large show progress when stderr is a terminal.
PROGRESS_MIN_BYTES = 8 * _CHUNK
_PROGRESS_EVERY_S = 0.25
_SCHEMES = ("http", "https", "file")
_RESERVED = ("name", "url", "path", "sha256", "filename", "unpack", "out_path", "keep_archive")


class _Progress:
    """Progress of one transfer on stderr, only on a terminal and only for large ones."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what = what
        self.total = total
        self.enabled = sys.stderr.isatty()
        self.shown = False
        self.last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        big = (self.total or done) >= PROGRESS_MIN_BYTES
        now = time.monotonic()
        if not big or (not final and now - self.last < _PROGRESS_EVERY_S):
            return
        self.last = now
        mib = done / _CHUNK
        if self.total:
            text = f"{mib:.1f} of {self.total / _CHUNK:.1f} MiB ({done * 100 // self.total}%)"
        else:
            text = f"{mib:.1f} MiB"
        sys.stderr.write(f"\r{self.what}: {text}")
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()
        self.shown = True


def _copy_checked(
    src: IO[bytes], target: str, sha256: str, total: int | None, what: str, dref: str
) -> None:
    """Copy `src` to `target` while hashing; raise if it is short or the sha256 differs."""
    h = hashlib.sha256()
    done = 0
    progress = _Progress(what, total)
    with open(target, "xb") as out:
        while chunk := src.read(_CHUNK):
            h.update(chunk)
            out.write(chunk)
            done += len(chunk)
            progress.update(done)
    progress.update(done, final=True)
    if total is not None and done != total:
        raise BuildError(
            f"{what}: received {done} bytes but {total} were announced; the transfer was "
            "cut short, try again",
            dref,
        )
    _compare(h.hexdigest(), sha256, what)


def _check_file(path: str, sha256: str, what: str) -> None:
    """Raise ChecksumError if the file at `path` has another sha256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    _compare(h.hexdigest(), sha256, what)


def _compare(actual: str, sha256: str, what: str) -> None:
    if actual != sha256:
        raise ChecksumError(
            f"{what} has sha256 {actual}, but {sha256} was expected; either the data or the "
            "checksum is wrong (check both). Nothing was stored",
            expected=sha256,
            actual=actual,
        )


def _checked_sha256(sha256: Any) -> str:
    if (
        not isinstance(sha256, str)
        or len(sha256) != 64
        or any(c not in "0123456789abcdef" for c in sha256.lower())
    ):
        raise InvalidConfigError(
            f"sha256 must be 64 hexadecimal digits, got {sha256!r} (`sha256sum FILE` prints it)"
        )
    return sha256.lower()


def _fetch_stage(
    r: Registry,
    kind: str,
    source: str,
    sha256: str,
    name: str,
    filename: str,
    unpack: bool,
    max_bytes: int | None,
    timeout: float,
    extra: dict[str, Any],
    keep_archive: bool = False,
    download_command: DownloadCommand | None = None,
) -> DRef:
    sha = _checked_sha256(sha256)
    check_file_name(filename, f"{kind}: file name")
    if not isinstance(unpack, bool):
        raise InvalidConfigError(f"{kind}: unpack must be True or False, not {unpack!r}")
    if not isinstance(keep_archive, bool):
        raise InvalidConfigError(
            f"{kind}: keep_archive must be True or False, not {keep_archive!r}"
        )
    keep_archive = keep_archive and unpack
    if unpack:
        try:
            archive_kind(filename)  # refuse an unknown archive type now, not at build time
        except ArchiveError as e:
            raise InvalidConfigError(f"{kind}: cannot unpack {filename!r}: {e}") from e
    elif filename == CONTEXT_FILE:
        raise InvalidConfigError(f"{kind}: {CONTEXT_FILE!r} is reserved for the store")
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise InvalidConfigError(f"{kind}: extra config fields may not be named {clash}")
    config: dict[str, Any] = {
        **extra,
        "name": mkname(name),
        "url" if kind == "fetchurl" else "path": source,
        "sha256": sha,
        "filename": filename,
        "unpack": unpack,
        "out_path": [selfref] if unpack else [selfref, filename],
    }
    if keep_archive:  # only then: the configs (and DRefs) of other fetches stay as they were
        config["keep_archive"] = True
    local = os.path.abspath(source) if kind == "fetchlocal" else None

    def make(b: BuildContext) -> None:
        out = b.output
        if not unpack:
            _download(b, os.path.join(out, filename))
            return
        # Download into a build area of its own (named like every build area,
        # so recovery removes it if this process dies), under its own name so
        # the archive type is known, and the archive itself is not stored.
        folder = b.store.new_build_area("download")
        try:
            target = os.path.join(folder, filename)
            _download(b, target)
            safe_extract(target, out, max_bytes=max_bytes)
            if keep_archive:
                kept = os.path.join(out, filename)
                if os.path.lexists(kept):
                    raise ArchiveError(
                        f"{source}: the archive holds {filename!r} at its top, where the "
                        "archive itself was to be kept; unpack without keeping it"
                    )
                os.rename(target, kept)
        finally:
            remove_tree(folder)

    def _download(b: BuildContext, target: str) -> None:
        try:
            if local is not None:
                with open(local, "rb") as f:
                    _copy_checked(f, target, sha, os.fstat(f.fileno()).st_size, source, b.dref)
            elif download_command is not None:
                download_with(b.store, download_command, source, target, b.dref)
                _check_file(target, sha, source)
            else:
                request = urllib.request.Request(source, headers={"User-Agent": "lightstore"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.strip().isdigit() else None
                    _copy_checked(response, target, sha, total, source, b.dref)
        except urllib.error.HTTPError as e:
            raise BuildError(
                f"cannot download {source}: HTTP {e.code} {e.reason}; check the URL", b.dref, e
            ) from e
        except urllib.error.URLError as e:
            raise BuildError(f"cannot download {source}: {e.reason}", b.dref, e) from e
        except (OSError, http.client.HTTPException) as e:
            verb = "read" if local is not None else "download"
            raise BuildError(f"cannot {verb} {source}: {e}", b.dref, e) from e

    return r.add(config, match_only(), filling(make))


def fetchurl(
    r: Registry,
    url: str,
    sha256: str,
    name: str | None = None,
    filename: str | None = None,
    unpack: bool = False,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    timeout: float = 60.0,
    keep_archive: bool = False,
    download_command: DownloadCommand | None = None,
    **config: Any,
) -> DRef:
    """A stage that downloads `url` (http, https or file), checks its sha256, and maybe unpacks it.

    The output holds `filename` (default: the last part of the URL path),
    promised as ``out_path``; with `unpack`, it holds the archive's contents
    instead (safely extracted, at most `max_bytes`), and also the archive
    itself with `keep_archive`. Extra keyword arguments
    become config fields. `timeout` (seconds) bounds each network wait.
    With `download_command` (see `lightstore.stages.download`), that program downloads
    instead of the standard library, and `url` may have any scheme it knows;
    the config, hence the DRef, is the same either way.

    Raises InvalidConfigError at once for a bad URL, checksum or file name. When
    realized: ChecksumError for a wrong sha256, BuildError for HTTP or network
    errors, ArchiveError for an archive that cannot be unpacked safely (the
    realization engine may wrap these in a BuildError whose `.cause` is the original); nothing is stored.
    """
    scheme = urllib.parse.urlsplit(url).scheme if isinstance(url, str) else ""
    # A program the caller chose may know other schemes (ftp, s3...).
    if scheme not in _SCHEMES and not (download_command is not None and scheme):
        raise InvalidConfigError(f"fetchurl: {url!r} is not an http, https or file URL")
    if filename is None:
        filename = urllib.parse.unquote(os.path.basename(urllib.parse.urlsplit(url).path))
        if not filename or filename in (".", ".."):
            raise InvalidConfigError(
                f"fetchurl: cannot tell a file name from {url!r}; pass filename="
            )
    return _fetch_stage(
        r,
        "fetchurl",
        url,
        sha256,
        name or "fetchurl",
        filename,
        unpack,
        max_bytes,
        timeout,
        config,
        keep_archive,
        download_command,
    )


def fetchlocal(
    r: Registry,
    path: str,
    sha256: str,
    name: str | None = None,
    filename: str | None = None,
    unpack: bool = False,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    keep_archive: bool = False,
    **config: Any,
) -> DRef:
    """A stage that copies the local file `path`, checks its sha256, and maybe unpacks it.

    Like `fetchurl`; `path` is recorded in the config as given, and read when
    the stage is realized. Raises as `fetchurl` does (a missing file is a BuildError).
    """
    source = os.fspath(path)
    if not isinstance(source, str) or not source:
        raise InvalidConfigError(f"fetchlocal: invalid path {path!r}")
    fname = filename if filename is not None else os.path.basename(source.rstrip("/"))
    return _fetch_stage(
        r,
        "fetchlocal",
        source,
        sha256,
        name or "fetchlocal",
        fname,
        unpack,
        max_bytes,
        0.0,
        config,
        keep_archive,
    )
