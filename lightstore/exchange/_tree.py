"""Walking, copying and checking realization folders without following symlinks."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from lightstore.errors import ArchiveError

COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One entry below a root: its '/'-separated relative path, kind and details."""

    rel: str
    path: str
    kind: str  # "dir", "file" or "link"
    executable: bool = False
    size: int = 0
    target: str = ""


def walk_tree(root: str, skip_top: frozenset[str] = frozenset()) -> Iterator[Entry]:
    """Every entry below `root` in sorted order, folders before their contents.

    Symlinks are reported, never followed (``os.walk`` would list a link to a
    folder as a folder). Raises ArchiveError for devices, fifos and sockets.
    `skip_top` names entries of the top folder to leave out.
    """
    stack: list[tuple[str, str]] = [(root, "")]
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
            if stat.S_ISLNK(st.st_mode):
                yield Entry(relpath, e.path, "link", target=os.readlink(e.path))
            elif stat.S_ISREG(st.st_mode):
                yield Entry(relpath, e.path, "file", bool(st.st_mode & stat.S_IXUSR), st.st_size)
            elif stat.S_ISDIR(st.st_mode):
                yield Entry(relpath, e.path, "dir")
                subdirs.append((e.path, relpath))
            else:
                raise ArchiveError(
                    f"{e.path} is neither a file, a folder nor a symlink; devices, fifos and "
                    "sockets cannot be exchanged"
                )
        stack.extend(reversed(subdirs))


def inside(path: str, root: str) -> bool:
    """True if the real location of `path` is `root` or below it (both resolved)."""
    real = os.path.realpath(path)
    base = os.path.realpath(root)
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
    """True if a symlink at `path` ('/'-separated, below a root) pointing to `target`
    leaves the root by its text alone: more '..' than the folders above it."""
    depth = len(path.split("/")) - 1
    for part in target.split("/"):
        depth += -1 if part == ".." else (0 if part in ("", ".") else 1)
        if depth < 0:
            return True
    return False


def check_links(
    root: str, what: str, *, portable: bool = False, utf8_hint: str | None = None
) -> None:
    """Refuse symlinks below `root` that are absolute or resolve outside `root`.

    Links are resolved on disk, so a chain of individually harmless links
    (``a -> b/..``, ``b -> ..``) that escapes is caught as well. With
    `portable` (before packing or pushing), also what every reader of an
    archive or a remote refuses: a link that leaves `root` by its text alone,
    and a name holding a backslash. With `utf8_hint`, names and link targets
    that are not valid UTF-8 too (see `check_utf8_name`; the hint says what
    to do). One walk; raises ArchiveError.
    """
    for entry in walk_tree(root):
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
        if (portable and link_leaves(entry.rel, entry.target)) or not inside(entry.path, root):
            raise ArchiveError(
                f"{what}: {entry.rel!r} is a symlink pointing outside its realization "
                f"({entry.target!r}); refused"
            )


def copy_tree(src: str, dst: str, skip_top: frozenset[str] = frozenset()) -> None:
    """Copy the folder `src` to the new folder `dst`: content, links and executable bits only.

    Owners, times and write protection are not copied, so the copy can be
    completed and then published like a fresh build output.
    """
    os.mkdir(dst, 0o755)
    for entry in walk_tree(src, skip_top):
        target = os.path.join(dst, *entry.rel.split("/"))
        if entry.kind == "dir":
            os.mkdir(target, 0o755)
        elif entry.kind == "link":
            os.symlink(entry.target, target)
        else:
            with open(entry.path, "rb") as fin, open(target, "xb") as fout:
                shutil.copyfileobj(fin, fout, COPY_CHUNK)
            os.chmod(target, 0o755 if entry.executable else 0o644)
