"""Pylightnix's utilities (module ``pylightnix.utils``; ``pylightnix.tz`` is `lightstore.compat.tz`,
re-exported here).

`datahash`, `dirhash`, `filehash` and `dicthash` are Pylightnix's sha256 digests, the
same values (users compare them with sha256sum); the store's own content hash is
blake3 (`lightstore.foundation.hashing`). Checks raise errors of `lightstore.foundation.errors` that are also
`AssertionError`s, so Pylightnix's ``except AssertionError`` still catches them.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import errno
import hashlib
import inspect
import json
import logging
import os
import stat
import textwrap
from collections.abc import Callable, Iterable
from typing import Any

from blake3 import blake3

from lightstore.compat.tz import EPOCH, EPOCHORDINAL, ZERO, enfold, tzlocal
from lightstore.compat.utils_io import (
    C,
    D,
    concat,
    dagroots,
    kahntsort,
    maybereadjson,
    maybereadstr,
    readjson,
    readstr,
    try_executable,
    trycatch,
    tryread,
    tryread_def,
    tryreadjson,
    tryreadjson_def,
    tryreadstr,
    tryreadstr_def,
    trywrite,
    writejson,
    writestr,
)
from lightstore.foundation.errors import InvalidConfigError, UsageError
from lightstore.foundation.files import (
    Entry,
    copy_tree,
    make_readonly,
    make_writable,
    remove_tree,
    walk,
)
from lightstore.foundation.refs import (
    DRef,
    Path,
    RRef,
    isdref,
    isrefpath,
    isrref,
    isselfpath,
    selfref,
)

#: The format of `timestring`/`parsetime` (local time with a UTC offset).
PYLIGHTNIX_TIME = "%y%m%d-%H:%M:%S:%f%z"
#: The marker of a promised path: ``[selfref, "file"]``.
PYLIGHTNIX_SELF_TAG = selfref

logger = logging.getLogger("lightstore.compat")
info = logger.info
warning = logger.warning
debug = logger.debug
error = logger.error

# -- time and logs -------------------------------------------------------------


def timestring(sec: float | None = None) -> str:
    """Local time (now, or `sec` seconds since the Epoch) in the `PYLIGHTNIX_TIME` format."""
    dt = _dt.datetime.now(tzlocal()) if sec is None else _dt.datetime.fromtimestamp(sec, tzlocal())
    return dt.strftime(PYLIGHTNIX_TIME)


def parsetime(time: str) -> float | None:
    """Seconds since the Epoch of a `timestring`, or None if it is not one."""
    try:
        return _dt.datetime.strptime(time, PYLIGHTNIX_TIME).timestamp()
    except (ValueError, OverflowError, TypeError):
        return None


def logdir(tag: str, logrootdir: Path, timetag: str | None = None) -> str:
    """The path ``<logrootdir>/<tag>_<time>`` (nothing is created)."""
    timetag = timestring() if timetag is None else timetag
    return os.path.join(logrootdir, (f"{tag}_" if tag else "") + timetag)


def mklogdir(
    tag: str,
    logrootdir: Path,
    subdirs: list[str] | None = None,
    symlinks: bool = True,
    timetag: str | None = None,
) -> Path:
    """Create ``<logrootdir>/<tag>_<time>`` (with `subdirs`) and point ``_<tag>_latest`` at it."""
    logpath = logdir(tag, logrootdir=logrootdir, timetag=timetag)
    os.makedirs(logpath, exist_ok=True)
    if symlinks:
        linkname = os.path.join(logrootdir, f"_{tag}_latest" if tag else "_latest")
        forcelink(Path(os.path.basename(logpath)), Path(linkname))
    for sd in subdirs or []:
        os.makedirs(os.path.join(logpath, sd), exist_ok=True)
    return Path(logpath)


def forcelink(src: Path, dst: Path, **kwargs: Any) -> None:
    """Make `dst` a symlink to `src`, replacing whatever `dst` was (atomically)."""
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = f"{dst}__"
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    os.symlink(src, tmp, **kwargs)
    os.replace(tmp, dst)


# -- hashes --------------------------------------------------------------------


def encode(s: str, encoding: str = "utf-8") -> bytes:
    """`s` as bytes."""
    return bytes(s, encoding)


def datahash(data: Iterable[tuple[str, bytes]], verbose: bool = False) -> str:
    """The sha256 hex digest of the byte strings of ``(hint, bytes)`` pairs, in order."""
    h = hashlib.sha256()
    for hint, chunk in data:
        h.update(chunk)
        if verbose:
            debug("adding %s: %s", hint, h.hexdigest())
    return h.hexdigest()


_CHUNK = 1024 * 1024


def _chunks(path: str) -> Iterable[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def dirhash_iter(path: Path) -> Iterable[tuple[str, bytes]]:
    """``(path, bytes)`` of what `dirhash` hashes below `path`, as Pylightnix reads it: the
    bytes of each file, top-down, by name, leaving out files whose names start with ``_``;
    a symlink gives its target text, then the bytes of the file it points to (if any).
    Large files come in several pieces.

    Raises InvalidConfigError if `path` is not a folder.
    """
    if not os.path.isdir(path):
        raise InvalidConfigError(f"dirhash() expects a folder, not {path!r}")
    for root, dirs, filenames in walk(os.path.abspath(path)):
        dirs.sort()  # Pylightnix takes the file system's order here; sorted is the same everywhere
        for filename in sorted(filenames):
            if filename.startswith("_"):
                continue
            local = os.path.join(root, filename)
            if os.path.islink(local):
                yield (f"link:{local}", encode(os.readlink(local)))
                if not os.path.isfile(local):
                    continue  # a link to nothing: its text alone
            for chunk in _chunks(local):
                yield (local, chunk)


def dirshash(paths: Iterable[Path], verbose: bool = False) -> str:
    """The sha256 of what `dirhash_iter` gives for each folder, in order (Pylightnix's)."""
    return datahash((item for p in paths for item in dirhash_iter(p)), verbose)


def dirhash(path: Path, verbose: bool = False) -> str:
    """Pylightnix's sha256 digest of a folder: the bytes of its files in order, names and
    files starting with ``_`` left out, so a folder of one file has that file's sha256.

    Raises InvalidConfigError if `path` is not a folder.
    """
    return dirshash([path], verbose)


def filehash(path: Path) -> str:
    """The sha256 hex digest of a file's bytes (what sha256sum prints).

    Raises InvalidConfigError if it is no file.
    """
    if not os.path.isfile(path):
        raise InvalidConfigError(f"filehash() expects a file, not {path!r}")
    return datahash((path, chunk) for chunk in _chunks(path))


def pyobjhash(pyobjs: list[Any]) -> str:
    """A hash of the parsed source of Python objects, the same in every process.

    Raises InvalidConfigError for an object whose source Python cannot find.
    """
    h = blake3()
    for o in pyobjs:
        try:
            src = textwrap.dedent("".join(inspect.getsourcelines(o)[0]))
        except (OSError, TypeError) as e:
            raise InvalidConfigError(f"cannot read the source of {o!r}: {e}") from e
        h.update(ast.dump(ast.parse(src)).encode())
    return h.hexdigest()


# -- permissions and folders ---------------------------------------------------

_WRITE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def _need_file(f: str) -> None:
    if not os.path.isfile(f):
        raise InvalidConfigError(f"{f!r} is not a file")


def filerw(f: Path) -> None:
    """Give the owner write permission on file `f`."""
    _need_file(f)
    os.chmod(f, os.stat(f).st_mode | stat.S_IWUSR)


def filero(f: Path) -> None:
    """Remove every write permission from file `f`."""
    _need_file(f)
    os.chmod(f, os.stat(f).st_mode & ~_WRITE)


def dirro(o: Path) -> None:
    """Make a folder and everything in it read-only (symlinks are left alone)."""
    make_readonly(o)


def dirrw(o: Path) -> None:
    """Give the owner write permission on a folder and everything in it."""
    make_writable(o)


def dirsize(o: Path) -> int:
    """Bytes of the files below `o` (symlinks not followed)."""
    total = 0
    for dirpath, _, filenames in walk(o):
        for f in filenames:
            fp = os.path.join(dirpath, f)
            if not os.path.islink(fp):
                total += os.path.getsize(fp)
    return total


def dirchmod(o: Path, mode: str) -> None:
    """`dirro` for ``mode='ro'``, `dirrw` for ``'rw'``; raises InvalidConfigError otherwise."""
    if mode == "ro":
        dirro(o)
    elif mode == "rw":
        dirrw(o)
    else:
        raise InvalidConfigError(f"dirchmod: mode must be 'ro' or 'rw', got {mode!r} for {o}")


def dirrm(path: Path, ignore_not_found: bool = True) -> None:
    """Remove a folder tree, write-protected or not; first renamed away so it vanishes at once.

    Raises FileNotFoundError if it is missing and `ignore_not_found` is False.
    """
    if not os.path.lexists(path):
        if not ignore_not_found:
            raise FileNotFoundError(errno.ENOENT, "no such folder", path)
        return
    tmp = f"{path}.tmp"
    try:
        os.rename(path, tmp)
    except FileNotFoundError:
        if not ignore_not_found:
            raise
        return
    remove_tree(tmp)


def dircp(src: Path, dst: Path, make_rw: bool = False) -> None:
    """Copy folder `src` to a new folder `dst` (which appears complete, by a rename).

    Raises InvalidConfigError if `src` is no folder or `dst` exists.
    """
    if not os.path.isdir(src):
        raise InvalidConfigError(f"dircp: {src!r} is not a folder")
    if os.path.lexists(dst):
        raise InvalidConfigError(f"dircp: {dst!r} already exists")
    tmp = f"{dst}.tmp"
    copy_tree(src, tmp, _not_copyable, keep_modes=True)
    if make_rw:
        dirrw(Path(tmp))
    os.rename(tmp, dst)


def _not_copyable(entry: Entry) -> InvalidConfigError:
    return InvalidConfigError(f"dircp: {entry.path!r} is a device, fifo or socket; not copied")


def isclosure(x: Any) -> bool:
    """True if `x` is a Closure."""
    from lightstore.engine.registry import Closure

    return isinstance(x, Closure)


# -- traversal -----------------------------------------------------------------

#: ``(key, value) -> new value``: called for every item by the `traverse_*` functions.
Mutator = Callable[[Any, Any], Any]


def _descend(v: Any, mut: Mutator) -> None:
    if isinstance(v, list):
        traverse_list(v, mut)
    elif isinstance(v, dict):
        traverse_dict(v, mut)
    elif isinstance(v, tuple):
        traverse_tuple(v, mut)


def traverse_tuple(t: tuple[Any, ...], mut: Mutator) -> None:
    """Call `mut` on every item of a tuple, recursively; a tuple item cannot be changed (UsageError)."""
    for i, item in enumerate(t):
        if mut(i, item) != item:
            raise UsageError("traverse_tuple: a tuple item cannot be changed")
        _descend(item, mut)


def traverse_list(lst: list[Any], mut: Mutator) -> None:
    """Replace every item of a list by ``mut(index, item)``, recursively (in place)."""
    for i in range(len(lst)):
        lst[i] = mut(i, lst[i])
        _descend(lst[i], mut)


def traverse_dict(d: dict[Any, Any], mut: Mutator) -> None:
    """Replace every value of a dict by ``mut(key, value)``, recursively (in place)."""
    for k in list(d.keys()):
        d[k] = mut(k, d[k])
        _descend(d[k], mut)


def scanref_list(lst: list[Any]) -> tuple[list[DRef], list[RRef]]:
    """The DRefs and RRefs found anywhere in a list, in order."""
    drefs: list[DRef] = []
    rrefs: list[RRef] = []

    def visit(_: Any, v: Any) -> Any:
        if isrref(v):
            rrefs.append(RRef(v))
        elif isdref(v):
            drefs.append(DRef(v))
        return v

    traverse_list(list(lst), visit)
    return drefs, rrefs


def scanref_dict(d: dict[Any, Any]) -> tuple[list[DRef], list[RRef]]:
    """The DRefs and RRefs found anywhere in a dict's values, in order."""
    if not isinstance(d, dict):
        raise InvalidConfigError(f"scanref_dict expects a dict, got {type(d).__name__}")
    return scanref_list(list(d.values()))


def dicthash(d: dict[str, Any]) -> str:
    """Pylightnix's sha256 of a dict's top-level items, ignoring keys that start with ``_``."""
    text = "_".join(f"{k}={v}" for k, v in sorted(d.items()) if k and k[0] != "_")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def assert_serializable(d: Any, argname: str = "dict") -> Any:
    """`d` after a JSON round trip; raises InvalidConfigError if that changes or fails."""
    try:
        d2 = json.loads(json.dumps(d, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InvalidConfigError(f"{argname} is not JSON-serializable: {e}") from e
    if str(d) != str(d2):
        raise InvalidConfigError(
            f"{argname} does not survive JSON: {d!r} reads back as {d2!r} "
            "(tuples, numpy numbers and other objects are not allowed)"
        )
    return d2


def assert_valid_dict(d: dict[str, Any], argname: str) -> dict[str, Any]:
    """`d` if it is a dict that survives JSON unchanged; raises InvalidConfigError."""
    if not isinstance(d, dict):
        raise InvalidConfigError(f"{argname} must be a dict, got {type(d).__name__}")
    assert_serializable(d, argname)
    return d


__all__ = [
    "EPOCH",
    "EPOCHORDINAL",
    "PYLIGHTNIX_SELF_TAG",
    "PYLIGHTNIX_TIME",
    "ZERO",
    "C",
    "D",
    "Mutator",
    "assert_serializable",
    "assert_valid_dict",
    "concat",
    "dagroots",
    "datahash",
    "debug",
    "dicthash",
    "dircp",
    "dirchmod",
    "dirhash",
    "dirhash_iter",
    "dirro",
    "dirrm",
    "dirrw",
    "dirshash",
    "dirsize",
    "encode",
    "enfold",
    "error",
    "filehash",
    "filero",
    "filerw",
    "forcelink",
    "info",
    "isclosure",
    "isdref",
    "isrefpath",
    "isrref",
    "isselfpath",
    "kahntsort",
    "logdir",
    "logger",
    "maybereadjson",
    "maybereadstr",
    "mklogdir",
    "parsetime",
    "pyobjhash",
    "readjson",
    "readstr",
    "scanref_dict",
    "scanref_list",
    "selfref",
    "timestring",
    "traverse_dict",
    "traverse_list",
    "traverse_tuple",
    "try_executable",
    "trycatch",
    "tryread",
    "tryread_def",
    "tryreadjson",
    "tryreadjson_def",
    "tryreadstr",
    "tryreadstr_def",
    "trywrite",
    "tzlocal",
    "warning",
    "writejson",
    "writestr",
]
