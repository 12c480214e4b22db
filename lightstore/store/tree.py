"""Reading objects back from the tree, each checked against its reference.

What verify, reindex and recovery trust of a folder: a derivation's
config.json only if it hashes to the DRef, a realization only if its
context.json and content hash to the RRef.
"""

from __future__ import annotations

import json
import os
from typing import Any

from lightstore.catalogue import NewRealization
from lightstore.foundation.config import Config, canonical_json, mkconfig
from lightstore.foundation.errors import BuildError, LightstoreError
from lightstore.foundation.hashing import (
    canonical_context,
    config_hash,
    context_hash,
    realization_hash,
)
from lightstore.foundation.refs import HASH_LEN, DRef, RRef, isdref, mkdref
from lightstore.store.layout import CONTEXT_FILE, realization_digest


def is_hash(s: str) -> bool:
    """True if `s` can be a hash part of a folder name of `objects/` (32 lowercase hex digits)."""
    return len(s) == HASH_LEN and all(c in "0123456789abcdef" for c in s)


def read_json(path: str) -> Any:
    """The JSON value in the file `path`, or None if it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError, RecursionError):
        return None


def read_config_file(path: str, dref: DRef | str) -> Config | None:
    """The config in the file `path` (a config.json), if it is a valid config that hashes to
    `dref`; None if it is missing, unreadable, invalid or another derivation's."""
    try:
        config = mkconfig(read_json(path))
    except LightstoreError:
        return None
    if mkdref(config_hash(config.val), config.name) != dref:
        return None
    return config


def read_realization(rref: str, folder: str) -> NewRealization | None:
    """A catalogue record for the realization folder `folder`, if its context and content
    hash to `rref`; None if not. Raises OSError if the folder cannot be read."""
    raw = read_json(os.path.join(folder, CONTEXT_FILE))
    if not isinstance(raw, dict) or not all(
        isdref(k) and isinstance(v, list) for k, v in raw.items()
    ):
        return None
    ctx = canonical_context(raw)
    ctx_hash = context_hash(ctx)
    try:
        digest = realization_digest(folder)
    except BuildError:
        return None  # holds a FIFO, socket or device: never a valid realization
    rhash, _, rest = rref.removeprefix("rref:").partition("-")
    if realization_hash(ctx_hash, digest.digest) != rhash:
        return None
    mtime = os.stat(folder).st_mtime
    deps = sorted({r for rs in ctx.values() for r in rs})
    return NewRealization(
        RRef(rref),
        DRef(f"dref:{rest}"),
        canonical_json(ctx),
        ctx_hash,
        deps,
        digest.size,
        digest.files,
        None,
        mtime,
    )
