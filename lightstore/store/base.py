"""What publishing and recovery work on: a store's locks, derivations and metrics.

`StoreBase` is the part of the local store that `lightstore.store.publish` and
`lightstore.store.recovery` need (the collector's lock, build locks, writing
derivations, the damaged-folder error, pending metrics); `lightstore.store.core.LocalStore`
adds opening, recovery and publishing on top, so those modules type against this one
and nothing imports in a circle.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from lightstore.catalogue import Catalogue, NewDerivation
from lightstore.foundation.config import Config, canonical_json, config_deps
from lightstore.foundation.errors import (
    InvalidReferenceError,
    LightstoreError,
    StoreError,
    UnknownReferenceError,
    disk_full,
)
from lightstore.foundation.failpoints import failpoint
from lightstore.foundation.files import write_all
from lightstore.foundation.hashing import config_hash
from lightstore.foundation.locks import KeyedLocks, ProcessSharedLock
from lightstore.foundation.metrics import PendingMetrics
from lightstore.foundation.refs import DRef, RRef, mkdref
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


class StoreBase(StoreView):
    """A store's tree and catalogue with the locks and derivation writing every writer shares.

    Not opened directly: `LocalStore.open` makes one instance per root and process.
    """

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
        self.pending_metrics: dict[str, PendingMetrics] = {}
        # Build times a realizer declared for an output folder (Pylightnix's
        # `starttime`/`stoptime`: "started"/"stopped", a Unix time or None);
        # `publish` records them instead of the times it measured.
        self.declared_times: dict[str, dict[str, float | None]] = {}

    def realizing(self) -> AbstractContextManager[None]:
        """Held (shared) while a realization, an import or a pin runs; gc waits for all of them.

        Re-entrant within a process (a realizer may realize other stages, in
        any thread). A waiting gc holds the intent lock, so new realizations
        queue behind it instead of starving it.
        """
        return self._collector.shared()

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
        # The check and the intent in one transaction: nothing is read before it.
        with self.catalogue.write("recording derivations"):
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
        try:
            os.mkdir(folder)  # a new derivation: nothing there to check
        except FileExistsError:
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
                    raise self._damaged(dref) from None
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(self.tmp_dir, self.tmp_name("config"))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            write_all(fd, text.encode("utf-8"))
            if self.durable:
                os.fsync(fd)
            os.fchmod(fd, 0o444)
        finally:
            os.close(fd)
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

    # -- locks -------------------------------------------------------------

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

    # -- metrics, tags and notes ------------------------------------------------

    def set_metric(
        self, rref: RRef, name: str, value: int | float, step: int | None = None
    ) -> None:
        """Attach (or replace) metric `name` of a realization; not part of any hash.

        With `step` (an integer: an epoch, an iteration) the value is one point of
        the series `name` (a curve), whose value in `metrics` is the one at its last
        step. NaN and infinities are recorded as they are. The realization may be
        present or collected (its record is history). Raises InvalidMetricError for a
        bad name, value or step, or for a name that is already of the other kind (one
        number, or a series), UnknownReferenceError if the catalogue has no record of
        `rref`.
        """
        self.set_metrics(rref, {name: value}, step=step)

    def set_metrics(
        self, rref: RRef, metrics: Mapping[str, int | float], step: int | None = None
    ) -> None:
        """Attach (or replace) several metrics of a realization (at `step`) in one
        transaction; nothing of a refused call is kept. Raises as `set_metric`."""
        from lightstore.foundation.metrics import check_metrics, check_step

        rref = self._record_ref(rref)
        checked = check_metrics(metrics)
        if step is None:
            known = self.catalogue.set_metrics(rref, checked)
        else:
            at = check_step(next(iter(checked), "metric"), step)
            known = self.catalogue.set_series(rref, {k: {at: v} for k, v in checked.items()})
        self._known_or_raise(rref, known)

    def set_metric_series(
        self, rref: RRef, name: str, points: Iterable[tuple[int, int | float]]
    ) -> None:
        """Add the (step, value) `points` to the series `name` of a realization in one
        transaction (a step given again replaces its value). Raises as `set_metric`."""
        from lightstore.foundation.metrics import check_metric_name, check_metric_value, check_step

        rref = self._record_ref(rref)
        check_metric_name(name)
        series = {check_step(name, s): check_metric_value(name, v) for s, v in points}
        self._known_or_raise(rref, self.catalogue.set_series(rref, {name: series}))

    def remove_metric(self, rref: RRef, name: str) -> bool:
        """Remove metric `name` (and its series) of a realization; whether it had one."""
        return self.catalogue.remove_metrics(self._record_ref(rref), [name]) > 0

    def set_tag(self, rref: RRef, name: str, value: str = "") -> None:
        """Tag a realization (present or collected): `name`, with a text `value` (often
        empty); a tag of that name is replaced. Not part of any hash; who set it and when
        are recorded. Raises InvalidAnnotationError for a bad name or value,
        UnknownReferenceError if the catalogue has no record of `rref`."""
        self.set_tags(rref, {name: value})

    def set_tags(self, rref: RRef, tags: Mapping[str, str]) -> None:
        """Set several tags of a realization in one transaction. Raises as `set_tag`."""
        from lightstore.foundation.tags import author, check_tag_name, check_tag_value

        rref = self._record_ref(rref)
        checked = {check_tag_name(k): check_tag_value(k, v) for k, v in tags.items()}
        self._known_or_raise(rref, self.catalogue.set_tags(rref, checked, author()))

    def remove_tag(self, rref: RRef, name: str) -> bool:
        """Remove the tag `name` of a realization; whether it had one."""
        return self.catalogue.remove_tags(self._record_ref(rref), [name]) > 0

    def add_note(self, rref: RRef, text: str) -> int:
        """Add a note (free text) about a realization, present or collected; returns its
        id. Who wrote it and when are recorded. Raises InvalidAnnotationError for empty
        or invalid text, UnknownReferenceError if the catalogue has no record of `rref`."""
        from lightstore.foundation.tags import author, check_note_text

        rref = self._record_ref(rref)
        note_id = self.catalogue.add_note(rref, check_note_text(text), author())
        self._known_or_raise(rref, note_id is not None)
        return int(note_id or 0)

    def remove_note(self, rref: RRef, note_id: int) -> bool:
        """Remove the note `note_id` of a realization; whether it was there."""
        return self.catalogue.remove_note(self._record_ref(rref), int(note_id))

    def _record_ref(self, rref: str) -> RRef:
        from lightstore.foundation.refs import parse_rref

        return parse_rref(rref)

    def _known_or_raise(self, rref: RRef, known: bool) -> None:
        if not known:
            raise UnknownReferenceError(f"realization {rref} is not in the store {self.root}", rref)
