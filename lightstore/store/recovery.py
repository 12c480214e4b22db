"""Recovery: what dead processes left behind is finished, undone or set aside.

Every open of a store runs `recover` (cheap when nothing died): builds left
'running' by a dead process become 'interrupted'; its derivation intents are
rolled forward and its install intents undone; its areas under `tmp/` are
removed; an interrupted gc's trash is put back (`restore_trash`). Recovery can
never stop a store from opening: a leftover it cannot delete is logged and set
aside in `tmp/quarantine/`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
from typing import TYPE_CHECKING

from lightstore.catalogue import NewDerivation
from lightstore.foundation.config import canonical_json, config_deps
from lightstore.foundation.errors import LockTimeout
from lightstore.foundation.failpoints import fault
from lightstore.foundation.files import pid_alive, remove_tree
from lightstore.foundation.hashing import context_hash
from lightstore.foundation.locks import exclusive
from lightstore.foundation.refs import HASH_LEN, DRef, RRef, mkrref, rref2dref, undref
from lightstore.store.layout import CONFIG_FILE, CONTEXT_FILE, HOST_TAG, OBJECTS_DIR, tmp_owner
from lightstore.store.tree import read_config_file

if TYPE_CHECKING:
    from lightstore.store.base import StoreBase

log = logging.getLogger("lightstore")
_HASH_RE = re.compile("[0-9a-f]+")


def recover(store: StoreBase) -> dict[str, int]:
    """Clean up after processes of this host that died.

    Builds they left 'running' become 'interrupted'; their intents are
    finished (derivations) or undone (installs); their temporary files are
    removed; an interrupted gc is rolled back or finished, whichever matches
    the catalogue. A leftover that cannot be removed is logged and set
    aside in `tmp/quarantine/` (never an error). Returns counts of what
    was done.
    """
    dead = [pid for pid in store.catalogue.running_build_pids() if not pid_alive(pid)]
    counts = {
        "interrupted_builds": _interrupt_dead_builds(store, dead),
        "intents": 0,
        "removed_build_areas": 0,
        "set_aside": 0,
        "kept_leftovers": 0,
    }
    for intent, kind, refs, pid in store.catalogue.host_intents():
        if pid_alive(pid):
            continue
        if kind == "derive":
            _rollforward_derivations(store, [DRef(d) for d in refs])
        else:
            try:
                undone = _rollback_install(store, refs)
            except OSError as e:  # kept open: tried again at the next open
                log.warning(
                    "lightstore: could not remove a realization a dead process left "
                    "unrecorded (%s); it is tried again at the next open",
                    e,
                )
                undone = False
            if not undone:
                continue
        store.catalogue.close_intent(intent)
        counts["intents"] += 1
    try:
        entries = sorted(os.listdir(store.tmp_dir))
    except FileNotFoundError:
        entries = []
    for name in entries:
        owner = tmp_owner(name)
        if owner is None or owner[0] != HOST_TAG or pid_alive(owner[1]):
            continue
        try:
            with exclusive(store.lock_path("recover", name), timeout=0):
                outcome = _remove_leftover(store, name, gc=owner[2] == "gc")
        except LockTimeout:
            continue  # another process is recovering it
        counts[outcome] += 1
    return counts


def _interrupt_dead_builds(store: StoreBase, pids: list[int]) -> int:
    """Close the running builds of dead processes of this host as interrupted, each once the
    realizations it may have renamed into the tree but not recorded are removed.

    A build is its own publishing intent: its record names the derivation and
    context it publishes into. A build whose lock a live process holds now is left
    running: that process removes what the dead one left when it takes the lock.
    """
    by_target: dict[tuple[str, str], list[int]] = {}
    for build_id, dref, ctx_hash in store.catalogue.running_builds_of(pids):
        by_target.setdefault((dref, ctx_hash), []).append(build_id)
    closed = 0
    for (dref, ctx_hash), ids in by_target.items():
        try:
            with store.build_lock(DRef(dref), ctx_hash, timeout=0):
                remove_unrecorded(store, DRef(dref), ctx_hash)
                closed += store.catalogue.interrupt_builds(ids, "the building process died")
        except LockTimeout:
            continue
        except OSError as e:  # kept running: tried again at the next open
            log.warning(
                "lightstore: could not remove a realization a dead build of %s left "
                "unrecorded (%s); it is tried again at the next open",
                dref,
                e,
            )
    return closed


def interrupt_stale_builds(store: StoreBase, dref: DRef, ctx_hash: str) -> None:
    """Close the builds of `dref` in a context still recorded as running, after removing
    what they left unrecorded. The caller holds the build lock, so they are of processes
    that died (on any host). Reads once when there are none."""
    if store.catalogue.running_builds(dref, ctx_hash):
        remove_unrecorded(store, dref, ctx_hash)
        store.catalogue.interrupt_stale_builds(dref, ctx_hash)


def remove_unrecorded(store: StoreBase, dref: DRef, ctx_hash: str) -> int:
    """Delete the realization folders of `dref` in context `ctx_hash` that the catalogue does
    not record (a build died between its rename and its commit); returns how many.

    The caller holds the build lock of (dref, context): no live process is
    publishing there. Folders of other contexts and folders without a readable
    context file are left alone (`verify` reports those).
    """
    folder = store.dref_path(dref)
    try:
        names = [n for n in os.listdir(folder) if len(n) == HASH_LEN and _HASH_RE.fullmatch(n)]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    if not names:
        return 0
    dhash, name = undref(dref)
    candidates = {mkrref(n, dhash, name): n for n in names}
    known = store.catalogue.known_rrefs(list(candidates))
    removed = 0
    for rref, n in candidates.items():
        if rref in known:
            continue
        path = os.path.join(folder, n)
        try:
            with open(os.path.join(path, CONTEXT_FILE), encoding="utf-8") as f:
                found = context_hash(json.loads(f.read()))
        except (OSError, ValueError, TypeError, AttributeError, RecursionError):
            continue
        if found == ctx_hash:
            remove_tree(path)
            removed += 1
    return removed


def _remove_leftover(store: StoreBase, name: str, gc: bool) -> str:
    """Delete the area `tmp/<name>` of a dead process; never raise.

    Returns which count of `recover` it adds to. What cannot be deleted is
    logged and moved into `tmp/quarantine/`, which recovery skips, so one
    bad leftover cannot stop every later open of the store. A gc's trash
    whose objects cannot be put back is left in place for the next open.
    """
    path = os.path.join(store.tmp_dir, name)
    if gc and os.path.isdir(path):
        try:
            restore_trash(store, path)
        except Exception as e:  # recovery must never stop an open
            log.warning(
                "lightstore: could not put back what the interrupted gc %s holds (%s: %s); "
                "it is kept and tried again at the next open (run `lightstore verify`)",
                path,
                type(e).__name__,
                e,
            )
            return "kept_leftovers"
    try:
        fault("recover:remove")
        remove_tree(path)
        return "removed_build_areas"
    except Exception as e:  # recovery must never stop an open
        error = f"{type(e).__name__}: {e}"
    quarantine = store.quarantine_dir
    try:
        os.makedirs(quarantine, exist_ok=True)
        with contextlib.suppress(OSError):  # moving a folder rewrites its '..'
            os.chmod(path, os.lstat(path).st_mode | stat.S_IWUSR)
        os.rename(path, os.path.join(quarantine, name))
    except OSError as e:
        log.warning(
            "lightstore: could not delete the leftover %s of a dead process (%s), nor set "
            "it aside (%s); delete it by hand",
            path,
            error,
            e.strerror or e,
        )
        return "kept_leftovers"
    log.warning(
        "lightstore: could not delete the leftover %s of a dead process (%s); it was "
        "moved to %s: delete it by hand when the cause is fixed",
        path,
        error,
        quarantine,
    )
    return "set_aside"


def _rollforward_derivations(store: StoreBase, drefs: list[DRef]) -> None:
    """Record the derivations a dead process wrote but did not commit."""

    for dref in drefs:
        if store.catalogue.known_drefs([dref]):
            continue
        config = read_config_file(store.config_path(dref), dref)
        if config is None:
            # Died before config.json was in place: drop the folder if it is empty.
            with contextlib.suppress(OSError):
                os.rmdir(store.dref_path(dref))
            continue
        deps = config_deps(config)
        if len(store.catalogue.known_drefs(deps)) == len(deps):
            store.catalogue.add_derivations(
                [NewDerivation(dref, config.name, canonical_json(config.val), deps)]
            )


def _rollback_install(store: StoreBase, refs: list[list[str]]) -> bool:
    """Remove folders a dead process renamed into the tree but never recorded.

    Returns False if a live process holds one of their build locks (it is
    building the same thing): the intent is then left for a later recovery
    rather than making this one, and `Store.open`, wait for that build.
    """
    for rref_text, ctx_hash in refs:
        rref = RRef(rref_text)
        try:
            with store.build_lock(rref2dref(rref), ctx_hash, timeout=0):
                if not store.catalogue.known_rrefs([rref]):
                    remove_tree(store.rref_path(rref))
        except LockTimeout:
            return False
    return True


def restore_trash(store: StoreBase, area: str) -> None:
    """Finish or undo a gc that died or failed: put back what the catalogue still lists.

    Whatever is already back in place (an identical realization rebuilt
    meanwhile) is left as it is; the trash is deleted by the caller.
    """
    objects = os.path.join(area, OBJECTS_DIR)
    if not os.path.isdir(objects):
        return
    for dname in sorted(os.listdir(objects)):
        dhash, _, name = dname.partition("-")
        dref = DRef(f"dref:{dhash}-{name}")
        if not store.catalogue.known_drefs([dref]):
            continue
        trashed = os.path.join(objects, dname)
        home = store.dref_path(dref)
        os.makedirs(home, exist_ok=True)
        for entry in sorted(os.listdir(trashed)):
            source, target = os.path.join(trashed, entry), os.path.join(home, entry)
            if entry == CONFIG_FILE:
                if not os.path.exists(target):
                    os.rename(source, target)
                continue
            rref = RRef(f"rref:{entry}-{dhash}-{name}")
            if store.catalogue.known_rrefs([rref]) and not os.path.lexists(target):
                os.rename(source, target)
