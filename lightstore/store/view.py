"""`StoreView`: what can be read of a store, and nothing that writes.

The reading commands (`ls`, `show`, `history`, `sql`, the browser) work on a
view of a catalogue opened read-only: they take no lock, so they run while
other processes realize, and they work for users who may read but not write
the store. `LocalStore` is a view that can also write.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lightstore.catalogue import Catalogue
from lightstore.foundation.errors import CatalogueCorruptError, NotInStoreError
from lightstore.foundation.hashing import context_hash
from lightstore.foundation.refs import Context, DRef, RRef
from lightstore.foundation.tags import Note
from lightstore.store.layout import Layout


class StoreView(Layout):
    """The paths of a store root and reads of its catalogue (configs, contexts, realizations)."""

    def __init__(self, root: str, catalogue: Catalogue) -> None:
        super().__init__(root)
        self.catalogue = catalogue
        # Configs and contexts are immutable for a given reference: cache them.
        self._configs: dict[str, dict[str, Any]] = {}
        self._contexts: dict[str, Context] = {}

    def config(self, dref: DRef) -> dict[str, Any]:
        """The config of a recorded derivation (selfrefs unresolved). Do not mutate it.

        Raises NotInStoreError (an UnknownReferenceError) if the catalogue does not record `dref`,
        CatalogueCorruptError if its config there is not a JSON object.
        """
        cached = self._configs.get(dref)
        if cached is None:
            text = self.catalogue.config_json(dref)
            if text is None:
                raise NotInStoreError(f"derivation {dref} is not in the store {self.root}", dref)
            try:
                parsed: Any = json.loads(text)
            except (ValueError, RecursionError) as e:
                parsed = e
            if not isinstance(parsed, dict):
                raise CatalogueCorruptError(
                    f"the catalogue {self.catalogue.path} is damaged: the config of {dref} is "
                    f"not a JSON object ({parsed!r:.100}); run `lightstore reindex` to rebuild "
                    "it from the tree"
                )
            cached = self._configs[dref] = parsed
        return cached

    def context(self, rref: RRef) -> Context:
        """The context of a recorded realization. Do not mutate it.

        Raises NotInStoreError (an UnknownReferenceError) if the catalogue does not record `rref`.
        """
        cached = self._contexts.get(rref)
        if cached is None:
            text = self.catalogue.context_json(rref)
            if text is None:
                raise NotInStoreError(f"realization {rref} is not in the store {self.root}", rref)
            raw = json.loads(text)
            cached = self._contexts[rref] = {DRef(k): [RRef(r) for r in v] for k, v in raw.items()}
        return cached

    def realizations(self, dref: DRef, context: Context) -> list[RRef]:
        """Realizations of `dref` made in `context`, oldest first."""
        return self.catalogue.realizations(dref, context_hash(context))

    def metrics(self, rref: RRef) -> dict[str, int | float]:
        """The metrics recorded for a realization (empty if none; unknown RRefs give {}).

        A series gives its value at its last step; NaN and infinities are floats."""
        return self.catalogue.metrics_of([rref]).get(rref, {})

    def metric_series(
        self, rref: RRef, names: Sequence[str] | None = None
    ) -> dict[str, list[tuple[int, int | float]]]:
        """The metric series (curves) of a realization: name -> [(step, value), ...] in
        step order; only `names` if given (empty if none; unknown RRefs give {})."""
        found = self.catalogue.series_of([rref], names).get(rref, {})
        return {name: sorted(points.items()) for name, points in found.items()}

    def tags(self, rref: RRef) -> dict[str, str]:
        """The tags of a realization: name -> value (empty if none)."""
        return {t.name: t.value for t in self.catalogue.tags_of([rref]).get(rref, [])}

    def notes(self, rref: RRef) -> list[Note]:
        """The notes about a realization, oldest first (each with its id, text, recorded
        time and author)."""
        return self.catalogue.notes_of([rref]).get(rref, [])
