"""Errors of the query layer (defined with the others in `lightstore.errors`)."""

from lightstore.errors import AmbiguousReferenceError, QueryError

__all__ = ["AmbiguousReferenceError", "QueryError"]
