"""Pylightnix's built-in stages (`mknode`, `mkfile`, `fetchurl`, `fetchlocal`) with its
conventions: the registry `r` may be None for the thread's current one.

The stages themselves are `lightstore.stages`', on the engine's explicit registry.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from typing import Any

from lightstore.compat.current import current
from lightstore.compat.fetch import chosen_downloader
from lightstore.engine.registry import Registry
from lightstore.exchange.extract import DEFAULT_MAX_BYTES, archive_kind
from lightstore.foundation.errors import ArchiveError, InvalidConfigError, UsageError
from lightstore.foundation.refs import DRef
from lightstore.stages import fetch as _fetch
from lightstore.stages import trivial as _trivial

__all__ = ["fetchlocal", "fetchurl", "mkfile", "mknode"]


def _registry(r: Any) -> Registry:
    """`r`, else the thread's current registry; UsageError (as `mkdrv`) without one."""
    if r is None:
        r = current.registry
        if r is None:
            raise UsageError(
                "mkdrv needs a registry: pass `r=` (stage functions receive it from instantiate) "
                "or use `with current_registry(Registry()):`"
            )
    if not isinstance(r, Registry):
        raise UsageError(f"mkdrv: r must be a Registry, got {type(r).__name__}")
    return r


def mknode(
    r: Registry | None,
    cfgdict: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, bytes | str] | None = None,
    name: str | None = None,
    *,
    config: Mapping[str, Any] | None = None,
) -> DRef:
    """A stage whose output holds `artifacts` ({file name: bytes or str}); see
    `lightstore.stages.trivial.mknode`.

    Pylightnix's keywords: ``mknode(r, cfgdict=..., artifacts=..., name=...)``
    (`config=` is the same as `cfgdict=`); without a name anywhere it is
    ``mknode``. Raises UsageError if both `cfgdict` and `config` are given.
    """
    if cfgdict is not None and config is not None:
        raise UsageError("mknode: give cfgdict or config, not both")
    given = cfgdict if cfgdict is not None else config
    return _trivial.mknode(_registry(r), {} if given is None else given, artifacts, name)


def mkfile(
    r: Registry | None, name: str, contents: bytes | str, filename: str | None = None
) -> DRef:
    """A stage holding one file, `filename` (default: `name`), with `contents`; see
    `lightstore.stages.trivial.mkfile`."""
    return _trivial.mkfile(_registry(r), name, contents, filename)


# Keywords only lightstore's call form has: with one of them, or with the registry
# first, a call is lightstore's; otherwise it is Pylightnix's.
_LIGHTSTORE_ONLY = frozenset({"unpack", "max_bytes", "timeout", "keep_archive"})


def _lightstore_form(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if args:
        return args[0] is None or isinstance(args[0], Registry)
    return bool(_LIGHTSTORE_ONLY & kwargs.keys())


def _mode(kind: str, mode: Any, filename: str) -> tuple[bool, bool]:
    """``(unpack, keep_archive)`` of a Pylightnix `mode` (``'unpack,remove'``, ``'as-is'``...)."""
    if not isinstance(mode, str):
        raise InvalidConfigError(f"{kind}: mode is a string such as 'unpack,remove', not {mode!r}")
    words = {w.strip() for w in mode.split(",")}
    unpack = "unpack" in words
    if unpack:
        try:
            archive_kind(filename)
        except ArchiveError as e:
            raise InvalidConfigError(
                f"{kind}: mode {mode!r} unpacks, but {filename!r} is no archive lightstore "
                f"unpacks ({e}); pass mode='as-is' to keep the file as it is"
            ) from e
    return unpack, unpack and "remove" not in words


def fetchurl(*args: Any, **kwargs: Any) -> DRef:
    """A stage that downloads a URL (http, https or file) and checks its sha256.

    Two call forms. Lightstore's, with the registry first, as
    `lightstore.stages.fetch.fetchurl`: ``fetchurl(r, url, sha256, name=None,
    filename=None, unpack=False, *, max_bytes=..., timeout=60.0,
    keep_archive=False, **config)``. Pylightnix's: ``fetchurl(url,
    sha256=None, sha1=None, mode='unpack,remove', name=None, filename=None,
    force_download=False, check_promises=True, r=None, **config)``, where
    `mode` holding ``unpack`` unpacks the archive into the output (standard
    library, no atool) and ``remove`` drops the archive; otherwise the file
    is promised as ``out_path``. `force_download` and `check_promises` are
    accepted (every download starts afresh; promises are always checked);
    a checksum must be a sha256 (fetchurl2 also takes a sha1). As in
    Pylightnix, a replaced ``lightstore.compat.fetch.WGET`` or
    ``$PYLIGHTNIX_WGET`` downloads instead of urllib, called as
    ``WGET --continue --output-document PART URL`` (any URL scheme then).

    Raises InvalidConfigError at once for a bad URL, checksum, file name or
    mode; when realized, as `lightstore.stages.fetch.fetchurl`.
    """
    if _lightstore_form(args, kwargs):
        return _fetchurl(*args, **kwargs)
    return _fetchurl_pylightnix(*args, **kwargs)


def _fetchurl(
    r: Registry | None,
    url: str,
    sha256: str,
    name: str | None = None,
    filename: str | None = None,
    unpack: bool = False,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    timeout: float = 60.0,
    keep_archive: bool = False,
    **config: Any,
) -> DRef:
    return _fetch.fetchurl(
        _registry(r),
        url,
        sha256,
        name,
        filename,
        unpack,
        max_bytes=max_bytes,
        timeout=timeout,
        keep_archive=keep_archive,
        download_command=chosen_downloader("WGET"),
        **config,
    )


def _fetchurl_pylightnix(
    url: str,
    sha256: str | None = None,
    sha1: str | None = None,
    mode: str = "unpack,remove",
    name: str | None = None,
    filename: str | None = None,
    force_download: bool = False,
    check_promises: bool = True,
    r: Registry | None = None,
    **config: Any,
) -> DRef:
    if sha256 is None:
        raise InvalidConfigError(
            "fetchurl: give the sha256 of the data (a sha1 alone is checked by fetchurl2 only)"
        )
    if sha1 is not None:
        config["sha1"] = sha1
    if not isinstance(url, str):
        raise InvalidConfigError(f"fetchurl: {url!r} is not an http, https or file URL")
    fname = filename or urllib.parse.unquote(os.path.basename(urllib.parse.urlsplit(url).path))
    unpack, keep = _mode("fetchurl", mode, fname)
    return _fetch.fetchurl(
        _registry(r),
        url,
        sha256,
        name,
        filename,
        unpack,
        keep_archive=keep,
        download_command=chosen_downloader("WGET"),
        **config,
    )


def fetchlocal(*args: Any, **kwargs: Any) -> DRef:
    """A stage that copies a local file into the store and checks its sha256.

    Two call forms. Lightstore's, with the registry first, as
    `lightstore.stages.fetch.fetchlocal`: ``fetchlocal(r, path, sha256,
    name=None, filename=None, unpack=False, *, max_bytes=...,
    keep_archive=False, **config)``. Pylightnix's: ``fetchlocal(sha256,
    path=None, envname=None, mode='unpack,remove', name=None, filename=None,
    check_promises=True, r=None, **config)``: the file is `path`, or the one
    environment variable `envname` names (recorded in the config too);
    `mode` as in `fetchurl`.

    Raises InvalidConfigError at once for a bad path, checksum, file name,
    mode or an unset `envname`; when realized, as
    `lightstore.stages.fetch.fetchlocal`.
    """
    if _lightstore_form(args, kwargs):
        return _fetchlocal(*args, **kwargs)
    return _fetchlocal_pylightnix(*args, **kwargs)


def _fetchlocal(
    r: Registry | None,
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
    return _fetch.fetchlocal(
        _registry(r),
        path,
        sha256,
        name,
        filename,
        unpack,
        max_bytes=max_bytes,
        keep_archive=keep_archive,
        **config,
    )


def _fetchlocal_pylightnix(
    sha256: str,
    path: str | None = None,
    envname: str | None = None,
    mode: str = "unpack,remove",
    name: str | None = None,
    filename: str | None = None,
    check_promises: bool = True,
    r: Registry | None = None,
    **config: Any,
) -> DRef:
    if (path is None) == (envname is None):
        raise InvalidConfigError("fetchlocal: give path= or envname=, not both or neither")
    if envname is not None:
        if not isinstance(envname, str) or envname not in os.environ:
            raise InvalidConfigError(f"fetchlocal: the environment variable {envname!r} is not set")
        path = os.environ[envname]
        config["envname"] = envname
    if not isinstance(path, str) or not path:
        raise InvalidConfigError(f"fetchlocal: invalid path {path!r}")
    fname = filename if filename is not None else os.path.basename(path.rstrip("/"))
    unpack, keep = _mode("fetchlocal", mode, fname)
    return _fetch.fetchlocal(
        _registry(r), path, sha256, name, filename, unpack, keep_archive=keep, **config
    )


mkfile.__doc__ = _trivial.mkfile.__doc__
