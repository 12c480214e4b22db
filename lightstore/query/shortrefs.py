"""Short forms of references for tables, trees and graphs: the shortest text that still
designates one object (``3fa2c9d1``, or ``3fa2c9d1-1b7e`` for runs of different derivations
with identical outputs), as `lightstore.query.resolve` reads them back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from lightstore.catalogue import Catalogue
from lightstore.store.view import StoreView

#: The fewest hex digits a hash prefix may have (as git's).
MIN_PREFIX = 4
#: Hex digits a short form starts with.
_SHORT = 8


def short_forms(rrefs: Sequence[str]) -> dict[str, str]:
    """``<R>-<H>`` short forms (8 hex digits each, more where two of `rrefs` would share
    one) that `resolve` accepts: what tells apart runs with identical outputs."""
    out: dict[str, str] = {}
    for rref in rrefs:
        rhash, dhash = rref.split(":", 1)[1].split("-")[:2]
        same_r = [r for r in rrefs if r != rref and r.split(":", 1)[1].startswith(rhash)]
        n = _SHORT
        while n < 32 and any(r.split("-")[1].startswith(dhash[:n]) for r in same_r):
            n += 1
        out[rref] = f"{rhash[:_SHORT]}-{dhash[:n]}"
    return out


#: The 8-digit prefixes more than one reference (of either kind) has: a scan of both tables'
#: primary keys, cheaper than a lookup per prefix for long listings.
_EVERY_SHARED_PREFIX = """
SELECT p FROM (
  SELECT substr(rref, 6, 8) AS p FROM realizations
  UNION ALL SELECT substr(dref, 6, 8) FROM derivations
) GROUP BY p HAVING count(*) > 1"""
_KINDS = ("dref:", "rref:")
#: Past this many prefixes, `_EVERY_SHARED_PREFIX` first (it costs about 5,000 lookups).
_SCAN_FROM = 5_000
#: The references sharing each of the given 8-digit prefixes, for the prefixes that more than
#: one reference (of either kind) has: a range of the primary key per prefix.
_SHARED_PREFIXES = """
SELECT p, group_concat(ref) FROM (
  SELECT j.value AS p, r.rref AS ref FROM json_each(:p) AS j JOIN realizations AS r
    ON r.rref >= 'rref:' || j.value AND r.rref < 'rref:' || j.value || 'g'
  UNION ALL
  SELECT j.value, d.dref FROM json_each(:p) AS j JOIN derivations AS d
    ON d.dref >= 'dref:' || j.value AND d.dref < 'dref:' || j.value || 'g'
) GROUP BY p HAVING count(*) > 1"""


def short_refs(store: StoreView | Catalogue, refs: Iterable[Any]) -> dict[str, str]:
    """The shortest form of each reference in `refs` (other values are left out) that
    `resolve` takes to it alone in this store: the first 8 hex digits of its hash, unless
    another reference has them too; then a
    derivation's longer prefix, or a realization's ``<R8>-<H>``, ``<H>`` being the shortest
    prefix (4 or more digits) of its derivation's hash that tells it from the others (runs
    of different derivations with identical outputs share ``<R>`` whole). One statement,
    an index lookup per distinct prefix."""
    catalogue = store.catalogue if isinstance(store, StoreView) else store
    # 'dref:' and 'rref:' are 5 characters: the hash starts at 5.
    out = {r: r[5 : 5 + _SHORT] for r in refs if isinstance(r, str) and r.startswith(_KINDS)}
    if not out:
        return out
    prefixes = set(out.values())
    if len(prefixes) > _SCAN_FROM:
        prefixes &= set(catalogue.column(_EVERY_SHARED_PREFIX))
        if not prefixes:
            return out
    shared = {
        p: joined.split(",")
        for p, joined in catalogue.query(_SHARED_PREFIXES, {"p": json.dumps(sorted(prefixes))})
    }
    if not shared:
        return out
    for ref in list(out):
        group = shared.get(out[ref])
        if not group:
            continue
        others = [r for r in group if r != ref]
        body = ref.split(":", 1)[1]
        if ref.startswith("rref:"):
            rhash, dhash = body.split("-")[:2]
            same = [r.split(":", 1)[1].split("-")[1] for r in others if r.startswith("rref:")]
            n = MIN_PREFIX
            while n < len(dhash) and any(d.startswith(dhash[:n]) for d in same):
                n += 1
            out[ref] = f"{rhash[:_SHORT]}-{dhash[:n]}"
        else:
            dhash = body.split("-")[0]
            hashes = [r.split(":", 1)[1].split("-")[0] for r in others]
            n = _SHORT
            while n < len(dhash) and any(h.startswith(dhash[:n]) for h in hashes):
                n += 1
            out[ref] = dhash[:n] if n < len(dhash) else f"dref:{dhash}"
    return out
