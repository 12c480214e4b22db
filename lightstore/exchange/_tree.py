"""Walking, copying and checking realization folders for exchange, without following symlinks.

The walks themselves are `lightstore.files`'s (iterative, any depth); this
adds what exchange refuses: devices, fifos, sockets and escaping links.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from lightstore import files
from lightstore.errors import ArchiveError
from lightstore.files import COPY_CHUNK, Entry

__all__ = ["COPY_CHUNK", "Entry", "check_links", "copy_tree", "inside", "walk_tree"]


def _special(entry: Entry) -> ArchiveError:
    return ArchiveError(
        f"{entry.path} is neither a file, a folder nor a symlink; devices, fifos and "
        "sockets cannot be exchanged"
    )


def walk_tree(root: str, skip_top: frozenset[str] = frozenset()) -> Iterator[Entry]:
    """Every entry below `root` in sorted order, folders before their contents.

    Symlinks are reported, never followed. Raises ArchiveError for devices,
    fifos and sockets. `skip_top` names entries of the top folder to leave out.
    """
    for entry in files.walk_tree(root, skip_top):
        if entry.kind == "other":
            raise _special(entry)
        yield entry


def inside(path: str, root: str) -> bool:
    """True if the real location of `path` is `root` or below it (both resolved).

    A chain of more links than the system follows resolves nowhere: False.
    """
    try:
        real = files.real_path(path)
        base = files.real_path(root)
    except OSError:
        return False
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def check_links(root: str, what: str) -> None:
    """Refuse symlinks below `root` that are absolute or resolve outside `root`.

    Links are resolved on disk, so a chain of individually harmless links
    (``a -> b/..``, ``b -> ..``) that escapes is caught as well.
    """
    for entry in walk_tree(root):
        if entry.kind != "link":
            continue
        if os.path.isabs(entry.target):
            raise ArchiveError(
                f"{what}: {entry.rel!r} is a symlink to the absolute path {entry.target!r}; "
                "only relative links inside a realization can be exchanged"
            )
        if not inside(entry.path, root):
            raise ArchiveError(
                f"{what}: {entry.rel!r} is a symlink pointing outside its realization "
                f"({entry.target!r}), or through more than {files.MAX_SYMLINKS} links; refused"
            )


def copy_tree(src: str, dst: str, skip_top: frozenset[str] = frozenset()) -> None:
    """Copy the folder `src` to the new folder `dst` (see `lightstore.files.copy_tree`).

    Raises ArchiveError for devices, fifos and sockets.
    """
    files.copy_tree(src, dst, _special, skip_top)
