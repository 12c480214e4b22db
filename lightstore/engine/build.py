"""The Build object a realizer function receives, and `build_wrapper`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from lightstore.config import resolve_selfrefs
from lightstore.defaults import resolve_store
from lightstore.engine.registry import Realizer
from lightstore.errors import (
    InvalidConfigError,
    InvalidMetricError,
    InvalidReferenceError,
    UnknownReferenceError,
)
from lightstore.files import remove_tree
from lightstore.metrics import check_metric_name, check_metric_value, check_metrics
from lightstore.refs import Context, DRef, Path, RefPath, RRef, isrefpath
from lightstore.store import StorageSettings, Store


class Outputs(list[Path]):
    """The output folders of a build (a list; `.val` kept for Pylightnix code)."""

    @property
    def val(self) -> list[Path]:
        return list(self)


class Build:
    """What a realizer needs: its derivation, context, resolved config and output folders."""

    def __init__(
        self,
        store: Store,
        dref: DRef,
        context: Context,
        outpaths: Sequence[str],
        args: Any = None,
    ) -> None:
        self.store = store
        self.S: StorageSettings = store.settings
        self.dref = dref
        self.context = context
        self.config: dict[str, Any] = resolve_selfrefs(store.config(dref), dref)
        self.outpaths = Outputs(Path(p) for p in outpaths)
        self.args = args
        self.started = time.time()

    @property
    def cattrs(self) -> SimpleNamespace:
        """The resolved config as attributes."""
        return SimpleNamespace(**self.config)

    def deref(self, dref: DRef) -> list[RRef]:
        """The realizations of dependency `dref` that this build uses."""
        if dref not in self.context:
            raise UnknownReferenceError(
                f"{dref} is not a dependency of {self.dref}; mention it in the config to depend on it",
                dref,
            )
        return self.context[dref]

    def path(self, refpath: RefPath, index: int = 0) -> Path:
        """The system path of a RefPath: in this build's output, or in a dependency's realization."""
        if not isrefpath(refpath):
            raise InvalidReferenceError(
                f"not a RefPath: {refpath!r}; expected [DRef, 'dir', 'file']"
            )
        head, rest = refpath[0], [str(p) for p in refpath[1:]]
        if head == self.dref:
            return Path(os.path.join(self.outpaths[index], *rest))
        rrefs = self.deref(DRef(head))
        if len(rrefs) != 1:
            raise InvalidReferenceError(
                f"{head} resolves to {len(rrefs)} realizations in this build; "
                "use build_paths() to get all of them"
            )
        return Path(os.path.join(self.store.rref_path(rrefs[0]), *rest))

    def paths(self, refpath: RefPath) -> list[Path]:
        """Every system path a RefPath resolves to (one per realization used)."""
        if isrefpath(refpath) and refpath[0] != self.dref:
            rest = [str(p) for p in refpath[1:]]
            return [
                Path(os.path.join(self.store.rref_path(r), *rest))
                for r in self.deref(DRef(refpath[0]))
            ]
        return [self.path(refpath, i) for i in range(len(self.outpaths))]


def build_wrapper(fn: Callable[[Build], Any], nouts: int = 1) -> Realizer:
    """Turn a function of a `Build` into a realizer producing `nouts` output folders."""
    if not isinstance(nouts, int) or isinstance(nouts, bool) or nouts < 1:
        raise InvalidConfigError(f"build_wrapper: nouts must be a positive integer, got {nouts!r}")

    def realizer(S: Any, dref: DRef, context: Context, args: Any) -> list[str]:
        store = resolve_store(S)
        # Each output folder is its own build area: publishing renames it away,
        # so nothing is left to delete (creating and removing folders is slow).
        label = dref.removeprefix("dref:")[:12]
        outs = [store.new_build_area(label) for _ in range(nouts)]
        try:
            fn(Build(store, dref, context, outs, args))
        except BaseException:
            for out in outs:
                store.pending_metrics.pop(os.path.normpath(out), None)
                remove_tree(out)
            raise
        return list(outs)

    realizer.__name__ = getattr(fn, "__name__", "realizer")
    return realizer


def build_outpaths(b: Build) -> list[Path]:
    """All output folders of the build."""
    return list(b.outpaths)


def build_outpath(b: Build) -> Path:
    """The output folder of a single-output build."""
    if len(b.outpaths) != 1:
        raise InvalidReferenceError(
            f"build of {b.dref} has {len(b.outpaths)} outputs; use build_outpaths()"
        )
    return b.outpaths[0]


def build_path(b: Build, refpath: RefPath) -> Path:
    """System path of a RefPath during a build."""
    return b.path(refpath)


def build_paths(b: Build, refpath: RefPath) -> list[Path]:
    """All system paths of a RefPath during a build."""
    return b.paths(refpath)


def build_cattrs(b: Build) -> SimpleNamespace:
    """The build's resolved config as attributes."""
    return b.cattrs


def build_config(b: Build) -> dict[str, Any]:
    """The build's resolved config as a dict."""
    return b.config


def build_context(b: Build) -> Context:
    """The build's context: dependency DRef -> RRefs used."""
    return b.context


def build_deref(b: Build, dref: DRef) -> RRef:
    """The single realization of dependency `dref` used by this build."""
    rrefs = b.deref(dref)
    if len(rrefs) != 1:
        raise InvalidReferenceError(
            f"{dref} has {len(rrefs)} realizations in this build; use build_deref_()"
        )
    return rrefs[0]


def build_deref_(b: Build, dref: DRef) -> list[RRef]:
    """All realizations of dependency `dref` used by this build."""
    return b.deref(dref)


def build_name(b: Build) -> str:
    """The name of the derivation being built."""
    return str(b.config.get("name", "unnamed"))


def build_metric(b: Build, name: str, value: Any, output: int | None = None) -> None:
    """Record metric `name` = `value` for the build's output (every output, or output #`output`).

    Stored in the catalogue's `metrics` table by the transaction that
    publishes the realization; not part of its hash. Recording a name again
    replaces the value. Raises InvalidMetricError for a bad name, a value
    that is not a finite int or float, or an output index out of range.
    """
    build_metrics(b, {check_metric_name(name): check_metric_value(name, value)}, output)


def build_metrics(b: Build, metrics: Mapping[str, Any], output: int | None = None) -> None:
    """Record several metrics at once (see `build_metric`); all are checked before any is kept."""
    checked = check_metrics(metrics)
    if output is None:
        indexes = range(len(b.outpaths))
    elif isinstance(output, int) and not isinstance(output, bool) and 0 <= output < len(b.outpaths):
        indexes = range(output, output + 1)
    else:
        raise InvalidMetricError(
            f"build of {b.dref} has {len(b.outpaths)} output(s); output={output!r} is not one of them"
        )
    for i in indexes:
        b.store.pending_metrics.setdefault(os.path.normpath(b.outpaths[i]), {}).update(checked)
