"""What callers hand the catalogue to record, and the names shared by its table families."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lightstore.foundation.metrics import Number, Series
from lightstore.foundation.refs import DRef, RRef
from lightstore.foundation.tags import Note, Tag

HOST = socket.gethostname()


@dataclass(frozen=True)
class NewDerivation:
    """A derivation to record: its reference, name, canonical config and dependencies."""

    dref: DRef
    name: str
    config_json: str
    deps: Sequence[DRef]


@dataclass(frozen=True)
class NewRealization:
    """A published realization to record."""

    rref: RRef
    dref: DRef
    context_json: str
    context_hash: str
    deps: Sequence[str]
    size: int
    file_count: int
    build_started: float | None
    build_stopped: float | None
    #: The builder's host and pid: None means this process (a local build).
    host: str | None = None
    pid: int | None = None
    #: True for an import (unpack, copy, pull): this process is recorded as
    #: the importer, `host`/`pid` stay the builder's (None if unknown).
    imported: bool = False
    #: Validated metrics (name -> number, NaN included), recorded by the same transaction,
    #: with the series (name -> {step: number}), tags and notes.
    metrics: dict[str, Number] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)
    tags: Sequence[Tag] = ()
    notes: Sequence[Note] = ()


#: Why objects left the store (the `reason` of the collected_* tables).
COLLECT_REASONS = ("gc", "rmref", "repair")

#: The columns a realization's row shares with its row in `collected_realizations`.
REALIZATION_COLUMNS = (
    "rref, dref, context, context_hash, build_id, build_started, build_stopped, size, "
    "file_count, host, pid, created, imported, import_host, import_pid"
)


def json_list(items: Iterable[str]) -> str:
    """`items` as a JSON list, for ``json_each(?)``: one parameter however many there are."""
    return json.dumps(list(items))
