"""Errors of the query layer (defined with the others in `lightstore.foundation.errors`)."""

from lightstore.foundation.errors import AmbiguousReferenceError, QueryError

__all__ = ["AmbiguousReferenceError", "QueryError"]
