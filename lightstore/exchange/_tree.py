"""Walking, copying and checking realization folders for exchange, without following symlinks.

The walks themselves are `lightstore.foundation.files`'s (iterative, any depth); this
adds what exchange refuses: devices, fifos, sockets and escaping links.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from lightstore.foundation import files
from lightstore.foundation.errors import ArchiveError
from lightstore.foundation.files import COPY_CHUNK, Entry

__all__ = [
    "COPY_CHUNK",
    "Entry",
    "check_links",
    "check_utf8_name",
    "copy_tree",
    "inside",
    "link_leaves",
    "walk_tree",
]


def _special(entry: Entry) -> ArchiveError:
    return ArchiveError(
        f"{entry.path} is neither a file, a folder nor a symlink; devices, fifos and "
        "sockets cannot be exchanged"
    )


def walk_tree(top: str, skip_top: frozenset[str] = frozenset()) -> Iterator[Entry]:
    """Every entry below `top` in sorted order, folders before their contents.

    Symlinks are reported, never followed. Raises ArchiveError for devices,
    fifos and sockets. `skip_top` names entries of the top folder to leave out.
    """
    for entry in files.walk_tree(top, skip_top):
        if entry.kind == "other":
            raise _special(entry)
        yield entry


def inside(path: str, top: str) -> bool:
    """True if the real location of `path` is `top` or below it (both resolved).

    A chain of more links than the system follows resolves nowhere: False.
    """
    try:
        real = files.real_path(path)
        base = files.real_path(top)
    except OSError:
        return False
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def check_utf8_name(text: str, what: str, hint: str = "") -> None:
    """Refuse a file name or symlink target that is not valid UTF-8 text.

    A name on disk that is not UTF-8 reaches Python with its bytes as lone
    surrogates (surrogateescape); a name read from JSON may hold any lone
    surrogate, which names no file at all. Zip archives and remote manifests
    hold UTF-8 text only. `what` starts the message ("cannot push X: the file
    name"), `hint` ends it (what to do). Raises ArchiveError.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:  # the bytes a name from disk had: 'caf\\xe9'
            shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate that stands for no byte: '\\ud800'
            shown = text.encode("utf-8", "backslashreplace").decode("utf-8")
        raise ArchiveError(
            f"{what} {shown!r} is not valid UTF-8" + (f"; {hint}" if hint else "")
        ) from None


def link_leaves(path: str, target: str) -> bool:
    """True if a symlink at `path` ('/'-separated, below the walked folder) pointing to
    `target` leaves that folder by its text alone: more '..' than the folders above it."""
    depth = len(path.split("/")) - 1
    for part in target.split("/"):
        depth += -1 if part == ".." else (0 if part in ("", ".") else 1)
        if depth < 0:
            return True
    return False


def check_links(
    top: str, what: str, *, portable: bool = False, utf8_hint: str | None = None
) -> None:
    """Refuse symlinks below `top` that are absolute or resolve outside `top`.

    Links are resolved on disk, so a chain of individually harmless links
    (``a -> b/..``, ``b -> ..``) that escapes is caught as well. With
    `portable` (before packing or pushing), also what every reader of an
    archive or a remote refuses: a link that leaves `top` by its text alone,
    and a name holding a backslash. With `utf8_hint`, names and link targets
    that are not valid UTF-8 too (see `check_utf8_name`; the hint says what
    to do). One walk; raises ArchiveError.
    """
    for entry in walk_tree(top):
        if portable and "\\" in entry.rel:
            raise ArchiveError(
                f"{what}: the file name {entry.rel!r} holds a backslash, which archives and "
                "remote caches refuse (it separates folders on Windows)"
            )
        if utf8_hint is not None:
            check_utf8_name(entry.rel, f"{what}: the file name", utf8_hint)
        if entry.kind != "link":
            continue
        if utf8_hint is not None:
            check_utf8_name(entry.target, f"{what}: the target of {entry.rel!r}", utf8_hint)
        if os.path.isabs(entry.target):
            raise ArchiveError(
                f"{what}: {entry.rel!r} is a symlink to the absolute path {entry.target!r}; "
                "only relative links inside a realization can be exchanged"
            )
        if (portable and link_leaves(entry.rel, entry.target)) or not inside(entry.path, top):
            raise ArchiveError(
                f"{what}: {entry.rel!r} is a symlink pointing outside its realization "
                f"({entry.target!r}), or through more than {files.MAX_SYMLINKS} links; refused"
            )


def copy_tree(src: str, dst: str, skip_top: frozenset[str] = frozenset()) -> None:
    """Copy the folder `src` to the new folder `dst` (see `lightstore.foundation.files.copy_tree`).

    Raises ArchiveError for devices, fifos and sockets.
    """
    files.copy_tree(src, dst, _special, skip_top)
