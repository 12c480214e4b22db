"""Pylightnix-style realize functions and stage combinators, and `realize_closure`.

Here the keyword arguments of a realize become explicit objects for the
engine: `client=`/`jobs=`/`remote=` an executor (`lightstore.executors`),
`substituters=`/`push_to=` (and their environment variables) the remote
caches' substitute hook and push step (`lightstore.remote.substitute`), and
every realize passes the REPL's guard (`lightstore.compat.paused`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from lightstore.compat.paused import guard
from lightstore.compat.registry import current_registry_or_new, mkdrv
from lightstore.engine import realize as _engine
from lightstore.engine.plan import RealizeOptions
from lightstore.engine.realize import force_list, unpack_closure
from lightstore.engine.registry import Closure, Registry, find_drefs
from lightstore.executors import executor_for
from lightstore.foundation.errors import LightstoreError
from lightstore.foundation.refs import Context, DRef, RRef, parse_dref


def realize_closure(
    closure: Closure,
    options: RealizeOptions | None = None,
    *,
    client: Any = None,
    jobs: int | None = None,
    remote: str | None = None,
    worker_root: str | None = None,
    signing_key: Any = None,
    trusted_keys: Iterable[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Context:
    """Realize every derivation of the closure; return the chosen RRefs of each.

    With `dry_run`, nothing is built: derivations that would be built, and
    everything downstream of them, map to an empty list.

    `jobs=N` (N worker processes of this machine, kept for the process;
    `lightstore.executors.local`) or `client` (a `distributed.Client` or a
    scheduler address; `lightstore.executors.dask`) build in parallel, in the
    caller's store root, or with `remote=URL, worker_root=PATH` in worker
    stores exchanging through a remote cache;
    there the workers sign what they push with `signing_key` (default
    ``$LIGHTSTORE_SIGNING_KEY``), pull with the caller's trust
    (`trusted_keys`, default ``$LIGHTSTORE_TRUSTED_KEYS`` and the store's
    ``trusted-keys`` file), both resolved here in the caller, and reach the
    remote with `storage_options`. Without either, builds run in this process.
    Raises BuildError (BuildsFailed when several builds failed), PromiseError,
    MatcherError, NotRealizedError, UsageError (client= without
    `lightstore[dask]`, jobs= without cloudpickle, or bad arguments).
    """
    options = options or RealizeOptions()
    if options.guard is None:
        options = dataclasses.replace(options, guard=guard)
    executor = executor_for(
        client=client,
        jobs=jobs,
        remote=remote,
        worker_root=worker_root,
        signing_key=signing_key,
        trusted_keys=trusted_keys,
        storage_options=storage_options,
    )
    return _engine.realize_closure(closure, options, executor)


def realize(
    closure: Any,
    force_rebuild: bool | list[DRef] = False,
    assert_realized: list[DRef] | None = None,
    realize_args: dict[DRef, Any] | None = None,
    dry_run: bool = False,
    *,
    substituters: list[str] | str | None = None,
    push_to: str | None = None,
    trusted_keys: list[str] | None = None,
    signing_key: Any = None,
    storage_options: dict[str, Any] | None = None,
    **parallel: Any,
) -> tuple[Any, Any, Context]:
    """Realize an instantiated closure; return ``(result, closure, context)``.

    `force_rebuild` (True, or a list of DRefs) runs the given realizers again
    even if matchers are satisfied; `assert_realized` lists DRefs that must not
    need a build (NotRealizedError); `realize_args` passes an extra argument to
    the realizers of the given DRefs; `dry_run` builds nothing and maps what
    would be built (and everything after it) to None, as Pylightnix does.

    Remote caches (`lightstore.remote`): `substituters` (default
    ``$LIGHTSTORE_SUBSTITUTERS``, space-separated URLs) are asked before a
    build for realizations of the derivation in its context, which are
    fetched (verified) so that the matcher chooses among local and fetched
    ones; `push_to` (default ``$LIGHTSTORE_PUSH``) uploads the closure of
    what was chosen afterwards, signed with `signing_key` (a key file, its
    text or a SigningKey; default ``$LIGHTSTORE_SIGNING_KEY``). `trusted_keys`
    (default ``$LIGHTSTORE_TRUSTED_KEYS`` and the store's ``trusted-keys``
    file) require signed substitutes; they are resolved here, once, and
    travel to the workers of `jobs=`/`client=`. `storage_options` go to every remote's driver
    (the substituters', `push_to`'s and `remote=`'s, on the workers too).

    `parallel` takes `jobs=`, `client=`, `keep_going=`, `remote=`,
    `worker_root=` (see `realize_closure`, which also receives
    `signing_key` and `trusted_keys`).
    """
    from lightstore.remote.substitute import remote_hooks

    result, cl = unpack_closure(closure)
    substitute, push = remote_hooks(
        cl.store, substituters, push_to, trusted_keys, storage_options, signing_key
    )
    options = RealizeOptions(
        force_rebuild=set(force_list(cl, force_rebuild)),
        assert_realized={parse_dref(d) for d in (assert_realized or ())},
        realize_args=dict(realize_args or {}),
        dry_run=dry_run,
        keep_going=parallel.pop("keep_going", None),
        substitute=substitute,
        guard=guard,
    )
    context = realize_closure(
        cl,
        options,
        signing_key=signing_key,
        trusted_keys=trusted_keys,
        storage_options=storage_options,
        **parallel,
    )
    if push is not None and not dry_run:
        push(cl.store, [r for rrefs in context.values() for r in rrefs])
    if dry_run:
        # As in Pylightnix: what would be built (and what follows it) maps to None.
        context = {d: rrefs or None for d, rrefs in context.items()}  # type: ignore[misc]
    return result, cl, context


def realizeMany(
    closure: Any,
    force_rebuild: bool | list[DRef] = False,
    assert_realized: list[DRef] | None = None,
    realize_args: dict[DRef, Any] | None = None,
    dry_run: bool = False,
    **options: Any,
) -> list[RRef]:
    """Realize a one-target closure and return all RRefs chosen for the target.

    Takes the keyword options of `realize` (remote caches, Dask)."""
    _one_target(closure, "realizeMany")
    _, cl, ctx = realize(closure, force_rebuild, assert_realized, realize_args, dry_run, **options)
    return list(ctx[cl.targets[0]] or [])  # a dry run gives [] for a target it would build


def _one_target(closure: Any, function: str) -> None:
    """Refuse a closure of several targets before anything is built."""
    _, cl = unpack_closure(closure)
    if len(cl.targets) != 1:
        raise LightstoreError(
            f"{function} expects a closure with one target, this one has {len(cl.targets)}; "
            "use realize() (nothing was built)"
        )


def realize1(
    closure: Any,
    force_rebuild: bool | list[DRef] = False,
    assert_realized: list[DRef] | None = None,
    realize_args: dict[DRef, Any] | None = None,
    dry_run: bool = False,
    **options: Any,
) -> RRef:
    """Realize a one-target, one-output closure and return its RRef.

    With `dry_run`, returns None when the target would have to be built.
    Takes the keyword options of `realize` (remote caches, Dask).
    """
    _one_target(closure, "realize1")
    rrefs = realizeMany(closure, force_rebuild, assert_realized, realize_args, dry_run, **options)
    if dry_run and not rrefs:
        return None  # type: ignore[return-value]
    if len(rrefs) != 1:
        raise LightstoreError(
            f"realize1 expects one realization but the matcher chose {len(rrefs)}; use realizeMany()"
        )
    return rrefs[0]


def redefine(
    stage: Callable[..., Any],
    new_config: Callable[[dict[str, Any]], Any] = lambda c: None,
    new_matcher: Any = None,
    new_realizer: Any = None,
) -> Callable[..., DRef]:
    """A stage like `stage` whose config is edited in place by `new_config`,
    and whose matcher/realizer are replaced when given (Pylightnix's, taking `S`,
    or the engine's)."""

    def _stage(*args: Any, r: Registry | None = None, **kwargs: Any) -> DRef:
        reg = current_registry_or_new(r)
        dref = stage(*args, r=reg, **kwargs)
        drv = reg[DRef(dref)]
        config = copy.deepcopy(drv.config.val)
        new_config(config)
        return mkdrv(config, new_matcher or drv.matcher, new_realizer or drv.realizer, r=reg)

    return _stage


def realized(stage: Callable[..., Any]) -> Callable[..., Any]:
    """A stage like `stage` whose realization fails with NotRealizedError if anything would be built."""

    def _stage(*args: Any, r: Registry | None = None, **kwargs: Any) -> Any:
        reg = current_registry_or_new(r)
        result = stage(*args, r=reg, **kwargs)
        for drv in reg.closure_of(find_drefs(result)):
            reg.derivations[drv.dref] = dataclasses.replace(drv, must_be_realized=True)
        return result

    return _stage
