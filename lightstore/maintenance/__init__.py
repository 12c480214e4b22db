"""Keeping a store healthy: pins (what gc keeps), garbage collection (marking, then sweeping),
forgetting collected records, verify/repair, reindex."""

from lightstore.maintenance.forget import ForgetReport, forget
from lightstore.maintenance.gc import collect
from lightstore.maintenance.marking import GCReport, garbage
from lightstore.maintenance.pins import GCKeeps, gc_keeps, pin, pins, unpin
from lightstore.maintenance.reindex import ReindexReport, reindex
from lightstore.maintenance.verify import Problem, VerifyReport, verify

__all__ = [
    "ForgetReport",
    "GCReport",
    "Problem",
    "ReindexReport",
    "GCKeeps",
    "VerifyReport",
    "collect",
    "forget",
    "garbage",
    "gc_keeps",
    "pin",
    "pins",
    "reindex",
    "unpin",
    "verify",
]
