"""SQLite's errors as errors of lightstore's hierarchy, saying what lightstore was doing."""

from __future__ import annotations

import sqlite3

from lightstore.foundation.errors import (
    CatalogueCorruptError,
    CatalogueError,
    DiskFullError,
    IntegrityError,
    LightstoreError,
    LockTimeout,
    StoreNotFoundError,
    StoreReadOnlyError,
)

#: How long a connection waits for another's lock before SQLite says it is busy.
BUSY_TIMEOUT_S = 60.0


def translate_error(
    e: sqlite3.Error, path: str, doing: str, *, busy_timeout_s: float = BUSY_TIMEOUT_S
) -> LightstoreError:
    """The error of lightstore's hierarchy for a SQLite error met while `doing` something.

    Busy/locked becomes LockTimeout (saying it waited `busy_timeout_s`, the
    connection's busy timeout), damage CatalogueCorruptError (naming
    verify and reindex), a refused constraint IntegrityError, anything else
    CatalogueError; each message says what lightstore was doing.
    """
    msg = str(e)
    low = msg.lower()
    code = getattr(e, "sqlite_errorname", "") or ""
    if isinstance(e, sqlite3.IntegrityError):
        why = (
            "something it refers to is missing, or something still refers to what it removes"
            if "FOREIGN KEY" in msg
            else "a value breaks the catalogue's rules (see docs/schema.md)"
        )
        return IntegrityError(
            f"the catalogue {path} refused a change while {doing} ({msg}): {why}; "
            "nothing was changed"
        )
    if "not a database" in low or "malformed" in low or "corrupt" in low or "CORRUPT" in code:
        return CatalogueCorruptError(
            f"the catalogue {path} is damaged ({msg}) while {doing}; run `lightstore reindex` "
            "to rebuild it from the tree (verify needs a catalogue it can read)"
        )
    if "locked" in low or "busy" in low or code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return LockTimeout(
            f"timed out after {busy_timeout_s:g} s waiting for the catalogue {path} "
            f"while {doing} ({msg}): another process kept it locked; retry when it is done"
        )
    if "readonly" in low or "read-only" in low:
        return StoreReadOnlyError(
            f"the catalogue {path} is read-only ({msg}) while {doing}; check its permissions"
        )
    if "unable to open" in low:
        return StoreNotFoundError(f"cannot open the catalogue {path} ({msg}) while {doing}")
    if "full" in low:
        return DiskFullError(
            f"the disk holding the catalogue {path} is full ({msg}) while {doing}; free space "
            "and retry (nothing half-written was kept)"
        )
    return CatalogueError(f"the catalogue {path} failed while {doing}: {msg}")
