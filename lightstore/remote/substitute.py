"""Substitution: fetching realizations of (derivation, context) from remotes before building.

`realize(..., substituters=[...])` calls `substitute` for each derivation
whose matcher is unsatisfied by the local realizations: every realization
the remotes hold in that context is pulled (verified), and the matcher then
chooses among local and fetched ones. A realization that does not verify
(unsigned when keys are trusted, damaged, lying) is left out and its
verified siblings are taken; a remote that cannot be reached is skipped. If
nothing fits, the realizer runs; nothing unverified enters the store. A
realize warns once per failing remote, and asks one it could not reach no
more.

Trust is resolved once, for the store the realize was asked for
(`Substituter`), and travels inside the hook to every Dask worker; so does
what the realize learnt about failing remotes (`Substituter.prepare`,
`report`, `merge`: the engine's `TravellingSubstituter`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lightstore.exchange.extract import DEFAULT_MAX_BYTES, DEFAULT_MAX_MEMBERS
from lightstore.foundation.errors import LightstoreError, RemoteError
from lightstore.foundation.hashing import context_hash
from lightstore.foundation.refs import DRef, RRef
from lightstore.remote._fs import open_remote
from lightstore.remote._layout import dref_folder, ensure_marker
from lightstore.remote._redact import redact_url
from lightstore.remote._sign import TrustedKeys, signing_key_for, trusted_keys_for
from lightstore.remote.listing import _derivation
from lightstore.remote.pull import pull
from lightstore.remote.push import push
from lightstore.store import LocalStore

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
        self.warned_left_out: set[str] = set()

    def state(self) -> dict[str, list[str]]:
        """What was learnt, as plain data (to travel back from a worker)."""
        return {
            "warned": sorted(self.warned),
            "unreachable": sorted(self.unreachable),
            "warned_left_out": sorted(self.warned_left_out),
        }

    def merge(self, state: Mapping[str, Iterable[str]]) -> None:
        """Take in what another copy learnt (`state`)."""
        self.warned.update(state.get("warned", ()))
        self.unreachable.update(state.get("unreachable", ()))
        self.warned_left_out.update(state.get("warned_left_out", ()))

    def left_out(self, url: str, rref: RRef, dref: DRef, error: LightstoreError) -> None:
        """A realization of the remote did not verify; its siblings were still taken."""
        shown = redact_url(url)
        if url in self.warned_left_out:
            log.debug("substitute %s from %s left out for %s: %s", rref, shown, dref, error)
            return
        self.warned_left_out.add(url)
        log.warning(
            "substitute %s from %s left out for %s (others that do not verify during this "
            "realize are logged at debug level): %s",
            rref,
            shown,
            dref,
            error,
        )

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
    store: LocalStore,
    dref: DRef,
    context: Mapping[str, Sequence[str]],
    urls: Sequence[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    trusted_keys: Iterable[str] | TrustedKeys | None = None,
    held_lock: bool = False,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    max_members: int | None = DEFAULT_MAX_MEMBERS,
    _failures: _Failures | None = None,
) -> list[RRef]:
    """Pull every realization of `dref` in `context` that the remotes `urls` hold and
    that verifies.

    One listing of each remote's index for (derivation, context); the
    dependencies named by the context are already local. `trusted_keys`: as
    for `pull` (default ``$LIGHTSTORE_TRUSTED_KEYS`` and the store's file).
    Returns the RRefs added. A realization whose manifest, signature or files
    do not verify, or that does not fit `max_bytes` / `max_members` (as for
    `pull`), is left out with a warning (its siblings are still taken);
    remotes that fail otherwise are skipped with a warning, logged without
    credentials (only an unreachable one, a RemoteError, is not asked again). `held_lock`: the caller holds the build lock
    of (dref, context). Raises InvalidKeyError if a trusted key is malformed.
    """
    trusted = trusted_keys_for(store.root, trusted_keys)
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
                refused: dict[RRef, LightstoreError] = {}
                added += pull(
                    store,
                    remote,
                    missing,
                    trusted_keys=trusted,
                    held_locks=held,
                    max_bytes=max_bytes,
                    max_members=max_members,
                    refused=refused,
                )
                for rref, error in sorted(refused.items()):
                    failures.left_out(url, rref, dref, error)
        except LightstoreError as e:
            failures.failed(url, dref, e)
    return added


class Substituter:
    """The engine's substitute hook (`RealizeOptions.substitute`) for the remotes `urls`.

    Make one per realize: a failing remote is warned about once in it. Trust
    is the caller's: resolved (`trusted_keys_for` on the caller's store) on
    first use in this process, or when the hook is pickled to travel to a
    Dask worker, whichever comes first. A worker therefore trusts what the
    caller trusts, never what its own environment says, and a cached realize
    reads no key file.
    """

    def __init__(
        self,
        urls: Sequence[str],
        store_root: str,
        trusted_keys: Iterable[str] | TrustedKeys | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.urls = list(urls)
        self.store_root = store_root
        given = trusted_keys
        if given is not None and not isinstance(given, str | TrustedKeys):
            given = list(given)  # a generator must survive until the first use
        self.given = given
        self.storage_options = storage_options
        self.failures = _Failures()
        self._trusted: TrustedKeys | None = None

    def trusted(self) -> TrustedKeys:
        """The resolved trust (resolved now if it was not yet)."""
        if self._trusted is None:
            self._trusted = trusted_keys_for(self.store_root, self.given)
        return self._trusted

    def __getstate__(self) -> dict[str, Any]:
        self.trusted()  # decided here, in the caller, before travelling
        return dict(self.__dict__)

    def prepare(self, task: Any) -> None:
        """Decide, before copies of this hook travel with tasks: resolve the trust, and ask
        each remote once whether it can be reached (one small read), so that one that
        cannot is warned about here, once, and asked by no copy."""
        self.trusted()
        for url in self.urls:
            if url in self.failures.unreachable:
                continue
            try:
                ensure_marker(open_remote(url, self.storage_options), create=False)
            except LightstoreError as e:
                self.failures.failed(url, task.dref, e)

    def report(self) -> dict[str, list[str]]:
        """What this copy learnt about failing remotes (see `merge`)."""
        return self.failures.state()

    def merge(self, report: Mapping[str, Iterable[str]]) -> None:
        """Take in what a copy that ran elsewhere learnt: the remotes it found unreachable
        are not asked again, those it warned about are not warned about again."""
        self.failures.merge(report)

    def __call__(self, store: LocalStore, task: Any) -> bool:
        return bool(
            substitute(
                store,
                task.dref,
                task.context,
                self.urls,
                storage_options=self.storage_options,
                trusted_keys=self.trusted(),
                held_lock=True,
                _failures=self.failures,
            )
        )


def remote_hooks(
    store: LocalStore,
    substituters: Iterable[str] | str | None,
    push_to: str | None,
    trusted_keys: Iterable[str] | None,
    storage_options: Mapping[str, Any] | None,
    signing_key: Any = None,
) -> tuple[
    Callable[[LocalStore, Any], bool] | None, Callable[[LocalStore, list[RRef]], Any] | None
]:
    """The substitute hook and the push step a realize into `store` uses (None for each
    that is off). Trust (`trusted_keys_for`) is resolved once in this process (see
    `Substituter`), the signing key (`signing_key_for`) here; raises InvalidKeyError
    for a bad signing key before anything is built."""
    urls = default_substituters(substituters)
    hook = Substituter(urls, store.root, trusted_keys, storage_options) if urls else None
    target = default_push_to(push_to)
    if target is None:
        return hook, None
    key = signing_key_for(signing_key)

    def push_chosen(store: LocalStore, rrefs: list[RRef]) -> Any:
        """Upload what a realize chose (`push_to=`); raises like `push` (the builds stay)."""
        if rrefs:
            return push(
                store,
                target,
                sorted(set(rrefs)),
                storage_options=storage_options,
                signing_key=key or False,
            )
        return None

    return hook, push_chosen
