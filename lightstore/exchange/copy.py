"""Copying the closure of realizations directly from one store to another.

The same checks as `sunpack` apply (configs hash to their DRefs, contexts fit
their configs, contents hash to their RRefs, links stay inside), but there is
no archive: each realization is copied into the destination's temporary area,
verified, and installed on its own, dependencies first. A copy killed at any
instant can simply be run again: what was recorded is skipped, what was half
copied is cleaned by `recover`, and a folder left in the tree without its
catalogue row is verified and recorded, or replaced.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import Any

from lightstore.exchange._ingest import (
    Incoming,
    check_references,
    checked_config,
    checked_context,
    closure_of,
    orphan_is_valid,
    topological_derivations,
    topological_rrefs,
    verify_folder,
)
from lightstore.exchange._tree import copy_tree
from lightstore.foundation.failpoints import failpoint
from lightstore.foundation.files import remove_tree
from lightstore.foundation.refs import DRef, RRef, parse_rref, rref2dref
from lightstore.store import LocalStore
from lightstore.store.layout import CONTEXT_FILE

#: ``progress(done, total, rref)`` after each realization is added.
Progress = Callable[[int, int, RRef], None]


def _copy_one(src: LocalStore, dst: LocalStore, inc: Incoming, index: int, where: str) -> bool:
    """Add one verified realization to `dst`; False if it was there already."""
    # The build lock of (derivation, context): `recover` takes it before
    # removing an unrecorded folder, so it cannot remove one being recorded here.
    with dst.build_lock(inc.dref, inc.context_hash):
        if dst.catalogue.known_rrefs([inc.rref]):
            return False
        if os.path.lexists(dst.rref_path(inc.rref)) and orphan_is_valid(dst, inc):
            dst.catalogue.add_realizations([inc.record()], None)
            return True
        area = dst.new_build_area("copy")
        try:
            staged = dataclasses.replace(inc, folder=os.path.join(area, "out"))
            copy_tree(inc.folder, staged.folder, skip_top=frozenset({CONTEXT_FILE}))
            with open(os.path.join(staged.folder, CONTEXT_FILE), "w", encoding="utf-8") as f:
                f.write(staged.context_json)
            failpoint(f"copy:staged:{index}")
            verify_folder(staged, where)
            dst.install([(staged.record(), staged.folder)], None)
        finally:
            remove_tree(area)
    return True


def copy(
    src: LocalStore,
    dst: LocalStore,
    rrefs: Iterable[RRef],
    *,
    progress: Progress | None = None,
) -> list[RRef]:
    """Copy the realizations `rrefs` and everything they depend on from one store to another.

    Every RRef
    stays identical; objects already in the destination are skipped. Returns
    the RRefs added, dependencies first. Resumable: if the copy is killed, run
    it again.

    Raises UnknownReferenceError if a realization is not in the source, and
    ArchiveError (nothing more is added) if a source object does not verify.
    """
    requested = [parse_rref(r) for r in rrefs]
    where = f"copy from {src.root}"
    dst.recover()
    with src.realizing(), dst.realizing():
        closure, drefs = closure_of(src, requested)
        if os.path.realpath(src.root) == os.path.realpath(dst.root):
            return []
        derivations: dict[DRef, Any] = {}
        for d in drefs:
            derivations[d] = checked_config(d, src.config(d), where)[1]
        incoming: dict[RRef, Incoming] = {}
        metrics = src.catalogue.metrics_of(closure)
        for r in closure:
            dref = rref2dref(r)
            record = src.catalogue.realization_record(r) or {}
            incoming[r] = Incoming(
                r,
                dref,
                checked_context(r, src.context(r), derivations[dref], where),
                src.rref_path(r),
                record.get("build_started"),
                record.get("build_stopped"),
                host=record.get("host"),
                pid=record.get("pid"),
                metrics=metrics.get(r, {}),
            )
        check_references(dst, derivations, incoming, where)
        new_drefs = set(drefs) - dst.catalogue.known_drefs(drefs)
        if new_drefs:
            dst.record_derivations(
                [(d, c) for d, c in topological_derivations(derivations) if d in new_drefs]
            )
        known = dst.catalogue.known_rrefs(closure)
        order = topological_rrefs({r: incoming[r].deps for r in closure})
        todo = [r for r in order if r not in known]
        added: list[RRef] = []
        for index, r in enumerate(todo):
            if _copy_one(src, dst, incoming[r], index, where):
                added.append(r)
            failpoint(f"copy:recorded:{index}")
            if progress is not None:
                progress(index + 1, len(todo), r)
        return added
