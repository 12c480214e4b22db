"""Pylightnix's small value types that matchers, realizers and builds hand around:
`Output` and `RConfig`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from lightstore.foundation.refs import RRef

_REF = TypeVar("_REF")


class Output(Generic[_REF]):
    """An ordered collection of output folders (`Path`) or realizations (`RRef`) in `val`
    (Pylightnix's type for matchers and realizers that use it)."""

    def __init__(self, val: Iterable[_REF]) -> None:
        self.val: list[_REF] = list(val)

    def __repr__(self) -> str:
        return f"Output({self.val!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Output) and self.val == other.val

    __hash__ = None  # type: ignore[assignment]


class RConfig(dict[str, Any]):
    """A config dict whose ``[selfref, ...]`` promises are resolved to the derivation's DRef.

    It is a `dict`; `val` gives the same dict, as Pylightnix's `RConfig.val` does.
    """

    @property
    def val(self) -> dict[str, Any]:
        """The dict itself."""
        return self


def with_val(rrefs: list[RRef]) -> list[RRef]:
    """`rrefs` as a list that is also an `Output` (with `.val`), keeping its class."""
    cls = _VAL_CLASSES.get(type(rrefs))
    if cls is None:
        base = type(rrefs) if isinstance(rrefs, list) else list
        cls = type(base.__name__, (base, Output), {"val": property(lambda self: list(self))})
        _VAL_CLASSES[type(rrefs)] = cls
    return cls(rrefs)


_VAL_CLASSES: dict[type, type] = {}
