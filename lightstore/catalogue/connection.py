"""The catalogue's SQLite connection: pragmas, statements, transactions.

One connection per thread and per process (SQLite connections must not cross
a fork). Writes go through `Database.write()`, a ``BEGIN IMMEDIATE``
transaction: taking the write lock up front means a writer waits in SQLite's
busy handler instead of failing half way when it upgrades a read transaction.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from lightstore.catalogue import migrations
from lightstore.catalogue.filesystems import filesystem_type, journal_mode_for
from lightstore.catalogue.rows import Row, row_class
from lightstore.catalogue.sql import register_functions
from lightstore.catalogue.sqlerrors import BUSY_TIMEOUT_S, translate_error
from lightstore.foundation.errors import LightstoreError, StoreReadOnlyError


def sqlite_uri(path: str, **params: str) -> str:
    """A SQLite ``file:`` URI for the file `path`, with query `params` (``mode="ro"``).

    The path is percent-encoded: left as it is, a ``?`` or ``#`` in it would
    end the file name and a ``%XX`` would be decoded, so that a store at
    ``runs/a%2Fb`` would open the catalogue of the store at ``runs/a/b``.
    """
    quoted = urllib.parse.quote(os.fsencode(path), safe="/")
    # 'file://' + '/abs' names no authority; a bare 'file://x' would make 'x' one.
    head = "file://" if quoted.startswith("/") else "file:"
    query = urllib.parse.urlencode(params)
    return head + quoted + ("?" + query if query else "")


def fold_wal(path: str) -> None:
    """Copy the WAL of the catalogue file `path` back into it, if it can without waiting
    long (so that a copy of the file alone is whole); never raises."""
    with contextlib.suppress(Exception):
        conn = sqlite3.connect(path, timeout=1)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Database:
    """Per-thread SQLite connections to one catalogue file."""

    def __init__(self, path: str, *, durable: bool = False, readonly: bool = False) -> None:
        self.path = path
        self.durable = durable
        self.readonly = readonly
        self.journal_mode = journal_mode_for(filesystem_type(os.path.dirname(path) or "."))
        self._local = threading.local()

    # -- connections -----------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                uri = sqlite_uri(self.path, mode="ro")
                conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            else:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            register_functions(conn)
            conn.execute("PRAGMA foreign_keys = ON")
            if not self.readonly and conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                # Only possible before the first table exists: lets gc give pages back.
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            if not self.readonly:
                mode = conn.execute(f"PRAGMA journal_mode = {self.journal_mode}").fetchone()[0]
                if mode.upper() != self.journal_mode:
                    raise StoreReadOnlyError(
                        f"cannot set journal mode {self.journal_mode} on {self.path}"
                    )
            # WAL+NORMAL survives any process crash; FULL adds an fsync per
            # commit so that a power loss loses no committed transaction.
            conn.execute(f"PRAGMA synchronous = {'FULL' if self.durable else 'NORMAL'}")
        except sqlite3.Error as e:
            raise self._translate(e, "opening the catalogue") from e
        return conn

    def _translate(self, e: sqlite3.Error, doing: str = "reading the catalogue") -> LightstoreError:
        """The error of our hierarchy for a SQLite error met while `doing` something."""
        return translate_error(e, self.path, doing, busy_timeout_s=BUSY_TIMEOUT_S)

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork)."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            conn = self._connect()
            local.conn, local.pid = conn, os.getpid()
            local.inode = _inode(self.path)
        return conn

    def _follow_replacement(self) -> None:
        """Reconnect if the catalogue file was replaced (by `reindex`) since this thread connected.

        Checked before every write, so no transaction lands in a replaced file.
        """
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid() and _inode(self.path) != local.inode:
            conn.close()
            local.conn = None

    @property
    def in_transaction(self) -> bool:
        """True while this thread's connection has a transaction open."""
        return self.conn.in_transaction

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    # -- statements ------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Row]:
        """Run a read statement and return all rows, as `Row`s: tuples whose values can
        also be read by column name (``row["size"]``, ``dict(row)``)."""
        try:
            cursor = self.conn.execute(sql, params)
            rows = cursor.fetchall()
        except sqlite3.Error as e:
            raise self._translate(e) from e
        if not rows:
            return []
        cls = row_class(tuple(d[0] for d in cursor.description))
        return [cls(r) for r in rows]

    def column(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] = (),
        wrap: Callable[[Any], Any] | None = None,
    ) -> list[Any]:
        """Run a one-column read statement and return its values (passed through `wrap`).

        Iterates the cursor instead of fetching a list of row tuples first:
        on a listing of 50,000 references that halves the time.
        """
        try:
            cursor = self.conn.execute(sql, params)
            if wrap is None:
                return [value for (value,) in cursor]
            return [wrap(value) for (value,) in cursor]
        except sqlite3.Error as e:
            raise self._translate(e) from e

    def sorted_refs(self, column: str, table: str) -> list[str]:
        """Every value of a column of references (never holding a comma), sorted.

        Read as one joined string: on a million references that takes about
        half the time of a cursor's rows. Row by row past SQLite's longest
        string (a billion bytes).
        """
        try:
            try:
                joined = self.conn.execute(
                    f"SELECT group_concat({column}) FROM {table}"
                ).fetchone()[0]
                out = joined.split(",") if joined else []
            except sqlite3.DataError:  # "string or blob too big"
                out = [value for (value,) in self.conn.execute(f"SELECT {column} FROM {table}")]
        except sqlite3.Error as e:
            raise self._translate(e) from e
        out.sort()  # in index order already: one linear pass
        return out

    def write(
        self, doing: str = "writing the catalogue"
    ) -> AbstractContextManager[sqlite3.Connection]:
        """A short ``BEGIN IMMEDIATE`` transaction; commits on success, rolls back on error.

        A SQLite error inside it is rolled back and raised as an error of
        lightstore's hierarchy (see `translate_error`) that says `doing`.
        Catalogue methods called inside it join it, so that several changes
        (and work on the tree between them) commit or roll back together.
        """
        return _Write(self, doing)

    def _rollback(self, conn: sqlite3.Connection) -> None:
        # After some errors (a full disk) SQLite has already rolled back.
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as e:
                raise self._translate(e, "rolling back a failed change") from e

    def _begin_immediate(self, conn: sqlite3.Connection, doing: str) -> None:
        # The busy handler already waits BUSY_TIMEOUT_S; a few retries cover the
        # rare SQLITE_BUSY that WAL returns without calling it (recovery).
        for attempt in range(5):
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if ("locked" not in str(e) and "busy" not in str(e)) or attempt == 4:
                    raise self._translate(e, doing) from e
                time.sleep(0.05 * (attempt + 1))

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction, so that several statements see the same catalogue.

        Inside an open transaction it joins that one. Only temporary tables
        may be written in it.
        """
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            # COMMIT, unlike ROLLBACK after a write (to a temporary table), does
            # not abort a statement of the caller still reading this connection.
            if conn.in_transaction:
                conn.execute("COMMIT")

    # -- upkeep ------------------------------------------------------------

    def shrink(self) -> None:
        """Give freed pages back to the filesystem and truncate the WAL (after gc)."""
        conn = self.conn
        try:
            # executescript steps the pragma to completion; execute() would free one page.
            conn.executescript("PRAGMA incremental_vacuum;")
            # Truncating the WAL waits for every reader; writers would queue
            # behind it. Try once without waiting, else copy back what we can.
            conn.execute("PRAGMA busy_timeout = 0")
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if busy:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.OperationalError:
            pass  # busy: the next gc shrinks it
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")

    def checkpoint(self) -> None:
        """Copy the whole WAL back into the catalogue file and empty it (waiting for readers)."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as e:
            raise self._translate(e, "writing the catalogue's log into its file") from e

    def integrity_problems(self) -> tuple[list[str], list[tuple[str, int, str]]]:
        """What SQLite finds wrong with the file: the messages of its quick check (none when
        it is fine) and the rows whose foreign key refers to nothing, as (table, rowid, parent)."""
        checked = self.column("PRAGMA quick_check")
        dangling = [(t, r, p) for t, r, p, _ in self.query("PRAGMA foreign_key_check")]
        return ([] if checked == ["ok"] else [str(c) for c in checked]), dangling

    # -- schema ------------------------------------------------------------

    def schema_version(self) -> int:
        """How many migrations this catalogue has applied (also `PRAGMA user_version`)."""
        return migrations.schema_version(self)

    def check_version(self) -> list[str]:
        """Raise CatalogueVersionError if the catalogue is newer than this code; return pending names."""
        return migrations.check_version(self)

    def applied_migrations(self) -> list[str]:
        """Names of the applied migrations, in order (what `Migrations.applied` reads)."""
        return migrations.applied_migrations(self)

    def migrate(self) -> int:
        """Apply pending migrations in order, each in its own transaction; return the version."""
        try:
            return migrations.migrate(self)
        except sqlite3.Error as e:
            raise self._translate(e, "upgrading the catalogue's schema") from e


class _Write:
    """`Database.write`'s transaction (a class: a build opens several, and a generator
    context manager costs about three times as much)."""

    __slots__ = ("conn", "db", "doing", "outer")

    def __init__(self, db: Database, doing: str) -> None:
        self.db = db
        self.doing = doing

    def __enter__(self) -> sqlite3.Connection:
        db = self.db
        current = getattr(db._local, "conn", None)
        if current is None or not current.in_transaction:
            db._follow_replacement()
        conn = self.conn = db.conn
        # Nested use joins the outer transaction (which rolls back).
        self.outer = not conn.in_transaction
        if self.outer:
            db._begin_immediate(conn, self.doing)
        return conn

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        db, conn = self.db, self.conn
        if error is None and self.outer:
            try:
                conn.execute("COMMIT")
            except BaseException as e:
                db._rollback(conn)
                if isinstance(e, sqlite3.Error):
                    raise db._translate(e, self.doing) from e
                raise
            return
        if error is not None and self.outer:
            db._rollback(conn)
        if isinstance(error, sqlite3.Error):
            raise db._translate(error, self.doing) from error


def limit_process_heap(limit: int) -> None:
    """Cap the memory SQLite may allocate in this whole process (all connections) at `limit`
    bytes: a query that needs more fails with SQLite's 'out of memory' (Python's
    MemoryError). For processes that serve user SQL to others (the browser); it cannot be
    raised again, only lowered."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f"PRAGMA hard_heap_limit = {int(limit)}")
    finally:
        conn.close()
