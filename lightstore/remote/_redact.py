"""Keeping credentials out of what a remote shows: URLs without user info or query, and the
strings (option values, URL credentials) a message about a remote must never contain.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Mapping
from typing import Any


def redact_url(url: str) -> str:
    """`url` without user name, password or query string (which may hold tokens)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username or parts.password:
        netloc = "***@" + netloc
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def secrets_of(url: str, options: Mapping[str, Any]) -> list[str]:
    """Strings that must never be shown: option values and URL credentials."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str) and len(value) >= 4:
            found.append(value)
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk(dict(options))
    with contextlib.suppress(ValueError):
        parts = urllib.parse.urlsplit(url)
        for s in (parts.username, parts.password, parts.query):
            if s and len(s) >= 4:
                found.append(s)
    # Longest first, so a secret containing another is removed whole.
    return sorted(set(found), key=len, reverse=True)
