"""Two runs side by side (`compare`), and one artifact of a run (`artifact_path`).

`compare` is what `lightstore diff A B` prints: the config fields whose
values differ (nested keys dotted), for two realizations also the
dependency realizations they were built on, and their metrics when the
catalogue has a ``metrics`` table (realization, name, value).

`artifact_path` is what `lightstore cat REF PATH` reads: a path inside one
realization's folder, confined to it (no ``..``, no absolute paths, no
symlink that leads outside).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from lightstore.foundation.errors import InvalidReferenceError, UnknownReferenceError
from lightstore.foundation.files import MAX_SYMLINKS, real_path
from lightstore.foundation.refs import DRef, RRef, isdref, isrref, rref2dref
from lightstore.query.describe import collected_realization, config_of
from lightstore.query.errors import AmbiguousReferenceError
from lightstore.query.graph import differing_fields, flatten
from lightstore.query.resolve import collected_record, resolve
from lightstore.query.upstream import derivation_upstream_fields, upstream_fields
from lightstore.store.view import StoreView

_MISSING: Any = None


def _metrics_columns(store: StoreView) -> tuple[str, str, str] | None:
    """(realization column, name column, value column) of a ``metrics`` table, if there is one."""
    rows = store.catalogue.query("SELECT name FROM pragma_table_info('metrics')")
    columns = [r[0] for r in rows]
    ref = next((c for c in ("rref", "realization") if c in columns), None)
    name = next((c for c in ("name", "metric", "key") if c in columns), None)
    if ref is None or name is None or "value" not in columns:
        return None
    return ref, name, "value"


def metrics(store: StoreView, rref: str) -> dict[str, Any] | None:
    """The metrics recorded for `rref`, or None if the catalogue has no metrics table."""
    cols = _metrics_columns(store)
    if cols is None:
        return None
    ref, name, value = cols
    rows = store.catalogue.query(
        f'SELECT "{name}", "{value}" FROM metrics WHERE "{ref}" = ? ORDER BY 1', (rref,)
    )
    # In lightstore's own table a NULL value is NaN (SQLite has none).
    return {n: math.nan if v is None else v for n, v in rows}


def _changes(a: dict[str, Any], b: dict[str, Any], flat: bool = False) -> list[dict[str, Any]]:
    """The fields of `a` and `b` whose values differ (dicts flattened, unless `flat`: the
    keys are taken as they are)."""
    if flat:
        missing = object()
        fields = sorted(
            k
            for k in {*a, *b}
            if json.dumps(a.get(k, missing), sort_keys=True, default=str)
            != json.dumps(b.get(k, missing), sort_keys=True, default=str)
        )
    else:
        fields = differing_fields([a, b])
    return [
        {
            "field": f,
            "a": a.get(f, _MISSING),
            "b": b.get(f, _MISSING),
            "in_a": f in a,
            "in_b": f in b,
        }
        for f in fields
    ]


def compare(store: StoreView, a: str, b: str, include_collected: bool = False) -> dict[str, Any]:
    """What differs between two objects (derivations or realizations, any REF form).

    Returns ``{"a", "b", "config": [...], "upstream": [...], "context": [...],
    "metrics": [...] or None, "collected": {...}}``; each change is ``{"field", "a", "b",
    "in_a", "in_b"}`` (``in_x`` is false where the field is missing). ``upstream``
    compares the config fields of the stages they were built on (``train.lr``: for
    realizations through the runs they used, for derivations through the derivations
    their configs name; references left out, their stages' fields stand for them).
    ``context`` compares the dependency realizations of two realizations (by dependency
    name); ``metrics`` is None unless both are realizations and the catalogue has a
    metrics table. With `include_collected`, `a` and `b` may designate objects gc
    removed (compared by their records); ``collected`` says, for ``"a"`` and ``"b"``,
    when and why (None where present). Raises the errors of `resolve`.
    """
    ref_a = resolve(store, a, include_collected)
    ref_b = resolve(store, b, include_collected)
    dref_a = rref2dref(ref_a) if isrref(ref_a) else DRef(ref_a)
    dref_b = rref2dref(ref_b) if isrref(ref_b) else DRef(ref_b)
    config = _changes(flatten(config_of(store, dref_a)), flatten(config_of(store, dref_b)))
    context: list[dict[str, Any]] = []
    found_metrics: list[dict[str, Any]] | None = None
    both_runs = isrref(ref_a) and isrref(ref_b)
    if both_runs:
        context = _changes(_inputs(store, RRef(ref_a)), _inputs(store, RRef(ref_b)))
        ma, mb = metrics(store, ref_a), metrics(store, ref_b)
        if ma is not None and mb is not None:
            found_metrics = _changes(ma, mb)
        up = upstream_fields(store, [ref_a, ref_b])
    else:
        up = derivation_upstream_fields(store, [dref_a, dref_b])
    ua = {k: v for k, v in up.get(ref_a if both_runs else dref_a, {}).items() if not _ref(v)}
    ub = {k: v for k, v in up.get(ref_b if both_runs else dref_b, {}).items() if not _ref(v)}
    return {
        "a": ref_a,
        "b": ref_b,
        "config": config,
        "upstream": _changes(ua, ub, flat=True),
        "context": context,
        "metrics": found_metrics,
        "collected": {
            "a": collected_record(store, ref_a) if not _present(store, ref_a) else None,
            "b": collected_record(store, ref_b) if not _present(store, ref_b) else None,
        },
    }


def _present(store: StoreView, ref: str) -> bool:
    if isrref(ref):
        return bool(store.catalogue.known_rrefs([ref]))
    return bool(store.catalogue.known_drefs([ref]))


def _ref(value: Any) -> bool:
    """Whether a config value is a reference (or a list of them)."""
    if isinstance(value, list):
        return bool(value) and all(_ref(v) for v in value)
    return isdref(value) or isrref(value)


def _inputs(store: StoreView, rref: RRef) -> dict[str, Any]:
    """The dependency realizations of `rref`, keyed by the dependency's name (or DRef if
    two dependencies share a name); a collected run's from its record."""
    if store.catalogue.known_rrefs([rref]):
        context = dict(store.context(rref))
    else:
        record = collected_realization(store, rref) or {}
        context = {DRef(k): [RRef(r) for r in v] for k, v in record.get("context", {}).items()}
    names = [d.rsplit("-", 1)[1] for d in context]
    out: dict[str, Any] = {}
    for dref, rrefs in context.items():
        name = dref.rsplit("-", 1)[1]
        key = name if names.count(name) == 1 else dref
        out[key] = rrefs[0] if len(rrefs) == 1 else list(rrefs)
    return out


def realization_of(store: StoreView, ref: str) -> RRef:
    """The one realization `ref` designates: an RRef, or a derivation with exactly one.

    Raises AmbiguousReferenceError for a derivation with several (listing
    them and suggesting ``@latest``), UnknownReferenceError for one with none.
    """
    target = resolve(store, ref)
    if isrref(target):
        return RRef(target)
    rrefs = store.catalogue.realizations_any_context(target)
    if len(rrefs) == 1:
        return rrefs[0]
    if not rrefs:
        raise UnknownReferenceError(f"{target} has no realization yet", target)
    listed = "\n  ".join(rrefs[:10])
    raise AmbiguousReferenceError(
        f"{ref!r} is a derivation with {len(rrefs)} realizations:\n  {listed}\n"
        f"pick one: {target}@latest, or give an RRef",
        list(rrefs[:10]),
    )


def artifact_path(store: StoreView, ref: str, path: str) -> str:
    """The system path of `path` inside the realization `ref` designates (see `realization_of`).

    Raises InvalidReferenceError for an absolute path, a path with ``..``, or
    one that leads outside the realization through a symlink;
    UnknownReferenceError if there is no such file.
    """
    rref = realization_of(store, ref)
    parts = path.replace("\\", "/").split("/")
    if os.path.isabs(path) or path.startswith("/") or ".." in parts or "\x00" in path:
        raise InvalidReferenceError(
            f"{path!r} is not a path inside a realization: give a relative path without '..' "
            "(see `lightstore show REF` for its files)"
        )
    folder = os.path.realpath(store.rref_path(rref))
    if not os.path.isdir(folder):
        raise UnknownReferenceError(
            f"the folder of {rref} is missing; run `lightstore verify`", rref
        )
    try:
        target = real_path(os.path.join(folder, *[p for p in parts if p not in ("", ".")]))
    except OSError:  # more links in a row than the system follows
        raise InvalidReferenceError(
            f"{path!r} in {rref} is a chain of more than {MAX_SYMLINKS} symlinks; refused"
        ) from None
    if target != folder and not target.startswith(folder + os.sep):
        raise InvalidReferenceError(
            f"{path!r} in {rref} is a symlink that leads outside the realization; refused"
        )
    if not os.path.exists(target):
        raise UnknownReferenceError(
            f"{rref} has no file {path!r}; list its files with `lightstore show {rref}`", rref
        )
    return target


def json_value(value: Any) -> str:
    """A config or metric value as short text (JSON, strings unquoted)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
