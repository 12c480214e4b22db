"""Planning a pull: which realizations and derivations of the requested closures are new,
their manifests and configs checked, and which requested ones are left out, with why.

Each requested realization is planned on its own: one whose closure does not verify (a
manifest, config or signature), or does not fit the limits next to the ones before it,
is left out and the others are kept.
"""

from __future__ import annotations

import collections
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from lightstore.exchange._ingest import checked_config
from lightstore.exchange.extract import Limits
from lightstore.foundation.config import Config, config_deps
from lightstore.foundation.errors import (
    ArchiveError,
    LightstoreError,
    RemoteIntegrityError,
    UnknownReferenceError,
)
from lightstore.foundation.refs import DRef, RRef
from lightstore.remote._fs import Remote
from lightstore.remote._layout import Manifest, config_bytes_match, derivation_key
from lightstore.remote._sign import TrustedKeys
from lightstore.remote.manifests import read_trusted_manifest
from lightstore.store import LocalStore

#: What a pull leaves out of several realizations, and reports: the ones whose
#: manifests, configs or signatures do not verify, whose closure holds such a one,
#: or that do not fit the limits next to the ones before them.
_PER_REALIZATION = (ArchiveError, UnknownReferenceError)

#: What is wrong with a realization (or derivation) itself, whatever else is pulled.
_OF_ITS_OWN = (RemoteIntegrityError, UnknownReferenceError)


@dataclass
class PullPlan:
    """What a pull will add: checked manifests and configs, and for each requested
    realization the new ones it needs; and the requested ones left out, with why."""

    derivations: dict[DRef, Config] = field(default_factory=dict)
    manifests: dict[RRef, Manifest] = field(default_factory=dict)
    needs: dict[RRef, set[RRef]] = field(default_factory=dict)
    failures: dict[RRef, LightstoreError] = field(default_factory=dict)

    def leave_out(self, bad: Mapping[RRef, LightstoreError]) -> None:
        """Leave out the requested realizations that need one of `bad` (with its error),
        and every realization only they need."""
        for asked, needed in list(self.needs.items()):
            found = sorted(needed & set(bad))
            if found:
                self.failures[asked] = bad[found[0]]
                del self.needs[asked]
        kept = set().union(*self.needs.values()) if self.needs else set()
        self.manifests = {r: m for r, m in self.manifests.items() if r in kept}


def _read_config(remote: Remote, trusted: TrustedKeys, d: DRef, where: str) -> Config:
    data = remote.read(derivation_key(d))
    if data is None:
        raise RemoteIntegrityError(
            f"{where}: the config of {d} is missing on the remote; nothing of what needs it "
            "was added"
        )
    if trusted and not config_bytes_match(d, data):
        # Named by a signed config: checked by its hash before it is parsed.
        raise RemoteIntegrityError(
            f"{where}: the config of {d} on the remote does not hash to it; nothing of what "
            "needs it was added"
        )
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeError, ValueError, RecursionError):
        raise RemoteIntegrityError(f"{where}: the config of {d} is not JSON") from None
    try:
        return checked_config(d, raw, where)[1]
    except LightstoreError as e:
        raise RemoteIntegrityError(str(e)) from None


def plan_pull(
    store: LocalStore,
    remote: Remote,
    requested: list[RRef],
    trusted: TrustedKeys,
    where: str,
    limits: Limits | None = None,
) -> PullPlan:
    """The manifests of the closures of `requested` not yet in `store`, checked, their configs,
    and the requested realizations left out with the reason.

    Each is planned on its own: one whose closure does not verify, or does not
    fit `limits` next to the ones before it, is left out and the others are
    kept. Entries are counted while manifests are read, so a closure far over the
    limits is refused before it is read whole."""
    plan = PullPlan()
    bad: dict[RRef, LightstoreError] = {}
    bad_configs: dict[DRef, LightstoreError] = {}
    local: set[RRef] = set()
    local_drefs: set[DRef] = set()
    for asked in requested:
        budget = copy.copy(limits)  # what is left once the ones kept so far are counted
        if budget is not None:
            budget.subject = (
                f"{where}: the closure of {asked}, with the ones pulled before it,"
                if plan.manifests
                else f"{where}: the closure" + (f" of {asked}" if len(requested) > 1 else "")
            )
        closure: dict[RRef, Manifest] = {}
        needed: set[RRef] = set()
        queue: collections.deque[tuple[RRef, str | None]] = collections.deque([(asked, None)])
        try:
            while queue:
                rref, parent = queue.popleft()
                if rref in needed or rref in local:
                    continue
                if rref in bad:
                    raise bad[rref]
                m = plan.manifests.get(rref)
                if m is None:
                    if store.catalogue.known_rrefs([rref]):
                        local.add(rref)
                        continue
                    try:
                        m = read_trusted_manifest(remote, trusted, rref, where, parent, budget)
                    except _OF_ITS_OWN as e:
                        bad[rref] = e
                        raise
                    closure[rref] = m
                needed.add(rref)
                queue.extend((d, rref) for d in m.deps)
            configs = {m.dref: m.config for m in closure.values()}
            pending = [d for cfg in configs.values() for d in config_deps(cfg)]
            while pending:
                d = pending.pop()
                if d in configs or d in plan.derivations or d in local_drefs:
                    continue
                if d in bad_configs:
                    raise bad_configs[d]
                if store.catalogue.known_drefs([d]):
                    local_drefs.add(d)
                    continue
                try:
                    configs[d] = _read_config(remote, trusted, d, where)
                except _OF_ITS_OWN as e:
                    bad_configs[d] = e
                    raise
                pending.extend(config_deps(configs[d]))
        except _PER_REALIZATION as e:
            plan.failures[asked] = e
            continue
        plan.manifests.update(closure)
        plan.derivations.update(configs)
        plan.needs[asked] = needed
        limits = budget
    return plan
