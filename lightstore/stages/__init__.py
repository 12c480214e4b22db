"""Built-in stages: nodes from in-memory data, and data fetched from URLs or local files."""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from blake3 import blake3

from lightstore.engine.build import Build, build_outpath, build_wrapper
from lightstore.engine.matchers import match_only
from lightstore.engine.registry import Registry, mkdrv
from lightstore.errors import BuildError, ChecksumError, InvalidConfigError
from lightstore.exchange.archive import safe_extract
from lightstore.refs import DRef, mkname, selfref

_CHUNK = 1024 * 1024


def _as_bytes(data: bytes | str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    raise InvalidConfigError(f"artifacts are bytes or str, not {type(data).__name__}")


def mknode(
    r: Registry | None, config: dict[str, Any], artifacts: dict[str, bytes | str] | None = None
) -> DRef:
    """A stage whose output holds `artifacts` ({file name: bytes or str}); the config records their hashes."""
    files = {name: _as_bytes(data) for name, data in (artifacts or {}).items()}
    for name in files:
        if not name or "/" in name or name in (".", ".."):
            raise InvalidConfigError(f"artifact name {name!r} must be a plain file name")
    cfg = dict(config)
    if files:
        cfg["__artifacts__"] = {n: blake3(d).hexdigest()[:32] for n, d in sorted(files.items())}

    def make(b: Build) -> None:
        for name, data in files.items():
            with open(os.path.join(build_outpath(b), name), "wb") as f:
                f.write(data)

    return mkdrv(cfg, match_only(), build_wrapper(make), r)


def mkfile(
    r: Registry | None, name: str, contents: bytes | str, filename: str | None = None
) -> DRef:
    """A stage holding one file `filename` (default: `name`) with `contents`."""
    fname = filename or mkname(name)
    return mknode(r, {"name": name, "out": [selfref, fname]}, {fname: contents})


def _progress(done: int, total: int | None) -> None:
    if sys.stderr.isatty() and total and total > 8 * _CHUNK:
        sys.stderr.write(f"\r  {done * 100 // total:3d}% of {total // _CHUNK} MiB")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _copy_checked(src: Any, dst: str, sha256: str, total: int | None, what: str) -> None:
    h = hashlib.sha256()
    done = 0
    with open(dst, "wb") as out:
        while chunk := src.read(_CHUNK):
            h.update(chunk)
            out.write(chunk)
            done += len(chunk)
            _progress(done, total)
    if h.hexdigest() != sha256.lower():
        raise ChecksumError(
            f"{what} has sha256 {h.hexdigest()}, expected {sha256}; check the URL/file and the checksum",
            expected=sha256,
            actual=h.hexdigest(),
        )


def _fetch_stage(
    r: Registry | None,
    source: str,
    sha256: str,
    name: str,
    filename: str,
    unpack: bool,
    local: bool,
) -> DRef:
    if (
        not isinstance(sha256, str)
        or len(sha256) != 64
        or any(c not in "0123456789abcdefABCDEF" for c in sha256)
    ):
        raise InvalidConfigError(f"sha256 must be 64 hex digits, got {sha256!r}")
    cfg = {
        "name": mkname(name),
        "url" if not local else "path": source,
        "sha256": sha256.lower(),
        "filename": filename,
        "unpack": unpack,
        "out": [selfref] if unpack else [selfref, filename],
    }

    def make(b: Build) -> None:
        out = build_outpath(b)
        target = (
            os.path.join(out, filename)
            if not unpack
            else os.path.join(out, "..", f"download-{filename}")
        )
        try:
            if local:
                with open(source, "rb") as src:
                    _copy_checked(src, target, sha256, os.path.getsize(source), source)
            else:
                with urllib.request.urlopen(source, timeout=60) as resp:
                    length = resp.headers.get("Content-Length")
                    _copy_checked(resp, target, sha256, int(length) if length else None, source)
        except urllib.error.URLError as e:
            raise BuildError(f"cannot download {source}: {e.reason}", b.dref, e) from e
        if unpack:
            safe_extract(target, out)
            os.unlink(target)

    return mkdrv(cfg, match_only(), build_wrapper(make), r)


def fetchurl(
    r: Registry | None,
    url: str,
    sha256: str,
    name: str | None = None,
    filename: str | None = None,
    unpack: bool = False,
) -> DRef:
    """A stage that downloads `url` (http, https, file), checks its sha256, and optionally unpacks it."""
    fname = filename or os.path.basename(url.split("?", 1)[0]) or "download"
    return _fetch_stage(r, url, sha256, name or "fetchurl", fname, unpack, local=False)


def fetchlocal(
    r: Registry | None,
    path: str,
    sha256: str,
    name: str | None = None,
    filename: str | None = None,
    unpack: bool = False,
) -> DRef:
    """A stage that copies a local file, checks its sha256, and optionally unpacks it."""
    fname = filename or os.path.basename(path)
    return _fetch_stage(
        r, os.path.abspath(path), sha256, name or "fetchlocal", fname, unpack, local=True
    )
