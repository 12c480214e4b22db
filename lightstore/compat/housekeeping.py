"""Pylightnix-style housekeeping: gc candidates, removal, links, listing, disk usage."""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import time
from collections.abc import Iterable
from typing import Any

from lightstore.compat.current import store_of
from lightstore.compat.queries import recorded_store
from lightstore.foundation.errors import (
    IntegrityError,
    InvalidReferenceError,
    UnknownReferenceError,
)
from lightstore.foundation.files import remove_tree
from lightstore.foundation.refs import (
    DRef,
    Path,
    RRef,
    isdref,
    isrefpath,
    isrref,
    parse_dref,
    parse_rref,
    rref2dref,
    undref,
)


def store_gc(
    keep_drefs: Iterable[DRef], keep_rrefs: Iterable[RRef], S: Any = None
) -> tuple[set[DRef], set[RRef]]:
    """What garbage collection would remove if these were kept too (nothing is deleted).

    Kept: `keep_drefs` with all their realizations, `keep_rrefs`, what the store
    keeps anyway (pins, live links, running builds), and everything those depend
    on. Returns ``(drefs, rrefs)`` that would go; `Store.gc` deletes.
    """
    from lightstore.maintenance.marking import garbage_sets

    drefs, rrefs, _, _ = garbage_sets(recorded_store(S), keep_drefs, keep_rrefs)
    return drefs, rrefs


def rmref(ref: DRef | RRef, S: Any = None, *, with_referrers: bool = False) -> list[str]:
    """Remove a realization, or a derivation with all its realizations; return what was removed.

    Refuses (IntegrityError) if anything else still depends on it, unless
    `with_referrers` is set, which removes those referrers too. The catalogue
    rows go first, in one transaction, then the folders.
    """
    store = recorded_store(S)
    cat = store.catalogue
    if isrref(ref):
        rrefs = [parse_rref(ref)]
        drefs: list[DRef] = []
        if not cat.known_rrefs(rrefs):
            raise UnknownReferenceError(f"{ref} is not in the store", ref)
    elif isdref(ref):
        d = parse_dref(ref)
        if not cat.known_drefs([d]):
            raise UnknownReferenceError(f"{ref} is not in the store", ref)
        drefs = [d]
        if with_referrers:
            drefs += sorted(cat.dref_referrers([d]))
        rrefs = [r for x in drefs for r in cat.realizations_any_context(x)]
    else:
        raise InvalidReferenceError(f"rmref expects a DRef or an RRef, got {ref!r}")
    users = cat.rref_referrers(rrefs) - set(rrefs)
    if users and not with_referrers:
        raise IntegrityError(
            f"cannot remove {ref}: {len(users)} realization(s) depend on it, e.g. {sorted(users)[0]}; "
            "remove them first or pass with_referrers=True"
        )
    rrefs += sorted(users)
    if drefs and not with_referrers:
        dusers = cat.dref_referrers(drefs) - set(drefs)
        if dusers:
            raise IntegrityError(
                f"cannot remove {ref}: derivation {sorted(dusers)[0]} depends on it; "
                "pass with_referrers=True to remove it too"
            )
    try:
        cat.delete_objects(rrefs, drefs, reason="rmref")
        store.evict([*rrefs, *drefs])
    except IntegrityError as e:
        raise IntegrityError(
            f"cannot remove {ref}: it is pinned, linked, or used by a running build ({e}); "
            "unpin it or wait for the build"
        ) from e
    for r in rrefs:
        remove_tree(store.rref_path(r))
    for d in drefs:
        remove_tree(store.dref_path(d))
    return [*rrefs, *drefs]


def _link(store: Any, target: str, ref: str, destdir: str | None, name: str) -> Path:
    link = os.path.abspath(os.path.join(destdir or os.getcwd(), name))
    if os.path.islink(link):
        os.unlink(link)
    os.symlink(target, link)
    try:
        # The check (the foreign key) and the insert under one hold: gc cannot
        # remove the target in between.
        with store.realizing():
            store.catalogue.replace_link(link, ref)
    except IntegrityError:
        with contextlib.suppress(OSError):
            os.unlink(link)
        raise UnknownReferenceError(f"cannot link {ref}: it is not in the store", ref) from None
    return Path(link)


def _link_name(name: str, store: Any, dref: DRef, rref: RRef | None) -> str:
    """`name`, or a Pylightnix format (``%(T)s`` build start time, ``%(N)s`` name) filled in."""
    if "%(" not in name:
        return name
    record = None if rref is None else store.catalogue.realization_record(rref)
    started = None if record is None else record.get("build_started")
    from lightstore.compat.utils import timestring

    try:
        return name % {"T": timestring(started) if started else "", "N": undref(dref)[1]}
    except (KeyError, ValueError, TypeError) as e:
        raise InvalidReferenceError(f"bad link name format {name!r}: {e}") from e


def linkrref(
    rref: RRef,
    destdir: str | None = None,
    name: str | None = None,
    S: Any = None,
    *,
    format: str | None = None,
) -> Path:
    """Make a symlink to a realization's folder (default `./result-<name>`); gc keeps the realization while the link exists.

    `name` may be a Pylightnix `format` such as ``'_rref_%(T)s_%(N)s'``.
    """
    store = store_of(S)
    r = parse_rref(rref)
    name = name or format
    link = _link_name(name, store, rref2dref(r), r) if name else f"result-{undref(rref2dref(r))[1]}"
    return _link(store, store.rref_path(r), r, destdir, link)


def linkdref(
    dref: DRef,
    destdir: str | None = None,
    name: str | None = None,
    S: Any = None,
    *,
    format: str | None = None,
) -> Path:
    """Make a symlink to a derivation's folder; gc keeps the derivation while the link exists.

    `name` may be a Pylightnix `format` such as ``'_rref_%(N)s'``.
    """
    store = recorded_store(S)
    d = parse_dref(dref)
    name = name or format
    link = _link_name(name, store, d, None) if name else f"drv-{undref(d)[1]}"
    return _link(store, store.dref_path(d), d, destdir, link)


def _folder(ref: Any, store: Any) -> str:
    if isrref(ref):
        return store.rref_path(parse_rref(ref))
    if isdref(ref):
        return store.dref_path(parse_dref(ref))
    raise InvalidReferenceError(f"expected a DRef or an RRef, got {ref!r}")


def lsref(ref: DRef | RRef, S: Any = None) -> list[str]:
    """Names in the folder of a derivation or realization."""
    return sorted(os.listdir(_folder(ref, recorded_store(S))))


def catref(ref: Any, fn: list[str] | None = None, S: Any = None) -> list[str]:
    """Lines of a file in a realization: ``catref(rref, ['out.txt'])``, ``catref([dref,
    'out.txt'])`` (a derivation with one realization), or of a file path, as in Pylightnix.

    Raises InvalidReferenceError (an AssertionError) for a DRef alone: a derivation has
    no artifacts (Pylightnix asserts there too).
    """
    store = store_of(S)
    if isrefpath(ref):
        rrefs = store.catalogue.realizations_any_context(parse_dref(ref[0]))
        if len(rrefs) != 1:
            raise InvalidReferenceError(f"{ref[0]} has {len(rrefs)} realizations; pass an RRef")
        path = os.path.join(store.rref_path(rrefs[0]), *ref[1:])
    elif isdref(ref):
        raise InvalidReferenceError(
            f"catref reads a realization's file; {ref} is a derivation, give one of its RRefs"
        )
    elif isinstance(ref, str) and not isrref(ref) and os.path.isfile(ref):
        path = ref
    else:
        path = os.path.join(_folder(ref, store), *(fn or []))
    with open(path, encoding="utf-8") as f:
        return f.readlines()


def du(S: Any = None) -> dict[DRef, tuple[int, dict[RRef, int]]]:
    """Bytes used per derivation: ``{dref: (total, {rref: size})}`` (from the catalogue).

    As in Pylightnix, a realization counts the files of its folder, and a
    derivation's total is its config.json plus its realizations, so every
    derivation, realized or not, uses some bytes.
    """
    store = recorded_store(S)
    out: dict[DRef, tuple[int, dict[RRef, int]]] = {
        d: (size, {}) for d, size in store.catalogue.config_sizes()
    }
    for rref, dref, size in store.catalogue.sizes():
        total, per = out.get(dref, (0, {}))
        per[rref] = size
        out[dref] = (total + size, per)
    return out


def find(name: Any = None, newer: float | None = None, S: Any = None) -> list[RRef]:
    """Realizations whose derivation name matches `name` and that were built after `newer`.

    `name` is a shell-style glob, or a stage function (its config's name is
    used). `newer` is a Unix time; zero or negative counts back from now
    (``newer=-3600``: the last hour).
    """
    store = store_of(S)
    if callable(name):
        from lightstore.compat.registry import Registry, instantiate

        _, closure = instantiate(name, r=Registry(store))
        name = undref(closure.targets[-1])[1]  # the name its DRef carries
    since = None if newer is None else (newer if newer > 0 else time.time() + newer)
    return store.catalogue.find_realizations(None if name is None else str(name), since)


def diff(a: DRef | RRef, b: DRef | RRef, S: Any = None) -> str:
    """A unified diff of the configs of two derivations (or realizations)."""
    store = store_of(S)

    def text(ref: Any) -> list[str]:
        if callable(ref):  # a stage, as Pylightnix's diff accepts: its one target
            from lightstore.compat.registry import Registry, instantiate

            _, closure = instantiate(ref, r=Registry(store))
            ref = closure.targets[-1]
        d = rref2dref(ref) if isrref(ref) else parse_dref(ref)
        return json.dumps(store.config(d), indent=2, sort_keys=True).splitlines(keepends=True)

    return "".join(difflib.unified_diff(text(a), text(b), fromfile=str(a), tofile=str(b)))
