"""Turning what a user types into a DRef or RRef, as `git` does with commit ids.

Accepted, in this order:

- a full reference, ``dref:<H>-<name>`` or ``rref:<R>-<H>-<name>``;
- a prefix of a hash, at least 4 hex digits: ``3fa2`` matches the DRefs whose
  ``<H>`` and the RRefs whose ``<R>`` start with it (``dref:3fa2`` or
  ``rref:3fa2`` restricts the kind);
- a realization's hash (or a prefix of it), ``-`` and a prefix of its
  derivation's hash: ``3fa2c9d1-1b7e`` (also ``rref:<R>-1b7e``). Runs of
  different derivations with identical outputs share ``<R>``; this tells them apart;
- the path of an object folder in the store (``objects/<H>-<name>/<R>``);
- a pin name, then a derivation name (``train``) when exactly one derivation
  has it;
- a selector (`lightstore.query.selectors`): ``train@latest`` (the newest
  run of any derivation named train), ``train@all`` (every run),
  ``train[lr=0.01]`` or ``train@lr=0.01`` (the derivations whose config
  matches), combined as ``train[lr=0.01,seed=1]@latest``.

A pin named like a hash prefix that also matches another object is
ambiguous. Something that matches several objects raises AmbiguousReferenceError listing
them (`resolve_all` takes every object a selector matches); something that
matches nothing raises UnknownReferenceError.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

from lightstore.catalogue import Catalogue
from lightstore.foundation.errors import (
    InvalidReferenceError,
    InvalidSelectorError,
    UnknownReferenceError,
)
from lightstore.foundation.refs import DRef, RRef, isdref, isrref
from lightstore.query.errors import AmbiguousReferenceError
from lightstore.query.filters import condition_json, name_condition
from lightstore.query.selectors import Selector, is_selector, parse_selector
from lightstore.query.shortrefs import MIN_PREFIX, short_forms
from lightstore.store.view import StoreView

_MAX_LISTED = 10
# A hash prefix, optionally followed by '-' and a prefix of the derivation hash of an RRef.
_PREFIX_RE = re.compile(rf"(?:(dref|rref):)?([0-9a-f]{{{MIN_PREFIX},32}})(?:-([0-9a-f]{{1,32}}))?")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


def _ambiguous(
    text: str, found: Sequence[str], selector: bool = False, name: bool = False
) -> AmbiguousReferenceError:
    listed = "\n  ".join(found[:_MAX_LISTED])
    more = "\n  ... and more" if len(found) > _MAX_LISTED else ""
    if selector:
        sel = parse_selector(text)
        latest = str(Selector(sel.base, sel.conditions, "latest"))
        hint = f"add config conditions, or pick the newest run with {latest}"
    elif name:
        hint = (
            f"give a hash prefix, or a selector: {text}@latest (newest run), {text}@all "
            f"(every run), {text}[FIELD=VALUE] (by config)"
        )
    else:
        hint = "give more hex digits or the full reference"
        shorts = short_forms([r for r in found[:_MAX_LISTED] if isrref(r)])
        if shorts:
            listed = "\n  ".join(
                f"{shorts[r]}  {r}" if r in shorts else r for r in found[:_MAX_LISTED]
            )
            hint = (
                "give a short form as listed (a realization's hash, '-' and a prefix of its "
                f"derivation's hash: {next(iter(shorts.values()))}), more hex digits, or the "
                "full reference"
            )
    return AmbiguousReferenceError(
        f"{text!r} is ambiguous; it matches:\n  {listed}{more}\n{hint}",
        list(found[:_MAX_LISTED]),
    )


def prefix_matches(
    catalogue: Catalogue,
    prefix: str,
    kind: str | None = None,
    dprefix: str | None = None,
    collected: bool = False,
) -> list[str]:
    """References whose hash starts with `prefix` (hex); `kind` 'dref'/'rref' restricts them.
    With `dprefix`, only RRefs whose derivation hash also starts with it. With
    `collected`, the records of removed objects are searched instead.

    GLOB on the primary key is an index range scan, so this is fast on big stores.
    """
    realizations, derivations = "realizations", "derivations"
    if collected:
        realizations, derivations = "collected_realizations", "collected_derivations"
    found: list[str] = []
    if dprefix is not None:
        if kind == "dref":
            return []
        # The class pins the '-' to the end of <R>: a bare '*' could reach into the name.
        pattern = f"rref:{prefix}{'[0-9a-f]' * (32 - len(prefix))}-{dprefix}*"
        return catalogue.column(
            f"SELECT DISTINCT rref FROM {realizations} WHERE rref GLOB ? ORDER BY rref LIMIT ?",
            (pattern, _MAX_LISTED + 1),
        )
    if kind in (None, "dref"):
        found += catalogue.column(
            f"SELECT DISTINCT dref FROM {derivations} WHERE dref GLOB ? ORDER BY dref LIMIT ?",
            (f"dref:{prefix}*", _MAX_LISTED + 1),
        )
    if kind in (None, "rref"):
        found += catalogue.column(
            f"SELECT DISTINCT rref FROM {realizations} WHERE rref GLOB ? ORDER BY rref LIMIT ?",
            (f"rref:{prefix}*", _MAX_LISTED + 1),
        )
    return found


def _from_path(store: StoreView, text: str) -> str | None:
    real = os.path.realpath(text)
    objects = os.path.realpath(store.objects_dir)
    if not real.startswith(objects + os.sep):
        return None
    parts = os.path.relpath(real, objects).split(os.sep)
    head, _, name = parts[0].partition("-")
    if len(parts) == 1:
        return f"dref:{head}-{name}"
    return f"rref:{parts[1]}-{head}-{name}"


def _known(store: StoreView, ref: str, include_collected: bool = False) -> DRef | RRef:
    if isrref(ref):
        if store.catalogue.known_rrefs([ref]):
            return RRef(ref)
    elif isdref(ref) and store.catalogue.known_drefs([ref]):
        return DRef(ref)
    gone = collected_record(store, ref)
    if gone is not None and include_collected:
        return RRef(ref) if isrref(ref) else DRef(ref)
    if gone is not None:
        raise UnknownReferenceError(
            f"{ref} is no longer in the store {store.root}: {removal_text(gone)}; its record "
            "is kept (`lightstore show`, `lightstore log`, `lightstore history --all`)",
            ref,
        )
    raise UnknownReferenceError(f"{ref} is not in the store {store.root}", ref)


def collected_record(store: StoreView | Catalogue, ref: str) -> dict[str, Any] | None:
    """When and why (``{"collected": time, "reason": "gc" | "rmref" | "repair"}``) the
    object `ref` was last removed from the store, if the catalogue keeps its record; None
    for an object never removed (or forgotten)."""
    catalogue = store.catalogue if isinstance(store, StoreView) else store
    table = (
        "collected_realizations WHERE rref = ?"
        if isrref(ref)
        else ("collected_derivations WHERE dref = ?")
    )
    rows = catalogue.query(
        f"SELECT collected, reason FROM {table} ORDER BY collected DESC LIMIT 1", (ref,)
    )
    return {"collected": rows[0][0], "reason": rows[0][1]} if rows else None


def removal_text(gone: dict[str, Any]) -> str:
    """``collected by gc on 2024-05-01 12:00:00`` (local time) for a `collected_record`."""
    import datetime

    try:
        at = datetime.datetime.fromtimestamp(gone["collected"]).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        at = repr(gone["collected"])
    how = {"gc": "by gc", "rmref": "by rmref", "repair": "by a repair"}.get(
        gone["reason"], f"({gone['reason']})"
    )
    return f"collected {how} on {at}"


def resolve(
    store: StoreView, text: str | os.PathLike[str], include_collected: bool = False
) -> DRef | RRef:
    """The one DRef or RRef of `store` that `text` designates (see the module docstring).

    With `include_collected`, an object gc (or rmref, or a repair) removed is found too, by
    its record: a full reference or hash prefix that matches nothing present, a name only
    collected derivations have, and the runs of a selector (``train@latest`` may then be a
    collected run). Raises UnknownReferenceError if nothing matches, AmbiguousReferenceError
    if several objects do, InvalidReferenceError if `text` cannot be a reference.
    """
    if isinstance(text, os.PathLike):
        text = os.fspath(text)
    if not isinstance(text, str):
        raise InvalidReferenceError(f"a reference is text, not {type(text).__name__}: {text!r}")
    text = text.strip()
    if isdref(text) or isrref(text):
        return _known(store, text, include_collected)
    if is_selector(text) and not _is_object_path(store, text):
        selected = select(store, text, include_collected)
        if len(selected) == 1:
            return selected[0]
        raise _ambiguous(text, list(selected), selector=True)
    m = _PREFIX_RE.fullmatch(text)
    if m:
        if m.group(1) == "dref" and m.group(3):
            raise InvalidReferenceError(
                f"{text!r} is not a reference: a DRef has one hash; '<R>-<H>' designates a "
                "realization (rref:<R>-<H>)"
            )
        found = prefix_matches(store.catalogue, m.group(2), m.group(1), m.group(3))
        if not found and include_collected:
            found = prefix_matches(
                store.catalogue, m.group(2), m.group(1), m.group(3), collected=True
            )
        pinned = store.catalogue.column(
            "SELECT coalesce(rref, dref) FROM pins WHERE name = ?", (text,)
        )
        named = "the pin of"
        if found and m.group(3) and not m.group(1) and not pinned:
            # '<R>-<H>' is also a valid derivation name ('cafe-babe').
            named = "the name of"
            pinned = store.catalogue.column(
                "SELECT dref FROM derivations WHERE name = ? ORDER BY dref LIMIT 1", (text,)
            )
        if found and pinned and found != pinned:
            # A pin or name that looks like a hash prefix: never answer silently with the other.
            raise AmbiguousReferenceError(
                f"{text!r} is ambiguous: it is {named} {pinned[0]} and a hash prefix of "
                f"{', '.join(found[:_MAX_LISTED])}; give the full reference",
                [*pinned, *found[:_MAX_LISTED]],
            )
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
        return _known(store, ref, include_collected)
    if _NAME_RE.fullmatch(text):
        return _by_name(store, text, hex_prefix=m is not None, include_collected=include_collected)
    raise InvalidReferenceError(
        f"{text!r} is not a reference: give a DRef, an RRef, a hash prefix of at least "
        f"{MIN_PREFIX} hex digits, a pin name or a derivation name"
    )


def _by_name(
    store: StoreView, text: str, hex_prefix: bool = False, include_collected: bool = False
) -> DRef | RRef:
    pinned = store.catalogue.column("SELECT coalesce(rref, dref) FROM pins WHERE name = ?", (text,))
    if pinned:
        return _known(store, pinned[0])
    drefs = store.catalogue.column(
        "SELECT dref FROM derivations WHERE name = ? ORDER BY dref LIMIT ?",
        (text, _MAX_LISTED + 1),
    )
    if not drefs and include_collected:
        drefs = store.catalogue.column(
            "SELECT dref FROM collected_derivations WHERE name = ? ORDER BY dref LIMIT ?",
            (text, _MAX_LISTED + 1),
        )
    if len(drefs) == 1:
        return DRef(drefs[0])
    if drefs:
        raise _ambiguous(text, drefs, name=True)
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


def resolve_all(store: StoreView, texts: list[str] | tuple[str, ...]) -> list[DRef | RRef]:
    """`resolve` each of `texts`, keeping their order and dropping repeats.

    A selector stands for every object it matches (``train@all``, ``train[seed=1]``).
    """
    if isinstance(texts, str):
        texts = [texts]
    out: list[DRef | RRef] = []
    seen: set[str] = set()
    for t in texts:
        if isinstance(t, str) and is_selector(t) and not _is_object_path(store, t):
            refs: list[DRef | RRef] = list(select(store, t))
        else:
            refs = [resolve(store, t)]
        for ref in refs:
            if ref not in seen:
                seen.add(ref)
                out.append(ref)
    return out


def _is_object_path(store: StoreView, text: str) -> bool:
    return os.sep in text and _from_path(store, text) is not None


def _selector_drefs(
    store: StoreView, sel: Selector, text: str, include_collected: bool = False
) -> list[str]:
    """The derivations the base and conditions of `sel` designate, oldest first (with
    `include_collected`, the records of removed ones too)."""
    base = sel.base
    if isrref(base):
        raise InvalidSelectorError(
            f"invalid selector {text!r}: {base} is a realization; a selector starts from a "
            "derivation name, pin, DRef or hash prefix",
            text,
        )
    where, params = name_condition(base, "name")
    pinned = store.catalogue.column("SELECT coalesce(dref, rref) FROM pins WHERE name = ?", (base,))
    m = _PREFIX_RE.fullmatch(base)
    if (
        isdref(base)
        or pinned
        or (m and prefix_matches(store.catalogue, m.group(2), m.group(1), m.group(3)))
    ):
        target = resolve(store, base, include_collected)
        if isrref(target):
            raise InvalidSelectorError(
                f"invalid selector {text!r}: {base} designates the realization {target}; "
                "a selector starts from a derivation",
                text,
            )
        where, params = "dref = ?", [target]
    elif not _NAME_RE.fullmatch(base.replace("*", "").replace("?", "") or "x"):
        raise InvalidSelectorError(
            f"invalid selector {text!r}: {base!r} is not a derivation name, glob, pin, "
            "DRef or hash prefix",
            text,
        )
    terms, args = [where], list(params)
    for cond in sel.conditions:
        term, more = cond.sql("config")
        terms.append(term)
        args += more
    source = "derivations"
    if include_collected:
        source = (
            "(SELECT dref, name, config, created FROM derivations UNION ALL "
            "SELECT dref, name, config, created FROM collected_derivations WHERE dref NOT IN "
            "(SELECT dref FROM derivations))"
        )
    drefs = store.catalogue.column(
        f"SELECT dref FROM {source} WHERE {' AND '.join(terms)} ORDER BY created, dref",
        args,
    )
    if not drefs:
        raise UnknownReferenceError(_nothing_matched(store, sel, where, list(params)), text)
    return drefs


def _nothing_matched(store: StoreView, sel: Selector, where: str, params: list[Any]) -> str:
    """Say which part of a selector matched nothing, with the values that do exist."""
    named = store.catalogue.column(f"SELECT dref FROM derivations WHERE {where} LIMIT 1", params)
    if not named:
        return (
            f"no derivation matches {sel.base!r} in the store {store.root}; "
            "list names with `lightstore ls`"
        )
    terms, args = [where], list(params)
    for cond in sel.conditions:
        # The path twice gives JSON text '[v,v]', which keeps the digits of big integers.
        pairs = store.catalogue.column(
            "SELECT pair FROM (SELECT DISTINCT json_extract(config, ?, ?) AS pair, "
            f"json_extract(config, ?) AS v FROM derivations WHERE {' AND '.join(terms)} "
            "AND json_type(config, ?) IS NOT NULL ORDER BY v, pair LIMIT 11)",
            [cond.path, cond.path, cond.path, *args, cond.path],
        )
        values = [_first_of_pair(p) for p in pairs]
        term, more = cond.sql("config")
        terms.append(term)
        args += more
        if not store.catalogue.column(
            f"SELECT 1 FROM derivations WHERE {' AND '.join(terms)} LIMIT 1", args
        ):
            shown = ", ".join(_abridged(json.dumps(v)) for v in values[:10]) + (
                ", ..." if len(values) > 10 else ""
            )
            wanted = _abridged(condition_json(cond.value))
            return (
                f"no derivation {sel.base!r} has {cond.field} {cond.op} {wanted}"
                f" (values of {cond.field} there: {shown or 'none: the field is missing'})"
            )
    return f"nothing matches {sel}"


def _abridged(text: str, most: int = 60) -> str:
    """`text`, or its start and end around '...' (a number of 4,000 digits, a long string)."""
    return text if len(text) <= most else f"{text[: most // 2]}...{text[-most // 4 :]}"


def _first_of_pair(pair: str) -> Any:
    try:
        return json.loads(pair)[0]
    except (ValueError, IndexError, KeyError, RecursionError):
        return pair


def select(
    store: StoreView, text: str | Selector, include_collected: bool = False
) -> list[DRef | RRef]:
    """Every object selector `text` designates: derivations, or with ``@all`` their
    realizations (oldest first), or with ``@latest`` the newest one.

    With `include_collected`, the records of what gc (or rmref, or a repair) removed are
    selected too: ``train@all`` lists collected runs beside present ones, and
    ``train@latest`` is the newest of either.

    Raises InvalidSelectorError if `text` does not parse, UnknownReferenceError
    if nothing matches (naming the condition that matched nothing, and the
    values that exist), AmbiguousReferenceError if its base is an ambiguous prefix.
    """
    sel = text if isinstance(text, Selector) else parse_selector(text)
    drefs = _selector_drefs(store, sel, str(text), include_collected)
    if sel.pick is None:
        return [DRef(d) for d in drefs]
    order = "DESC" if sel.pick == "latest" else "ASC"
    limit = " LIMIT 1" if sel.pick == "latest" else ""
    if include_collected:
        # A run collected and built again has two records: its newest one counts.
        rrefs = store.catalogue.column(
            "SELECT rref FROM (SELECT rref, max(coalesce(stopped, created)) AS t FROM history "
            "WHERE dref IN (SELECT value FROM json_each(?)) GROUP BY rref) "
            f"ORDER BY t {order}, rref {order}{limit}",
            (json.dumps(drefs),),
        )
    else:
        rrefs = store.catalogue.column(
            "SELECT rref FROM realizations WHERE dref IN (SELECT value FROM json_each(?)) "
            f"ORDER BY coalesce(build_stopped, created) {order}, rowid {order}{limit}",
            (json.dumps(drefs),),
        )
    if not rrefs:
        raise UnknownReferenceError(
            f"{str(text)!r} matches {len(drefs)} derivation(s) but none has a realization yet "
            "(realize it first, or drop @" + sel.pick + " to refer to the derivation)",
            str(text),
        )
    return [RRef(r) for r in rrefs]
