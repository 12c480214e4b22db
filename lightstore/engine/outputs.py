"""The engine's own small build context: realizers that fill fresh output folders."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightstore.engine.registry import Realizer, engine_typed, store_of
from lightstore.foundation.errors import InvalidConfigError
from lightstore.foundation.files import remove_tree
from lightstore.foundation.refs import Context, DRef
from lightstore.store import LocalStore


@dataclass(frozen=True)
class BuildContext:
    """What a fill function receives: the store, the derivation, its context, the realize
    argument, and the output folders to fill (fresh, in the store's build area)."""

    store: LocalStore
    dref: DRef
    context: Context
    args: Any
    outputs: list[str]

    @property
    def output(self) -> str:
        """The first output folder."""
        return self.outputs[0]


def filling(fill: Callable[[BuildContext], None], nouts: int = 1) -> Realizer:
    """A realizer that makes `nouts` output folders and lets `fill` write them.

    If `fill` raises, the folders (and metrics recorded for them) are removed
    and the error propagates. Raises InvalidConfigError for a bad `nouts`.
    """
    if not isinstance(nouts, int) or isinstance(nouts, bool) or nouts < 1:
        raise InvalidConfigError(f"nouts must be a positive integer, got {nouts!r}")

    def realizer(store: Any, dref: DRef, context: Context, args: Any) -> list[str]:
        st = store_of(store)
        # Each output folder is its own build area: publishing renames it away.
        label = dref.removeprefix("dref:")[:12]
        outs: list[str] = [st.new_build_area(label) for _ in range(nouts)]
        try:
            fill(BuildContext(st, dref, context, args, outs))
        except BaseException:
            for out in outs:
                st.pending_metrics.pop(os.path.normpath(out), None)
                remove_tree(out)
            raise
        return outs

    realizer.__name__ = getattr(fill, "__name__", "realizer")
    return engine_typed(realizer)
