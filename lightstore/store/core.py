"""The local store: one root folder holding the tree of objects and the catalogue.

A realization is valid only when it is both in the tree and in the catalogue.
It enters the tree by one atomic rename of a finished, read-only folder, and
the catalogue by one short transaction after that; a crash in between leaves
a complete folder that recovery recognises. `LocalStore` holds what every
layer above needs: opening (one instance per root and process), the
collector's lock, build locks, derivations and their configs, publishing
(`lightstore.store.publish`) and recovery (`lightstore.store.recovery`). The
user-facing `lightstore.Store` adds maintenance and remote caches on top.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from lightstore.catalogue import Catalogue, NewDerivation, NewRealization
from lightstore.foundation.config import Config, canonical_json, config_deps
from lightstore.foundation.errors import (
    InvalidReferenceError,
    LightstoreError,
    StoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
    UnknownReferenceError,
    disk_full,
)
from lightstore.foundation.failpoints import failpoint
from lightstore.foundation.hashing import config_hash
from lightstore.foundation.locks import KeyedLocks, ProcessSharedLock, exclusive
from lightstore.foundation.refs import Context, DRef, RRef, mkdref
from lightstore.store import publish as _publish
from lightstore.store import recovery as _recovery
from lightstore.store.layout import CONFIG_FILE, OBJECTS_DIR, TMP_DIR, Layout
from lightstore.store.view import StoreView

#: How long gc and verify wait for running realizations before giving up.
DEFAULT_GC_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class StorageSettings:
    """Where a store lives. `root` is the only setting; the rest derive from it."""

    root: str

    @property
    def storage(self) -> str:
        """The folder of objects (Pylightnix name)."""
        return os.path.join(self.root, OBJECTS_DIR)

    @property
    def tmpdir(self) -> str:
        """The build area, on the same filesystem as the objects."""
        return os.path.join(self.root, TMP_DIR)


class LocalStore(StoreView):
    """A store: the tree under `root` and its catalogue, for reading and writing.

    Open one with `open(root)`; instances are shared per process and root.
    """

    _instances: ClassVar[dict[tuple[str, int], LocalStore]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, root: str, *, durable: bool = False) -> None:
        layout = Layout(root)
        super().__init__(layout.root, Catalogue(layout.catalogue_path, durable=durable))
        self.settings = StorageSettings(self.root)
        self.durable = durable
        self.tmp_realpath = os.path.realpath(self.tmp_dir) + os.sep
        self.build_locks = KeyedLocks(self.lock_path("builds"))
        self._collector = ProcessSharedLock(
            self.lock_path("collector"), self.lock_path("gc-intent")
        )
        # Metrics recorded by running builds (`build_metric`), keyed by output
        # folder; `publish` takes them into its transaction.
        self.pending_metrics: dict[str, dict[str, int | float]] = {}
        # Build times a realizer declared for an output folder (Pylightnix's
        # `starttime`/`stoptime`: "started"/"stopped", a Unix time or None);
        # `publish` records them instead of the times it measured.
        self.declared_times: dict[str, dict[str, float | None]] = {}

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str] | StorageSettings | LocalStore,
        *,
        create: bool = False,
        durable: bool = False,
    ) -> Self:
        """Open the store at `root` (creating it if `create`), migrating its catalogue.

        One instance per root and process holds the locks and caches: a store
        first opened by a lower layer as a `LocalStore` and then by
        `lightstore.Store.open` becomes that subclass (which adds methods only).

        Raises StoreNotFoundError if the root holds no store and `create` is
        false, StoreReadOnlyError if it cannot be written, CatalogueVersionError
        if its catalogue is newer than this code.
        """
        if isinstance(root, LocalStore | StorageSettings):
            root = root.root
        if isinstance(root, os.PathLike):
            root = os.fspath(root)
        if not isinstance(root, str) or not root or "\0" in root:
            raise StoreNotFoundError(
                f"a store root is a folder path, not {root!r} ({type(root).__name__})"
            )
        instances = LocalStore._instances
        pid = os.getpid()
        # The common case, a root seen before: no realpath (a system call per component).
        store = instances.get((root, pid))
        if store is None or not os.path.isfile(store.catalogue.path):
            key = (os.path.realpath(root), pid)
            with LocalStore._instances_lock:
                store = instances.get(key)
                if store is None or not os.path.isfile(store.catalogue.path):
                    store = cls(root, durable=durable)
                    store._initialize(create)
                    instances[key] = store
                instances[(root, pid)] = store
        if not isinstance(store, cls):
            if not issubclass(cls, type(store)):
                raise TypeError(f"{cls.__name__} is not a kind of {type(store).__name__}")
            store.__class__ = cls
        return store  # type: ignore[return-value]

    @classmethod
    def forget_instances(cls) -> None:
        """Drop cached instances (after a store folder was deleted by hand)."""
        with LocalStore._instances_lock:
            LocalStore._instances.clear()

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
        """Clean up after dead processes of this host (see `lightstore.store.recovery`);
        returns counts of what was done. Never raises for a leftover it cannot remove."""
        return _recovery.recover(self)

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
        tmp = os.path.join(self.tmp_dir, self.tmp_name("config"))
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

    def evict(self, refs: Sequence[str]) -> None:
        """Drop cached configs/contexts of objects this process removed, so that asking
        for them again raises UnknownReferenceError as if they were never there."""
        for ref in refs:
            self._configs.pop(ref, None)
            self._contexts.pop(ref, None)

    # -- realizations ------------------------------------------------------

    def publish(
        self,
        dref: DRef,
        context: Context,
        outputs: Sequence[str],
        promises: Sequence[Sequence[str]] = (),
        build_id: int | None = None,
        started: float | None = None,
    ) -> list[RRef]:
        """Move finished output folders into the store and record them (see
        `lightstore.store.publish.publish`). Raises PromiseError (nothing stored) if a
        promised path is missing, BuildError for an output that cannot be stored."""
        return _publish.publish(self, dref, context, outputs, promises, build_id, started)

    def install(
        self,
        installs: Sequence[tuple[NewRealization, str]],
        build_id: int | None = None,
        derivations: Sequence[tuple[DRef, Config]] = (),
        readonly_done: bool = False,
    ) -> None:
        """Move verified realization folders into the tree, then record them in one
        transaction (see `lightstore.store.publish.install`)."""
        _publish.install(self, installs, build_id, derivations, readonly_done)

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
        from lightstore.foundation.metrics import check_metrics
        from lightstore.foundation.refs import parse_rref

        rref = parse_rref(rref)
        checked = check_metrics(metrics)
        if not self.catalogue.set_metrics(rref, checked):
            raise UnknownReferenceError(f"realization {rref} is not in the store {self.root}", rref)
