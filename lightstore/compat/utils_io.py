"""Pylightnix's small file, text and graph helpers (``pylightnix.utils``, continued)."""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable
from functools import partial
from heapq import heappop, heappush
from itertools import chain
from typing import Any, TypeVar

from lightstore.foundation.errors import UsageError
from lightstore.foundation.refs import (
    Path,
)

# -- files ---------------------------------------------------------------------


def readstr(path: str) -> str:
    """The text of a file."""
    with open(path, encoding="utf-8") as f:
        return f.read()


def writestr(path: str, data: str) -> None:
    """Write text to a file."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(data)


def writejson(path: str, data: Any, indent: int | None = None) -> None:
    """Write a JSON value to a file."""
    writestr(path, json.dumps(data, indent=indent))


def readjson(json_path: str) -> Any:
    """The JSON value of a file."""
    with open(json_path, encoding="utf-8") as f:
        return json.load(f)


_A = TypeVar("_A")
_B = TypeVar("_B")
C = TypeVar("C")
D = TypeVar("D")


def trycatch(f: Callable[[], _A], default: _A, mp: Callable[[_A], _B]) -> _B:
    """``mp(f())``, or ``mp(default)`` if `f` raises an Exception."""
    try:
        return mp(f())
    except Exception:
        return mp(default)


def tryreadjson(json_path: str) -> Any | None:
    """The JSON value of a file, or None if it cannot be read or parsed."""
    return trycatch(partial(readjson, json_path), None, lambda x: x)


def maybereadjson(path: str, default: Any, mp: Callable[[Any], C]) -> C:
    """``mp`` of the JSON value of a file, or of `default`."""
    return trycatch(partial(readjson, path), default, mp)


def tryreadstr(path: str) -> str | None:
    """The text of a file, or None."""
    return trycatch(partial(readstr, path), None, lambda x: x)


def maybereadstr(path: str, default: str, mp: Callable[[str], D]) -> D:
    """``mp`` of the text of a file, or of `default`."""
    return trycatch(partial(readstr, path), default, mp)


def tryreadjson_def(json_path: str, default: Any) -> Any:
    """The JSON value of a file, or `default`."""
    return trycatch(partial(readjson, json_path), default, lambda x: x)


def tryreadstr_def(path: str, default: str) -> str:
    """The text of a file, or `default`."""
    return trycatch(partial(readstr, path), default, lambda x: x)


def tryread(path: Path) -> str | None:
    """The text of a file, or None."""
    return tryreadstr(path)


def tryread_def(path: Path, default: str) -> str:
    """The text of a file, or `default`."""
    return tryreadstr_def(path, default)


def trywrite(path: Path, data: str) -> bool:
    """Write text to a file; False if that failed."""

    def _do() -> bool:
        writestr(path, data)
        return True

    return trycatch(_do, False, lambda x: x)


def try_executable(
    name: str, envname: str, not_found_message: str | None, not_found_warning: str | None
) -> Callable[[], str]:
    """A function returning the path of executable `name` (``$envname`` first).

    If it is missing, the function raises UsageError with `not_found_message`.
    """
    exe = os.environ.get(envname) or shutil.which(name)

    def executable() -> str:
        """The path of the executable; raises UsageError if it was not found."""
        if exe is None:
            raise UsageError(not_found_message or f"{name} not found; set ${envname}")
        return str(exe)

    executable.__name__ = name
    return executable


def concat(lst: list[list[Any]]) -> list[Any]:
    """The lists of `lst`, one after the other."""
    return list(chain.from_iterable(lst))


def kahntsort(nodes: Iterable[Any], inbounds: Callable[[Any], set[Any]]) -> list[Any] | None:
    """Nodes in topological order (Kahn's algorithm, ties by value), or None if there is a cycle.

    `inbounds(n)` gives the nodes `n` depends on; those come first.
    """
    indeg: dict[Any, int] = {}
    outbounds: dict[Any, set[Any]] = defaultdict(set)
    queue: list[Any] = []
    for n in nodes:
        ins = inbounds(n)
        outbounds[n] |= set()
        indeg[n] = len(ins)
        for i in ins:
            outbounds[i].add(n)
    for n, d in indeg.items():
        if d == 0:
            heappush(queue, n)
    order: list[Any] = []
    while queue:
        n = heappop(queue)
        order.append(n)
        for o in outbounds[n]:
            if o in indeg:
                indeg[o] -= 1
                if indeg[o] == 0:
                    heappush(queue, o)
    return order if len(order) == len(indeg) else None


def dagroots(sorted_nodes: list[Any], inbounds: Callable[[Any], set[Any]]) -> set[Any]:
    """The nodes of a topologically sorted DAG that nothing depends on."""
    nonroots: set[Any] = set()
    roots: set[Any] = set()
    for node in reversed(sorted_nodes):
        if node not in nonroots:
            roots.add(node)
        nonroots |= set(inbounds(node))
    return roots
