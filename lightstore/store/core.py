"""The local store: one root folder holding the tree of objects and the catalogue.

A realization is valid only when it is both in the tree and in the catalogue.
It enters the tree by one atomic rename of a finished, read-only folder, and
the catalogue by one short transaction after that; a crash in between leaves
a complete folder that recovery recognises. `LocalStore` holds what every
layer above needs: opening (one instance per root and process), publishing
(`lightstore.store.publish`) and recovery (`lightstore.store.recovery`) on top
of `lightstore.store.base.StoreBase` (the collector's lock, build locks,
derivations and their configs). The user-facing `lightstore.Store` adds
maintenance and remote caches on top.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import ClassVar, Self

from lightstore.catalogue import NewRealization, schema_files
from lightstore.foundation.config import Config
from lightstore.foundation.errors import (
    CatalogueCorruptError,
    StoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
)
from lightstore.foundation.locks import exclusive
from lightstore.foundation.refs import Context, DRef, RRef
from lightstore.store import publish as _publish
from lightstore.store import recovery as _recovery
from lightstore.store.base import StorageSettings, StoreBase


class LocalStore(StoreBase):
    """A store: the tree under `root` and its catalogue, for reading and writing.

    Open one with `open(root)`; instances are shared per process and root.
    """

    _instances: ClassVar[dict[tuple[str, int], LocalStore]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str] | StorageSettings | LocalStore,
        *,
        create: bool = False,
        durable: bool = False,
        repair: bool = False,
    ) -> Self:
        """Open the store at `root` (creating it if `create`), migrating its catalogue.

        One instance per root and process holds the locks and caches: a store
        first opened by a lower layer as a `LocalStore` and then by
        `lightstore.Store.open` becomes that subclass (which adds methods only).

        Raises StoreNotFoundError if the root holds no store and `create` is
        false, StoreReadOnlyError if it cannot be written, CatalogueVersionError
        if its catalogue is newer than this code, CatalogueCorruptError if the catalogue
        is missing or holds no tables while the tree holds results, unless `repair` (the
        caller is about to register the tree again, as `verify --repair` does).
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
                    store._initialize(create, repair)
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

    def _initialize(self, create: bool, repair: bool = False) -> None:
        catalogue_exists = os.path.isfile(self.catalogue.path)
        if not catalogue_exists and not create:
            raise StoreNotFoundError(
                f"no lightstore store at {self.root}; create one with `lightstore init --root {self.root}` "
                "or fsinit()"
            )
        if not repair and (not catalogue_exists or os.path.getsize(self.catalogue.path) == 0):
            # Before SQLite touches the file, so that it is left as it was found.
            self._refuse_a_catalogue_without_tables(catalogue_exists)
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
        if len(self.catalogue.check_version()) == len(schema_files()) and not repair:
            self._refuse_a_catalogue_without_tables(catalogue_exists)
        # `migrate` checks the version again under the lock: another process may have
        # migrated while this one waited.
        with exclusive(os.path.join(self.locks_dir, "schema.lock")):
            self.catalogue.migrate()
        self.recover()

    def _refuse_a_catalogue_without_tables(self, exists: bool) -> None:
        """Raise CatalogueCorruptError if the tree holds anything: every catalogue has its
        first migration from `init` on, so this one (missing, empty, or not lightstore's)
        was lost, and starting it afresh would forget every result. Asked only then."""
        try:
            with os.scandir(self.objects_dir) as entries:
                if not any(True for _ in entries):
                    return  # an `init` cut short: nothing to forget
        except OSError:
            return  # no tree (yet), or one the checks that follow report
        what = (
            f"it holds no lightstore tables ({os.path.getsize(self.catalogue.path)} bytes)"
            if exists
            else "it is missing"
        )
        raise CatalogueCorruptError(
            f"the catalogue {self.catalogue.path} is damaged: {what}, while {self.objects_dir} "
            "holds results; run `lightstore reindex` (or `lightstore verify --repair`) to "
            "rebuild it from the tree"
        )

    def recover(self) -> dict[str, int]:
        """Clean up after dead processes of this host (see `lightstore.store.recovery`);
        returns counts of what was done. Never raises for a leftover it cannot remove."""
        return _recovery.recover(self)

    def interrupt_stale_builds(self, dref: DRef, ctx_hash: str) -> None:
        """Close the builds of `dref` in a context still recorded as running, removing what
        they published but did not record. Call it holding the build lock, which makes
        every such record one of a dead process. Reads once when there is none."""
        _recovery.interrupt_stale_builds(self, dref, ctx_hash)

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
