"""Hashing source code into configs, so that editing a realizer makes a new derivation."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from blake3 import blake3

from lightstore.foundation.errors import InvalidConfigError

#: The config field that holds the hash of the tracked source code.
SOURCE_FIELD = "__source__"


def source_text(obj: Any) -> str:
    """The source text of a function, class, method or module (a str is taken as source).

    Raises InvalidConfigError for objects whose source Python cannot find.
    """
    if isinstance(obj, str):
        return obj
    target = inspect.unwrap(obj) if callable(obj) else obj
    try:
        return inspect.getsource(target)
    except (OSError, TypeError) as e:
        raise InvalidConfigError(
            f"cannot read the source of {obj!r} for sourcedeps ({e}); list functions, classes or "
            "modules defined in files, or pass the source text as a str"
        ) from e


def sources_hash(objs: Sequence[Any]) -> str:
    """A hash of the source texts of `objs`, the same in every process.

    The raw text is hashed as Python returns it (no parsing), so any source
    Python can read works, backslash continuations included. Raises
    InvalidConfigError as `source_text` does.
    """
    h = blake3(b"lightstore:sources:v1\0")
    for obj in objs:
        data = source_text(obj).encode("utf-8")
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:32]
