"""Keeping a store healthy: GC roots, garbage collection (marking, then sweeping),
forgetting collected records, verify/repair, reindex."""

from lightstore.maintenance.forget import ForgetReport, forget
from lightstore.maintenance.gc import collect
from lightstore.maintenance.marking import GCReport, garbage
from lightstore.maintenance.reindex import ReindexReport, reindex
from lightstore.maintenance.roots import Roots, pin, pins, roots, unpin
from lightstore.maintenance.verify import Problem, VerifyReport, verify

__all__ = [
    "ForgetReport",
    "GCReport",
    "Problem",
    "ReindexReport",
    "Roots",
    "VerifyReport",
    "collect",
    "forget",
    "garbage",
    "pin",
    "pins",
    "reindex",
    "roots",
    "unpin",
    "verify",
]
