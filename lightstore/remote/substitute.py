"""Substitution: fetching realizations of (derivation, context) from remotes before building.

`realize(..., substituters=[...])` calls `substitute` for each derivation
whose matcher is unsatisfied by the local realizations: every realization
the remotes hold in that context is pulled (verified), and the matcher then
chooses among local and fetched ones. A remote that cannot be reached, or
whose objects do not verify, is skipped with a warning: the realizer runs
instead, and nothing unverified enters the store. A realize warns once per
failing remote, and asks one it could not reach no more.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lightstore.errors import LightstoreError, RemoteError
from lightstore.exchange.extract import DEFAULT_MAX_BYTES, DEFAULT_MAX_MEMBERS
from lightstore.hashing import context_hash
from lightstore.refs import DRef, RRef
from lightstore.remote._fs import redact_url
from lightstore.remote._layout import dref_folder
from lightstore.remote.listing import _derivation
from lightstore.remote.pull import pull
from lightstore.remote.push import open_remote, push
from lightstore.store import Store

log = logging.getLogger("lightstore")

SUBSTITUTERS_VARIABLE = "LIGHTSTORE_SUBSTITUTERS"
PUSH_VARIABLE = "LIGHTSTORE_PUSH"


def default_substituters(given: Iterable[str] | str | None = None) -> list[str]:
    """The substituter URLs: `given`, else ``$LIGHTSTORE_SUBSTITUTERS`` (space-separated)."""
    if given is None:
        return os.environ.get(SUBSTITUTERS_VARIABLE, "").split()
    if isinstance(given, str):
        return given.split()
    return [str(u) for u in given]


def default_push_to(given: str | None = None) -> str | None:
    """The remote to push builds to: `given`, else ``$LIGHTSTORE_PUSH`` (None if unset)."""
    if given:
        return given
    return os.environ.get(PUSH_VARIABLE) or None


class _Failures:
    """The remotes that failed during one realize: each is warned about once, and one
    that could not be reached is not asked again (a sweep would wait for it, and warn,
    once per derivation). Plain sets: the hook travels to Dask workers by pickle."""

    def __init__(self) -> None:
        self.warned: set[str] = set()
        self.unreachable: set[str] = set()

    def failed(self, url: str, dref: DRef, error: LightstoreError) -> None:
        shown = redact_url(url)
        if isinstance(error, RemoteError):
            self.unreachable.add(url)
        if url in self.warned:
            log.debug("substituter %s skipped for %s: %s", shown, dref, error)
            return
        self.warned.add(url)
        later = (
            "not asked again during this realize"
            if url in self.unreachable
            else "later failures of this remote during this realize are logged at debug level"
        )
        log.warning("substituter %s skipped for %s (%s): %s", shown, dref, later, error)


def substitute(
    store: Store,
    dref: DRef,
    context: Mapping[str, Sequence[str]],
    urls: Sequence[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    trusted_keys: Iterable[str] | None = None,
    held_lock: bool = False,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_members: int | None = DEFAULT_MAX_MEMBERS,
    _failures: _Failures | None = None,
) -> list[RRef]:
    """Pull every realization of `dref` in `context` that the remotes `urls` hold.

    One listing of each remote's index for (derivation, context); the
    dependencies named by the context are already local. Returns the RRefs
    added. Remotes that fail (unreachable, content that does not verify, or
    more than `max_bytes` / `max_members`, as for `pull`) are skipped with a
    warning, logged without credentials. `held_lock`: the caller holds the
    build lock of (dref, context).
    """
    failures = _Failures() if _failures is None else _failures
    ctx = context_hash(context)
    held = [(str(dref), ctx)] if held_lock else []
    added: list[RRef] = []
    for url in urls:
        if url in failures.unreachable:
            continue
        try:
            remote = open_remote(url, storage_options)
            found = [x.rref for x in _derivation(remote, dref_folder(dref), ctx)]
            missing = sorted(set(found) - store.catalogue.known_rrefs(found))
            if missing:
                added += pull(
                    store,
                    remote,
                    missing,
                    trusted_keys=trusted_keys,
                    held_locks=held,
                    max_bytes=max_bytes,
                    max_members=max_members,
                )
        except LightstoreError as e:
            failures.failed(url, dref, e)
    return added


def make_substituter(
    urls: Sequence[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    trusted_keys: Iterable[str] | None = None,
) -> Callable[[Store, Any], bool]:
    """The engine's substitute hook (`RealizeOptions.substitute`) for the remotes `urls`.

    Make one per realize: a failing remote is warned about once in it.
    """
    keys = list(trusted_keys) if trusted_keys is not None else None
    failures = _Failures()

    def hook(store: Store, task: Any) -> bool:
        return bool(
            substitute(
                store,
                task.dref,
                task.context,
                urls,
                storage_options=storage_options,
                trusted_keys=keys,
                held_lock=True,
                _failures=failures,
            )
        )

    return hook


def remote_hooks(
    substituters: Iterable[str] | str | None,
    push_to: str | None,
    trusted_keys: Iterable[str] | None,
    storage_options: Mapping[str, Any] | None,
) -> tuple[Callable[[Store, Any], bool] | None, Callable[[Store, list[RRef]], Any] | None]:
    """The substitute hook and the push step a realize uses (None for each that is off)."""
    urls = default_substituters(substituters)
    hook = (
        make_substituter(urls, storage_options=storage_options, trusted_keys=trusted_keys)
        if urls
        else None
    )
    target = default_push_to(push_to)
    if target is None:
        return hook, None

    def push_chosen(store: Store, rrefs: list[RRef]) -> Any:
        """Upload what a realize chose (`push_to=`); raises like `push` (the builds stay)."""
        if rrefs:
            return push(store, target, sorted(set(rrefs)), storage_options=storage_options)
        return None

    return hook, push_chosen
