"""The realization algorithm.

For each derivation of a closure, dependencies first: compute its context
from the realizations chosen for its dependencies, ask the matcher about the
realizations that exist in that context (one indexed catalogue lookup), and
only if it is unsatisfied take the build lock for (derivation, context),
re-read, build, publish and ask again. A cached realize therefore reads the
catalogue and writes nothing.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightstore.config import canonical_json
from lightstore.engine.registry import Closure, Derivation
from lightstore.errors import (
    ArchiveError,
    BuildError,
    ChecksumError,
    DiskFullError,
    InvalidReferenceError,
    LightstoreError,
    MatcherError,
    NotRealizedError,
    disk_full,
)
from lightstore.files import remove_tree
from lightstore.hashing import canonical_context, context_hash
from lightstore.refs import Context, DRef, RRef, parse_dref
from lightstore.store import Store

log = logging.getLogger("lightstore")


@dataclass
class RealizeOptions:
    """How to realize: which derivations to rebuild, which must be cached, extra realizer args."""

    force_rebuild: Collection[DRef] = ()
    assert_realized: Collection[DRef] = ()
    realize_args: Mapping[DRef, Any] = field(default_factory=dict)
    dry_run: bool = False


def _check_matched(drv: Derivation, matched: Any, available: list[RRef]) -> list[RRef]:
    given = set(available)
    if not isinstance(matched, list) or any(r not in given for r in matched):
        raise MatcherError(
            f"the matcher of {drv.dref} returned {matched!r}; a matcher returns None or a list "
            "of the realizations it was given",
            drv.dref,
        )
    return matched


def _tmp_roots(store: Store, outputs: list[str]) -> set[str]:
    """The top-level build-area folders holding `outputs` (to delete after publishing)."""
    tmp = store.tmp_realpath
    roots = set()
    for out in outputs:
        real = os.path.realpath(out)
        if real.startswith(tmp):
            roots.add(os.path.join(store.tmp_dir, real[len(tmp) :].split(os.sep, 1)[0]))
    return {r for r in roots if os.path.lexists(r)}


def _build(
    store: Store, drv: Derivation, context: Context, ctx_hash: str, options: RealizeOptions
) -> list[RRef]:
    """Run the realizer of `drv` once and publish its outputs. Caller holds the build lock."""
    ctx = canonical_context(context)
    inputs = sorted({r for rrefs in ctx.values() for r in rrefs})
    build_id = store.catalogue.start_build(drv.dref, ctx_hash, canonical_json(ctx), inputs)
    outputs: list[str] = []
    try:
        started = time.time()
        outputs = list(
            drv.realizer(store.settings, drv.dref, context, options.realize_args.get(drv.dref))
        )
        if not outputs:
            raise BuildError(f"the realizer of {drv.dref} returned no output folder", drv.dref)
        return store.publish(drv.dref, context, outputs, drv.promises, build_id, started)
    except (KeyboardInterrupt, SystemExit):
        store.catalogue.finish_build(build_id, "interrupted", "interrupted by the user")
        raise
    except BaseException as e:
        store.catalogue.finish_build(build_id, "failed", "".join(traceback.format_exception(e)))
        if isinstance(e, BuildError):
            e.dref = e.dref or drv.dref
            raise
        if isinstance(e, ChecksumError | ArchiveError | DiskFullError):
            raise  # built-in stages report bad downloads and archives with their own errors
        full = disk_full(e, f"the realizer of {drv.dref} wrote its output")
        if full is not None:
            raise full from e
        raise BuildError(
            f"the realizer of {drv.dref} raised {type(e).__name__}: {e}. The store is unchanged "
            f"(build #{build_id} is recorded as failed; see `.cause` for the original error)",
            drv.dref,
            e,
        ) from e
    finally:
        for root in _tmp_roots(store, outputs):
            remove_tree(root)


def _realize_one(
    store: Store, drv: Derivation, context: Context, options: RealizeOptions
) -> list[RRef] | None:
    ctx_hash = context_hash(context)
    forced = drv.dref in options.force_rebuild
    S = store.settings
    if not forced:
        available = store.catalogue.realizations(drv.dref, ctx_hash)
        matched = drv.matcher(S, available)
        if matched is not None:
            return _check_matched(drv, matched, available)
    if options.dry_run:
        return None
    if drv.dref in options.assert_realized or drv.must_be_realized:
        raise NotRealizedError(
            f"{drv.dref} has no matching realization in this context and would have to be built, "
            "but it was required to be realized already",
            drv.dref,
        )
    with store.build_lock(
        drv.dref, ctx_hash, on_wait=lambda msg: log.info("%s: %s", drv.dref, msg)
    ):
        if not forced:
            # Someone may have built it while this process waited for the lock.
            available = store.catalogue.realizations(drv.dref, ctx_hash)
            matched = drv.matcher(S, available)
            if matched is not None:
                return _check_matched(drv, matched, available)
        _build(store, drv, context, ctx_hash, options)
        available = store.catalogue.realizations(drv.dref, ctx_hash)
        matched = drv.matcher(S, available)
    if matched is None:
        raise MatcherError(
            f"the matcher of {drv.dref} is still unsatisfied after its realizer ran "
            f"({len(available)} realization(s) exist in this context); make the realizer produce "
            "what the matcher asks for (for example nouts=N for match_some(N))",
            drv.dref,
        )
    return _check_matched(drv, matched, available)


def realize_closure(closure: Closure, options: RealizeOptions | None = None) -> Context:
    """Realize every derivation of the closure; return the chosen RRefs of each.

    With `dry_run`, nothing is built: derivations that would be built, and
    everything downstream of them, map to an empty list.
    Raises BuildError, PromiseError, MatcherError, NotRealizedError.
    """
    options = options or RealizeOptions()
    store = closure.store
    chosen: Context = {}
    with store.realizing():
        # Cheap when cached (one query), and it re-creates derivations that a
        # garbage collection removed since `instantiate`.
        store.record_derivations([(d.dref, d.config) for d in closure.derivations])
        for drv in closure.derivations:
            if options.dry_run and any(not chosen[d] for d in drv.deps):
                chosen[drv.dref] = []
                continue
            context = {d: chosen[d] for d in drv.deps}
            result = _realize_one(store, drv, context, options)
            chosen[drv.dref] = result if result is not None else []
    return chosen


def unpack_closure(arg: Any) -> tuple[Any, Closure]:
    """Accept a Closure or a ``(result, closure)`` pair, as `instantiate` returns."""
    if isinstance(arg, Closure):
        return arg.result, arg
    if isinstance(arg, tuple) and len(arg) == 2 and isinstance(arg[1], Closure):
        return arg[0], arg[1]
    raise LightstoreError(
        f"expected what instantiate() returns (a (result, closure) pair or a Closure), got {type(arg).__name__}"
    )


def force_list(closure: Closure, force_rebuild: bool | Collection[str]) -> list[DRef]:
    """Normalise the `force_rebuild` argument: True means the targets."""
    if isinstance(force_rebuild, bool):
        return list(closure.targets) if force_rebuild else []
    if isinstance(force_rebuild, str):
        raise InvalidReferenceError(
            f"force_rebuild takes True/False or a list of DRefs, not the string {force_rebuild!r}"
        )
    return [parse_dref(d) for d in force_rebuild]
