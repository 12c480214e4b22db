"""Metrics: numbers recorded about a realization, kept in the catalogue's `metrics` table.

They are part of the record, not of the content hash. A realizer records them
with `build_metric`/`build_metrics` (they are stored by the transaction that
publishes the realization); `Store.set_metric` attaches one afterwards. A
value may be NaN or infinite (a diverged run is a result). A metric is either
one number or a series over integer steps (a curve: ``step=epoch``), never
both: its row in `metrics` then holds the value at the last step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightstore.foundation.errors import InvalidMetricError

Number = int | float
#: A series: step -> value.
Series = dict[int, Number]
#: Letters, digits and ``_ . - /``, starting with a letter or ``_``; at most 128 characters.
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]{0,127}")
_INT64 = 2**63
#: How a value that is not finite is written where JSON must hold it (what float() reads).
NON_FINITE_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def check_metric_name(name: Any) -> str:
    """Return `name` if it is a valid metric name; raise InvalidMetricError if not."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise InvalidMetricError(
            f"invalid metric name {name!r}: use 1-128 letters, digits, '_', '.', '-' or '/', "
            "starting with a letter or '_' (for example 'loss' or 'val.accuracy')"
        )
    return name


def check_metric_value(name: str, value: Any) -> Number:
    """Return `value` as an int or a float (NaN and infinities included) if it is a number;
    raise InvalidMetricError if not.

    numpy scalars are accepted (converted); bools, strings and integers beyond
    64 bits are refused.
    """
    if isinstance(value, bool) or not _is_number(value):
        raise InvalidMetricError(
            f"metric {name!r}: the value must be an int or a float, got "
            f"{type(value).__name__} {value!r}"
        )
    if _is_integral(value):
        number = int(value)
        if not -_INT64 <= number < _INT64:
            raise InvalidMetricError(
                f"metric {name!r}: the integer {number} does not fit in 64 bits; "
                "record it as a float"
            )
        return number
    return float(value)


def check_step(name: str, step: Any) -> int:
    """Return `step` as an int if it is an integer of 64 bits (numpy's too); raise
    InvalidMetricError if not."""
    if isinstance(step, bool) or not (_is_number(step) and _is_integral(step)):
        raise InvalidMetricError(
            f"metric {name!r}: a step is an integer (an epoch, an iteration), got "
            f"{type(step).__name__} {step!r}"
        )
    number = int(step)
    if not -_INT64 <= number < _INT64:
        raise InvalidMetricError(f"metric {name!r}: the step {number} does not fit in 64 bits")
    return number


def _is_number(value: Any) -> bool:
    if isinstance(value, int | float):
        return True
    # numpy scalars, without importing numpy: np.float64 is a float already,
    # np.int64 / np.float32 are not.
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return kind in ("i", "u", "f") and getattr(value, "shape", None) == ()


def _is_integral(value: Any) -> bool:
    if isinstance(value, int):
        return True
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return kind in ("i", "u")


def check_metrics(metrics: Any) -> dict[str, Number]:
    """Validate a mapping of metric names to values; return a plain dict."""
    if not isinstance(metrics, Mapping):
        raise InvalidMetricError(
            f"metrics must be a mapping of names to numbers, got {type(metrics).__name__}"
        )
    return {check_metric_name(k): check_metric_value(k, v) for k, v in metrics.items()}


# -- JSON ------------------------------------------------------------------------------------


def encode_value(value: Number) -> Number | str:
    """`value` as JSON can hold it: a number, or ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    return value


def decode_value(name: str, raw: Any) -> Number:
    """A metric value read from JSON (`encode_value`'s output, or a JSON parser's
    infinity); raise InvalidMetricError if it is none."""
    if isinstance(raw, str):
        if raw not in NON_FINITE_TEXT:
            raise InvalidMetricError(
                f"metric {name!r}: the text {raw[:40]!r} is not a value "
                "(only 'NaN', 'Infinity' and '-Infinity' are)"
            )
        return NON_FINITE_TEXT[raw]
    return check_metric_value(name, raw)


def encode_metrics(metrics: Mapping[str, Number]) -> dict[str, Number | str]:
    """Metrics as JSON can hold them (`encode_value`)."""
    return {k: encode_value(v) for k, v in metrics.items()}


def decode_metrics(raw: Any) -> dict[str, Number]:
    """Metrics read from JSON (`encode_metrics`); raise InvalidMetricError if malformed."""
    if not isinstance(raw, Mapping):
        raise InvalidMetricError(
            f"metrics must be a mapping of names to numbers, got {type(raw).__name__}"
        )
    return {check_metric_name(k): decode_value(k, v) for k, v in raw.items()}


def encode_series(series: Mapping[str, Series]) -> dict[str, list[list[Number | str]]]:
    """Series as JSON: ``{name: [[step, value], ...]}``, steps in order."""
    return {
        name: [[step, encode_value(points[step])] for step in sorted(points)]
        for name, points in series.items()
    }


def decode_series(raw: Any) -> dict[str, Series]:
    """Series read from JSON (`encode_series`); raise InvalidMetricError if malformed
    (a step listed twice included)."""
    if not isinstance(raw, Mapping):
        raise InvalidMetricError(f"series must be a mapping of names, got {type(raw).__name__}")
    out: dict[str, Series] = {}
    for name, pairs in raw.items():
        check_metric_name(name)
        if not isinstance(pairs, list) or not pairs:
            raise InvalidMetricError(f"the series {name!r} is not a list of [step, value] pairs")
        points: Series = {}
        for pair in pairs:
            if not isinstance(pair, list) or len(pair) != 2:
                raise InvalidMetricError(f"the series {name!r} holds {pair!r:.60}, not a pair")
            step = check_step(name, pair[0])
            if step in points:
                raise InvalidMetricError(f"the series {name!r} lists the step {step} twice")
            points[step] = decode_value(name, pair[1])
        out[name] = points
    return out


# -- what a running build recorded -----------------------------------------------------------


@dataclass
class PendingMetrics:
    """The metrics a running build recorded for one output folder: plain values and
    series. `publish` takes them into the transaction that records the realization."""

    values: dict[str, Number] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)

    def check(self, names: Iterable[str], step: int | None = None) -> None:
        """Raise InvalidMetricError if one of `names`, recorded at `step` (None: one
        number), would be both one number and a series."""
        for name in names:
            if step is None and name in self.series:
                raise mixed_kinds(name, series=True)
            if step is not None and name in self.values:
                raise mixed_kinds(name, series=False)

    def record(self, checked: Mapping[str, Number], step: int | None = None) -> None:
        """Keep validated values (at `step`, for series). Raises InvalidMetricError, keeping
        nothing, if a name would be both one number and a series."""
        self.check(checked, step)
        if step is None:
            self.values.update(checked)
        else:
            for name, value in checked.items():
                self.series.setdefault(name, {})[step] = value


def mixed_kinds(name: str, series: bool) -> InvalidMetricError:
    """The error for a metric recorded both as one number and as a series."""
    if series:
        return InvalidMetricError(
            f"metric {name!r} is a series over steps: give a step, or record the number "
            f"under another name (say {name + '.final'!r})"
        )
    return InvalidMetricError(
        f"metric {name!r} is one number, not a series: record the series under another "
        f"name (say {name + '.curve'!r}), or remove the metric first"
    )


def series_summary(points: Mapping[int, Number]) -> dict[str, Any]:
    """What `show` says of a series: steps, first and last step, last value, and the
    smallest and largest value with their steps (NaN is never the smallest nor the
    largest; None when every value is NaN)."""
    steps = sorted(points)
    numbers = [(points[s], s) for s in steps if points[s] == points[s]]
    low = min(numbers, key=lambda p: p[0]) if numbers else (None, None)
    high = max(numbers, key=lambda p: p[0]) if numbers else (None, None)
    return {
        "steps": len(steps),
        "first_step": steps[0],
        "last_step": steps[-1],
        "last": points[steps[-1]],
        "min": low[0],
        "min_step": low[1],
        "max": high[0],
        "max_step": high[1],
    }
