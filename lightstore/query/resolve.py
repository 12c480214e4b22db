"""Turning what a user types into a DRef or RRef, as `git` does with commit ids.

Accepted, in this order:

- a full reference, ``dref:<H>-<name>`` or ``rref:<R>-<H>-<name>``;
- a prefix of a hash, at least 4 hex digits: ``3fa2`` matches the DRefs whose
  ``<H>`` and the RRefs whose ``<R>`` start with it (``dref:3fa2`` or
  ``rref:3fa2`` restricts the kind);
- the path of an object folder in the store (``objects/<H>-<name>/<R>``);
- a pin name, then a derivation name (``train``) when exactly one derivation
  has it.

Something that matches several objects raises AmbiguousReferenceError listing
them; something that matches nothing raises UnknownReferenceError.
"""

from __future__ import annotations

import os
import re

from lightstore.catalogue import Catalogue
from lightstore.errors import InvalidReferenceError, UnknownReferenceError
from lightstore.query.errors import AmbiguousReferenceError
from lightstore.refs import DRef, RRef, isdref, isrref
from lightstore.store import Store

MIN_PREFIX = 4
_MAX_LISTED = 10
_PREFIX_RE = re.compile(rf"(?:(dref|rref):)?([0-9a-f]{{{MIN_PREFIX},32}})")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def _ambiguous(text: str, found: list[str]) -> AmbiguousReferenceError:
    listed = "\n  ".join(found[:_MAX_LISTED])
    more = "\n  ... and more" if len(found) > _MAX_LISTED else ""
    return AmbiguousReferenceError(
        f"{text!r} is ambiguous; it matches:\n  {listed}{more}\n"
        "give more hex digits or the full reference",
        found[:_MAX_LISTED],
    )


def prefix_matches(catalogue: Catalogue, prefix: str, kind: str | None = None) -> list[str]:
    """References whose hash starts with `prefix` (hex); `kind` 'dref'/'rref' restricts them.

    GLOB on the primary key is an index range scan, so this is fast on big stores.
    """
    found: list[str] = []
    if kind in (None, "dref"):
        found += catalogue.column(
            "SELECT dref FROM derivations WHERE dref GLOB ? ORDER BY dref LIMIT ?",
            (f"dref:{prefix}*", _MAX_LISTED + 1),
        )
    if kind in (None, "rref"):
        found += catalogue.column(
            "SELECT rref FROM realizations WHERE rref GLOB ? ORDER BY rref LIMIT ?",
            (f"rref:{prefix}*", _MAX_LISTED + 1),
        )
    return found


def _from_path(store: Store, text: str) -> str | None:
    real = os.path.realpath(text)
    objects = os.path.realpath(store.objects_dir)
    if not real.startswith(objects + os.sep):
        return None
    parts = os.path.relpath(real, objects).split(os.sep)
    head, _, name = parts[0].partition("-")
    if len(parts) == 1:
        return f"dref:{head}-{name}"
    return f"rref:{parts[1]}-{head}-{name}"


def _known(store: Store, ref: str) -> DRef | RRef:
    if isrref(ref):
        if store.catalogue.known_rrefs([ref]):
            return RRef(ref)
    elif isdref(ref) and store.catalogue.known_drefs([ref]):
        return DRef(ref)
    raise UnknownReferenceError(f"{ref} is not in the store {store.root}", ref)


def resolve(store: Store, text: str) -> DRef | RRef:
    """The one DRef or RRef of `store` that `text` designates (see the module docstring).

    Raises UnknownReferenceError if nothing matches, AmbiguousReferenceError
    if several objects do, InvalidReferenceError if `text` cannot be a reference.
    """
    text = text.strip()
    if isdref(text) or isrref(text):
        return _known(store, text)
    m = _PREFIX_RE.fullmatch(text)
    if m:
        found = prefix_matches(store.catalogue, m.group(2), m.group(1))
        if len(found) == 1:
            return DRef(found[0]) if isdref(found[0]) else RRef(found[0])
        if found:
            raise _ambiguous(text, found)
        if m.group(1):
            raise UnknownReferenceError(f"no {m.group(1)} starts with {text!r} in {store.root}")
    if os.sep in text or text.startswith("."):
        ref = _from_path(store, text)
        if ref is None or not (isdref(ref) or isrref(ref)):
            raise InvalidReferenceError(
                f"{text!r} is not the folder of an object in the store {store.root}"
            )
        return _known(store, ref)
    if _NAME_RE.fullmatch(text):
        return _by_name(store, text, hex_prefix=m is not None)
    raise InvalidReferenceError(
        f"{text!r} is not a reference: give a DRef, an RRef, a hash prefix of at least "
        f"{MIN_PREFIX} hex digits, a pin name or a derivation name"
    )


def _by_name(store: Store, text: str, hex_prefix: bool = False) -> DRef | RRef:
    pinned = store.catalogue.column("SELECT coalesce(rref, dref) FROM pins WHERE name = ?", (text,))
    if pinned:
        return _known(store, pinned[0])
    drefs = store.catalogue.column(
        "SELECT dref FROM derivations WHERE name = ? ORDER BY dref LIMIT ?",
        (text, _MAX_LISTED + 1),
    )
    if len(drefs) == 1:
        return DRef(drefs[0])
    if drefs:
        raise _ambiguous(text, drefs)
    what = "no hash starts with it, and no pin or derivation has that name"
    if not hex_prefix:
        what = "no pin or derivation has that name" + (
            f" (a hash prefix needs at least {MIN_PREFIX} hex digits)"
            if all(c in "0123456789abcdef" for c in text)
            else ""
        )
    raise UnknownReferenceError(
        f"{text!r} is not in the store {store.root}: {what}; list objects with `lightstore ls`",
        text,
    )


def resolve_all(store: Store, texts: list[str] | tuple[str, ...]) -> list[DRef | RRef]:
    """`resolve` each of `texts`, keeping their order and dropping repeats."""
    out: list[DRef | RRef] = []
    for t in texts:
        ref = resolve(store, t)
        if ref not in out:
            out.append(ref)
    return out
