"""Which filesystem holds the catalogue, and so which SQLite journal mode is safe on it."""

from __future__ import annotations

import os

# Filesystems on which SQLite's WAL mode (shared memory) is unsafe.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "afs",
        "fuse.sshfs",
    }
)


def filesystem_type(path: str, mountinfo: list[str] | None = None) -> str | None:
    """The type of the filesystem holding `path` (from Linux's mountinfo), or None if unknown."""
    if mountinfo is not None:
        lines = mountinfo
    else:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8") as f:
                lines = f.readlines()
        except OSError:
            return None
    real = os.path.realpath(path)
    best, fstype = "", None
    for line in lines:
        parts = line.split()
        if "-" not in parts:
            continue
        mount = parts[4].replace("\\040", " ")
        sep = parts.index("-")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fstype = mount, parts[sep + 1]
    return fstype


def journal_mode_for(fstype: str | None) -> str:
    """WAL, except on network filesystems.

    WAL needs memory shared between processes (the -shm file), which network
    filesystems do not provide; the rollback journal only needs their file locks.
    """
    return "DELETE" if fstype in NETWORK_FILESYSTEMS else "WAL"
