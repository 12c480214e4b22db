"""Read-only access to a store, for queries and for SQL that users write.

A read-only view opens the catalogue with ``mode=ro`` and never takes a
store lock, so it works while other processes realize into the store (WAL
lets readers and one writer proceed together) and for users who may read
but not write the store. On top of ``mode=ro`` the rules of
`lightstore.query.sqlguard` apply (the browser's SQL editor has the same):
an authorizer refuses ``ATTACH``, pragmas that change connection state and
functions that leak process state; user statements run under size limits
and a deadline, and the functions whose one call could outlast the deadline
are guarded.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from lightstore.catalogue import Catalogue, register_functions, sqlite_uri
from lightstore.catalogue.migrations import schema_files
from lightstore.foundation.errors import CatalogueCorruptError, StoreError, StoreNotFoundError
from lightstore.query.errors import QueryError
from lightstore.query.filters import register_query_functions, utf8_text
from lightstore.query.sqlauthorizer import DENIED_FUNCTIONS, DENIED_TABLES, authorize, last_denial
from lightstore.query.sqlbudget import (
    BATCH_BYTES,
    MAX_RESULT_BYTES,
    MAX_ROW_BYTES,
    row_bytes,
    too_big,
)
from lightstore.query.sqlguard import (
    DEADLINE_PASSED,
    MAX_COLUMNS,
    MAX_LENGTH,
    MAX_PATTERN_LENGTH,
    USER_SQL_LIMITS,
    enter_user_sql,
    install_guards,
    last_refusal,
    leave_user_sql,
    set_limits,
)
from lightstore.store import CATALOGUE_FILE, LocalStore
from lightstore.store.view import StoreView

_T = TypeVar("_T")


class ReadOnlyCatalogue(Catalogue):
    """A catalogue opened read-only (``mode=ro``), under the rules of `lightstore.query.sqlguard`
    (ATTACH, state-changing pragmas and leaking functions refused; slow functions guarded)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, readonly=True)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = super()._connect()
            # The first read is what needs the WAL's shared-memory file.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except (StoreError, sqlite3.OperationalError) as e:
            conn = self._connect_immutable(e)
        conn.set_authorizer(authorize)
        install_guards(conn)
        return conn

    def _connect_immutable(self, error: BaseException) -> sqlite3.Connection:
        """Open without the `-shm` file, for a reader that cannot create it.

        With no write access to the store folder, a WAL catalogue whose last
        writer has closed cannot be opened ``mode=ro`` (SQLite must create
        ``-shm``). ``immutable=1`` reads the main file alone, which is whole
        once no writer is open (closing checkpoints the WAL); a writer that
        starts meanwhile is not seen by this connection.
        """
        if os.access(os.path.dirname(self.path) or ".", os.W_OK):
            raise error
        uri = sqlite_uri(self.path, mode="ro", immutable="1")
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            register_functions(conn)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as e:
            raise self._translate(e) from e
        return conn


def catalogue_path(root: str) -> str:
    """Where the catalogue of the store at `root` lives."""
    return os.path.join(os.path.abspath(root), CATALOGUE_FILE)


def open_view(root: str) -> StoreView:
    """A read-only view of the store at `root`: its paths, and a `ReadOnlyCatalogue`.

    Takes no lock and writes nothing, except that a catalogue still missing a
    migration is first migrated by opening the store normally. Raises
    StoreNotFoundError if `root` holds no store, CatalogueVersionError if the
    catalogue is newer than this code, CatalogueCorruptError if it is not a
    lightstore catalogue at all (empty, say).
    """
    path = catalogue_path(root)
    if not os.path.isfile(path):
        raise StoreNotFoundError(
            f"no lightstore store at {os.path.abspath(root)}; create one with "
            f"`lightstore --root {os.path.abspath(root)} init`, or pass --root / set $LIGHTSTORE_ROOT"
        )
    catalogue = ReadOnlyCatalogue(path)
    try:
        pending = catalogue.check_version()
        if pending and len(pending) == len(schema_files()):
            # Every catalogue has its first migration from `init` on: this one is empty
            # (0 bytes, say) or not ours. Opening the store would make it an empty
            # catalogue of a store whose tree holds realizations.
            raise CatalogueCorruptError(
                f"the catalogue {path} is damaged: it holds no lightstore tables (it is "
                f"{os.path.getsize(path)} bytes); run `lightstore reindex` to rebuild it from "
                "the tree"
            )
    except BaseException:
        catalogue.close()
        raise
    if pending:
        catalogue.close()
        LocalStore.open(root)  # applies the pending migrations
        catalogue = ReadOnlyCatalogue(path)
    return StoreView(root, catalogue)


#: Default time limit of a user's `where` in `history` (seconds).
WHERE_TIMEOUT_S = 5.0
#: Default time limit of `lightstore sql` (seconds).
SQL_TIMEOUT_S = 60.0
# SQLite calls the progress handler every this many virtual machine steps (tens of rows).
_PROGRESS_STEPS = 1_000


def run_sql(
    catalogue: Catalogue,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] = (),
    timeout: float | None = None,
    max_bytes: int | None = MAX_RESULT_BYTES,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one statement of user SQL; return (column names, rows).

    Whatever `catalogue` is, the statement runs on a read-only connection
    under the rules of `lightstore.query.sqlguard`. Raises QueryError for a
    statement that would write (or make anything, temporary objects
    included), is refused by the authorizer, is malformed, is not UTF-8 text,
    runs longer than `timeout` seconds (None: no limit), or returns more than
    `max_bytes` bytes of values (None: no limit; `iter_sql` streams them),
    with a message that says which.
    """
    headers, batches = _statement(catalogue, sql, params, timeout, USER_SQL_LIMITS)
    rows: list[tuple[Any, ...]] = []
    spent = 0
    try:
        for batch, size in batches:
            spent += size
            if max_bytes is not None and spent > max_bytes:
                raise QueryError(f"{too_big(max_bytes)}, or stream the rows (`iter_sql`)")
            rows += batch
    finally:
        batches.close()
    return headers, rows


def iter_sql(
    catalogue: Catalogue,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] = (),
    timeout: float | None = None,
) -> tuple[list[str], Iterator[tuple[Any, ...]]]:
    """Like `run_sql`, but the rows come one at a time, so memory stays bounded: they are
    read in batches of at most 1,000 rows and `BATCH_BYTES` bytes.

    The deadline covers the whole statement, fetching included: a recursive
    CTE that never ends is interrupted after `timeout` seconds. Consume or
    close the iterator before running other SQL on the same catalogue.
    """
    headers, batches = _statement(catalogue, sql, params, timeout, USER_SQL_LIMITS)

    def rows() -> Iterator[tuple[Any, ...]]:
        try:
            for batch, _ in batches:
                yield from batch
        finally:
            batches.close()

    return headers, rows()


def query_rows(
    catalogue: Catalogue,
    sql: str,
    params: Sequence[Any],
    timeout: float | None = None,
    user_sql: bool = False,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run lightstore's own listing `sql` (under `USER_SQL_LIMITS`, but for the number of
    columns); with `user_sql`, it holds a user's fragment (`history`'s `where`, checked by
    `check_expression`), so it runs as user SQL does: read-only, under the authorizer."""
    limits = {k: v for k, v in USER_SQL_LIMITS.items() if k != sqlite3.SQLITE_LIMIT_COLUMN}
    headers, batches = _statement(
        catalogue, sql, params, timeout, limits, user_sql=user_sql, measure=False
    )
    rows: list[tuple[Any, ...]] = []
    try:
        for batch, _ in batches:
            rows += batch
    finally:
        batches.close()
    return headers, rows


#: Rows read at a time.
_BATCH_ROWS = 1_000


def _statement(
    catalogue: Catalogue,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any],
    timeout: float | None,
    limits: dict[int, int],
    user_sql: bool = True,
    measure: bool = True,
) -> tuple[list[str], Generator[tuple[list[tuple[Any, ...]], int], None, None]]:
    """Start `sql`; return its column names and a generator of (rows, their bytes) batches.

    `user_sql`: run on a read-only connection (`catalogue`'s own if it is a
    `ReadOnlyCatalogue`, else one opened for this statement) under `authorize`,
    the text checked as UTF-8. `measure`: batches hold at most `BATCH_BYTES`
    (rows read one by one, their bytes counted); else 1,000 rows, bytes 0.
    """
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise QueryError(f"the timeout must be a positive number of seconds, not {timeout!r}")
    owned = False
    if user_sql:
        _check_utf8(sql, params)
        if not isinstance(catalogue, ReadOnlyCatalogue):
            catalogue, owned = ReadOnlyCatalogue(catalogue.path), True
    try:
        conn = catalogue.conn
    except BaseException:
        if owned:
            catalogue.close()
        raise
    register_query_functions(conn)
    if user_sql:
        conn.set_authorizer(authorize)  # whatever was done to the connection before
    # The size limits bound what one function call can cost, which the deadline (checked
    # between steps) cannot; they are lifted after, for lightstore's own reads.
    before = set_limits(conn, limits)

    def finish() -> None:
        conn.set_progress_handler(None, 0)
        leave_user_sql()
        set_limits(conn, before)
        if owned:
            catalogue.close()

    deadline = None if timeout is None else time.monotonic() + timeout
    enter_user_sql(deadline)
    if deadline is not None:
        end = deadline
        conn.set_progress_handler(lambda: time.monotonic() > end, _PROGRESS_STEPS)
    try:
        cur = _sql_step(catalogue, timeout, lambda: conn.execute(sql, params))
    except BaseException:
        finish()
        raise
    headers = [d[0] for d in cur.description or ()]

    def fetch() -> tuple[list[tuple[Any, ...]], int]:
        if not measure:
            return cur.fetchmany(_BATCH_ROWS), 0
        rows: list[tuple[Any, ...]] = []
        size = 0
        while len(rows) < _BATCH_ROWS and size < BATCH_BYTES:
            row = cur.fetchone()
            if row is None:
                break
            one = row_bytes(row)
            if one > MAX_ROW_BYTES:
                raise QueryError(too_big(MAX_ROW_BYTES, "a row"))
            rows.append(row)
            size += one
        return rows, size

    def batches() -> Generator[tuple[list[tuple[Any, ...]], int], None, None]:
        try:
            while True:
                batch = _sql_step(catalogue, timeout, fetch)
                if not batch[0]:
                    return
                yield batch
        finally:
            cur.close()
            finish()

    return headers, batches()


def _check_utf8(sql: str, params: Sequence[Any] | Mapping[str, Any]) -> None:
    """Raise QueryError if the SQL or a text parameter is not UTF-8 text (a command-line
    argument with bytes that are not UTF-8 arrives with surrogates)."""
    values = params.values() if isinstance(params, Mapping) else params
    utf8_text(sql, "the SQL")
    for value in values:
        if isinstance(value, str):
            utf8_text(value, "a parameter")


def _sql_step(catalogue: Catalogue, timeout: float | None, step: Callable[[], _T]) -> _T:
    """Run one step of user SQL, turning SQLite's errors into ours."""
    last_refusal()  # forget one left from an earlier statement
    last_denial()
    try:
        return step()
    except sqlite3.Warning as e:  # "You can only execute one statement at a time."
        raise QueryError(f"{e} Run one statement per call.") from None
    except sqlite3.ProgrammingError as e:
        raise QueryError(f"cannot run this SQL: {e}") from None
    except MemoryError:  # SQLite's 'out of memory', or ours
        raise QueryError(
            "refused: the query needs more memory than there is; select fewer or smaller "
            "values (LIMIT, substr(), length())"
        ) from None
    except UnicodeEncodeError as e:
        raise QueryError(f"the SQL or a parameter is not UTF-8 text ({e.reason})") from None
    except sqlite3.DatabaseError as e:
        refusal, denial = last_refusal(), last_denial()
        if ("interrupted" in str(e) or refusal == DEADLINE_PASSED) and timeout is not None:
            raise QueryError(
                f"the query ran longer than {timeout:g} s and was stopped; narrow it, or allow "
                "more time (`lightstore sql --timeout SECONDS`, history(timeout=...))"
            ) from None
        if "malformed" in str(e) or "not a database" in str(e):
            raise CatalogueCorruptError(
                f"the catalogue {catalogue.path} is damaged ({e}); run `lightstore reindex`"
            ) from e
        if refusal is not None:
            raise QueryError(f"refused: {refusal}") from None
        if denial is not None:
            raise QueryError(_denied(*denial)) from None
        raise QueryError(_explain(str(e))) from None


def _denied(what: str, change: bool) -> str:
    if change:
        return (
            f"refused: {what}; the catalogue is read-only here: use SELECT, or the lightstore "
            "commands that change the store"
        )
    return (
        f"refused: {what} is not allowed on the read-only catalogue (nor ATTACH, VACUUM INTO, "
        f"pragmas that change the connection, the functions {', '.join(sorted(DENIED_FUNCTIONS))} "
        f"and the tables {', '.join(sorted(DENIED_TABLES))})"
    )


def _explain(message: str) -> str:
    if "too many columns" in message:
        return (
            f"refused: {message}: a statement here may return at most {MAX_COLUMNS} columns, "
            "so that one row cannot fill the memory"
        )
    if "too big" in message or "too complex" in message:
        return (
            f"refused: {message}: SQL typed here may make or read values of up to "
            f"{MAX_LENGTH} bytes and LIKE/GLOB patterns of up to {MAX_PATTERN_LENGTH} "
            "characters, so that no single function call outlasts the deadline"
        )
    if "readonly" in message or "read-only" in message:
        return (
            f"refused: the catalogue is opened read-only here and this statement would change it "
            f"({message}); use SELECT, or the lightstore commands that change the store"
        )
    if "not authorized" in message or "authorization denied" in message or "prohibited" in message:
        return (
            f"refused: {message}; ATTACH, VACUUM INTO, pragmas that change the connection, "
            f"the functions {', '.join(sorted(DENIED_FUNCTIONS))} and the tables "
            f"{', '.join(sorted(DENIED_TABLES))} are not allowed on the read-only catalogue"
        )
    return f"SQL error: {message}; the tables and views are listed in docs/schema.md"
