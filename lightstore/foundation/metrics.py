"""Metrics: numbers recorded about a realization, kept in the catalogue's `metrics` table.

They are part of the record, not of the content hash. A realizer records them
with `build_metric`/`build_metrics` (they are stored by the transaction that
publishes the realization); `Store.set_metric` attaches one afterwards.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from lightstore.foundation.errors import InvalidMetricError

Number = int | float
#: Letters, digits and ``_ . - /``, starting with a letter or ``_``; at most 128 characters.
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]{0,127}")
_INT64 = 2**63


def check_metric_name(name: Any) -> str:
    """Return `name` if it is a valid metric name; raise InvalidMetricError if not."""
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise InvalidMetricError(
            f"invalid metric name {name!r}: use 1-128 letters, digits, '_', '.', '-' or '/', "
            "starting with a letter or '_' (for example 'loss' or 'val.accuracy')"
        )
    return name


def check_metric_value(name: str, value: Any) -> Number:
    """Return `value` as an int or float if it is a finite number; raise InvalidMetricError if not.

    numpy scalars are accepted (converted); bools, NaN, infinities, strings
    and integers beyond 64 bits are refused.
    """
    if isinstance(value, bool) or not _is_number(value):
        raise InvalidMetricError(
            f"metric {name!r}: the value must be a finite int or float, got "
            f"{type(value).__name__} {value!r}"
        )
    if _is_integral(value):
        number: Number = int(value)
        if not -_INT64 <= number < _INT64:
            raise InvalidMetricError(
                f"metric {name!r}: the integer {number} does not fit in 64 bits; "
                "record it as a float"
            )
        return number
    number = float(value)
    if not math.isfinite(number):
        raise InvalidMetricError(
            f"metric {name!r}: the value must be finite, got {number!r}; "
            "record a failed result by not recording the metric"
        )
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
