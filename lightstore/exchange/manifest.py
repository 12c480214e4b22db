"""An archive's manifest: its name, format and version, reading it, and the fields of a
realization's entry (build times, metrics, series, tags and notes) that a remote's
manifests share. The layout of an archive is `lightstore.exchange.archive`'s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from lightstore.exchange._ingest import Annotations
from lightstore.foundation.errors import ArchiveError, LightstoreError
from lightstore.foundation.metrics import (
    decode_metrics,
    decode_series,
    encode_metrics,
    encode_series,
)
from lightstore.foundation.refs import RRef
from lightstore.foundation.tags import decode_notes, decode_tags, encode_notes, encode_tags

MANIFEST = "manifest.json"
FORMAT = "lightstore-archive"
#: 2: build logs travel in ``logs/`` (an archive without logs is still written as 1).
VERSION = 2

#: ``progress(done, total, rref)``, called once per realization.
Progress = Callable[[int, int, RRef], None]


def read_manifest(area: str, archive: str) -> dict[str, Any]:
    """The manifest of the archive `archive`, extracted into `area`, checked to be one
    this lightstore reads. Raises ArchiveError."""
    path = os.path.join(area, MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise ArchiveError(
            f"{archive} has no readable {MANIFEST}; is it an archive made by spack?"
        ) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f"{archive} is not a lightstore archive (its manifest has no format)")
    version = manifest.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArchiveError(f"{archive}: the manifest has no valid version")
    if version > VERSION:
        raise ArchiveError(
            f"{archive} has archive format version {version} but this lightstore reads up to "
            f"{VERSION}; upgrade lightstore to unpack it"
        )
    for key in ("roots", "derivations", "realizations"):
        if not isinstance(manifest.get(key), list):
            raise ArchiveError(f"{archive}: the manifest's {key!r} is not a list")
    return manifest


#: The latest accepted build time: the end of year 9999, the limit of `datetime`.
MAX_TIME = 253402300799


def build_time(value: Any, where: str) -> float | None:
    """A build time of a manifest's entry as a float (None if absent).

    Raises ArchiveError for one that is not a time between 1970 and 9999."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ArchiveError(f"{where}: a build time is not a number")
    # Compare before converting: a huge int would overflow float().
    if not (0 <= value <= MAX_TIME) or value != value:
        raise ArchiveError(
            f"{where}: build time {value!r} is not a time between 1970 and 9999; "
            "the archive is damaged or hostile"
        )
    return float(value)


def annotation_fields(said: Annotations) -> dict[str, Any]:
    """The optional fields of a realization's entry in a manifest (an archive's or a
    remote's) for its metrics, series, tags and notes: only those it has. JSON holds no
    NaN nor infinity: they are the texts "NaN", "Infinity" and "-Infinity"."""
    fields: dict[str, Any] = {}
    if said.metrics:
        fields["metrics"] = encode_metrics(said.metrics)
    if said.series:
        fields["series"] = encode_series(said.series)
    if said.tags:
        fields["tags"] = encode_tags(said.tags)
    if said.notes:
        fields["notes"] = encode_notes(said.notes)
    return fields


def read_annotations(entry: dict[str, Any], rref: RRef, where: str) -> Annotations:
    """The metrics, series, tags and notes of a manifest's entry (`annotation_fields`).

    Raises ArchiveError for a field that is malformed."""
    said = Annotations()
    for key, decode in (
        ("metrics", decode_metrics),
        ("series", decode_series),
        ("tags", decode_tags),
        ("notes", decode_notes),
    ):
        value = entry.get(key)
        if value is None:
            continue
        try:
            setattr(said, key, decode(value))
        except LightstoreError as e:
            raise ArchiveError(f"{where}: the {key} of {rref} are invalid: {e}") from e
    return said
