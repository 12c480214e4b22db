"""Every name the store gives a file or folder on disk, in one place.

Layout of a store root::

    catalogue.sqlite            the SQLite catalogue (WAL mode)
    objects/<H>-<name>/         one folder per derivation
        config.json             its canonical config (read-only)
        <R>/                    one read-only folder per realization
            context.json        which dependency realizations it used
            ...                 the artifacts
    logs/<build id>.log         what each build printed (absent for a silent build)
    logs/imported/<R>-<H>-<name>.log
                                what the build of an imported realization printed, where
                                it was built (came with pull or unpack)
    pins/<name>                 named pins (gc keeps them): a file holding the pinned reference
    locks/                      lock files
    tmp/<host>.<pid>.<rand>.<label>/
                                build, import and gc areas, on the same filesystem
                                as objects/ (publishing is one rename)
    tmp/quarantine/             leftovers recovery could not delete (logged; delete by hand)

The tree alone (configs and contexts) is enough to rebuild the catalogue.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from lightstore.catalogue import HOST
from lightstore.foundation.hashing import TreeDigest, tree_digest
from lightstore.foundation.refs import DRef, Path, RRef, undref, unrref

#: The catalogue file in the store root.
CATALOGUE_FILE = "catalogue.sqlite"
OBJECTS_DIR = "objects"
TMP_DIR = "tmp"
LOCKS_DIR = "locks"
LOGS_DIR = "logs"
#: Below `LOGS_DIR`: the logs that came with imported realizations, by RRef.
IMPORTED_LOGS_DIR = "imported"
PINS_DIR = "pins"
#: The folder of `tmp/` where recovery sets aside leftovers it cannot delete.
QUARANTINE_DIR = "quarantine"
#: A derivation folder's config file.
CONFIG_FILE = "config.json"
#: The file at the top of every realization naming the realizations it was built from; not
#: part of the content hash (it is hashed as the context instead).
CONTEXT_FILE = "context.json"

# Areas under tmp/ are named <host>.<pid>.<random>.<label>; dots in the host would break that.
HOST_TAG = HOST.replace(".", "_")


class Layout:
    """The paths of one store root (nothing is created or read here)."""

    def __init__(self, root: str) -> None:
        self.root = Path(os.path.abspath(root))
        self.catalogue_path = os.path.join(self.root, CATALOGUE_FILE)
        self.objects_dir = os.path.join(self.root, OBJECTS_DIR)
        self.tmp_dir = os.path.join(self.root, TMP_DIR)
        self.locks_dir = os.path.join(self.root, LOCKS_DIR)
        self.logs_dir = os.path.join(self.root, LOGS_DIR)
        self.pins_dir = os.path.join(self.root, PINS_DIR)
        self.quarantine_dir = os.path.join(self.tmp_dir, QUARANTINE_DIR)

    def dref_path(self, dref: DRef) -> Path:
        """The folder of a derivation (it need not exist)."""
        h, name = undref(dref)
        return Path(os.path.join(self.objects_dir, f"{h}-{name}"))

    def rref_path(self, rref: RRef) -> Path:
        """The folder of a realization's artifacts (it need not exist)."""
        r, h, name = unrref(rref)
        return Path(os.path.join(self.objects_dir, f"{h}-{name}", r))

    def config_path(self, dref: DRef) -> str:
        """The config file of a derivation."""
        return os.path.join(self.dref_path(dref), CONFIG_FILE)

    def log_path(self, build_id: int) -> str:
        """The log file of build `build_id` (it need not exist)."""
        return os.path.join(self.logs_dir, f"{int(build_id)}.log")

    def imported_log_path(self, rref: RRef) -> str:
        """Where the build log that came with an imported realization is kept (it need not
        exist): it was built elsewhere, so no build record of this store names it."""
        r, h, name = unrref(rref)
        return os.path.join(self.logs_dir, IMPORTED_LOGS_DIR, f"{r}-{h}-{name}.log")

    def lock_path(self, *parts: str) -> str:
        """Path of a lock file under `locks/`."""
        return os.path.join(self.locks_dir, "-".join(parts) + ".lock")

    def tmp_name(self, label: str) -> str:
        """A fresh name for an area of this process under `tmp/`."""
        return f"{HOST_TAG}.{os.getpid()}.{secrets.token_hex(6)}.{label}"

    def new_build_area(self, label: str = "build") -> Path:
        """A fresh, unique folder in the store's temporary area (same filesystem as objects)."""
        path = os.path.join(self.tmp_dir, self.tmp_name(label))
        try:
            os.mkdir(path)  # tmp/ is there: one system call, not makedirs' two
        except FileNotFoundError:
            os.makedirs(path)
        return Path(path)


def log_build_id(name: str) -> int | None:
    """The build id of a file name of `logs/`, or None if it is not a build log."""
    stem, _dot, ext = name.partition(".")
    return int(stem) if ext == "log" and stem.isdigit() else None


def tmp_owner(name: str) -> tuple[str, int, str] | None:
    """``(host tag, pid, label)`` of an area name of `tmp/`, or None if it is not one."""
    parts = name.split(".")
    if len(parts) < 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[-1]


def realization_digest(folder: str, **options: Any) -> TreeDigest:
    """The content hash of a realization folder: every entry but its top `context.json`
    (the context is hashed beside it); `options` as for `tree_digest`."""
    return tree_digest(folder, skip_top=_NOT_CONTENT, **options)


_NOT_CONTENT = frozenset({CONTEXT_FILE})
