"""The catalogue of one store: every table family in one class.

What it records, and the questions it answers, in SQL. Store-wide questions
are single statements over indexed tables; dependency closures are recursive
CTEs. Nothing here reads the tree. Each family of tables is a module of its
own (objects, builds, graph, pins, history, marking) over one `Database`.
"""

from __future__ import annotations

from lightstore.catalogue.builds import BuildTables
from lightstore.catalogue.graph import GraphQueries
from lightstore.catalogue.history import HistoryTables
from lightstore.catalogue.marking import Marking
from lightstore.catalogue.objects import ByBuildTime, ObjectTables
from lightstore.catalogue.pins import PinTables
from lightstore.catalogue.records import HOST, NewDerivation, NewRealization

__all__ = ["HOST", "ByBuildTime", "Catalogue", "NewDerivation", "NewRealization"]


class Catalogue(ObjectTables, BuildTables, GraphQueries, PinTables, HistoryTables, Marking):
    """The catalogue of one store."""
