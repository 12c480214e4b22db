"""`StoreView`: what can be read of a store, and nothing that writes.

The reading commands (`ls`, `show`, `history`, `sql`, the browser) work on a
view of a catalogue opened read-only: they take no lock, so they run while
other processes realize, and they work for users who may read but not write
the store. `LocalStore` is a view that can also write.
"""

from __future__ import annotations

import json
from typing import Any

from lightstore.catalogue import Catalogue
from lightstore.foundation.errors import CatalogueCorruptError, NotInStoreError
from lightstore.foundation.hashing import context_hash
from lightstore.foundation.refs import Context, DRef, RRef
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
        """The metrics recorded for a realization (empty if none; unknown RRefs give {})."""
        return self.catalogue.metrics_of([rref]).get(rref, {})
