"""The SQLite catalogue that sits beside the tree (schema in `lightstore/schema/`).

The only code that writes SQL: every other layer asks `Catalogue` methods.
`connection` holds the connections and transactions, `migrations` the schema,
`sqlerrors` turns SQLite's errors into lightstore's; each table family is a
module (`objects`, `builds`, `graph`, `pins`, `history`, `marking`) whose
class `Catalogue` combines.
"""

from lightstore.catalogue.catalogue import HOST, ByBuildTime, Catalogue
from lightstore.catalogue.connection import Database, fold_wal, limit_process_heap, sqlite_uri
from lightstore.catalogue.filesystems import filesystem_type, journal_mode_for
from lightstore.catalogue.migrations import MIGRATION_SET, schema_files, split_sql
from lightstore.catalogue.records import NewDerivation, NewRealization
from lightstore.catalogue.rows import Row
from lightstore.catalogue.sql import (
    COMPARE_JSON_FUNCTION,
    name_condition,
    register_functions,
    utf8_text,
)
from lightstore.catalogue.sqlerrors import BUSY_TIMEOUT_S, translate_error

__all__ = [
    "BUSY_TIMEOUT_S",
    "COMPARE_JSON_FUNCTION",
    "HOST",
    "MIGRATION_SET",
    "ByBuildTime",
    "Catalogue",
    "Database",
    "NewDerivation",
    "NewRealization",
    "Row",
    "filesystem_type",
    "fold_wal",
    "limit_process_heap",
    "journal_mode_for",
    "name_condition",
    "utf8_text",
    "register_functions",
    "schema_files",
    "split_sql",
    "sqlite_uri",
    "translate_error",
]
