"""The catalogue's SQLite connection: pragmas, migrations, transactions.

One connection per thread and per process (SQLite connections must not cross
a fork). Writes go through `Database.write()`, a ``BEGIN IMMEDIATE``
transaction: taking the write lock up front means a writer waits in SQLite's
busy handler instead of failing half way when it upgrades a read transaction.
"""

from __future__ import annotations

import json
import operator
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from importlib import resources
from typing import TYPE_CHECKING, Any

from lightstore.foundation.errors import (
    CatalogueCorruptError,
    CatalogueError,
    CatalogueVersionError,
    DiskFullError,
    IntegrityError,
    LightstoreError,
    LockTimeout,
    StoreNotFoundError,
    StoreReadOnlyError,
)

BUSY_TIMEOUT_S = 60.0
MIGRATION_SET = "lightstore"
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


def schema_files() -> list[tuple[str, str]]:
    """The migrations shipped with this version, as (name, SQL text), in order."""
    folder = resources.files("lightstore") / "schema"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(n.removesuffix(".sql"), (folder / n).read_text(encoding="utf-8")) for n in names]


def split_sql(script: str) -> list[str]:
    """Split a SQL script into complete statements (comments and `;` in strings are safe)."""
    statements: list[str] = []
    buf = ""
    for piece in re.split(r"(?<=;)", script):
        buf += piece
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if re.sub(r"/\*.*?\*/|--[^\n]*", "", buf, flags=re.S).strip():
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buf[:80]!r}")
    return statements


if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils.migrations import Migrations

#: The table where sqlite-utils' Migrations records what was applied.
MIGRATIONS_TABLE = "_sqlite_migrations"


def _migrations() -> Migrations:
    # Imported here: sqlite_utils (and numpy, which it loads when installed)
    # costs about 0.25 s, and only a store being migrated needs it.
    from sqlite_utils.migrations import Migrations

    migrations = Migrations(MIGRATION_SET)
    for name, text in schema_files():

        def apply(db: sqlite_utils.Database, text: str = text) -> None:
            for stmt in split_sql(text):
                db.execute(stmt)

        migrations(name=name)(apply)
    return migrations


def translate_error(e: sqlite3.Error, path: str, doing: str) -> LightstoreError:
    """The error of lightstore's hierarchy for a SQLite error met while `doing` something.

    Busy/locked becomes LockTimeout, damage CatalogueCorruptError (naming
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
            f"timed out after {BUSY_TIMEOUT_S:g} s waiting for the catalogue {path} while "
            f"{doing} ({msg}): another process kept it locked; retry when it is done"
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


#: The SQL function comparing a JSON number with a number exactly, whatever their sizes:
#: ``lightstore_compare_json(json_extract(doc, path, path), op, json_value)`` is 1 or 0 (NULL
#: when the field is not a number). SQLite reads JSON integers beyond 64 bits as the
#: nearest REAL, so its own comparison cannot tell 2**64 from 2**64 + 1.
COMPARE_JSON_FUNCTION = "lightstore_compare_json"
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compare_json(pair: Any, op: Any, value: Any) -> int | None:
    # `pair` is json_extract with the path given twice: JSON text '[x,x]' that keeps x's digits.
    # Both are read as Decimals, which compare exactly as written (0.1 is not a binary 0.1).
    try:
        x = json.loads(pair, parse_float=Decimal, parse_int=Decimal)[0]
        v = json.loads(value, parse_float=Decimal, parse_int=Decimal)
    except (TypeError, ValueError, IndexError, KeyError, RecursionError):
        return None  # not JSON
    compare = _COMPARISONS.get(op)
    numbers = (int, float, Decimal)
    if compare is None or isinstance(x, bool) or not isinstance(x, numbers):
        return None
    if isinstance(v, bool) or not isinstance(v, numbers):
        return None
    return int(compare(x, v))  # Python compares ints and floats exactly


def register_functions(conn: sqlite3.Connection) -> None:
    """Add lightstore's SQL functions (`COMPARE_JSON_FUNCTION`) to a connection."""
    conn.create_function(COMPARE_JSON_FUNCTION, 3, _compare_json, deterministic=True)


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


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def journal_mode_for(fstype: str | None) -> str:
    """WAL, except on network filesystems.

    WAL needs memory shared between processes (the -shm file), which network
    filesystems do not provide; the rollback journal only needs their file locks.
    """
    return "DELETE" if fstype in NETWORK_FILESYSTEMS else "WAL"


class Row(tuple):
    """A result row of `Database.query`: still a tuple (it unpacks, indexes and compares
    as one), and its values can be read by column name as with sqlite-utils or
    `sqlite3.Row`: ``row["size"]``, ``row.keys()``, ``dict(row)``, ``row.asdict()``.
    """

    __slots__ = ()
    _names: tuple[str, ...] = ()
    _index: dict[str, int] = {}  # noqa: RUF012 - replaced per column list by row_class

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                key = self._index[key]
            except KeyError:
                raise KeyError(
                    f"no column {key!r} in this row; its columns are {', '.join(self._names)}"
                ) from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._names)

    def asdict(self) -> dict[str, Any]:
        """The row as a dict of column name to value."""
        return dict(zip(self._names, self, strict=True))

    def __repr__(self) -> str:
        return (
            "Row(" + ", ".join(f"{n}={v!r}" for n, v in zip(self._names, self, strict=True)) + ")"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (make_row, (self._names, tuple(self)))


_ROW_CLASSES: dict[tuple[str, ...], type[Row]] = {}


def row_class(names: tuple[str, ...]) -> type[Row]:
    """The `Row` subclass for one list of column names (cached: queries repeat)."""
    cls = _ROW_CLASSES.get(names)
    if cls is None:
        index: dict[str, int] = {}
        for i, n in enumerate(names):
            index.setdefault(n, i)  # a repeated name reads its first column
        cls = type("Row", (Row,), {"__slots__": (), "_names": names, "_index": index})
        if len(_ROW_CLASSES) < 4096:
            _ROW_CLASSES[names] = cls
    return cls


def make_row(names: tuple[str, ...], values: tuple[Any, ...]) -> Row:
    """A `Row` with these column names and values (also how rows unpickle)."""
    return row_class(tuple(names))(values)


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
        return translate_error(e, self.path, doing)

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

    @contextmanager
    def write(self, doing: str = "writing the catalogue") -> Iterator[sqlite3.Connection]:
        """A short ``BEGIN IMMEDIATE`` transaction; commits on success, rolls back on error.

        A SQLite error inside it is rolled back and raised as an error of
        lightstore's hierarchy (see `translate_error`) that says `doing`.
        """
        current = getattr(self._local, "conn", None)
        if current is None or not current.in_transaction:
            self._follow_replacement()
        conn = self.conn
        if conn.in_transaction:
            # Nested use joins the outer transaction (which rolls back).
            try:
                yield conn
            except sqlite3.Error as e:
                raise self._translate(e, doing) from e
            return
        self._begin_immediate(conn, doing)
        try:
            yield conn
        except BaseException as e:
            self._rollback(conn)
            if isinstance(e, sqlite3.Error):
                raise self._translate(e, doing) from e
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            self._rollback(conn)
            raise self._translate(e, doing) from e
        except BaseException:
            self._rollback(conn)
            raise

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

    # -- schema ------------------------------------------------------------

    def schema_version(self) -> int:
        """How many migrations this catalogue has applied (also `PRAGMA user_version`)."""
        return int(self.query("PRAGMA user_version")[0][0])

    def check_version(self) -> list[str]:
        """Raise CatalogueVersionError if the catalogue is newer than this code; return pending names."""
        known = [name for name, _ in schema_files()]
        applied = self.applied_migrations()
        unknown = [n for n in applied if n not in known]
        version = self.schema_version()
        if unknown or version > len(known):
            found = max(version, len(applied))
            raise CatalogueVersionError(
                f"the catalogue {self.path} has schema version {found} but this lightstore supports "
                f"up to {len(known)} (unknown migrations: {', '.join(unknown) or 'none'}); "
                "upgrade lightstore to open this store",
                found=found,
                supported=len(known),
            )
        return [name for name in known if name not in applied]

    def applied_migrations(self) -> list[str]:
        """Names of the applied migrations, in order (what `Migrations.applied` reads)."""
        exists = self.query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MIGRATIONS_TABLE,)
        )
        if not exists:
            return []
        return self.column(
            f"SELECT name FROM {MIGRATIONS_TABLE} WHERE migration_set = ? ORDER BY rowid",
            (MIGRATION_SET,),
        )

    def migrate(self) -> int:
        """Apply pending migrations in order, each in its own transaction; return the version."""
        if not self.check_version():
            return self.schema_version()
        import sqlite_utils

        db = sqlite_utils.Database(self.conn)
        # Foreign keys off while migrating (a no-op inside a transaction, so
        # set here): rebuilding a table (0002 rebuilds `builds`) drops the old
        # one, which would otherwise run its ON DELETE actions on every row
        # that refers to it. Each migration copies every row, so none dangles.
        self.conn.execute("PRAGMA foreign_keys = OFF")
        try:
            _migrations().apply(db)
            self.conn.execute(f"PRAGMA user_version = {len(schema_files())}")
        except sqlite3.Error as e:
            raise self._translate(e, "upgrading the catalogue's schema") from e
        finally:
            self.conn.execute("PRAGMA foreign_keys = ON")
        return self.schema_version()
