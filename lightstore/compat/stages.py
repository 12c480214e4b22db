"""Pylightnix's built-in stages (`mknode`, `mkfile`, `fetchurl`, `fetchlocal`) with its
conventions: the registry `r` may be None for the thread's current one.

The stages themselves are `lightstore.stages`', on the engine's explicit registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightstore.compat.current import current
from lightstore.engine.registry import Registry
from lightstore.exchange.extract import DEFAULT_MAX_BYTES
from lightstore.foundation.errors import UsageError
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
    config: Mapping[str, Any],
    artifacts: Mapping[str, bytes | str] | None = None,
    name: str | None = None,
) -> DRef:
    """A stage whose output holds `artifacts` ({file name: bytes or str}); see
    `lightstore.stages.trivial.mknode`."""
    return _trivial.mknode(_registry(r), config, artifacts, name)


def mkfile(
    r: Registry | None, name: str, contents: bytes | str, filename: str | None = None
) -> DRef:
    """A stage holding one file, `filename` (default: `name`), with `contents`; see
    `lightstore.stages.trivial.mkfile`."""
    return _trivial.mkfile(_registry(r), name, contents, filename)


def fetchurl(
    r: Registry | None,
    url: str,
    sha256: str,
    name: str | None = None,
    filename: str | None = None,
    unpack: bool = False,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    timeout: float = 60.0,
    **config: Any,
) -> DRef:
    """A stage that downloads `url` (http, https or file), checks its sha256, and maybe
    unpacks it; see `lightstore.stages.fetch.fetchurl`."""
    return _fetch.fetchurl(
        _registry(r),
        url,
        sha256,
        name,
        filename,
        unpack,
        max_bytes=max_bytes,
        timeout=timeout,
        **config,
    )


def fetchlocal(
    r: Registry | None,
    path: str,
    sha256: str,
    name: str | None = None,
    filename: str | None = None,
    unpack: bool = False,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    **config: Any,
) -> DRef:
    """A stage that copies the local file `path`, checks its sha256, and maybe unpacks it;
    see `lightstore.stages.fetch.fetchlocal`."""
    return _fetch.fetchlocal(
        _registry(r), path, sha256, name, filename, unpack, max_bytes=max_bytes, **config
    )


for _ours, _theirs in (
    (mknode, _trivial.mknode),
    (mkfile, _trivial.mkfile),
    (fetchurl, _fetch.fetchurl),
    (fetchlocal, _fetch.fetchlocal),
):
    _ours.__doc__ = _theirs.__doc__
