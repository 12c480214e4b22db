"""Content addressing with blake3.

Every hash feeds a type tag first, then a canonical encoding, so that a
config, a context and a file tree can never collide with each other, and a
change of encoding shows up as a change of the pinned test vectors.

- `config_hash`: tag + canonical JSON of the config.
- `context_hash`: tag + canonical JSON of ``{dref: sorted(rrefs)}``.
- `tree_digest`: tag + one record per entry of an output folder, in sorted
  order of relative path: entry type, path, executable bit, then the blake3 of
  the file's bytes (streamed, constant memory) or the symlink's target text.
- `realization_hash`: tag + context hash + tree digest.
"""

from __future__ import annotations

import mmap
import os
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from blake3 import blake3

from lightstore.foundation.config import canonical_json
from lightstore.foundation.errors import BuildError
from lightstore.foundation.refs import HASH_LEN, HashPart

_K = TypeVar("_K", bound=str)

# Files above this size are hashed with blake3's own thread pool through
# memory-mapped windows; below it the thread start-up costs more than it saves.
_MULTITHREAD_THRESHOLD = 4 * 1024 * 1024
_WINDOW = 32 * 1024 * 1024


def _tagged(tag: bytes) -> blake3:
    return blake3(tag + b"\0")


def config_hash(config: dict[str, Any]) -> HashPart:
    """The 32-hex hash part of a config's DRef."""
    return config_bytes_hash(canonical_json(config).encode("utf-8"))


def config_bytes_hash(data: bytes) -> HashPart:
    """`config_hash` of a config given as its canonical JSON bytes (checked before parsing)."""
    h = _tagged(b"lightstore:config:v1")
    h.update(data)
    return HashPart(h.hexdigest()[:HASH_LEN])


def canonical_context(context: Mapping[_K, Sequence[str]]) -> dict[str, list[str]]:
    """The order-free form of a context: keys sorted, each RRef list sorted and unique."""
    return {str(k): sorted(set(context[k])) for k in sorted(context)}


def context_hash(context: Mapping[_K, Sequence[str]]) -> str:
    """The hash of a context (which realizations of each dependency were used)."""
    h = _tagged(b"lightstore:context:v1")
    h.update(canonical_json(canonical_context(context)).encode("utf-8"))
    return h.hexdigest()[:HASH_LEN]


def realization_hash(ctx_hash: str, tree: str) -> HashPart:
    """The 32-hex hash part of an RRef: content and context together."""
    h = _tagged(b"lightstore:realization:v1")
    h.update(ctx_hash.encode("ascii"))
    h.update(b"\0")
    h.update(tree.encode("ascii"))
    return HashPart(h.hexdigest()[:HASH_LEN])


def file_digest(path: str, size: int | None = None) -> bytes:
    """blake3 of a file's bytes in constant memory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _fd_digest(fd, os.fstat(fd).st_size if size is None else size)
    finally:
        os.close(fd)


def _fd_digest(fd: int, size: int) -> bytes:
    """blake3 of an open file's bytes.

    Small files are read whole. Large ones are mapped window by window and
    hashed with blake3's thread pool: a window is big enough for its threads
    to pay off, and unmapping it returns its pages, so memory stays bounded
    by the window whatever the file size.
    """
    if size < _MULTITHREAD_THRESHOLD:
        h = blake3()
        while chunk := os.read(fd, max(size, 65536)):
            h.update(chunk)
        return h.digest()
    h = blake3(max_threads=blake3.AUTO)
    for offset in range(0, size, _WINDOW):
        length = min(_WINDOW, size - offset)
        with mmap.mmap(fd, length, offset=offset, access=mmap.ACCESS_READ) as window:
            h.update(window)
    return h.digest()


def _private_copy(path: str, fd_mode: int) -> int:
    """Replace the hard link `path` by a copy of its bytes; return a read descriptor of the copy."""
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, f".lightstore-copy.{os.getpid()}.{os.path.basename(path)}"[:255])
    with open(path, "rb") as src, open(tmp, "xb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(tmp, stat.S_IMODE(fd_mode))
    os.replace(tmp, path)
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW)


def _len_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


@dataclass(frozen=True)
class TreeDigest:
    """What hashing an output folder found."""

    digest: str
    size: int
    files: int


def tree_digest(
    top: str,
    skip_top: frozenset[str] = frozenset(),
    make_readonly: bool = False,
    max_path: int | None = None,
) -> TreeDigest:
    """Hash every entry below `top` (not `top` itself, nor the top-level names in `skip_top`)
    in a canonical order.

    With `make_readonly`, write permission is removed from every file and
    folder below `top` in the same pass (folders after their contents), which
    saves publishing a second walk of the tree. Iterative: any depth works.
    Raises BuildError for entries that are neither files, folders nor symlinks
    (devices, sockets, fifos): they cannot be stored; and, with `max_path`,
    for a relative path longer than that many UTF-8 bytes (checked before the
    walk goes below it, so a tree too deep for the system is never entered).
    """
    h = _tagged(b"lightstore:tree:v1")
    folders: list[str] = []
    total = 0
    count = 0
    # An explicit stack keeps memory proportional to the depth, not the size.
    stack: list[tuple[str, str]] = [(top, "")]
    while stack:
        folder, rel = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name.encode("utf-8", "surrogateescape"))
        subdirs: list[tuple[str, str]] = []
        for e in entries:
            if rel == "" and e.name in skip_top:
                continue
            relpath = f"{rel}/{e.name}" if rel else e.name
            raw = relpath.encode("utf-8", "surrogateescape")
            if max_path is not None and len(raw) > max_path:
                raise BuildError(
                    f"the path {relpath[:60]!r}... is {len(raw)} bytes long; paths inside a "
                    f"realization are at most {max_path} bytes (so that they fit the system's "
                    "PATH_MAX wherever the store is): use shorter names or a shallower tree",
                    dref="",
                )
            encoded = _len_prefixed(raw)
            # d_type from the directory listing avoids an lstat per entry; a
            # regular file's size and mode come from fstat on the descriptor
            # that also reads it and, with make_readonly, fchmods it.
            if e.is_symlink():
                target = os.readlink(e.path).encode("utf-8", "surrogateescape")
                h.update(b"l" + encoded + _len_prefixed(target))
                count += 1
            elif e.is_file(follow_symlinks=False):
                fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    st = os.fstat(fd)
                    if make_readonly and st.st_nlink > 1:
                        # A hard link shares its inode with a file outside the
                        # output: never chmod it, and never let later edits of
                        # that file change the store. Publish a private copy.
                        os.close(fd)
                        fd = _private_copy(e.path, fd_mode=st.st_mode)
                        st = os.fstat(fd)
                    kind = b"x" if st.st_mode & stat.S_IXUSR else b"f"
                    h.update(kind + encoded + _fd_digest(fd, st.st_size))
                    if make_readonly and st.st_mode & 0o222:
                        os.fchmod(fd, st.st_mode & ~0o222)
                finally:
                    os.close(fd)
                total += st.st_size
                count += 1
            elif e.is_dir(follow_symlinks=False):
                h.update(b"d" + encoded)
                subdirs.append((e.path, relpath))
                folders.append(e.path)
            else:
                raise BuildError(
                    f"{relpath!r} in an output is neither a file, a folder nor a symlink; "
                    "devices, sockets and fifos cannot be stored",
                    dref="",
                )
        # Depth-first in sorted order: push in reverse so the smallest pops first.
        # Records carry full relative paths, so the order only needs to be fixed.
        stack.extend(reversed(subdirs))
    if make_readonly:
        # Parents were found before their children: undo in reverse order.
        for folder in reversed(folders):
            os.chmod(folder, os.stat(folder).st_mode & ~0o222)
    return TreeDigest(h.hexdigest(), total, count)
