"""Stages built from in-memory data (Pylightnix's `mknode` and `mkfile`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from blake3 import blake3

from lightstore.engine.matchers import match_only
from lightstore.engine.outputs import BuildContext, filling
from lightstore.engine.registry import Registry
from lightstore.foundation.errors import InvalidConfigError
from lightstore.foundation.refs import DRef, check_file_name, selfref
from lightstore.store.layout import CONTEXT_FILE

ARTIFACTS_KEY = "__artifacts__"


def _as_bytes(name: str, data: Any) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    raise InvalidConfigError(
        f"artifact {name!r} is a {type(data).__name__}; artifacts are bytes or str"
    )


def mknode(
    r: Registry,
    config: Mapping[str, Any],
    artifacts: Mapping[str, bytes | str] | None = None,
    name: str | None = None,
) -> DRef:
    """A stage whose output holds `artifacts` ({file name: bytes or str}).

    The config is `config` plus ``__artifacts__``, the blake3 hash of each
    artifact, so different contents give different derivations. The name is
    `name`, else the config's own ``name``, else ``mknode``. The realizer is
    deterministic: every store realizing it gets the same RRef.

    Raises InvalidConfigError for a config that uses ``__artifacts__``, an
    artifact name that is not a plain file name (or is ``context.json``), or
    contents that are neither bytes nor str.
    """
    if not isinstance(config, Mapping):
        raise InvalidConfigError(f"mknode: the config must be a dict, not {type(config).__name__}")
    if ARTIFACTS_KEY in config:
        raise InvalidConfigError(
            f"mknode: the config may not use the reserved key {ARTIFACTS_KEY!r}"
        )
    files: dict[str, bytes] = {}
    for fname, data in (artifacts or {}).items():
        check_file_name(fname, "mknode: artifact name")
        if fname == CONTEXT_FILE:
            raise InvalidConfigError(
                f"mknode: {CONTEXT_FILE!r} is reserved for the store; rename the artifact"
            )
        files[fname] = _as_bytes(fname, data)
    cfg = dict(config)
    if name is not None:
        cfg["name"] = name
    cfg.setdefault("name", "mknode")
    cfg[ARTIFACTS_KEY] = {n: blake3(d).hexdigest()[:32] for n, d in sorted(files.items())}

    def make(b: BuildContext) -> None:
        out = b.output
        for fname, data in files.items():
            with open(os.path.join(out, fname), "wb") as f:
                f.write(data)

    return r.add(cfg, match_only(), filling(make))


def mkfile(r: Registry, name: str, contents: bytes | str, filename: str | None = None) -> DRef:
    """A stage holding one file, `filename` (default: `name`), with `contents`.

    Its config promises the file as ``output`` (so ``mklens(rref).output.syspath``
    is its path, as in Pylightnix). The derivation is named `name`, with
    characters a name may not hold (such as the dot of ``data.csv``) replaced by ``_``.
    """
    fname = check_file_name(filename if filename is not None else name, "mkfile: file name")
    dname = re.sub(r"[^A-Za-z0-9_-]", "_", name) if isinstance(name, str) else ""
    if not dname:
        raise InvalidConfigError(f"mkfile: invalid name {name!r}")
    return mknode(r, {"output": [selfref, fname]}, {fname: contents}, name=dname)
