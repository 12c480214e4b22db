"""Checking realizations that come from outside a store, and adding them to it.

Archives (`sunpack`) and other stores (`copy_closure`) go through the same
checks before anything of the destination changes:

- every config is a valid config and hashes to its DRef;
- every context names exactly the dependencies of its derivation's config,
  each with RRefs of that dependency;
- every realization's folder holds only files, folders and symlinks that stay
  inside it, and its tree digest with its context hash gives its RRef;
- everything a derivation or a realization refers to is either coming along
  or already in the destination.

Only then are the derivations recorded and the folders installed with
`Store.install` (rename into the tree, then one catalogue transaction).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightstore.catalogue import NewRealization
from lightstore.exchange._tree import check_links
from lightstore.foundation.config import Config, canonical_json, config_deps, mkconfig
from lightstore.foundation.errors import (
    ArchiveError,
    BuildError,
    LightstoreError,
    UnknownReferenceError,
)
from lightstore.foundation.files import MAX_RELATIVE_PATH, make_readonly, remove_tree
from lightstore.foundation.hashing import (
    canonical_context,
    config_hash,
    context_hash,
    realization_hash,
)
from lightstore.foundation.refs import DRef, RRef, mkdref, parse_dref, parse_rref, rref2dref, unrref
from lightstore.store import LocalStore
from lightstore.store.layout import CONTEXT_FILE, realization_digest


@dataclass
class Incoming:
    """A realization to add: where its folder is now, and what it claims to be."""

    rref: RRef
    dref: DRef
    context: dict[str, list[str]]
    folder: str
    build_started: float | None = None
    build_stopped: float | None = None
    size: int = 0
    file_count: int = 0
    host: str | None = None  # the builder's, when the source says
    pid: int | None = None
    metrics: dict[str, int | float] = field(default_factory=dict)

    @property
    def context_json(self) -> str:
        return canonical_json(self.context)

    @property
    def context_hash(self) -> str:
        return context_hash(self.context)

    @property
    def deps(self) -> list[str]:
        return sorted({r for rrefs in self.context.values() for r in rrefs})

    def record(self) -> NewRealization:
        return NewRealization(
            self.rref,
            self.dref,
            self.context_json,
            self.context_hash,
            self.deps,
            self.size,
            self.file_count,
            self.build_started,
            self.build_stopped,
            host=self.host,
            pid=self.pid,
            imported=True,
            metrics=self.metrics,
        )


def checked_config(dref: Any, config: Any, where: str) -> tuple[DRef, Config]:
    """A (DRef, Config) pair after checking that the config hashes to the DRef."""
    try:
        d = parse_dref(dref)
        cfg = mkconfig(config)
    except LightstoreError as e:
        raise ArchiveError(f"{where}: invalid derivation: {e}") from e
    if mkdref(config_hash(cfg.val), cfg.name) != d:
        raise ArchiveError(
            f"{where}: the config given for {d} does not hash to it; the source lies or is "
            "damaged, nothing was added"
        )
    return d, cfg


def checked_context(rref: RRef, raw: Any, config: Config, where: str) -> dict[str, list[str]]:
    """The canonical context of `rref`, after checking it fits its derivation's config."""
    if not isinstance(raw, Mapping) or not all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in raw.values()
    ):
        raise ArchiveError(f"{where}: the context of {rref} is not a map of lists of RRefs")
    try:
        ctx = {parse_dref(k): [parse_rref(r) for r in v] for k, v in raw.items()}
    except LightstoreError as e:
        raise ArchiveError(f"{where}: the context of {rref} is malformed: {e}") from e
    deps = set(config_deps(config))
    if set(ctx) != deps:
        raise ArchiveError(
            f"{where}: the context of {rref} names {sorted(ctx)} but its derivation depends on "
            f"{sorted(deps)}; the source lies or is damaged"
        )
    for d, rrefs in ctx.items():
        for r in rrefs:
            if rref2dref(r) != d:
                raise ArchiveError(
                    f"{where}: the context of {rref} lists {r} as a realization of {d}; "
                    "the source lies or is damaged"
                )
    return canonical_context(ctx)


def verify_folder(inc: Incoming, where: str) -> None:
    """Check the folder of `inc` hashes to its RRef (with its context); fill size and count."""
    check_links(inc.folder, f"{where}: {inc.rref}")
    try:
        digest = realization_digest(inc.folder, max_path=MAX_RELATIVE_PATH)
    except BuildError as e:
        raise ArchiveError(f"{where}: {inc.rref}: {e}") from e
    rhash = unrref(inc.rref)[0]
    if realization_hash(inc.context_hash, digest.digest) != rhash:
        raise ArchiveError(
            f"{where}: the content of {inc.rref} does not hash to its RRef (tampered, damaged, "
            "or a context that lies); nothing was added"
        )
    inc.size, inc.file_count = digest.size, digest.files


def check_references(
    store: LocalStore,
    derivations: Mapping[DRef, Config],
    incoming: Mapping[RRef, Incoming],
    where: str,
) -> None:
    """Every dependency must come along or already be in `store`."""
    dep_drefs = {d for cfg in derivations.values() for d in config_deps(cfg)}
    dep_drefs |= {inc.dref for inc in incoming.values()}
    missing_d = dep_drefs - set(derivations)
    if missing_d:
        missing_d -= store.catalogue.known_drefs(sorted(missing_d))
    if missing_d:
        raise ArchiveError(
            f"{where}: {sorted(missing_d)[0]} is needed but neither included nor in the "
            f"destination store {store.root}; nothing was added"
        )
    dep_rrefs = {r for inc in incoming.values() for r in inc.deps} - set(incoming)
    if dep_rrefs:
        dep_rrefs -= store.catalogue.known_rrefs(sorted(dep_rrefs))
    if dep_rrefs:
        raise ArchiveError(
            f"{where}: {sorted(dep_rrefs)[0]} is needed but neither included nor in the "
            f"destination store {store.root}; nothing was added"
        )


def orphan_is_valid(store: LocalStore, inc: Incoming) -> bool:
    """For a folder already at the place of `inc` but not in the catalogue: is it `inc`?

    Such a folder is left by a process that died between its rename and its
    commit (or belongs to one committing right now). A complete, correct copy
    is kept and recorded; anything else is removed so it can be replaced.
    """
    target = store.rref_path(inc.rref)
    if os.path.islink(target) or not os.path.isdir(target):
        if os.path.lexists(target):
            os.unlink(target)
        return False
    probe = Incoming(inc.rref, inc.dref, inc.context, target)
    try:
        verify_folder(probe, "existing folder")
        with open(os.path.join(target, CONTEXT_FILE), encoding="utf-8") as f:
            ok = f.read() == inc.context_json
    except (ArchiveError, OSError, UnicodeError):
        ok = False
    if ok:
        make_readonly(target)  # it may have died before its own chmod
        inc.size, inc.file_count = probe.size, probe.file_count
        return True
    # Move it aside first (one rename), then delete it at leisure.
    area = store.new_build_area("replace")
    try:
        os.chmod(target, 0o755)  # moving a folder to another parent rewrites its '..'
        os.rename(target, os.path.join(area, "old"))
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
    finally:
        remove_tree(area)
    return False


def closure_of(store: LocalStore, rrefs: list[RRef]) -> tuple[list[RRef], list[DRef]]:
    """The realizations `rrefs` depend on (with them) and their derivations, with dependencies.

    Raises UnknownReferenceError if one of `rrefs` is not in `store`.
    """
    known = store.catalogue.known_rrefs(rrefs)
    for r in rrefs:
        if r not in known:
            raise UnknownReferenceError(f"{r} is not in the store {store.root}", r)
    closure = sorted(set(rrefs) | store.catalogue.rrefdeps(rrefs))
    drefs = {rref2dref(r) for r in closure}
    drefs |= store.catalogue.drefdeps(sorted(drefs))
    return closure, sorted(drefs)


def topological_derivations(derivations: Mapping[DRef, Config]) -> list[tuple[DRef, Config]]:
    """Derivations with dependencies first (those outside the map are ignored)."""
    done: set[DRef] = set()
    out: list[tuple[DRef, Config]] = []
    for start in sorted(derivations):
        stack: list[tuple[DRef, bool]] = [(start, False)]
        while stack:
            d, expanded = stack.pop()
            if expanded:
                out.append((d, derivations[d]))
                continue
            if d in done or d not in derivations:
                continue
            done.add(d)
            stack.append((d, True))
            stack.extend((dep, False) for dep in reversed(config_deps(derivations[d])))
    return out


def topological_rrefs(deps: Mapping[RRef, Iterable[str]]) -> list[RRef]:
    """RRefs with the ones they depend on first (those outside the map are ignored)."""
    done: set[str] = set()
    out: list[RRef] = []
    for start in sorted(deps):
        stack: list[tuple[RRef, bool]] = [(start, False)]
        while stack:
            r, expanded = stack.pop()
            if expanded:
                out.append(r)
                continue
            if r in done or r not in deps:
                continue
            done.add(r)
            stack.append((r, True))
            stack.extend((RRef(x), False) for x in sorted(deps[r], reverse=True))
    return out


def add_to_store(
    store: LocalStore,
    derivations: Mapping[DRef, Config],
    incoming: Iterable[Incoming],
    held: Iterable[tuple[str, str]] = (),
) -> list[RRef]:
    """Record new derivations, then install the new realizations in one transaction.

    The caller has verified everything and holds `store.realizing()`. Objects
    already recorded are skipped; folders left unrecorded in the tree are
    verified and kept, or replaced. `held` lists (DRef, context hash) build
    locks the caller already holds (a substitution inside a build step).
    Returns the RRefs added.
    """
    items = list(incoming)
    known = store.catalogue.known_rrefs([inc.rref for inc in items])
    todo = [inc for inc in items if inc.rref not in known]
    ordered = list(topological_derivations(derivations))
    if not todo:
        store.record_derivations(ordered)
        return []
    for inc in todo:
        if os.path.lexists(store.rref_path(inc.rref)):
            # Kept if valid: `install` then finds it in place and only records it.
            orphan_is_valid(store, inc)
        if not os.path.exists(os.path.join(inc.folder, CONTEXT_FILE)):
            with open(os.path.join(inc.folder, CONTEXT_FILE), "w", encoding="utf-8") as f:
                f.write(inc.context_json)
    order = {r: i for i, r in enumerate(topological_rrefs({inc.rref: inc.deps for inc in todo}))}
    todo.sort(key=lambda inc: order[inc.rref])
    # Derivations and realizations enter the catalogue in one transaction,
    # under the build locks of their (derivation, context) pairs, taken in
    # sorted order: `recover` takes the same lock before removing a folder it
    # believes a dead process left unrecorded.
    with contextlib.ExitStack() as locks:
        pairs = {(str(inc.dref), inc.context_hash) for inc in todo} - set(held)
        for dref, ctx_hash in sorted(pairs):
            locks.enter_context(store.build_lock(DRef(dref), ctx_hash))
        store.install([(inc.record(), inc.folder) for inc in todo], None, derivations=ordered)
    return [inc.rref for inc in todo]
