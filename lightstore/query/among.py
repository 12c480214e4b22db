"""Selecting among runs that are in no catalogue (what a remote cache holds), with the
references and selectors `resolve` takes in a store, and ordering them as `history --sort`.

A reference designates runs: a full RRef itself, a full DRef (or a hash prefix of one, or
the name of exactly one derivation) all its runs, a hash prefix of a run (``3fa2``,
``3fa2-1b7e``) that run; a selector (``train@latest``, ``'train[lr=0.01]@all'``) what it
selects, a selector without ``@latest``/``@all`` all the runs of the derivations it
matches. Pins are a store's own: they mean nothing here. Conditions hold as they do in a
store (`ConfigCondition.holds`), and ``@latest`` is the run that finished last.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from lightstore.foundation.errors import (
    InvalidMetricError,
    InvalidReferenceError,
    InvalidSelectorError,
    QueryError,
    UnknownReferenceError,
)
from lightstore.foundation.metrics import Number, Series, check_metric_name
from lightstore.foundation.refs import isdref, isrref
from lightstore.query.resolve import _NAME_RE, _PREFIX_RE, _ambiguous
from lightstore.query.selectors import Selector, is_selector, parse_selector
from lightstore.query.shortrefs import MIN_PREFIX
from lightstore.query.upstream import value_order


class Run(Protocol):
    """What selecting among runs reads of each one."""

    @property
    def rref(self) -> str: ...
    @property
    def dref(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def config(self) -> Mapping[str, Any] | None: ...
    @property
    def build_started(self) -> float | None: ...
    @property
    def build_stopped(self) -> float | None: ...
    @property
    def metrics(self) -> Mapping[str, Number]: ...
    @property
    def series(self) -> Mapping[str, Series]: ...


R = TypeVar("R", bound=Run)


def needs_details(text: str) -> bool:
    """Whether selecting `text` reads more than the runs' references (configs, times)."""
    return is_selector(text.strip())


def select_among(text: str, runs: Sequence[R], where: str) -> list[R]:
    """The runs of `runs` that `text` designates (see the module docstring), oldest first.

    `where` names the place in messages ("on the remote file:///srv/cache"). Raises
    UnknownReferenceError if nothing matches, AmbiguousReferenceError for a hash prefix or
    a name that matches several objects, InvalidReferenceError (InvalidSelectorError) for
    text that is neither.
    """
    if not isinstance(text, str):
        raise InvalidReferenceError(f"a reference is text, not {type(text).__name__}: {text!r}")
    text = text.strip()
    if isrref(text):
        found = [r for r in runs if r.rref == text]
        if not found:
            raise UnknownReferenceError(f"{where}: no run {text}", text)
        return found
    if isdref(text):
        return _runs_of([text], runs, text, where)
    if is_selector(text):
        return _select(parse_selector(text), text, runs, where)
    m = _PREFIX_RE.fullmatch(text)
    if m:
        kind, prefix, dprefix = m.group(1), m.group(2), m.group(3)
        found_refs = _prefix(runs, prefix, kind, dprefix)
        if len(found_refs) == 1:
            ref = found_refs[0]
            return [r for r in runs if r.rref == ref] if isrref(ref) else _runs_of([ref], runs)
        if found_refs:
            raise _ambiguous(text, found_refs)
        if kind:
            raise UnknownReferenceError(f"{where}: no {kind} starts with {text!r}", text)
    if _NAME_RE.fullmatch(text):
        drefs = sorted({r.dref for r in runs if r.name == text})
        if len(drefs) == 1:
            return _runs_of(drefs, runs)
        if drefs:
            raise _ambiguous(text, drefs, name=True)
        hint = f" (a hash prefix needs at least {MIN_PREFIX} hex digits)" if m is None else ""
        raise UnknownReferenceError(
            f"{where}: no run has a hash starting with {text!r} nor the name {text!r}{hint}",
            text,
        )
    raise InvalidReferenceError(
        f"{text!r} is not a reference: give a DRef, an RRef, a hash prefix of at least "
        f"{MIN_PREFIX} hex digits, a derivation name or a selector (NAME@latest)"
    )


def _prefix(runs: Sequence[Run], prefix: str, kind: str | None, dprefix: str | None) -> list[str]:
    found: set[str] = set()
    for r in runs:
        rhash, dhash = r.rref[5:].split("-")[:2]
        if dprefix is not None:
            if kind != "dref" and rhash.startswith(prefix) and dhash.startswith(dprefix):
                found.add(r.rref)
            continue
        if kind in (None, "rref") and rhash.startswith(prefix):
            found.add(r.rref)
        if kind in (None, "dref") and dhash.startswith(prefix):
            found.add(r.dref)
    return sorted(found)


def _by_time(runs: list[R]) -> list[R]:
    return sorted(runs, key=lambda r: (r.build_stopped is not None, r.build_stopped or 0, r.rref))


def _runs_of(drefs: Sequence[str], runs: Sequence[R], text: str = "", where: str = "") -> list[R]:
    wanted = set(drefs)
    found = _by_time([r for r in runs if r.dref in wanted])
    if not found:
        raise UnknownReferenceError(f"{where}: no run of {text}", text)
    return found


def _select(sel: Selector, text: str, runs: Sequence[R], where: str) -> list[R]:
    base = sel.base
    if isrref(base):
        raise InvalidSelectorError(
            f"invalid selector {text!r}: {base} is a realization; a selector starts from a "
            "derivation name, DRef or hash prefix",
            text,
        )
    m = _PREFIX_RE.fullmatch(base)
    prefixed = _prefix(runs, m.group(2), "dref", None) if m and not m.group(3) else []
    if isdref(base):
        named = [r for r in runs if r.dref == base]
    elif prefixed:
        if len(prefixed) > 1:
            raise _ambiguous(base, prefixed)
        named = [r for r in runs if r.dref == prefixed[0]]
    elif _NAME_RE.fullmatch(base.replace("*", "").replace("?", "") or "x"):
        named = [r for r in runs if fnmatch.fnmatchcase(r.name, base)]
    else:
        raise InvalidSelectorError(
            f"invalid selector {text!r}: {base!r} is not a derivation name, glob, DRef or "
            "hash prefix",
            text,
        )
    if not named:
        raise UnknownReferenceError(
            f"{where}: no derivation matches {base!r}; list them with `lightstore remote-ls`",
            text,
        )
    kept = named
    for cond in sel.conditions:
        matching = [r for r in kept if cond.holds(r.config or {})]
        if not matching:
            values = sorted({v for r in kept if (v := _shown(r.config, cond.field)) is not None})
            shown = ", ".join(values[:10]) + (", ..." if len(values) > 10 else "")
            raise UnknownReferenceError(
                f"{where}: no derivation {base!r} has {cond.field} {cond.op} {cond.value}"
                f" (values of {cond.field} there: {shown or 'none: the field is missing'})",
                text,
            )
        kept = matching
    ordered = _by_time(kept)
    if sel.pick == "latest":
        return ordered[-1:]
    return ordered


def _shown(config: Mapping[str, Any] | None, field: str) -> str | None:
    value = field_value_of(config, field)
    return None if value is None else json.dumps(value, sort_keys=True)


# -- ordering, as `history --sort` ------------------------------------------------

#: Columns of a run that are not config fields nor metrics.
TIME_KEYS = ("started", "stopped", "duration")
_SUMMARIES: dict[str, Callable[[Series], Number | None]] = {
    "last": lambda s: s[max(s)] if s else None,
    "first": lambda s: s[min(s)] if s else None,
    "min": lambda s: min((v for v in s.values() if v == v), default=None),
    "max": lambda s: max((v for v in s.values() if v == v), default=None),
    "steps": len,
}


def check_metric(metric: str) -> tuple[str, str | None]:
    """``loss`` or ``loss:min`` as (name, summary); QueryError if invalid (as `history -m`)."""
    name, colon, summary = metric.partition(":")
    try:
        check_metric_name(name)
    except InvalidMetricError as e:
        raise QueryError(str(e)) from None
    if colon and summary not in _SUMMARIES:
        raise QueryError(
            f"unknown summary {summary!r} of the metric {name!r}: use "
            f"{', '.join(f'{name}:{a}' for a in _SUMMARIES)}"
        )
    return name, summary if colon else None


def metric_value(run: Run, metric: str) -> Number | None:
    """A run's value of `metric` (``loss``, or a series summary ``loss:min``), as history
    shows it: a series' value at its last step, the plain metric when there is no series."""
    name, summary = check_metric(metric)
    series = run.series.get(name)
    if summary == "steps":
        return len(series) if series else 0
    if series and summary not in (None, "last"):
        value = _SUMMARIES[summary](series)
        if value is not None:
            return value
    return run.metrics.get(name, series[max(series)] if series else None)


def time_value(run: Run, key: str) -> float | None:
    """``started``, ``stopped`` or ``duration`` (seconds) of a run."""
    if key == "started":
        return run.build_started
    if key == "stopped":
        return run.build_stopped
    if run.build_started is None or run.build_stopped is None:
        return None
    return run.build_stopped - run.build_started


def field_value(run: Run, field: str) -> Any:
    """A config field (dotted) of a run, or None."""
    return field_value_of(run.config, field)


def field_value_of(config: Mapping[str, Any] | None, field: str) -> Any:
    """A dotted field of a config, or None."""
    value: Any = config or {}
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def sort_runs(runs: Sequence[R], sort: str, metrics: Sequence[str] = ()) -> list[R]:
    """`runs` ordered by `sort` as `history --sort` orders them: a key of ``started``,
    ``stopped``, ``duration``, a metric (`metrics`, or any with a ``:summary``) or else a
    config field; ``-KEY`` descending; missing values (and NaN) last, whatever the
    direction; ties by finish time, then RRef. Raises QueryError for a malformed key."""
    descending = sort.startswith("-")
    key = sort[1:] if descending else sort
    if not key:
        raise QueryError("--sort needs a column: a metric, a config field, started, duration")
    value: Callable[[Run], Any]
    if key in TIME_KEYS:
        value = lambda r: time_value(r, key)  # noqa: E731
    elif key in metrics or ":" in key:
        check_metric(key)
        value = lambda r: metric_value(r, key)  # noqa: E731
    else:
        try:
            check_metric(key)
            is_metric_name = True
        except QueryError:
            is_metric_name = False
        if is_metric_name and any(key in r.metrics or key in r.series for r in runs):
            value = lambda r: metric_value(r, key)  # noqa: E731
        else:
            value = lambda r: field_value(r, key)  # noqa: E731
    ordered = _by_time(list(runs))
    present = [
        r
        for r in ordered
        if (v := value(r)) is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    present.sort(key=lambda r: value_order(value(r)), reverse=descending)
    kept = {id(r) for r in present}
    return present + [r for r in ordered if id(r) not in kept]


__all__ = [
    "Run",
    "check_metric",
    "field_value",
    "metric_value",
    "needs_details",
    "select_among",
    "sort_runs",
    "time_value",
]
