"""Listing what a remote cache holds, by name, derivation or context, from its index."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightstore.foundation.errors import InvalidReferenceError
from lightstore.foundation.hashing import context_hash
from lightstore.foundation.refs import HASH_LEN, DRef, RRef, mkname, parse_dref, rref2dref
from lightstore.remote._fs import Remote, open_remote
from lightstore.remote._layout import dref_folder, parse_rref_key


@dataclass(frozen=True)
class RemoteRealization:
    """One realization a remote holds: its RRef, DRef and context hash."""

    rref: RRef
    dref: DRef
    context_hash: str


def _context_hash(context: Any) -> str:
    if isinstance(context, str):
        if len(context) != HASH_LEN or any(c not in "0123456789abcdef" for c in context):
            raise InvalidReferenceError(
                f"a context is a map {{DRef: [RRef, ...]}} or its {HASH_LEN}-hex hash, got {context!r}"
            )
        return context
    if isinstance(context, Mapping):
        return context_hash(context)
    raise InvalidReferenceError(
        f"a context is a map {{DRef: [RRef, ...]}} or its hash, got {type(context).__name__}"
    )


def _derivation(remote: Any, folder: str, ctx: str | None) -> list[RemoteRealization]:
    out = []
    if ctx is not None:
        keys = [f"{ctx}/{n}" for n in remote.listdir(f"index/{folder}/{ctx}")]
    else:
        keys = remote.find(f"index/{folder}")
    for key in keys:
        parts = key.split("/")
        if len(parts) != 2 or parts[1].startswith("."):
            continue
        r = parse_rref_key(folder, parts[1])
        if r is not None:
            out.append(RemoteRealization(r, rref2dref(r), parts[0]))
    return out


def list_remote(
    url: Any,
    *,
    name: str | None = None,
    dref: str | None = None,
    context: Any = None,
    storage_options: Mapping[str, Any] | None = None,
) -> list[RemoteRealization]:
    """The realizations a remote holds, sorted, optionally only of one name or derivation.

    `context` (a context map or its hash; needs `dref`) narrows to one context:
    that is one listing of the remote's index. Raises InvalidReferenceError
    for a malformed filter, RemoteError if the remote cannot be read.
    """
    remote = open_remote(url, storage_options)
    ctx = _context_hash(context) if context is not None else None
    if ctx is not None and dref is None:
        raise InvalidReferenceError("listing by context needs the derivation (dref=...)")
    if dref is not None:
        folders = [dref_folder(parse_dref(dref))]
    else:
        folders = [f for f in remote.listdir("index") if not f.startswith(".")]
        if name is not None:
            suffix = "-" + mkname(name)
            folders = [
                f for f in folders if f.endswith(suffix) and len(f) == HASH_LEN + len(suffix)
            ]
    out: list[RemoteRealization] = []
    for folder in folders:
        out += _derivation(remote, folder, ctx)
    return sorted(out, key=lambda x: (x.dref, x.rref))


def remote_realizations_of(remote: Remote, dref: DRef) -> list[RRef]:
    """Every realization of `dref` the remote holds (one listing)."""
    folder = dref_folder(dref)
    out = []
    for name in remote.listdir(f"realizations/{folder}"):
        if name.endswith(".json"):
            r = parse_rref_key(folder, name)
            if r is not None:
                out.append(r)
    return out
