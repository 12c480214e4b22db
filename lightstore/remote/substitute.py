"""Substitution: fetching realizations of (derivation, context) from remotes before building.

`realize(..., substituters=[...])` calls `substitute` for each derivation
whose matcher is unsatisfied by the local realizations: every realization
the remotes hold in that context is pulled (verified), and the matcher then
chooses among local and fetched ones. A remote that cannot be reached, or
whose objects do not verify, is skipped with a warning: the realizer runs
instead, and nothing unverified enters the store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lightstore.errors import LightstoreError
from lightstore.hashing import context_hash
from lightstore.refs import DRef, RRef
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


def substitute(
    store: Store,
    dref: DRef,
    context: Mapping[str, Sequence[str]],
    urls: Sequence[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    trusted_keys: Iterable[str] | None = None,
) -> list[RRef]:
    """Pull every realization of `dref` in `context` that the remotes `urls` hold.

    Returns the RRefs added. Remotes that fail are skipped with a warning
    (logged without credentials).
    """
    ctx = context_hash(context)
    added: list[RRef] = []
    for url in urls:
        try:
            remote = open_remote(url, storage_options)
            held = [x.rref for x in _derivation(remote, dref_folder(dref), ctx)]
            missing = sorted(set(held) - store.catalogue.known_rrefs(held))
            if missing:
                added += pull(store, remote, missing, trusted_keys=trusted_keys)
        except LightstoreError as e:
            log.warning("substituter skipped for %s: %s", dref, e)
    return added


def push_built(store: Store, url: str, rrefs: Sequence[RRef], **kw: Any) -> None:
    """Upload what a realize chose (`push_to=`); raises like `push` (the builds stay local)."""
    if rrefs:
        push(store, url, rrefs, **kw)
