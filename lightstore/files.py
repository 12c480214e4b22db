"""Filesystem helpers of the store: read-only trees, removal, durability, liveness of pids."""

from __future__ import annotations

import os
import shutil
import stat


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_readonly(root: str, *, include_root: bool = True) -> None:
    """Remove write permission below `root` (folders last, so the walk can finish).

    Moving a folder to another parent needs write permission on the folder
    itself (its `..` entry changes), so publishing keeps the root writable
    until after the rename.
    """
    for folder, dirs, files in os.walk(root, topdown=False):
        for f in files:
            p = os.path.join(folder, f)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, st.st_mode & ~0o222)
        for d in dirs:
            p = os.path.join(folder, d)
            if not os.path.islink(p):
                os.chmod(p, os.lstat(p).st_mode & ~0o222)
    if include_root:
        os.chmod(root, os.stat(root).st_mode & ~0o222)


def fsync_path(path: str) -> None:
    """Flush one file or folder entry to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str) -> None:
    """Flush every file and folder below `root` (bottom-up), for `durable` stores."""
    for folder, _, files in os.walk(root, topdown=False):
        for f in files:
            p = os.path.join(folder, f)
            if not os.path.islink(p):
                fsync_path(p)
        fsync_path(folder)


def remove_tree(path: str) -> None:
    """Delete a file or folder even if it was made read-only; a missing path is fine."""
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return
    try:
        shutil.rmtree(path)
        return
    except PermissionError:
        pass
    # Read-only folders must become writable before their entries can go.
    for folder, dirs, _ in os.walk(path):
        os.chmod(folder, stat.S_IRWXU)
        for d in dirs:
            p = os.path.join(folder, d)
            if not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
    shutil.rmtree(path)
