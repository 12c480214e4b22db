"""The runs a remote cache holds, with what their manifests say (config, build times,
metrics, series, tags): what finding a result on a remote reads.

The index gives the realizations (one recursive listing); their manifests, small JSON,
are read only when asked (`details`), several at once, and never a blob. With trusted
keys, a manifest is taken only if a trusted key signed it, as a pull takes it (what the
signature does not cover is dropped): selecting among runs reads nothing a pull would not
trust. Runs whose manifest does not verify are left out and reported.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lightstore.foundation.errors import (
    ArchiveError,
    LightstoreError,
    UnknownReferenceError,
)
from lightstore.foundation.metrics import Number, Series
from lightstore.foundation.refs import HASH_LEN, RRef, rref2dref
from lightstore.foundation.tags import Tag
from lightstore.remote._fs import Remote, open_remote
from lightstore.remote._layout import ensure_marker, parse_rref_key
from lightstore.remote._sign import TRUSTED_KEYS_VARIABLE, TrustedKeys, trusted_keys_for
from lightstore.remote.manifests import read_trusted_manifest
from lightstore.remote.transfers import DEFAULT_JOBS, run_all


@dataclass(frozen=True)
class RemoteRun:
    """One realization on a remote and, with details, what its manifest says."""

    rref: RRef
    dref: str
    name: str
    context_hash: str
    config: dict[str, Any] | None = None
    build_started: float | None = None
    build_stopped: float | None = None
    metrics: dict[str, Number] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)
    tags: list[Tag] = field(default_factory=list)
    log_size: int | None = None


def trust_for(store_root: str | None, given: Iterable[str] | TrustedKeys | None) -> TrustedKeys:
    """The keys to trust: `given`, else those of the store at `store_root` (see
    `trusted_keys_for`), else ``$LIGHTSTORE_TRUSTED_KEYS`` when there is no store."""
    if store_root is not None or given is not None:
        return trusted_keys_for(store_root or "", given)
    env = os.environ.get(TRUSTED_KEYS_VARIABLE, "").split()
    return TrustedKeys([(k, f"key {i + 1} of ${TRUSTED_KEYS_VARIABLE}") for i, k in enumerate(env)])


def _index(remote: Remote, name: str | None) -> list[RemoteRun]:
    """Every realization the index lists (of derivations named `name`, a glob): one
    recursive listing of the index."""
    out: list[RemoteRun] = []
    for key in remote.find("index"):
        parts = key.split("/")
        if len(parts) != 3 or parts[2].startswith(".") or parts[0].startswith("."):
            continue
        folder, ctx, leaf = parts
        if len(folder) <= HASH_LEN + 1 or len(ctx) != HASH_LEN:
            continue
        run_name = folder[HASH_LEN + 1 :]
        if name is not None and not fnmatch.fnmatchcase(run_name, name):
            continue
        r = parse_rref_key(folder, leaf)
        if r is not None:
            out.append(RemoteRun(r, rref2dref(r), run_name, ctx))
    return sorted(out, key=lambda x: (x.dref, x.rref))


def _detailed(
    remote: Remote, trusted: TrustedKeys, run: RemoteRun, where: str
) -> tuple[RemoteRun, LightstoreError | None]:
    try:
        m = read_trusted_manifest(remote, trusted, run.rref, where, None)
    except (ArchiveError, UnknownReferenceError) as e:
        return run, e
    return (
        RemoteRun(
            run.rref,
            run.dref,
            run.name,
            run.context_hash,
            dict(m.config.val),
            m.build_started,
            m.build_stopped,
            dict(m.said.metrics),
            dict(m.said.series),
            list(m.said.tags),
            m.log[1] if m.log is not None else None,
        ),
        None,
    )


def remote_runs(
    url: Any,
    *,
    name: str | None = None,
    details: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    trusted_keys: Iterable[str] | TrustedKeys | None = None,
    store_root: str | None = None,
    jobs: int = DEFAULT_JOBS,
    refused: dict[RRef, LightstoreError] | None = None,
) -> list[RemoteRun]:
    """The runs the remote at `url` holds (of derivations named `name`, a glob), sorted by
    DRef and RRef; with `details`, with what their manifests say, read `jobs` at once.

    Trust is as for a pull into the store at `store_root` (or `trusted_keys`, see
    `trust_for`): with trusted keys, a run whose manifest no trusted key signed is left
    out, and so is one whose manifest does not verify; `refused` (a dict) receives them
    with why. Raises UnknownReferenceError if `url` is not a lightstore remote,
    RemoteError if it cannot be read.
    """
    remote = open_remote(url, storage_options)
    if not ensure_marker(remote, create=False):
        raise UnknownReferenceError(
            f"{remote.shown} is not a lightstore remote (nothing was pushed there)"
        )
    runs = _index(remote, name)
    if not details or not runs:
        return runs
    trusted = trust_for(store_root, trusted_keys)
    where = f"reading {remote.shown}"
    out: list[RemoteRun] = []

    def done(result: tuple[RemoteRun, LightstoreError | None]) -> None:
        run, error = result
        if error is None:
            out.append(run)
        elif refused is not None:
            refused[run.rref] = error

    small = remote.local and not remote.networked
    with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="remote-runs") as pool:
        run_all(
            pool,
            lambda run: _detailed(remote, trusted, run, where),
            [(r,) for r in runs],
            done,
            weight=lambda item: 1,
            workers=max(1, jobs),
            here=(lambda item: True) if small else None,
        )
    return sorted(out, key=lambda x: (x.dref, x.rref))
