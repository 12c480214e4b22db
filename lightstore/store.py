"""The store: one root folder holding the tree of objects and the catalogue.

Layout of a root::

    catalogue.sqlite            the SQLite catalogue (WAL mode)
    logs/<build id>.log         what each build printed (`lightstore.logs`)
    objects/<H>-<name>/         one folder per derivation
        config.json             its canonical config (read-only)
        <R>/                    one read-only folder per realization
            context.json        which dependency realizations it used
            ...                 the artifacts
    tmp/<host>.<pid>.<rand>/    build areas, on the same filesystem as objects/
    tmp/quarantine/             leftovers recovery could not delete (logged; delete by hand)
    locks/                      lock files

A realization is valid only when it is both in the tree and in the catalogue.
It enters the tree by one atomic rename of a finished, read-only folder, and
the catalogue by one short transaction after that; a crash in between leaves
a complete folder that `recover`/`verify` recognise.

Layering: this module imports nothing built on top of it. Opening and
recovering a store needs only the layers below (catalogue, files, locks,
`trash`, `layout`); the conveniences `Store.pin/gc/verify/push/...` import
`lightstore.maintenance` or `lightstore.remote` when called, and those
modules take a `Store` and never the other way round.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from lightstore.catalogue import HOST, Catalogue, NewDerivation, NewRealization
from lightstore.config import Config, canonical_json, config_deps
from lightstore.errors import (
    BuildError,
    InvalidReferenceError,
    LightstoreError,
    LockTimeout,
    PromiseError,
    StoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
    UnknownReferenceError,
    disk_full,
)
from lightstore.failpoints import failpoint, fault
from lightstore.files import (
    MAX_RELATIVE_PATH,
    Entry,
    copy_tree,
    fsync_path,
    fsync_tree,
    make_readonly,
    pid_alive,
    remove_tree,
)
from lightstore.hashing import (
    CONTEXT_FILE,
    canonical_context,
    config_hash,
    context_hash,
    realization_hash,
    tree_digest,
)
from lightstore.layout import CATALOGUE_FILE, CONFIG_FILE, DEFAULT_GC_TIMEOUT_S
from lightstore.locks import KeyedLocks, ProcessSharedLock, exclusive
from lightstore.refs import Context, DRef, Path, RRef, mkdref, mkrref, rref2dref, undref, unrref
from lightstore.trash import restore_trash

# Build areas are named <host>.<pid>.<random>.<label>; dots in the host would break that.
HOST_TAG = HOST.replace(".", "_")
#: The folder of `tmp/` where recovery sets aside leftovers it cannot delete.
QUARANTINE = "quarantine"

log = logging.getLogger("lightstore")


def _unstorable(dref: DRef) -> Callable[[Entry], BuildError]:
    def refuse(entry: Entry) -> BuildError:
        return BuildError(
            f"{entry.rel!r} in the output of {dref} is neither a file, a folder nor a symlink; "
            "devices, sockets and fifos cannot be stored",
            dref,
        )

    return refuse


@dataclass(frozen=True)
class StorageSettings:
    """Where a store lives. `root` is the only setting; the rest derive from it."""

    root: str

    @property
    def storage(self) -> str:
        """The folder of objects (Pylightnix name)."""
        return os.path.join(self.root, "objects")

    @property
    def tmpdir(self) -> str:
        """The build area, on the same filesystem as the objects."""
        return os.path.join(self.root, "tmp")


class Store:
    """A lightstore store: the tree under `root` and its catalogue.

    Open one with `Store.open(root)`; instances are shared per process and root.
    """

    _instances: ClassVar[dict[tuple[str, int], Store]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, root: str, *, durable: bool = False) -> None:
        self.root = Path(os.path.abspath(root))
        self.settings = StorageSettings(self.root)
        self.objects_dir = os.path.join(self.root, "objects")
        self.tmp_dir = os.path.join(self.root, "tmp")
        self.locks_dir = os.path.join(self.root, "locks")
        self.catalogue = Catalogue(os.path.join(self.root, CATALOGUE_FILE), durable=durable)
        self.durable = durable
        self.tmp_realpath = os.path.realpath(self.tmp_dir) + os.sep
        self.build_locks = KeyedLocks(os.path.join(self.locks_dir, "builds.lock"))
        self._collector = ProcessSharedLock(
            os.path.join(self.locks_dir, "collector.lock"),
            os.path.join(self.locks_dir, "gc-intent.lock"),
        )
        # Configs and contexts are immutable for a given reference: cache them.
        self._configs: dict[str, dict[str, Any]] = {}
        self._contexts: dict[str, Context] = {}
        # Metrics recorded by running builds (`build_metric`), keyed by output
        # folder; `publish` takes them into its transaction.
        self.pending_metrics: dict[str, dict[str, int | float]] = {}

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str] | StorageSettings | Store,
        *,
        create: bool = False,
        durable: bool = False,
    ) -> Store:
        """Open the store at `root` (creating it if `create`), migrating its catalogue.

        Raises StoreNotFoundError if the root holds no store and `create` is
        false, StoreReadOnlyError if it cannot be written, CatalogueVersionError
        if its catalogue is newer than this code.
        """
        if isinstance(root, Store | StorageSettings):
            root = root.root
        if isinstance(root, os.PathLike):
            root = os.fspath(root)
        if not isinstance(root, str) or not root or "\0" in root:
            raise StoreNotFoundError(
                f"a store root is a folder path, not {root!r} ({type(root).__name__})"
            )
        pid = os.getpid()
        # The common case, a root seen before: no realpath (a system call per component).
        store = cls._instances.get((root, pid))
        if store is not None and os.path.isfile(store.catalogue.path):
            return store
        key = (os.path.realpath(root), pid)
        with cls._instances_lock:
            store = cls._instances.get(key)
            if store is not None and os.path.isfile(store.catalogue.path):
                cls._instances[(root, pid)] = store
                return store
            store = cls(root, durable=durable)
            store._initialize(create)
            cls._instances[key] = store
            cls._instances[(root, pid)] = store
            return store

    @classmethod
    def forget_instances(cls) -> None:
        """Drop cached instances (after a store folder was deleted by hand)."""
        with cls._instances_lock:
            cls._instances.clear()

    def _initialize(self, create: bool) -> None:
        catalogue_exists = os.path.isfile(self.catalogue.path)
        if not catalogue_exists and not create:
            raise StoreNotFoundError(
                f"no lightstore store at {self.root}; create one with `lightstore init --root {self.root}` "
                "or fsinit()"
            )
        for d in (self.root, self.objects_dir, self.tmp_dir, self.locks_dir):
            if os.path.exists(d) and not os.path.isdir(d):
                raise StoreError(
                    f"{d} is a file where the store needs a folder; "
                    + (
                        "choose another root"
                        if d == self.root
                        else "the store is damaged: move that file away (lightstore recreates "
                        "the folder), then run `lightstore verify --repair`"
                    )
                )
        try:
            for d in (self.root, self.objects_dir, self.tmp_dir, self.locks_dir):
                os.makedirs(d, exist_ok=True)
        except PermissionError as e:
            raise StoreReadOnlyError(f"cannot create the store at {self.root}: {e.strerror}") from e
        if not os.access(self.root, os.W_OK) or not os.access(self.objects_dir, os.W_OK):
            raise StoreReadOnlyError(
                f"the store at {self.root} is read-only for this user; realizing needs write access "
                "(check the folder's permissions or choose another root)"
            )
        # Re-check the version after taking the lock: another process may have
        # migrated while this one waited.
        self.catalogue.check_version()
        with exclusive(os.path.join(self.locks_dir, "schema.lock")):
            self.catalogue.migrate()
        self.recover()

    def recover(self) -> dict[str, int]:
        """Clean up after processes of this host that died.

        Builds they left 'running' become 'interrupted'; their intents are
        finished (derivations) or undone (installs); their temporary files are
        removed; an interrupted gc is rolled back or finished, whichever matches
        the catalogue. A leftover that cannot be removed is logged and set
        aside in `tmp/quarantine/` (never an error). Returns counts of what
        was done.
        """
        dead = [pid for pid in self.catalogue.running_build_pids() if not pid_alive(pid)]
        counts = {
            "interrupted_builds": self.catalogue.mark_interrupted(dead),
            "intents": 0,
            "removed_build_areas": 0,
            "set_aside": 0,
            "kept_leftovers": 0,
        }
        for intent, kind, refs, pid in self.catalogue.host_intents():
            if pid_alive(pid):
                continue
            if kind == "derive":
                self._rollforward_derivations([DRef(d) for d in refs])
            else:
                try:
                    undone = self._rollback_install(refs)
                except OSError as e:  # kept open: tried again at the next open
                    log.warning(
                        "lightstore: could not remove a realization a dead process left "
                        "unrecorded (%s); it is tried again at the next open",
                        e,
                    )
                    undone = False
                if not undone:
                    continue
            self.catalogue.close_intent(intent)
            counts["intents"] += 1
        try:
            entries = sorted(os.listdir(self.tmp_dir))
        except FileNotFoundError:
            entries = []
        for name in entries:
            parts = name.split(".")
            if (
                len(parts) < 3
                or parts[0] != HOST_TAG
                or not parts[1].isdigit()
                or pid_alive(int(parts[1]))
            ):
                continue
            try:
                with exclusive(self.lock_path("recover", name), timeout=0):
                    outcome = self._remove_leftover(name, gc=parts[-1] == "gc")
            except LockTimeout:
                continue  # another process is recovering it
            counts[outcome] += 1
        return counts

    def _remove_leftover(self, name: str, gc: bool) -> str:
        """Delete the area `tmp/<name>` of a dead process; never raise.

        Returns which count of `recover` it adds to. What cannot be deleted is
        logged and moved into `tmp/quarantine/`, which recovery skips, so one
        bad leftover cannot stop every later open of the store. A gc's trash
        whose objects cannot be put back is left in place for the next open.
        """
        path = os.path.join(self.tmp_dir, name)
        if gc and os.path.isdir(path):
            try:
                restore_trash(self, path)
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
        quarantine = os.path.join(self.tmp_dir, QUARANTINE)
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

    # -- paths ---------------------------------------------------------------

    def dref_path(self, dref: DRef) -> Path:
        """The folder of a derivation (it need not exist)."""
        h, name = undref(dref)
        return Path(os.path.join(self.objects_dir, f"{h}-{name}"))

    def rref_path(self, rref: RRef) -> Path:
        """The folder of a realization's artifacts (it need not exist)."""
        r, h, name = unrref(rref)
        return Path(os.path.join(self.objects_dir, f"{h}-{name}", r))

    def new_build_area(self, label: str = "build") -> Path:
        """A fresh, unique folder in the store's temporary area (same filesystem as objects)."""
        path = os.path.join(
            self.tmp_dir, f"{HOST_TAG}.{os.getpid()}.{secrets.token_hex(6)}.{label}"
        )
        os.makedirs(path)
        return Path(path)

    def lock_path(self, *parts: str) -> str:
        """Path of a lock file under `locks/`."""
        return os.path.join(self.locks_dir, "-".join(parts) + ".lock")

    @contextmanager
    def realizing(self) -> Iterator[None]:
        """Held (shared) while a realization, an import or a pin runs; gc waits for all of them.

        Re-entrant within a process (a realizer may realize other stages, in
        any thread). A waiting gc holds the intent lock, so new realizations
        queue behind it instead of starving it.
        """
        with self._collector.shared():
            yield

    @contextmanager
    def collecting(self, timeout: float | None = DEFAULT_GC_TIMEOUT_S) -> Iterator[None]:
        """Held exclusively while garbage is collected or the store verified.

        Raises LockTimeout after `timeout` seconds of waiting for running
        realizations (realizations started meanwhile wait for it), and
        LightstoreError if this process itself is inside `realizing()`.
        """
        if self._collector.held_here():
            raise LightstoreError(
                "gc and verify cannot run inside store.realizing() or a realizer of this process; "
                "call them outside"
            )
        with self._collector.exclusive(timeout=timeout):
            yield

    # -- derivations -------------------------------------------------------

    def record_derivations(self, derivations: Sequence[tuple[DRef, Config]]) -> None:
        """Make sure each derivation (dependencies first) is in the tree and the catalogue.

        One catalogue query when all are known, which is the cached case. New
        ones are announced by an intent, then their config.json is written,
        then they are recorded (closing the intent); `recover` rolls a dead
        process's intent forward.
        """
        known = self.catalogue.known_drefs([d for d, _ in derivations])
        if len(known) < len(set(d for d, _ in derivations)):
            # Held shared like a realization, so that gc and verify (which hold
            # it exclusively) neither remove a dependency between the check and
            # the insert nor see a config written but not yet recorded. The
            # check is made again, for every derivation, under this hold: one
            # known outside it may have been collected since.
            with self.realizing():
                try:
                    staged = self._stage_derivations(derivations)
                except OSError as e:
                    full = disk_full(e, "recording derivations")
                    if full is None or full is e:
                        raise
                    raise full from e
                if staged is not None:
                    self.catalogue.add_derivations(*staged)
        for dref, config in derivations:
            # Recorded configs never change: later reads (builds, lenses) skip SQL.
            self._configs.setdefault(dref, config.val)

    def _stage_derivations(
        self, derivations: Sequence[tuple[DRef, Config]]
    ) -> tuple[list[NewDerivation], int] | None:
        """Write the config files of unrecorded derivations under an intent; return what to record."""
        if not derivations:
            return None
        known = self.catalogue.known_drefs([d for d, _ in derivations])
        missing = [(d, c) for d, c in derivations if d not in known]
        if not missing:
            return None
        intent = self.catalogue.open_intent("derive", [d for d, _ in missing])
        new: list[NewDerivation] = []
        for dref, config in missing:
            text = canonical_json(config.val)
            self._write_config(dref, text)
            new.append(NewDerivation(dref, config.name, text, config_deps(config)))
        failpoint("derive:written")
        return new, intent

    def _write_config(self, dref: DRef, text: str) -> None:
        folder = self.dref_path(dref)
        target = os.path.join(folder, CONFIG_FILE)
        # One lstat decides: another process may create the file between two
        # separate checks, which must not look like damage.
        try:
            mode = os.lstat(target).st_mode
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            raise self._damaged(dref) from None
        else:
            if stat.S_ISREG(mode):
                return
            raise self._damaged(dref)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise self._damaged(dref)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(self.tmp_dir, f"{HOST_TAG}.{os.getpid()}.{secrets.token_hex(6)}.config")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o444)
        try:
            os.replace(tmp, target)
        except FileNotFoundError:
            # A recovery removed the empty folder meanwhile: make it again.
            os.makedirs(folder, exist_ok=True)
            os.replace(tmp, target)

    def _damaged(self, dref: DRef) -> StoreError:
        return StoreError(
            f"the folder of {dref} in {self.objects_dir} is damaged (a file stands where a "
            "folder belongs, or the reverse); run `lightstore verify --repair`"
        )

    def _rollforward_derivations(self, drefs: list[DRef]) -> None:
        """Record the derivations a dead process wrote but did not commit."""
        from lightstore.config import mkconfig

        for dref in drefs:
            if self.catalogue.known_drefs([dref]):
                continue
            try:
                with open(os.path.join(self.dref_path(dref), CONFIG_FILE), encoding="utf-8") as f:
                    config = mkconfig(json.loads(f.read()))
            except (OSError, ValueError, RecursionError):
                # Died before config.json was in place: drop the empty folder, if any.
                with contextlib.suppress(OSError):
                    os.rmdir(self.dref_path(dref))
                continue
            if self.derivation_of(config) != dref:
                continue
            deps = config_deps(config)
            if len(self.catalogue.known_drefs(deps)) == len(deps):
                self.catalogue.add_derivations(
                    [NewDerivation(dref, config.name, canonical_json(config.val), deps)]
                )

    def evict(self, refs: Sequence[str]) -> None:
        """Drop cached configs/contexts of objects this process removed, so that asking
        for them again raises UnknownReferenceError as if they were never there."""
        for ref in refs:
            self._configs.pop(ref, None)
            self._contexts.pop(ref, None)

    def config(self, dref: DRef) -> dict[str, Any]:
        """The config of a recorded derivation (selfrefs unresolved). Do not mutate it."""
        cached = self._configs.get(dref)
        if cached is None:
            text = self.catalogue.config_json(dref)
            if text is None:
                raise UnknownReferenceError(
                    f"derivation {dref} is not in the store {self.root}", dref
                )
            cached = self._configs[dref] = json.loads(text)
        return cached

    def context(self, rref: RRef) -> Context:
        """The context of a recorded realization. Do not mutate it."""
        cached = self._contexts.get(rref)
        if cached is None:
            text = self.catalogue.context_json(rref)
            if text is None:
                raise UnknownReferenceError(
                    f"realization {rref} is not in the store {self.root}", rref
                )
            raw = json.loads(text)
            cached = self._contexts[rref] = {DRef(k): [RRef(r) for r in v] for k, v in raw.items()}
        return cached

    # -- realizations ------------------------------------------------------

    def realizations(self, dref: DRef, context: Context) -> list[RRef]:
        """Realizations of `dref` made in `context`, oldest first."""
        return self.catalogue.realizations(dref, context_hash(context))

    def publish(
        self,
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
        Raises PromiseError (nothing stored) if a promised path is missing.
        """
        try:
            return self._publish(dref, context, outputs, promises, build_id, started)
        except OSError as e:
            full = disk_full(e, f"publishing {dref}")
            if full is None or full is e:
                raise
            raise full from e

    def _publish(
        self,
        dref: DRef,
        context: Context,
        outputs: Sequence[str],
        promises: Sequence[Sequence[str]],
        build_id: int | None,
        started: float | None,
    ) -> list[RRef]:
        dhash, name = undref(dref)
        # Taken first, so that a failed publish leaves none behind.
        metrics = [self.pending_metrics.pop(os.path.normpath(out), {}) for out in outputs]
        ctx = canonical_context(context)
        ctx_json = canonical_json(ctx)
        ctx_hash = context_hash(ctx)
        deps = sorted({r for rrefs in ctx.values() for r in rrefs})
        for out in outputs:
            self._check_output(dref, out, promises)
        copies: list[str] = []
        try:
            staged: list[str] = []
            for out in outputs:
                if not os.path.realpath(out).startswith(self.tmp_realpath):
                    area = self.new_build_area("copy")
                    copies.append(area)
                    copy_tree(out, os.path.join(area, "out"), _unstorable(dref))
                    out = os.path.join(area, "out")
                staged.append(out)
            stopped = time.time()
            installs: list[tuple[NewRealization, str]] = []
            for out, out_metrics in zip(staged, metrics, strict=True):
                failpoint("publish:hashing")
                digest = tree_digest(out, make_readonly=True, max_path=MAX_RELATIVE_PATH)
                rref = mkrref(realization_hash(ctx_hash, digest.digest), dhash, name)
                fd = os.open(
                    os.path.join(out, CONTEXT_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444
                )
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(ctx_json)
                record = NewRealization(
                    rref,
                    dref,
                    ctx_json,
                    ctx_hash,
                    deps,
                    digest.size,
                    digest.files,
                    started,
                    stopped,
                    metrics=out_metrics,
                )
                installs.append((record, out))
            self.install(installs, build_id, readonly_done=True)
        finally:
            for copy_area in copies:
                remove_tree(copy_area)
        return [r.rref for r, _ in installs]

    def _check_output(self, dref: DRef, out: str, promises: Sequence[Sequence[str]]) -> None:
        """Refuse an output that is not a folder, lacks a promised path, or uses a reserved name."""
        if not os.path.isdir(out):
            raise BuildError(
                f"the realizer of {dref} returned {out!r}, which is not a folder", dref
            )
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

    def install(
        self,
        installs: Sequence[tuple[NewRealization, str]],
        build_id: int | None = None,
        derivations: Sequence[tuple[DRef, Config]] = (),
        readonly_done: bool = False,
    ) -> None:
        """Move verified realization folders into the tree, then record them in one transaction.

        An intent listing the targets is recorded first: if this process dies
        between a rename and the commit, `recover` finds the intent and removes
        the unrecorded folders (under their build locks), so the tree never
        keeps a realization the catalogue does not know. `derivations`
        (dependencies first) not yet recorded are recorded by the same
        transaction.
        """
        staged = self._stage_derivations(derivations)
        intent = self.catalogue.open_intent(
            "install", [[r.rref, r.context_hash] for r, _ in installs]
        )
        for record, folder in installs:
            if not readonly_done:
                make_readonly(folder, include_root=False)
            if self.durable:
                fsync_tree(folder)
            target = self.rref_path(record.rref)
            try:
                os.rename(folder, target)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.rename(folder, target)
            except NotADirectoryError:
                raise self._damaged(record.dref) from None
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # The same content in the same context is already there: dedupe.
                remove_tree(folder)
                continue
            os.chmod(target, os.stat(target).st_mode & ~0o222)
            if self.durable:
                fsync_path(os.path.dirname(target))
        failpoint("publish:renamed")
        with self.catalogue.write():
            if staged is not None:
                self.catalogue.add_derivations(*staged)
            self.catalogue.add_realizations([r for r, _ in installs], build_id, intent)
        failpoint("publish:committed")

    def _rollback_install(self, refs: list[list[str]]) -> bool:
        """Remove folders a dead process renamed into the tree but never recorded.

        Returns False if a live process holds one of their build locks (it is
        building the same thing): the intent is then left for a later recovery
        rather than making this one, and `Store.open`, wait for that build.
        """
        for rref_text, ctx_hash in refs:
            rref = RRef(rref_text)
            try:
                with self.build_lock(rref2dref(rref), ctx_hash, timeout=0):
                    if not self.catalogue.known_rrefs([rref]):
                        remove_tree(self.rref_path(rref))
            except LockTimeout:
                return False
        return True

    @contextmanager
    def build_lock(
        self, dref: DRef, ctx_hash: str, on_wait: Any = None, timeout: float | None = None
    ) -> Iterator[None]:
        """The lock that makes one process at a time build `dref` in one context."""
        with self.build_locks.hold(
            self.build_locks.key(dref, ctx_hash),
            timeout=timeout,
            holders=lambda: self.catalogue.running_builds(dref, ctx_hash),
            on_wait=on_wait,
        ):
            yield

    def check_known_dref(self, dref: str) -> DRef:
        """Return `dref` as a DRef if it is recorded, else raise."""
        if not isinstance(dref, str):
            raise InvalidReferenceError(f"expected a DRef, got {type(dref).__name__}")
        self.config(DRef(dref))
        return DRef(dref)

    def derivation_of(self, config: Config) -> DRef:
        """The DRef a config would have."""
        return mkdref(config_hash(config.val), config.name)

    # -- metrics -------------------------------------------------------------

    def set_metric(self, rref: RRef, name: str, value: int | float) -> None:
        """Attach (or replace) metric `name` of a realization; not part of any hash.

        The realization may be present or collected (its record is history).
        Raises InvalidMetricError for a bad name or a value that is not a
        finite int or float, UnknownReferenceError if the catalogue has no
        record of `rref`.
        """
        self.set_metrics(rref, {name: value})

    def set_metrics(self, rref: RRef, metrics: dict[str, int | float]) -> None:
        """Attach (or replace) several metrics of a realization in one transaction.

        Raises as `set_metric`.
        """
        from lightstore.metrics import check_metrics
        from lightstore.refs import parse_rref

        rref = parse_rref(rref)
        checked = check_metrics(metrics)
        if not self.catalogue.set_metrics(rref, checked):
            raise UnknownReferenceError(f"realization {rref} is not in the store {self.root}", rref)

    def metrics(self, rref: RRef) -> dict[str, int | float]:
        """The metrics recorded for a realization (empty if none; unknown RRefs give {})."""
        return self.catalogue.metrics_of([rref]).get(rref, {})

    # -- remote caches (implemented in lightstore.remote) ----------------------

    def push(
        self, url: str, refs: Sequence[str], *, signing_key: Any = None, **options: Any
    ) -> Any:
        """Upload the closures of `refs` to the remote cache at `url`, signed with
        `signing_key` (default ``$LIGHTSTORE_SIGNING_KEY``); see `lightstore.remote.push`."""
        from lightstore.remote import push

        return push(self, url, refs, signing_key=signing_key, **options)

    def pull(self, url: str, refs: Sequence[str], **options: Any) -> list[RRef]:
        """Download the closures of `refs` from `url`, verified; see `lightstore.remote.pull`."""
        from lightstore.remote import pull

        return pull(self, url, refs, **options)

    # -- maintenance (implemented in lightstore.maintenance) ----------------

    def pin(self, name: str, ref: str) -> None:
        """Pin a DRef or RRef under `name`: gc keeps it and everything it depends on."""
        from lightstore.maintenance.roots import pin

        pin(self, name, ref)

    def unpin(self, name: str) -> bool:
        """Remove a pin; return whether it existed."""
        from lightstore.maintenance.roots import unpin

        return unpin(self, name)

    def pins(self) -> dict[str, str]:
        """Every pin: name -> reference."""
        from lightstore.maintenance.roots import pins

        return pins(self)

    def gc(
        self,
        dry_run: bool = False,
        timeout: float | None = DEFAULT_GC_TIMEOUT_S,
        progress: Any = None,
        keep_since: float | str | None = None,
    ) -> Any:
        """Collect garbage: keep the closure of pins, live links and running builds; remove the
        rest from the tree. Their catalogue records stay, marked collected (see `forget`).

        `keep_since` (Unix seconds, or a time such as ``'7d'`` or ``'2024-05-01'``)
        also keeps what was built or imported since then; QueryError if malformed
        or not finite (``"nan"``, ``"inf"``). Returns a GCReport (what went, or
        would go with `dry_run`, and bytes freed).
        Raises LockTimeout if running realizations hold the store past `timeout`.
        """
        from lightstore.maintenance.gc import collect

        return collect(
            self, dry_run=dry_run, timeout=timeout, progress=progress, keep_since=keep_since
        )

    def forget(
        self,
        *,
        before: float | str | None = None,
        name: str | None = None,
        everything: bool = False,
        dry_run: bool = False,
    ) -> Any:
        """Delete the records of collected objects (by age, by name, or all); see
        `lightstore.maintenance.gc.forget`. Returns a ForgetReport; raises QueryError
        without a filter."""
        from lightstore.maintenance.gc import forget

        return forget(self, before=before, name=name, everything=everything, dry_run=dry_run)

    def verify(
        self, check_contents: bool = False, repair: bool = False, progress: Any = None
    ) -> Any:
        """Check catalogue against tree (and hashes, with `check_contents`); returns a VerifyReport."""
        from lightstore.maintenance.verify import verify

        return verify(self, check_contents=check_contents, repair=repair, progress=progress)

    def reindex(self, progress: Any = None) -> Any:
        """Rebuild the catalogue from the tree; returns a ReindexReport."""
        from lightstore.maintenance.verify import reindex

        return reindex(self, progress=progress)
