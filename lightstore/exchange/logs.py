"""The build log of a realization as it travels between stores (pack/unpack, push/pull).

A realization built here has the log of its build (``logs/<build id>.log``); one that came
from elsewhere has the log that came with it, if any (``logs/imported/<rref>.log``, see
`Layout.imported_log_path`). A log is information, not content: no hash of the
realization covers it, so archives and remotes carry it beside the realization (a remote's
signed manifest names its hash), and a log larger than `MAX_LOG_BYTES` stays behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat

from lightstore.foundation.errors import ArchiveError
from lightstore.foundation.refs import RRef, unrref
from lightstore.store import LocalStore

log = logging.getLogger("lightstore")

#: The largest log that travels with a realization (a realizer may print gigabytes).
MAX_LOG_BYTES = 256 * 1024 * 1024


def log_of(store: LocalStore, rref: RRef) -> tuple[str, int] | None:
    """The log file of `rref` in `store` and its size: its build's, else the one that came
    with it; None if there is none, or it is larger than `MAX_LOG_BYTES` (with a warning)."""
    record = store.catalogue.realization_record(rref) or {}
    paths = [store.imported_log_path(rref)]
    if record.get("build_id") is not None:
        paths.insert(0, store.log_path(int(record["build_id"])))
    for path in paths:
        try:
            size = os.stat(path).st_size
        except OSError:
            continue
        if size > MAX_LOG_BYTES:
            log.warning(
                "the build log of %s is %d bytes, more than the %d that travel with a "
                "realization: it stays behind",
                rref,
                size,
                MAX_LOG_BYTES,
            )
            return None
        return path, size
    return None


def keep_imported_log(store: LocalStore, rref: RRef, source: str) -> None:
    """Move the file `source` (in the store's temporary area) to where the log that came
    with `rref` is kept, replacing an older one; a log that cannot be kept is dropped
    with a warning (the realization stands without it)."""
    target = store.imported_log_path(rref)
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.chmod(source, 0o644)
        os.replace(source, target)
    except OSError as e:
        log.warning("cannot keep the build log that came with %s: %s", rref, e.strerror or e)
        with contextlib.suppress(OSError):
            os.unlink(source)


def archive_log_name(rref: RRef) -> str:
    """The name of the build log of `rref` in an archive's ``logs/`` folder."""
    r, h, name = unrref(rref)
    return f"{r}-{h}-{name}.log"


def check_archive_logs(folder: str, logs: dict[RRef, int], where: str) -> None:
    """The extracted ``logs/`` `folder` holds exactly the logs the manifest lists (`logs`:
    their sizes), as regular files of those sizes; ArchiveError otherwise."""
    if not os.path.lexists(folder) and not logs:
        return
    if os.path.islink(folder) or not os.path.isdir(folder):
        raise ArchiveError(f"{where}: 'logs' is missing or not a folder")
    names = {archive_log_name(r): r for r in logs}
    found = set(os.listdir(folder))
    if found != set(names):
        extra, lacking = sorted(found - set(names)), sorted(set(names) - found)
        raise ArchiveError(
            f"{where}: the build logs do not match the manifest (not in the manifest: "
            f"{extra}, missing: {lacking}); the archive lies or is truncated"
        )
    for name, r in names.items():
        st = os.lstat(os.path.join(folder, name))
        if not stat.S_ISREG(st.st_mode) or st.st_size != logs[r]:
            raise ArchiveError(
                f"{where}: the build log of {r} is not a file of {logs[r]} bytes; the archive "
                "lies or is damaged"
            )
