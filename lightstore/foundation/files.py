"""Filesystem helpers of the store: walking, copying, read-only trees, removal, durability.

Every tree operation here is iterative (an explicit stack), so it works at
any depth: Python 3.11's `os.walk`, `shutil.rmtree` and `shutil.copytree`
recurse once per level and fail with RecursionError past about a thousand.
Other modules walk, copy, chmod and delete trees only through these.

Path length: `remove_tree` works through directory descriptors, so it also
deletes a tree whose paths are longer than PATH_MAX (a realizer can make
one, and a build area holding it must still go). Everything else goes by
path: the store refuses to publish or import a realization with a path
longer than `MAX_RELATIVE_PATH`, so paths in the tree stay below PATH_MAX.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: The longest path, in bytes, the system accepts in a call (Linux: 4096).
try:
    PATH_MAX = os.pathconf("/", "PC_PATH_MAX")
except (AttributeError, OSError, ValueError):
    PATH_MAX = 4096
#: The longest relative path (UTF-8 bytes) inside a realization: the rest of
#: PATH_MAX is left for the store's root and ``objects/<H>-<name>/<R>/``.
MAX_RELATIVE_PATH = PATH_MAX - 1024
#: Symlinks followed in a row before `real_path` gives up (Linux's limit).
MAX_SYMLINKS = 40
COPY_CHUNK = 1024 * 1024

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- walking -------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One entry below a walked folder: its '/'-separated relative path, kind and details."""

    rel: str
    path: str
    kind: str  # "dir", "file", "link" or "other" (device, fifo, socket)
    executable: bool = False
    size: int = 0
    target: str = ""
    mode: int = 0


def walk_tree(top: str, skip_top: frozenset[str] = frozenset()) -> Iterator[Entry]:
    """Every entry below `top` in sorted order (by name), folders before their contents.

    Symlinks are reported, never followed. `skip_top` names entries of the
    top folder to leave out. A folder's entries are listed when the walk
    reaches it, after the folder itself was yielded, so a caller may change
    its permissions first.
    """
    stack: list[tuple[str, str]] = [(top, "")]
    while stack:
        folder, rel = stack.pop()
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs: list[tuple[str, str]] = []
        for e in entries:
            if not rel and e.name in skip_top:
                continue
            relpath = f"{rel}/{e.name}" if rel else e.name
            st = e.stat(follow_symlinks=False)
            mode = st.st_mode
            if stat.S_ISLNK(mode):
                yield Entry(relpath, e.path, "link", target=os.readlink(e.path), mode=mode)
            elif stat.S_ISREG(mode):
                yield Entry(
                    relpath, e.path, "file", bool(mode & stat.S_IXUSR), st.st_size, "", mode
                )
            elif stat.S_ISDIR(mode):
                yield Entry(relpath, e.path, "dir", mode=mode)
                subdirs.append((e.path, relpath))
            else:
                yield Entry(relpath, e.path, "other", mode=mode)
        # Depth-first in sorted order: the smallest name pops first.
        stack.extend(reversed(subdirs))


def walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """`os.walk(top)` (top-down, links not followed, errors ignored), without recursion.

    As with `os.walk`, a link to a folder is listed among the folders but not
    entered, and the caller may sort or prune the folder list it is given.
    """
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        dirs: list[str] = []
        others: list[str] = []
        for e in entries:
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            (dirs if is_dir else others).append(e.name)
        yield folder, dirs, others
        below = [os.path.join(folder, d) for d in dirs]
        stack.extend(p for p in reversed(below) if not os.path.islink(p))


def copy_tree(
    src: str,
    dst: str,
    refuse: Callable[[Entry], Exception],
    skip_top: frozenset[str] = frozenset(),
    keep_modes: bool = False,
) -> None:
    """Copy the folder `src` to the new folder `dst`: content, links and executable bits.

    Owners, times and write protection are not copied, so the copy can be
    completed and then published like a fresh build output; with
    `keep_modes`, permission bits are copied too (folders' last). A device,
    fifo or socket raises ``refuse(entry)`` (a fifo would block a plain copy).
    """
    os.mkdir(dst, 0o755)
    folders: list[tuple[str, int]] = []
    for entry in walk_tree(src, skip_top):
        target = os.path.join(dst, *entry.rel.split("/"))
        if entry.kind == "dir":
            os.mkdir(target, 0o755)
            folders.append((target, entry.mode))
        elif entry.kind == "link":
            os.symlink(entry.target, target)
        elif entry.kind == "file":
            with open(entry.path, "rb") as fin, open(target, "xb") as fout:
                shutil.copyfileobj(fin, fout, COPY_CHUNK)
            mode = stat.S_IMODE(entry.mode) if keep_modes else 0o755 if entry.executable else 0o644
            os.chmod(target, mode)
        else:
            raise refuse(entry)
    if keep_modes:
        for folder, mode in reversed(folders):
            os.chmod(folder, stat.S_IMODE(mode))
        os.chmod(dst, stat.S_IMODE(os.stat(src).st_mode))


def make_readonly(top: str, *, include_top: bool = True) -> None:
    """Remove write permission below `top` (folders last, deepest first).

    Moving a folder to another parent needs write permission on the folder
    itself (its `..` entry changes), so publishing keeps the top folder writable
    until after the rename.
    """
    folders: list[str] = []
    for e in walk_tree(top):
        if e.kind == "file":
            os.chmod(e.path, e.mode & ~0o222)
        elif e.kind == "dir":
            folders.append(e.path)
    for folder in reversed(folders):
        os.chmod(folder, os.lstat(folder).st_mode & ~0o222)
    if include_top:
        os.chmod(top, os.stat(top).st_mode & ~0o222)


def make_writable(top: str) -> None:
    """Give the owner write permission on `top` and every file and folder below it.

    Symlinks are left alone: their targets may lie outside the tree.
    """
    os.chmod(top, os.stat(top).st_mode | stat.S_IWUSR)
    for e in walk_tree(top):
        if e.kind in ("file", "dir"):
            os.chmod(e.path, e.mode | stat.S_IWUSR)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of `data` to the file descriptor `fd` (no buffered file object: a small
    file written this way costs no system calls beyond its open, write and close)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_path(path: str) -> None:
    """Flush one file or folder entry to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(top: str) -> None:
    """Flush every file and folder below `top`, then `top`, for `durable` stores."""
    folders: list[str] = []
    for e in walk_tree(top):
        if e.kind == "file":
            fsync_path(e.path)
        elif e.kind == "dir":
            folders.append(e.path)
    # A folder after everything below it, as a bottom-up walk would.
    for folder in reversed(folders):
        fsync_path(folder)
    fsync_path(top)


def real_path(path: str) -> str:
    """`os.path.realpath` without recursion (the standard one recurses once per link of a chain).

    Missing components are kept as they are, as `os.path.realpath` does.
    Raises OSError (ELOOP) after `MAX_SYMLINKS` links, as the kernel would.
    """
    pending = os.path.abspath(path).split("/")[::-1]
    resolved = "/"
    links = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = os.path.join(resolved, name)
        try:
            target = os.readlink(candidate)
        except OSError:  # not a link, or missing: keep the name
            resolved = candidate
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
        if target.startswith("/"):
            resolved = "/"
        pending.extend(target.split("/")[::-1])
    return resolved


# -- removal -------------------------------------------------------------------


def remove_tree(path: str) -> None:
    """Delete a file or folder even if it was made read-only; a missing path is fine.

    Goes through directory descriptors, one level at a time, so neither the
    depth nor the length of the paths below `path` matters. Symlinks are
    removed, never followed.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    path = os.path.abspath(path)
    parent = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _remove_folder(parent, os.path.basename(path))
    finally:
        os.close(parent)


def _remove_folder(parent: int, name: str) -> None:
    """Delete the folder `name` of the open folder `parent` and everything below it.

    Only two descriptors are open at a time (the top's parent and the current
    folder): a folder's pending subfolders are remembered by name, and the way
    back up is `..`, checked to be the folder that was come from.
    """
    fd = _open_folder(parent, name)
    # Per level: its name in its parent, its identity, the subfolders still to delete.
    levels: list[tuple[str, tuple[int, int], list[str]]] = []
    try:
        levels.append((name, _identity(fd), _clear(fd)))
        while levels:
            pending = levels[-1][2]
            if pending:
                child = _open_folder(fd, pending[-1])
                os.close(fd)
                fd = child
                levels.append((pending.pop(), _identity(fd), _clear(fd)))
                continue
            done = levels.pop()[0]
            if levels:
                up = os.open("..", _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = up
                if _identity(fd) != levels[-1][1]:
                    raise OSError(errno.ESTALE, "a folder was moved while it was being deleted")
                _remove_entry(fd, done, folder=True)
            else:
                os.close(fd)
                fd = -1
                os.rmdir(done, dir_fd=parent)  # its parent is not ours to make writable
    finally:
        if fd >= 0:
            os.close(fd)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _open_folder(parent: int, name: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except PermissionError:
        # A folder without read or search permission for its owner (not root).
        os.chmod(name, stat.S_IRWXU, dir_fd=parent)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)


def _clear(fd: int) -> list[str]:
    """Delete everything but the subfolders of the open folder `fd`; return their names."""
    with os.scandir(fd) as it:
        entries = list(it)
    folders: list[str] = []
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            folders.append(e.name)
        else:
            _remove_entry(fd, e.name, folder=False)
    return folders


def _remove_entry(fd: int, name: str, folder: bool) -> None:
    remove = os.rmdir if folder else os.unlink
    try:
        remove(name, dir_fd=fd)
    except PermissionError:
        # A read-only folder (published objects are): make it writable, once.
        os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | stat.S_IRWXU)
        remove(name, dir_fd=fd)
