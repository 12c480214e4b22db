"""Pylightnix's ``pylightnix.stages.fetch2`` stages (`fetchurl2`, `unpack`) and
``pylightnix.arch`` helpers, with Python's standard library (no curl, wget
or atool needed). `WGET`, `CURL`, `APACK` and `AUNPACK` say where those
programs are. As in Pylightnix, replacing this module's `WGET` (or `CURL`)
with another function, or setting ``$PYLIGHTNIX_WGET`` (``$PYLIGHTNIX_CURL``),
makes `fetchurl` (`fetchurl2`) download by running that program; otherwise
lightstore downloads with urllib and never runs them.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

from lightstore.compat.current import store_of, tlstorage
from lightstore.compat.exchange import copy_closure
from lightstore.compat.lens import mklens
from lightstore.compat.registry import Registry, current_registry_or_new, mkdrv
from lightstore.compat.utils import try_executable
from lightstore.compat.wrapper import Build, build_outpath, build_wrapper
from lightstore.engine.matchers import match_only
from lightstore.exchange.extract import safe_extract
from lightstore.foundation.errors import BuildError, ChecksumError, InvalidConfigError
from lightstore.foundation.refs import (
    DRef,
    RefPath,
    RRef,
    check_file_name,
    mkname,
    parse_rref,
    rref2dref,
    selfref,
)
from lightstore.stages.download import (
    DownloadCommand,
    curl_command,
    download_with,
    wget_command,
)

WGET = try_executable(
    "wget", "PYLIGHTNIX_WGET", "wget not found (lightstore does not need it)", None
)
CURL = try_executable(
    "curl", "PYLIGHTNIX_CURL", "curl not found (lightstore does not need it)", None
)
APACK = try_executable(
    "apack", "PYLIGHTNIX_APACK", "apack not found (lightstore does not need it)", None
)
AUNPACK = try_executable(
    "aunpack", "PYLIGHTNIX_AUNPACK", "aunpack not found (lightstore does not need it)", None
)

_CHUNK = 1024 * 1024
# As imported: a `WGET`/`CURL` that is not one of these was replaced by the user.
_SHIPPED = {"WGET": WGET, "CURL": CURL}


def chosen_downloader(name: str) -> DownloadCommand | None:
    """How to run the download program the user chose in place of `name` ("WGET" or
    "CURL"), with Pylightnix's arguments; None to download with urllib.

    Chosen means this module's attribute was replaced (its function is called
    now), or else ``$PYLIGHTNIX_<name>`` is set.
    """
    found = globals()[name]
    program = found() if found is not _SHIPPED[name] else os.environ.get(f"PYLIGHTNIX_{name}")
    if not program:
        return None
    return (wget_command if name == "WGET" else curl_command)(os.fspath(program))


def _check_hex(value: Any, n: int, what: str) -> str | None:
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or len(value) != n
        or any(c not in "0123456789abcdef" for c in value.lower())
    ):
        raise InvalidConfigError(f"{what} must be {n} hexadecimal digits, got {value!r}")
    return value.lower()


def _check_digests(path: str, sha256: str | None, sha1: str | None, what: str) -> None:
    h256, h1 = hashlib.sha256(), hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h256.update(chunk)
            h1.update(chunk)
    for expected, h, kind in ((sha256, h256, "sha256"), (sha1, h1, "sha1")):
        if expected is not None and h.hexdigest() != expected:
            raise ChecksumError(
                f"{what} has {kind} {h.hexdigest()}, but {expected} was expected; nothing was stored",
                expected=expected,
                actual=h.hexdigest(),
            )


def fetchurl2(
    url: str,
    sha256: str | None = None,
    sha1: str | None = None,
    name: str | None = None,
    filename: str | None = None,
    force_download: bool = False,
    r: Registry | None = None,
    *,
    timeout: float = 60.0,
    **kwargs: Any,
) -> DRef:
    """A stage that downloads `url` (http, https or file) into ``out`` = ``[selfref, filename]``.

    The sha256 and/or sha1 given are checked (a local file path without them
    is hashed now and fetched as a file URL). With a replaced `CURL` or
    ``$PYLIGHTNIX_CURL`` (see `chosen_downloader`), that program downloads, and
    `url` may have any scheme it knows. Extra keyword arguments become
    config fields; `force_download` is kept for Pylightnix code (every
    download starts afresh). Raises InvalidConfigError at once for a bad URL,
    checksum or file name; when realized, ChecksumError or BuildError (nothing is stored).
    """
    reg = current_registry_or_new(r)
    sha256 = _check_hex(sha256, 64, "sha256")
    sha1 = _check_hex(sha1, 40, "sha1")
    if sha256 is None and sha1 is None:
        if isinstance(url, str) and os.path.isfile(url):
            path = os.path.abspath(url)
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
            sha256 = h.hexdigest()
            url = "file://" + urllib.parse.quote(path)
        else:
            raise InvalidConfigError("fetchurl2: give sha256 or sha1 for a URL")
    command = chosen_downloader("CURL")
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    # A program the user chose may know other schemes (ftp, s3...).
    if (
        parts is None
        or not parts.scheme
        or (command is None and parts.scheme not in ("http", "https", "file"))
    ):
        raise InvalidConfigError(f"fetchurl2: {url!r} is not an http, https or file URL")
    fname = filename or urllib.parse.unquote(os.path.basename(parts.path))
    check_file_name(fname, "fetchurl2: file name")
    config: dict[str, Any] = {"name": mkname(name or "fetchurl2")}
    if sha1 is not None:
        config["sha1"] = sha1
    if sha256 is not None:
        config["sha256"] = sha256
    config["out"] = [selfref, fname]
    config.update(kwargs)

    def make(b: Build) -> None:
        target = os.path.join(build_outpath(b), fname)
        if command is not None:
            download_with(b.store, command, url, target, b.dref)
            _check_digests(target, sha256, sha1, url)
            return
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "lightstore"})
            with (
                urllib.request.urlopen(request, timeout=timeout) as response,
                open(target, "xb") as out,
            ):
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
        except urllib.error.URLError as e:
            raise BuildError(f"cannot download {url}: {getattr(e, 'reason', e)}", b.dref, e) from e
        except OSError as e:
            raise BuildError(f"cannot download {url}: {e}", b.dref, e) from e
        _check_digests(target, sha256, sha1, url)

    return mkdrv(config, match_only(), build_wrapper(make), reg)


def unpack(
    path: str | None = None,
    refpath: RefPath | None = None,
    name: str | None = None,
    sha256: str | None = None,
    sha1: str | None = None,
    aunpack_args: list[str] | None = None,
    r: Registry | None = None,
    **kwargs: Any,
) -> DRef:
    """A stage that unpacks an archive (a local `path`, or a `refpath` into a dependency,
    such as ``mklens(fetchurl2(...)).out.refpath``) into its output.

    .zip and .tar(.gz/.bz2/.xz) are extracted safely (no absolute paths, ``..``,
    links out, devices). `sha256`/`sha1` check the archive. `aunpack_args`
    must stay empty (there is no aunpack). Raises InvalidConfigError at once;
    ArchiveError or ChecksumError when realized.
    """
    if (path is None) == (refpath is None):
        raise InvalidConfigError("unpack: give exactly one of path= and refpath=")
    if aunpack_args:
        raise InvalidConfigError("unpack: aunpack_args are not supported (no aunpack is run)")
    reg = current_registry_or_new(r)
    config: dict[str, Any] = {
        "name": mkname(name or "unpack"),
        "path": None if path is None else os.path.abspath(path),
        "refpath": refpath,
        "aunpack_args": [],
    }
    sha256 = _check_hex(sha256, 64, "sha256")
    sha1 = _check_hex(sha1, 40, "sha1")
    if sha1 is not None:
        config["sha1"] = sha1
    if sha256 is not None:
        config["sha256"] = sha256
    config.update(kwargs)

    def make(b: Build) -> None:
        lens = mklens(b)
        full = lens.get("refpath").syspath if refpath is not None else lens.get("path").val
        _check_digests(full, sha256, sha1, full)
        safe_extract(full, build_outpath(b))

    return mkdrv(config, match_only(), build_wrapper(make), reg)


def deref_(ctxr: RRef, dref: DRef, S: Any) -> list[RRef]:
    """The realizations of `dref` in the context of `ctxr` (``[ctxr]`` for its own DRef)."""
    from lightstore.compat.queries import rrefctx

    r = parse_rref(ctxr)
    if dref == rref2dref(r):
        return [r]
    return rrefctx(r, S)[DRef(dref)]


def copyclosure(rrefs_S: Iterable[RRef], S: Any, D: Any = None) -> None:
    """Copy realizations and everything they depend on from store `S` to store `D`
    (default: the current store), keeping every RRef (see `copy_closure`)."""
    copy_closure(list(rrefs_S), store_of(S), store_of(tlstorage(D)))


__all__ = [
    "APACK",
    "AUNPACK",
    "CURL",
    "WGET",
    "copyclosure",
    "deref_",
    "fetchurl2",
    "unpack",
]
