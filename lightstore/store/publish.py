"""Publishing: finished output folders become realizations, atomically.

Each output is checked against the config's promises, hashed (made read-only
on the way), renamed into `objects/` and recorded in one transaction. An
intent recorded first lets recovery undo a rename whose commit never came,
so the tree never keeps a realization the catalogue does not know.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lightstore.catalogue import NewRealization
from lightstore.foundation.config import Config, canonical_json
from lightstore.foundation.errors import BuildError, PromiseError, disk_full
from lightstore.foundation.failpoints import failpoint
from lightstore.foundation.files import (
    MAX_RELATIVE_PATH,
    Entry,
    copy_tree,
    fsync_path,
    fsync_tree,
    make_readonly,
    remove_tree,
    write_all,
)
from lightstore.foundation.hashing import (
    canonical_context,
    context_hash,
    realization_hash,
)
from lightstore.foundation.refs import Context, DRef, RRef, mkrref, undref
from lightstore.store.layout import CONTEXT_FILE, realization_digest

if TYPE_CHECKING:
    from lightstore.store.base import StoreBase


def _unstorable(dref: DRef) -> Callable[[Entry], BuildError]:
    def refuse(entry: Entry) -> BuildError:
        return BuildError(
            f"{entry.rel!r} in the output of {dref} is neither a file, a folder nor a symlink; "
            "devices, sockets and fifos cannot be stored",
            dref,
        )

    return refuse


def publish(
    store: StoreBase,
    dref: DRef,
    context: Context,
    outputs: Sequence[str],
    promises: Sequence[Sequence[str]] = (),
    build_id: int | None = None,
    started: float | None = None,
) -> list[RRef]:
    """Move finished output folders into the store and record them.

    Each output is checked against the config's promises, hashed, made
    read-only and renamed into place; then all are recorded in one
    transaction. Outputs outside the store's temporary area are copied.
    The build times recorded are `started` and the time of publishing, or
    those the realizer declared for an output (`store.declared_times`).
    Raises PromiseError (nothing stored) if a promised path is missing.
    """
    try:
        return _publish(store, dref, context, outputs, promises, build_id, started)
    except OSError as e:
        full = disk_full(e, f"publishing {dref}")
        if full is None or full is e:
            raise
        raise full from e


def _publish(
    store: StoreBase,
    dref: DRef,
    context: Context,
    outputs: Sequence[str],
    promises: Sequence[Sequence[str]],
    build_id: int | None,
    started: float | None,
) -> list[RRef]:
    dhash, name = undref(dref)
    # Taken first, so that a failed publish leaves none behind.
    metrics = [store.pending_metrics.pop(os.path.normpath(out), None) for out in outputs]
    declared = [store.declared_times.pop(os.path.normpath(out), {}) for out in outputs]
    ctx = canonical_context(context)
    ctx_json = canonical_json(ctx)
    ctx_bytes = ctx_json.encode("utf-8")
    ctx_hash = context_hash(ctx)
    deps = sorted({r for rrefs in ctx.values() for r in rrefs})
    inside = [_check_output(store, dref, out, promises) for out in outputs]
    copies: list[str] = []
    try:
        staged: list[str] = []
        for out, in_tmp in zip(outputs, inside, strict=True):
            if not in_tmp:
                area = store.new_build_area("copy")
                copies.append(area)
                copy_tree(out, os.path.join(area, "out"), _unstorable(dref))
                out = os.path.join(area, "out")
            staged.append(out)
        stopped = time.time()
        installs: list[tuple[NewRealization, str]] = []
        for out, out_metrics, times in zip(staged, metrics, declared, strict=True):
            failpoint("publish:hashing")
            digest = realization_digest(out, make_readonly=True, max_path=MAX_RELATIVE_PATH)
            rref = mkrref(realization_hash(ctx_hash, digest.digest), dhash, name)
            fd = os.open(
                os.path.join(out, CONTEXT_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444
            )
            try:
                write_all(fd, ctx_bytes)
            finally:
                os.close(fd)
            record = NewRealization(
                rref,
                dref,
                ctx_json,
                ctx_hash,
                deps,
                digest.size,
                digest.files,
                times.get("started", started),
                times.get("stopped", stopped),
                metrics=out_metrics.values if out_metrics is not None else {},
                series=out_metrics.series if out_metrics is not None else {},
            )
            installs.append((record, out))
        install(store, installs, build_id, readonly_done=True)
    finally:
        for copy_area in copies:
            remove_tree(copy_area)
    return [r.rref for r, _ in installs]


def _check_output(
    store: StoreBase, dref: DRef, out: str, promises: Sequence[Sequence[str]]
) -> bool:
    """Refuse an output that is not a folder, lacks a promised path, or uses a reserved name;
    return whether it lies in the store's tmp/ (and can be renamed into place)."""
    try:
        mode = os.lstat(out).st_mode
    except OSError:
        mode = 0
    if not stat.S_ISDIR(mode) and not os.path.isdir(out):
        raise BuildError(f"the realizer of {dref} returned {out!r}, which is not a folder", dref)
    missing = [p for p in promises if not os.path.lexists(os.path.join(out, *p))]
    if missing:
        raise PromiseError(
            f"the realizer of {dref} did not create the promised path(s) "
            f"{', '.join('/'.join(p) for p in missing)} in {out}; nothing was stored",
            dref,
            missing,
        )
    if os.path.lexists(os.path.join(out, CONTEXT_FILE)):
        raise BuildError(
            f"the realizer of {dref} created {CONTEXT_FILE!r} at the top of its output; "
            "that name is reserved for the store, rename the artifact",
            dref,
        )
    if stat.S_ISDIR(mode) and os.path.dirname(out) == store.tmp_dir:
        # A folder (no symlink) right under tmp/, as `new_build_area` makes them: its real
        # path is tmp/'s, without resolving every component of the path again.
        return True
    return os.path.realpath(out).startswith(store.tmp_realpath)


def install(
    store: StoreBase,
    installs: Sequence[tuple[NewRealization, str]],
    build_id: int | None = None,
    derivations: Sequence[tuple[DRef, Config]] = (),
    readonly_done: bool = False,
) -> None:
    """Move verified realization folders into the tree, then record them in one transaction.

    If this process dies between a rename and the commit, recovery removes the
    unrecorded folders (under their build locks), so the tree never keeps a
    realization the catalogue does not know. A build (`build_id`) is its own
    intent: its running record names the derivation and context it publishes
    into. Anything else (an import) records an intent listing its targets
    first. `derivations` (dependencies first) not yet recorded are recorded by
    the same transaction.
    """
    staged = store._stage_derivations(derivations)
    intent = None
    if build_id is None:
        targets = [[r.rref, r.context_hash] for r, _ in installs]
        intent = store.catalogue.open_intent("install", targets)
    for record, folder in installs:
        if not readonly_done:
            make_readonly(folder, include_top=False)
        if store.durable:
            fsync_tree(folder)
        target = store.rref_path(record.rref)
        try:
            os.rename(folder, target)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.rename(folder, target)
        except NotADirectoryError:
            raise store._damaged(record.dref) from None
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            # The same content in the same context is already there: dedupe.
            remove_tree(folder)
            continue
        os.chmod(target, os.stat(target).st_mode & ~0o222)
        if store.durable:
            fsync_path(os.path.dirname(target))
    failpoint("publish:renamed")
    with store.catalogue.write():
        if staged is not None:
            store.catalogue.add_derivations(*staged)
        store.catalogue.add_realizations([r for r, _ in installs], build_id, intent)
    failpoint("publish:committed")
