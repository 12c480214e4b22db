"""The Build object a realizer function receives, `build_wrapper` that makes a realizer
of a function of a Build, and the ``build_*`` accessors (Pylightnix's ``pylightnix.build``).

The realizers made here are of the engine's types (they receive the store);
Pylightnix code may still call them with its `S`.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any, NamedTuple

from lightstore.compat.current import store_of
from lightstore.compat.output import RConfig
from lightstore.compat.utils import parsetime
from lightstore.engine.registry import Realizer, engine_typed, pending_config
from lightstore.foundation.config import replace_selfrefs
from lightstore.foundation.errors import (
    InvalidConfigError,
    InvalidMetricError,
    InvalidReferenceError,
    UnknownReferenceError,
)
from lightstore.foundation.files import remove_tree
from lightstore.foundation.metrics import (
    PendingMetrics,
    check_metric_name,
    check_metric_value,
    check_metrics,
    check_step,
)
from lightstore.foundation.refs import (
    Context,
    DRef,
    Path,
    RefPath,
    RRef,
    check_relpath,
    isrefpath,
    undref,
)
from lightstore.store import LocalStore, StorageSettings


def _store(S: Any) -> LocalStore:
    # The engine passes its store; Pylightnix code calling a realizer passes its S.
    return S if isinstance(S, LocalStore) else store_of(S)


class Outputs(list[Path]):
    """The output folders of a build (a list; `.val` kept for Pylightnix code)."""

    @property
    def val(self) -> list[Path]:
        return list(self)


class BuildArgs(NamedTuple):
    """What a `Build` is made from (Pylightnix's constructor argument)."""

    S: Any
    dref: DRef
    context: Context
    starttime: str | None
    stoptime: str | None
    iarg: dict[str, Any]
    rarg: Any


class Build:
    """What a realizer needs: its derivation, context, resolved config and output folders.

    Made by `build_wrapper` as ``Build(store, dref, context, outpaths, args)``,
    or, as in Pylightnix, from a `BuildArgs` (then without output folders until
    `build_markstart`); subclasses keep the one-argument constructor.
    """

    def __init__(
        self,
        store: LocalStore | BuildArgs,
        dref: DRef | None = None,
        context: Context | None = None,
        outpaths: Sequence[str] = (),
        args: Any = None,
    ) -> None:
        starttime: str | None = "AUTO"
        stoptime: str | None = "AUTO"
        self.from_buildargs = isinstance(store, BuildArgs)
        if isinstance(store, BuildArgs):
            ba = store
            store, dref, context, args = store_of(ba.S), ba.dref, ba.context, ba.rarg
            starttime, stoptime = ba.starttime, ba.stoptime
        if dref is None or context is None:
            raise TypeError("Build(store, dref, context, outpaths) or Build(BuildArgs)")
        self.store = store
        self.S: StorageSettings = store.settings
        self.dref = dref
        self.context = context
        self.config: dict[str, Any] = RConfig(replace_selfrefs(_config_of(store, dref), dref))
        self.outpaths = Outputs(Path(p) for p in outpaths)
        self.args = args
        self.started = time.time()
        self.stopped: float | None = None
        #: Pylightnix's fields: instantiate/realize arguments, time settings, cattrs cache.
        self.iarg: dict[str, Any] = {}
        self.starttime = starttime
        self.stoptime = stoptime
        self.cattrs_cache: Any = None

    @property
    def rarg(self) -> Any:
        """The realize argument (`realize_args[dref]`), Pylightnix's name for `args`."""
        return self.args

    @property
    def cattrs(self) -> Any:
        """The resolved config as attributes; one object per build, so a realizer may keep state on it."""
        if self.cattrs_cache is None:
            self.cattrs_cache = SimpleNamespace(**self.config)
        return self.cattrs_cache

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
        head, rest = refpath[0], check_relpath(refpath[1:], f"RefPath {refpath!r}")
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
            rest = check_relpath(refpath[1:], f"RefPath {refpath!r}")
            return [
                Path(os.path.join(self.store.rref_path(r), *rest))
                for r in self.deref(DRef(refpath[0]))
            ]
        return [self.path(refpath, i) for i in range(len(self.outpaths))]


def _config_of(store: LocalStore, dref: DRef) -> dict[str, Any]:
    # A derivation registered but not yet recorded (a REPL build right after mkdrv).
    pending = pending_config(store, dref)
    return pending if pending is not None else store.config(dref)


def build_wrapper(
    fn: Callable[[Build], Any],
    nouts: int | None = 1,
    starttime: str | None = "AUTO",
    stoptime: str | None = "AUTO",
) -> Realizer:
    """Turn a function of a `Build` into a realizer producing `nouts` output folders.

    `starttime`/`stoptime` are the build times to record, as in Pylightnix:
    ``'AUTO'`` (the default) for the real ones, a `timestring` for that time,
    None for none; `rrefbstart`, `rrefbstop`, `match_latest` and the
    catalogue's ``build_started``/``build_stopped`` then show what was given.
    Raises InvalidConfigError for a bad `nouts` or time.
    """
    _declared_time("starttime", starttime)
    _declared_time("stoptime", stoptime)
    if nouts is None or starttime != "AUTO" or stoptime != "AUTO":
        return build_wrapper_(fn, Build, nouts, starttime, stoptime)
    if not isinstance(nouts, int) or isinstance(nouts, bool) or nouts < 1:
        raise InvalidConfigError(f"build_wrapper: nouts must be a positive integer, got {nouts!r}")

    def realizer(S: Any, dref: DRef, context: Context, args: Any) -> list[str]:
        store = _store(S)
        # Each output folder is its own build area: publishing renames it away,
        # so nothing is left to delete (creating and removing folders is slow).
        label = dref.removeprefix("dref:")[:12]
        outs = [store.new_build_area(label) for _ in range(nouts)]
        try:
            fn(Build(store, dref, context, outs, args))
        except BaseException:
            _forget_outputs(store, outs)
            raise
        return list(outs)

    realizer.__name__ = getattr(fn, "__name__", "realizer")
    return engine_typed(realizer)


def _declared_time(what: str, value: Any) -> float | None:
    """The Unix time a `starttime`/`stoptime` of ``'AUTO'``, None or a `timestring` stands
    for (None for both 'AUTO' and None); InvalidConfigError for anything else."""
    if value is None or value == "AUTO":
        return None
    seconds = parsetime(value) if isinstance(value, str) else None
    if seconds is None or not math.isfinite(seconds):
        raise InvalidConfigError(
            f"{what} is 'AUTO', None or a time as timestring() writes it, not {value!r}"
        )
    return seconds


def _forget_outputs(store: LocalStore, outs: Sequence[str]) -> None:
    """Remove output folders that will not be published, with what was noted for them."""
    for out in outs:
        store.pending_metrics.pop(os.path.normpath(out), None)
        store.declared_times.pop(os.path.normpath(out), None)
        remove_tree(out)


def _lazy_output(b: Build) -> None:
    # A Build made by hand from BuildArgs (as in a REPL session) gets one
    # output folder when first asked for it, as Pylightnix's did.
    if not b.outpaths and b.from_buildargs:
        build_markstart(b, 1)


def build_outpaths(b: Build) -> list[Path]:
    """All output folders of the build."""
    _lazy_output(b)
    return list(b.outpaths)


def build_outpath(b: Build) -> Path:
    """The output folder of a single-output build."""
    _lazy_output(b)
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
    return undref(b.dref)[1]  # the config's name as its DRef carries it


def build_wrapper_(
    fn: Callable[[Any], Any],
    ctr: Callable[[BuildArgs], Build],
    nouts: int | None = 1,
    starttime: str | None = "AUTO",
    stoptime: str | None = "AUTO",
) -> Realizer:
    """Like `build_wrapper`, but the Build is made by ``ctr(BuildArgs)`` (a subclass of Build).

    With ``nouts=None`` the function makes its output folders itself with
    `build_markstart`. Raises InvalidConfigError for a bad `nouts`.
    """
    if nouts is not None and (not isinstance(nouts, int) or isinstance(nouts, bool) or nouts < 1):
        raise InvalidConfigError(f"build_wrapper_: nouts must be a positive integer, got {nouts!r}")

    def realizer(S: Any, dref: DRef, context: Context, args: Any) -> list[str]:
        b = ctr(BuildArgs(_store(S), dref, context, starttime, stoptime, {}, args))
        try:
            if nouts is not None:
                build_markstart(b, nouts)
            fn(b)
        except BaseException:
            _forget_outputs(b.store, b.outpaths)
            raise
        build_markstop(b)
        if not b.outpaths:
            raise InvalidConfigError(
                f"the realizer of {dref} made no output folder; call build_markstart(b, n)"
            )
        return list(b.outpaths)

    realizer.__name__ = getattr(fn, "__name__", "realizer")
    return engine_typed(realizer)


def build_markstart(b: Build, nouts: int) -> list[Path]:
    """Create the `nouts` output folders of a build that has none yet, and note its start time.

    Raises InvalidConfigError for a bad `nouts` and UsageError if the build
    already has output folders.
    """
    from lightstore.foundation.errors import UsageError

    if not isinstance(nouts, int) or isinstance(nouts, bool) or nouts < 1:
        raise InvalidConfigError(
            f"build_markstart: nouts must be a positive integer, got {nouts!r}"
        )
    if b.outpaths:
        raise UsageError(f"the build of {b.dref} already has output folders: {list(b.outpaths)}")
    started = _declared_time("starttime", b.starttime)
    label = b.dref.removeprefix("dref:")[:12]
    b.outpaths = Outputs(b.store.new_build_area(label) for _ in range(nouts))
    b.started = time.time()
    if b.starttime != "AUTO":
        for out in b.outpaths:
            b.store.declared_times.setdefault(os.path.normpath(out), {})["started"] = started
    return list(b.outpaths)


def build_markstop(b: Build) -> None:
    """Note the stop time of a build (recorded in the catalogue when it is published):
    now, or the build's declared `stoptime`."""
    b.stopped = time.time()
    if b.stoptime != "AUTO":
        stopped = _declared_time("stoptime", b.stoptime)
        for out in b.outpaths:
            b.store.declared_times.setdefault(os.path.normpath(out), {})["stopped"] = stopped


def build_markstop_noexcept(b: Build) -> None:
    """`build_markstop` that never raises."""
    with contextlib.suppress(Exception):
        build_markstop(b)


def build_metric(
    b: Build, name: str, value: Any, output: int | None = None, step: int | None = None
) -> None:
    """Record metric `name` = `value` for the build's output (every output, or output #`output`).

    Stored in the catalogue's `metrics` table by the transaction that
    publishes the realization; not part of its hash. NaN and infinities are
    recorded as they are (a diverged run is a result). With `step` (an
    integer: an epoch, an iteration) the value is one point of the series
    `name` (a curve, in `metric_steps`). Recording a name (at a step) again
    replaces the value. Raises InvalidMetricError for a bad name, a value
    that is not an int or a float, a step that is not an integer, a name
    recorded both with and without steps, or an output index out of range.
    """
    build_metrics(b, {check_metric_name(name): check_metric_value(name, value)}, output, step)


def build_metrics(
    b: Build, metrics: Mapping[str, Any], output: int | None = None, step: int | None = None
) -> None:
    """Record several metrics at once (see `build_metric`); all are checked before any is kept."""
    checked = check_metrics(metrics)
    at = None if step is None else check_step(next(iter(checked), "metric"), step)
    if output is None:
        indexes = range(len(b.outpaths))
    elif isinstance(output, int) and not isinstance(output, bool) and 0 <= output < len(b.outpaths):
        indexes = range(output, output + 1)
    else:
        raise InvalidMetricError(
            f"build of {b.dref} has {len(b.outpaths)} output(s); output={output!r} is not one of them"
        )
    pending = [
        b.store.pending_metrics.setdefault(os.path.normpath(b.outpaths[i]), PendingMetrics())
        for i in indexes
    ]
    for p in pending:  # checked on every output before any keeps them
        p.check(checked, at)
    for p in pending:
        p.record(checked, at)
