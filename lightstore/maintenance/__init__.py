"""Keeping a store healthy: GC roots, garbage collection, verify/repair, reindex."""

from lightstore.maintenance.gc import GCReport, collect, garbage
from lightstore.maintenance.roots import Roots, pin, pins, roots, unpin
from lightstore.maintenance.verify import Problem, ReindexReport, VerifyReport, reindex, verify

__all__ = [
    "GCReport",
    "Problem",
    "ReindexReport",
    "Roots",
    "VerifyReport",
    "collect",
    "garbage",
    "pin",
    "pins",
    "reindex",
    "roots",
    "unpin",
    "verify",
]
