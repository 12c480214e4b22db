"""The catalogue's schema: the migrations in `lightstore/schema/`, which of them a
catalogue has applied, and applying the rest (with sqlite-utils' Migrations)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

from lightstore.foundation.errors import CatalogueVersionError

if TYPE_CHECKING:
    import sqlite_utils
    from sqlite_utils.migrations import Migrations


class DatabaseLike(Protocol):
    """What the migrations read and write through: `lightstore.catalogue.connection.Database`
    (described here so that this module, which it calls, does not import it)."""

    @property
    def path(self) -> str: ...

    @property
    def conn(self) -> sqlite3.Connection: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Sequence[Any]]: ...

    def column(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...


MIGRATION_SET = "lightstore"
#: The table where sqlite-utils' Migrations records what was applied.
MIGRATIONS_TABLE = "_sqlite_migrations"


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


def schema_version(db: DatabaseLike) -> int:
    """How many migrations the catalogue has applied (also `PRAGMA user_version`)."""
    return int(db.query("PRAGMA user_version")[0][0])


def applied_migrations(db: DatabaseLike) -> list[str]:
    """Names of the applied migrations, in order (what `Migrations.applied` reads)."""
    exists = db.query(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MIGRATIONS_TABLE,)
    )
    if not exists:
        return []
    return db.column(
        f"SELECT name FROM {MIGRATIONS_TABLE} WHERE migration_set = ? ORDER BY rowid",
        (MIGRATION_SET,),
    )


def check_version(db: DatabaseLike) -> list[str]:
    """Raise CatalogueVersionError if the catalogue is newer than this code; return pending names."""
    known = [name for name, _ in schema_files()]
    applied = applied_migrations(db)
    unknown = [n for n in applied if n not in known]
    version = schema_version(db)
    if unknown or version > len(known):
        found = max(version, len(applied))
        raise CatalogueVersionError(
            f"the catalogue {db.path} has schema version {found} but this lightstore supports "
            f"up to {len(known)} (unknown migrations: {', '.join(unknown) or 'none'}); "
            "upgrade lightstore to open this store",
            found=found,
            supported=len(known),
        )
    return [name for name in known if name not in applied]


def migrate(db: DatabaseLike) -> int:
    """Apply pending migrations in order, each in its own transaction; return the version.

    Raises sqlite3.Error if one fails (the caller says what it was doing).
    """
    if not check_version(db):
        return schema_version(db)
    import sqlite_utils

    conn = db.conn
    utils_db = sqlite_utils.Database(conn)
    # Foreign keys off while migrating (a no-op inside a transaction, so
    # set here): rebuilding a table (0002 rebuilds `builds`) drops the old
    # one, which would otherwise run its ON DELETE actions on every row
    # that refers to it. Each migration copies every row, so none dangles.
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        _migrations().apply(utils_db)
        conn.execute(f"PRAGMA user_version = {len(schema_files())}")
    finally:
        conn.execute("PRAGMA foreign_keys = ON")
    return schema_version(db)
