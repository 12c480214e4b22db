"""The SQLite catalogue that sits beside the tree (schema in `lightstore/schema/`)."""

from lightstore.catalogue.catalogue import HOST, Catalogue, NewDerivation, NewRealization
from lightstore.catalogue.database import (
    Database,
    Row,
    filesystem_type,
    schema_files,
    split_sql,
)

__all__ = [
    "HOST",
    "Catalogue",
    "Database",
    "NewDerivation",
    "NewRealization",
    "Row",
    "filesystem_type",
    "schema_files",
    "split_sql",
]
