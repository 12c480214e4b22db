"""The dependency graph in the catalogue: dependencies and referrers, direct or transitive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from lightstore.catalogue.connection import Database
from lightstore.catalogue.records import json_list
from lightstore.foundation.refs import DRef, RRef


class GraphQueries(Database):
    """Questions over `derivation_deps` and `realization_deps` (recursive CTEs)."""

    def _neighbours(
        self, table: str, refs: Sequence[str], *, reverse: bool, closure: bool
    ) -> list[str]:
        """Dependencies (or, `reverse`, referrers) of `refs` along `table`; transitively with `closure`.

        `table` is `derivation_deps` or `realization_deps`, whose columns are
        (object, dep); the closure is one recursive CTE over its indexes.
        """
        obj = "dref" if table == "derivation_deps" else "rref"
        src, dst = ("dep", obj) if reverse else (obj, "dep")
        start = (
            f"SELECT DISTINCT {dst} FROM {table} WHERE {src} IN (SELECT value FROM json_each(?))"
        )
        if not closure:
            return self.column(start, (json_list(refs),))
        sql = f"""
        WITH RECURSIVE reached(ref) AS (
          {start}
          UNION
          SELECT e.{dst} FROM {table} AS e JOIN reached AS r ON e.{src} = r.ref
        ) SELECT ref FROM reached"""
        return self.column(sql, (json_list(refs),))

    def drefdeps1(self, drefs: Sequence[str]) -> set[DRef]:
        """Direct dependencies of `drefs`."""
        return {
            DRef(d)
            for d in self._neighbours("derivation_deps", drefs, reverse=False, closure=False)
        }

    def drefdeps(self, drefs: Sequence[str]) -> set[DRef]:
        """All dependencies of `drefs`, transitively (a recursive CTE)."""
        return {
            DRef(d) for d in self._neighbours("derivation_deps", drefs, reverse=False, closure=True)
        }

    def rrefdeps1(self, rrefs: Sequence[str]) -> set[RRef]:
        """Direct dependency realizations of `rrefs`."""
        return {
            RRef(r)
            for r in self._neighbours("realization_deps", rrefs, reverse=False, closure=False)
        }

    def rrefdeps(self, rrefs: Sequence[str]) -> set[RRef]:
        """All dependency realizations of `rrefs`, transitively."""
        return {
            RRef(r)
            for r in self._neighbours("realization_deps", rrefs, reverse=False, closure=True)
        }

    def dref_referrers(self, drefs: Sequence[str]) -> set[DRef]:
        """Derivations that depend on `drefs`, transitively."""
        return {
            DRef(d) for d in self._neighbours("derivation_deps", drefs, reverse=True, closure=True)
        }

    def rref_referrers(self, rrefs: Sequence[str]) -> set[RRef]:
        """Realizations that depend on `rrefs`, transitively."""
        return {
            RRef(r) for r in self._neighbours("realization_deps", rrefs, reverse=True, closure=True)
        }

    def top_drefs(self) -> set[DRef]:
        """Derivations no other derivation depends on."""
        sql = "SELECT dref FROM derivations WHERE dref NOT IN (SELECT dep FROM derivation_deps)"
        return set(map(DRef, self.column(sql)))

    def top_rrefs(self) -> set[RRef]:
        """Realizations no other realization depends on."""
        sql = "SELECT rref FROM realizations WHERE rref NOT IN (SELECT dep FROM realization_deps)"
        return cast(set[RRef], set(self.column(sql)))

    # Their former names, which tests still call; "root" is the store's folder only.
    root_drefs = top_drefs
    root_rrefs = top_rrefs
