"""Pylightnix's type names (module ``pylightnix.types``), over lightstore's own types.

Most are aliases: `DRef`, `RRef`, `Path`, `Registry`, `Build`, `Closure`,
`Derivation`, `Config` and `StorageSettings` are lightstore's classes. The
rest are small types that only the Pylightnix vocabulary needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NewType, TypeVar, Union

from lightstore.compat.output import Output, RConfig
from lightstore.compat.registry import Closure, Derivation, Registry
from lightstore.compat.wrapper import Build, BuildArgs
from lightstore.foundation.errors import LightstoreError, PromiseError
from lightstore.foundation.refs import Context, DRef, HashPart, Name, Path, RefPath, RRef
from lightstore.store import StorageSettings

#: A path to a store (a plain `str`, typed for readers).
SPath = NewType("SPath", Path)


class Hash(str):
    """A full hash digest in hex (a plain `str`, typed for readers)."""

    __slots__ = ()


#: Pylightnix's base exception is lightstore's: ``except PylightnixException`` catches ours.
PylightnixException = LightstoreError
#: A realizer did not create a promised path (`.failed` lists ``(folder, refpath)``).
PromiseException = PromiseError


#: Extra arguments a stage is instantiated with (kept for signatures; always ``{}``).
InstantiateArg = dict[str, Any]
#: The extra argument `realize(..., realize_args={dref: arg})` passes to a realizer.
RealizeArg = Any
#: ``(S, rrefs) -> None | [rref, ...]``: which realizations to use, or None to build.
Matcher = Callable[[StorageSettings, list[RRef]], Union[list[RRef], None]]  # noqa: UP007
#: ``(S, dref, context, realize_arg) -> [output folder, ...]``.
Realizer = Callable[[StorageSettings, DRef, Context, Any], list[str]]
#: ``(S, Output[RRef]) -> Output[RRef] | None``: a matcher over `Output` values.
MatcherO = Callable[[Any, Output[RRef]], Union[Output[RRef], None]]  # noqa: UP007
#: ``(S, dref, context, realize_arg) -> Output[Path]``: a realizer returning `Output`.
RealizerO = Callable[[Any, DRef, Context, Any], Output[Path]]


class ConfigAttrs:
    """A config's fields as attributes (superseded by lenses, kept for old code)."""

    def __init__(self, d: dict[str, Any]) -> None:
        for k, v in d.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return f"ConfigAttrs({vars(self)!r})"


DRefLike = TypeVar("DRefLike", bound=DRef)
#: What a stage returns: a DRef, or lists, tuples and dicts holding DRefs.
StageResult = Union[DRef, list[DRef], dict[Any, DRef], tuple[DRef, ...]]  # noqa: UP007
#: A stage: a function of ``r=Registry`` (and more arguments) returning a `StageResult`.
Stage = Callable[..., StageResult]

__all__ = [
    "Build",
    "BuildArgs",
    "Closure",
    "ConfigAttrs",
    "Context",
    "DRef",
    "DRefLike",
    "Derivation",
    "Hash",
    "HashPart",
    "InstantiateArg",
    "Matcher",
    "MatcherO",
    "Name",
    "Output",
    "Path",
    "PromiseException",
    "PylightnixException",
    "RConfig",
    "RRef",
    "RealizeArg",
    "Realizer",
    "RealizerO",
    "RefPath",
    "Registry",
    "SPath",
    "Stage",
    "StageResult",
]
