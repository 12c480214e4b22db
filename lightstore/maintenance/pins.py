"""Pins, and what garbage collection keeps: named pins, registered symlinks (links), and
the inputs of running builds.

A pin is a row of the `pins` table and a file ``pins/<name>`` holding the
reference, so that `reindex` can restore pins from the tree. A link keeps its object
while the symlink exists and still points at it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lightstore.foundation.errors import (
    IntegrityError,
    InvalidReferenceError,
    UnknownReferenceError,
    disk_full,
)
from lightstore.foundation.refs import (
    MAX_NAME_LENGTH,
    DRef,
    RRef,
    isrref,
    parse_dref,
    parse_rref,
)

if TYPE_CHECKING:
    from lightstore.store import LocalStore
    from lightstore.store.view import StoreView

# A pin name never starts with '.': the temporary files of pins/ do, so
# `reindex` can tell them apart by name alone.
PIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def is_pin_name(name: str) -> bool:
    """True if `name` is a valid pin name (and so never a temporary file of pins/)."""
    return (
        isinstance(name, str)
        and len(name) <= MAX_NAME_LENGTH
        and PIN_NAME.fullmatch(name) is not None
    )


def _check_name(name: str) -> str:
    if isinstance(name, str) and len(name) > MAX_NAME_LENGTH:
        raise InvalidReferenceError(
            f"the pin name {name[:40]}... is {len(name)} characters long; "
            f"pin names may have at most {MAX_NAME_LENGTH}"
        )
    if not is_pin_name(name):
        raise InvalidReferenceError(
            f"invalid pin name {name!r}: use letters, digits, '.', '_' and '-', "
            "not starting with '.'"
        )
    return name


def pin(store: LocalStore, name: str, ref: DRef | RRef | str) -> None:
    """Pin `ref` under `name` (replacing an older pin of that name): gc keeps it and its closure.

    Raises UnknownReferenceError if `ref` is not in the store.
    """
    _check_name(name)
    value = parse_rref(ref) if isrref(ref) else parse_dref(ref)
    folder = store.pins_dir
    os.makedirs(folder, exist_ok=True)
    try:
        # Held shared like a realization: a collection marks and sweeps as one step.
        # The row and the file go together: the file is written inside the transaction.
        with store.realizing(), store.catalogue.write(f"pinning {value} as {name!r}"):
            store.catalogue.set_pin(name, value)
            tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}")
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(value + "\n")
                os.replace(tmp, os.path.join(folder, name))
            except OSError as e:
                # The transaction rolls back; leave no partial file behind either.
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                full = disk_full(e, f"pinning {value} as {name!r}")
                if full is not None:
                    raise full from e
                raise
    except IntegrityError:
        raise UnknownReferenceError(
            f"cannot pin {value}: it is not in the store {store.root}", value
        ) from None


def unpin(store: LocalStore, name: str) -> bool:
    """Remove the pin `name`; return whether it existed.

    Raises InvalidReferenceError for a malformed name. Names starting with
    '.' (accepted by older versions) can still be removed.
    """
    if not (isinstance(name, str) and name.startswith(".") and is_pin_name(name[1:])):
        _check_name(name)
    with store.realizing(), store.catalogue.write(f"removing the pin {name!r}"):
        existed = store.catalogue.remove_pin(name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(store.pins_dir, name))
    return existed


def pins(store: LocalStore) -> dict[str, str]:
    """Every pin: name -> reference."""
    return store.catalogue.pins()


@dataclass(frozen=True)
class GCKeeps:
    """What garbage collection keeps, before taking closures; and the links it no longer
    counts (their symlink is gone or points elsewhere)."""

    drefs: set[DRef]
    rrefs: set[RRef]
    stale_links: list[str]


def gc_keeps(store: StoreView) -> GCKeeps:
    """What garbage collection keeps now: pins, live links, inputs of running builds."""
    drefs: set[DRef] = set()
    rrefs: set[RRef] = set()
    for ref in store.catalogue.pins().values():
        if isrref(ref):
            rrefs.add(RRef(ref))
        else:
            drefs.add(DRef(ref))
    stale: list[str] = []
    for path, ref in store.catalogue.links():
        is_rref = isrref(ref)
        target = store.rref_path(RRef(ref)) if is_rref else store.dref_path(DRef(ref))
        try:
            alive = os.path.realpath(path) == os.path.realpath(target) and os.path.islink(path)
        except OSError:
            alive = False
        if not alive:
            stale.append(path)
        elif is_rref:
            rrefs.add(RRef(ref))
        else:
            drefs.add(DRef(ref))
    rrefs |= {RRef(r) for r in store.catalogue.build_input_rrefs()}
    return GCKeeps(drefs, rrefs, stale)
