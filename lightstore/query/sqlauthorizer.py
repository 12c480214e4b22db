"""What SQL that users type may do, statement by statement: `authorize` (a SQLite authorizer)
lets a statement read and nothing else.

It refuses every write and every object a statement could make, temporary ones
included (``CREATE TEMP TRIGGER ... ON realizations`` would run inside lightstore's own
writes), transactions, ``ATTACH`` (which can create files; ``VACUUM INTO`` uses it),
pragmas other than introspection (`SAFE_PRAGMAS`), functions that reveal the process's
state or reach outside the catalogue (`DENIED_FUNCTIONS`: ``fts3_tokenizer`` returns a
memory address, ``load_extension`` loads code), and `DENIED_TABLES` (``sqlite_stmt``
lists the statements prepared on the connection, in the browser other people's). The rest
of the rules are in `lightstore.query.sqlguard`.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

#: What the authorizer last refused, per thread (`last_denial`).
_local = threading.local()

#: Pragmas user SQL may run: introspection only.
SAFE_PRAGMAS = frozenset(
    {
        "collation_list",
        "compile_options",
        "data_version",
        "database_list",
        "foreign_key_check",
        "foreign_key_list",
        "foreign_keys",
        "freelist_count",
        "function_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "integrity_check",
        "module_list",
        "page_count",
        "page_size",
        "pragma_list",
        "quick_check",
        "recursive_triggers",
        "schema_version",
        "synchronous",
        "table_info",
        "table_list",
        "table_xinfo",
        "user_version",
    }
)


#: Of those, the ones whose argument names what to describe; on the others an argument
#: (``PRAGMA foreign_keys = OFF``) would set something.
_PRAGMAS_WITH_ARGUMENT = frozenset(
    {
        "foreign_key_check",
        "foreign_key_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "integrity_check",
        "quick_check",
        "table_info",
        "table_list",
        "table_xinfo",
    }
)


#: Functions user SQL may not call: they reveal the process's state (``fts3_tokenizer``
#: returns a pointer, ``fts5`` hands one out), load code or touch files (``load_extension``;
#: ``readfile``, ``writefile``, ``edit`` where the build has them), or write to SQLite's log.
DENIED_FUNCTIONS = frozenset(
    {
        "edit",
        "fts3_tokenizer",
        "fts5",
        "load_extension",
        "readfile",
        "sqlite_log",
        "writefile",
    }
)


#: Tables (virtual) user SQL may not read: ``sqlite_stmt`` shows the SQL prepared on the
#: connection; ``fsdir`` and ``zipfile`` (where the build has them) read files.
DENIED_TABLES = frozenset({"fsdir", "sqlite_stmt", "zipfile"})

#: The authorizer's codes of what user SQL may do; `authorize` refuses the rest.
_READS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})

#: SQLite's own tables, which it "updates" when a table-valued function is first used
#: (and which no statement may change: "table sqlite_master may not be modified").
_SCHEMA_TABLES = frozenset({"sqlite_master", "sqlite_temp_master"})


_CHANGES = {
    sqlite3.SQLITE_INSERT: "INSERT",
    sqlite3.SQLITE_UPDATE: "UPDATE",
    sqlite3.SQLITE_DELETE: "DELETE",
    sqlite3.SQLITE_TRANSACTION: "a transaction",
    sqlite3.SQLITE_SAVEPOINT: "a savepoint",
    sqlite3.SQLITE_ANALYZE: "ANALYZE",
    sqlite3.SQLITE_REINDEX: "REINDEX",
    sqlite3.SQLITE_ALTER_TABLE: "ALTER TABLE",
}


def authorize(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
    """The authorizer of connections that run user SQL (see the module docstring): reading
    is allowed, everything else refused (`last_denial` says what was)."""
    if action in _READS:
        if action == sqlite3.SQLITE_READ and (arg1 or "").lower() in DENIED_TABLES:
            return _deny(f"the table {arg1}")
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        if (arg2 or "").lower() in DENIED_FUNCTIONS:
            return _deny(f"the function {arg2}()")
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name in SAFE_PRAGMAS and (arg2 is None or name in _PRAGMAS_WITH_ARGUMENT):
            return sqlite3.SQLITE_OK
        return _deny(f"PRAGMA {name}" + ("" if arg2 is None else f" = {arg2}"))
    if action == sqlite3.SQLITE_UPDATE and (arg1 or "").lower() in _SCHEMA_TABLES:
        return sqlite3.SQLITE_OK
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return _deny("ATTACH (VACUUM INTO uses it)")
    what = _CHANGES.get(action, "CREATE or DROP (temporary objects too)")
    return _deny(f"{what}: a statement here may only read", write=True)


def _deny(what: str, write: bool = False) -> int:
    _local.denial = (what, write)
    return sqlite3.SQLITE_DENY


def last_denial() -> tuple[str, bool] | None:
    """What the authorizer last refused on this thread, and whether it was a change (a
    write, a new object, a transaction); then forget it. None if it refused nothing."""
    denial: tuple[str, bool] | None = getattr(_local, "denial", None)
    _local.denial = None
    return denial
