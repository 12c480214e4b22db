"""Tags and notes: text attached to a realization's record, not to any hash.

A tag is a name with a text value (often empty: ``baseline``; or ``status=diverged``),
one value per name; a note is free text, as many as wanted. Both say who attached
them (`author`) and when. Names follow the rule of metric names.
"""

from __future__ import annotations

import functools
import getpass
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lightstore.foundation.errors import InvalidAnnotationError

#: Letters, digits and ``_ . - /``, starting with a letter or ``_``; at most 128 characters.
TAG_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]{0,127}")
#: The longest tag value, in characters.
MAX_TAG_VALUE = 1024
#: The longest note, in characters.
MAX_NOTE = 64 * 1024


@dataclass(frozen=True)
class Tag:
    """A tag of a realization: its value, when it was set and by whom (``user@host``)."""

    name: str
    value: str
    recorded: float
    author: str | None = None


@dataclass(frozen=True)
class Note:
    """A note about a realization; `id` names it in this store (for `remove_note`)."""

    id: int | None
    text: str
    recorded: float
    author: str | None = None


def check_tag_name(name: Any) -> str:
    """Return `name` if it is a valid tag name; raise InvalidAnnotationError if not."""
    if not isinstance(name, str) or TAG_NAME_PATTERN.fullmatch(name) is None:
        raise InvalidAnnotationError(
            f"invalid tag name {name!r}: use 1-128 letters, digits, '_', '.', '-' or '/', "
            "starting with a letter or '_' (for example 'baseline' or 'paper.fig3')"
        )
    return name


def _text(text: Any, what: str, most: int) -> str:
    if not isinstance(text, str):
        raise InvalidAnnotationError(f"{what} is text, not {type(text).__name__}")
    if len(text) > most:
        raise InvalidAnnotationError(f"{what} is longer than {most} characters")
    if "\0" in text:
        raise InvalidAnnotationError(f"{what} holds a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeError:
        raise InvalidAnnotationError(
            f"{what} holds a lone surrogate (text that is not Unicode)"
        ) from None
    return text


def check_tag_value(name: str, value: Any) -> str:
    """Return `value` if it can be a tag's value: text of at most `MAX_TAG_VALUE`
    characters, no NUL, valid Unicode; raise InvalidAnnotationError if not."""
    return _text(value, f"the value of the tag {name!r}", MAX_TAG_VALUE)


def check_note_text(text: Any) -> str:
    """Return `text` if it can be a note: non-empty text of at most `MAX_NOTE`
    characters, no NUL, valid Unicode; raise InvalidAnnotationError if not."""
    text = _text(text, "a note", MAX_NOTE)
    if not text.strip():
        raise InvalidAnnotationError("a note needs some text")
    return text


def check_author(author: Any) -> str | None:
    """An author as recorded (``user@host``, at most 256 characters), or None."""
    if author is None:
        return None
    return _text(author, "an author", 256)


@functools.cache
def author() -> str:
    """Who this process attaches tags and notes as: ``user@host``."""
    import socket

    try:
        user = getpass.getuser()
    except (OSError, KeyError, ImportError):  # no login name and no passwd entry
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def parse_tag(text: str) -> tuple[str, str | None]:
    """``NAME`` -> (NAME, None); ``NAME=VALUE`` -> (NAME, VALUE), the name checked.

    Raises InvalidAnnotationError for a malformed name.
    """
    name, eq, value = text.partition("=")
    return check_tag_name(name.strip()), (value if eq else None)


# -- JSON (archives and remote manifests) -----------------------------------------------------

#: The latest time a recorded tag or note may carry: the end of year 9999.
_MAX_TIME = 253402300799


def _recorded(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= _MAX_TIME:
        raise InvalidAnnotationError(f"{what} has the time {value!r:.40}, not one of 1970-9999")
    return float(value)


def encode_tags(tags: Iterable[Tag]) -> list[dict[str, Any]]:
    """Tags as JSON: ``[{"name", "value", "recorded", "author"}, ...]`` by name."""
    return [
        {"name": t.name, "value": t.value, "recorded": t.recorded, "author": t.author}
        for t in sorted(tags, key=lambda t: t.name)
    ]


def decode_tags(raw: Any) -> list[Tag]:
    """Tags read from JSON (`encode_tags`); raise InvalidAnnotationError if malformed."""
    if not isinstance(raw, list):
        raise InvalidAnnotationError(f"tags are a list, not {type(raw).__name__}")
    out: dict[str, Tag] = {}
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidAnnotationError(f"a tag is an object, not {item!r:.60}")
        name = check_tag_name(item.get("name"))
        if name in out:
            raise InvalidAnnotationError(f"the tag {name!r} is listed twice")
        out[name] = Tag(
            name,
            check_tag_value(name, item.get("value")),
            _recorded(item.get("recorded"), f"the tag {name!r}"),
            check_author(item.get("author")),
        )
    return list(out.values())


def encode_notes(notes: Iterable[Note]) -> list[dict[str, Any]]:
    """Notes as JSON: ``[{"text", "recorded", "author"}, ...]``, oldest first (their ids
    are this store's own)."""
    return [{"text": n.text, "recorded": n.recorded, "author": n.author} for n in notes]


def decode_notes(raw: Any) -> list[Note]:
    """Notes read from JSON (`encode_notes`); raise InvalidAnnotationError if malformed."""
    if not isinstance(raw, list):
        raise InvalidAnnotationError(f"notes are a list, not {type(raw).__name__}")
    out: list[Note] = []
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidAnnotationError(f"a note is an object, not {item!r:.60}")
        out.append(
            Note(
                None,
                check_note_text(item.get("text")),
                _recorded(item.get("recorded"), "a note"),
                check_author(item.get("author")),
            )
        )
    return out
