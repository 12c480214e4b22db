"""What the experiment browser shows, as plain data read from a read-only view of a store.

Every function takes a `Store` whose catalogue is a `ReadOnlyCatalogue`
(`lightstore.query.open_view`) and returns dicts and lists; the web layer
only renders them. Runs are read from the `history` view, so whatever it
means (for example, keeping collected records) applies.
"""

from __future__ import annotations

import json
import math
import mimetypes
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from lightstore.facade import Store
from lightstore.foundation.errors import InvalidReferenceError, UnknownReferenceError
from lightstore.foundation.refs import RRef, isdref, isrref, parse_rref, rref2dref
from lightstore.query import browse, curves, upstream
from lightstore.query.buildlog import build_log
from lightstore.query.describe import describe, tags_and_notes
from lightstore.query.graph import closure_edges
from lightstore.query.shortrefs import short_refs
from lightstore.store.layout import CONTEXT_FILE
from lightstore.ui.curves import curve_line
from lightstore.ui.fields import (
    cell_text,
    distinct,
    finite_float,
    flatten,
    key_segment,
    metric_number,
    short_value,
)

__all__ = ["cell_text", "finite_float", "flatten", "key_segment"]  # shared with the tests

#: Most runs a stage page lists (newest first, or in the chosen order).
MAX_RUNS = 1000
#: Most files a run page lists, images it shows inline, and text files it shows.
MAX_FILES = 2000
MAX_IMAGES = 12
MAX_TEXTS = 8
#: Largest text file shown inline, in bytes.
MAX_TEXT_BYTES = 64 * 1024
#: Most nodes of a lineage graph.
MAX_LINEAGE = 150
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
TEXT_SUFFIXES = frozenset(
    [
        ".txt",
        ".json",
        ".csv",
        ".tsv",
        ".log",
        ".md",
        ".rst",
        ".py",
        ".yaml",
        ".yml",
        ".toml",
        ".ini",
        ".cfg",
        ".sh",
        ".out",
        ".err",
    ]
)
FAILED = ("failed", "interrupted")
#: Most bytes of a build's log a run page shows (its end).
MAX_LOG_BYTES = 128 * 1024
#: The column of a series' smallest value: ``loss:min`` (as `lightstore history -m` names it).
SERIES_MIN = ":min"
#: Most (run, upstream realization) pairs read for a page; most derivations of a stage
#: read to find what its runs differ in; most fields in a label.
MAX_UPSTREAM_PAIRS = 200_000
MAX_STAGE = 2000
MAX_LABEL_FIELDS = 4


# -- home ------------------------------------------------------------------------------------


def stages(store: Store) -> list[dict[str, Any]]:
    """One row per stage name: runs, last run, failed builds, total size; newest activity first."""
    return browse.stage_summaries(store)


# -- what the pages read about runs ----------------------------------------------------------
# Each page reads metrics, curves, tags and upstream fields through these functions only, so
# that they can follow the catalogue's query API as it grows.


def run_metrics(store: Store, rrefs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The metrics of each of `rrefs` that has any, one number per name: ``{rref: {name:
    value}}``, a series' value at its last step, and for a series ``NAME`` also
    ``NAME:min``, its smallest value (NaN if every value is NaN), as ``lightstore history
    -m loss -m loss:min`` shows them; a non-finite value is a float."""
    found = {
        r: {k: metric_number(v) for k, v in m.items()}
        for r, m in curves.metric_values(store, rrefs).items()
    }
    for rref, series in curves.series_ranges(store, rrefs).items():
        values = found.setdefault(rref, {})
        for name, summary in series.items():
            low = summary["min"]
            values[f"{name}{SERIES_MIN}"] = math.nan if low is None else metric_number(low)
    return found


def run_series(store: Store, rrefs: Sequence[str]) -> dict[str, dict[str, dict[int, Any]]]:
    """The metric series of each of `rrefs` that has any: ``{rref: {name: {step: value}}}``
    (NaN and infinities as they are)."""
    found: dict[str, dict[str, dict[int, Any]]] = {}
    for point in curves.metric_points(store, rrefs, plain=False):
        found.setdefault(point["rref"], {}).setdefault(point["metric"], {})[point["step"]] = point[
            "value"
        ]
    return found


def run_tags(store: Store, rrefs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The tags and notes of each of `rrefs` that has any: ``{rref: {"tags": {name:
    value}, "notes": [{"id", "text", "recorded", "author"}]}}``."""
    return {
        rref: {"tags": {t["name"]: t["value"] for t in found["tags"]}, "notes": found["notes"]}
        for rref, found in tags_and_notes(store, list(rrefs)).items()
    }


def upstream_fields(store: Store, rrefs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The config fields of the stages each of `rrefs` was built on, directly or not, as
    ``{rref: {"train.lr": 0.1, ...}}`` (the upstream stage's name, a dot, its flattened
    field). Where a run was built on several realizations of one stage that disagree on a
    field, the value is the sorted list of their values (`lightstore.query.upstream`, which
    `lightstore history -f train.lr` reads too)."""
    return upstream.upstream_fields(store, rrefs, MAX_UPSTREAM_PAIRS)


def short_labels(store: Store, rrefs: Sequence[str]) -> dict[str, str]:
    """The shortest form that names each of `rrefs` alone (``3fa2c9d1``, or
    ``3fa2c9d1-0b7e`` where runs of two derivations made identical outputs)."""
    shorts = short_refs(store, rrefs)
    return {r: shorts.get(r) or r.split(":", 1)[1][:8] for r in rrefs}


def varying_fields(
    configs: Iterable[Mapping[str, Any]], limit: int = MAX_LABEL_FIELDS
) -> list[str]:
    """The (flattened) fields whose values are not the same in all of `configs` (a missing
    field differs from a present one), fewest distinct values last; at most `limit`."""
    flats = [flatten(c) for c in configs]
    keys = sorted({k for f in flats for k in f if k != "name"})
    missing = object()
    counts = {k: distinct(f.get(k, missing) for f in flats) for k in keys}
    return sorted((k for k in keys if counts[k] > 1), key=lambda k: (-counts[k], k))[:limit]


def stage_labels(store: Store, drefs: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """For each of `drefs`, the ``(field, value)`` of the fields in which the derivations
    of its stage differ (as the command line's trees label runs)."""
    by_name: dict[str, set[str]] = {}
    for dref in drefs:
        by_name.setdefault(dref.rsplit("-", 1)[1], set()).add(dref)
    out: dict[str, list[tuple[str, str]]] = {}
    for name, group in by_name.items():
        configs = {
            d: json.loads(c) for d, c in browse.stage_configs(store, name, MAX_STAGE).items()
        }
        missing = sorted(group - set(configs))
        configs.update(
            {d: json.loads(c) for d, c in browse.derivation_configs(store, missing).items()}
        )
        fields = varying_fields(configs.values())
        for dref in group:
            flat = flatten(configs.get(dref, {}))
            out[dref] = [(k, short_value(flat[k]) if k in flat else "-") for k in fields]
    return out


# -- a run -----------------------------------------------------------------------------------


def run_details(store: Store, text: str) -> dict[str, Any]:
    """Everything the run page shows about one realization.

    Raises InvalidReferenceError for a malformed RRef, UnknownReferenceError
    for one the catalogue does not hold.
    """
    rref = parse_rref(text)
    if not store.catalogue.known_rrefs([rref]):
        gone = browse.removal(store, rref)
        if gone is not None:
            raise UnknownReferenceError(
                f"{rref} was removed from the store ({gone[1]}); its record stays in the "
                "history view, its artifacts are gone",
                rref,
            )
        raise UnknownReferenceError(f"{rref} is not in this store", rref)
    info = describe(store, rref, files=False)  # listed below, up to MAX_FILES
    folder = store.rref_path(rref)
    try:
        listed = listing(folder, MAX_FILES)
    except OSError:  # removed meanwhile (a gc beside), or unreadable
        listed = None
    entries, more = listed or ([], False)
    images: list[str] = []
    texts: list[dict[str, str]] = []
    for entry in entries:
        if entry["type"] != "file":
            continue
        suffix = os.path.splitext(entry["path"])[1].lower()
        if suffix in IMAGE_TYPES and len(images) < MAX_IMAGES:
            images.append(entry["path"])
        elif len(texts) < MAX_TEXTS and entry["size"] <= MAX_TEXT_BYTES:
            shown = _small_text(os.path.join(folder, entry["path"]), suffix)
            if shown is not None:
                texts.append({"path": entry["path"], "text": shown})
    dref = rref2dref(rref)
    failed = browse.failed_builds_of(store, dref)
    for build in failed:
        build["log"] = log_tail(store.log_path(build["id"]))
    shown = sum(e["type"] != "dir" for e in entries)
    count = info.get("file_count")
    info.update(
        files=None if listed is None else entries,
        files_truncated=more,
        # Files and links past the listing (the catalogue counts them: no walk needed).
        files_more=max(count - shown, 1) if more and isinstance(count, int) else 0,
        images=images,
        texts=texts,
        # describe() gave metrics, series summaries, tags and notes; the points to draw:
        curves={
            name: curve_line(points)
            for name, points in run_series(store, [rref]).get(rref, {}).items()
        },
        upstream=upstream_fields(store, [rref]).get(rref, {}),
        failed_builds=failed,
        lineage=lineage(store, rref),
        log=own_log(store, rref),
    )
    return info


def own_log(store: Store, rref: RRef) -> dict[str, Any]:
    """What the build that made `rref` printed (its end, at most MAX_LOG_BYTES):
    ``{"build": id or None, "log": tail or None, "why": why there is none}``."""
    try:
        found = build_log(store, rref, read=False)
    except UnknownReferenceError:
        return {"build": None, "log": None, "why": "no build record (imported, or reindexed)"}
    tail = log_tail(found["path"])
    why = None if tail is not None else "nothing was captured (or the log was removed)"
    return {"build": found["build"]["id"], **(tail or {"log": None}), "why": why}


def log_tail(path: str) -> dict[str, Any] | None:
    """The end of the log file at `path`: ``{"log": text, "size": bytes, "cut": bytes left
    out before}``, or None if there is no such file."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            start = max(0, size - MAX_LOG_BYTES)
            f.seek(start)
            data = f.read(MAX_LOG_BYTES)
    except OSError:
        return None
    if start:  # begin at a whole line
        data = data.split(b"\n", 1)[-1]
    return {"log": data.decode("utf-8", errors="replace"), "size": size, "cut": size - len(data)}


def listing(folder: str, limit: int) -> tuple[list[dict[str, Any]], bool] | None:
    """The first `limit` entries below `folder` (path, type, size; a link's target), folders
    before their contents and names sorted, and whether more follow; None if `folder` is missing.

    The walk stops at the limit, so a realization of a million files costs no
    more than one of `limit` (beyond listing the names of one folder).
    The store's own `context.json` at the top is left out; unreadable folders are skipped.
    """
    if not os.path.isdir(folder):
        return None
    out: list[dict[str, Any]] = []
    stack: list[tuple[Iterator[os.DirEntry[str]], str]] = [(_sorted_entries(folder), "")]
    while stack:
        entries, rel = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        path = rel + entry.name
        if path == CONTEXT_FILE:
            continue
        if len(out) >= limit:
            return out, True
        if entry.is_symlink():
            out.append({"path": path, "type": "link", "size": 0, "target": os.readlink(entry)})
        elif entry.is_dir(follow_symlinks=False):
            out.append({"path": path + "/", "type": "dir", "size": 0})
            stack.append((_sorted_entries(entry.path), path + "/"))
        else:
            size = entry.stat(follow_symlinks=False).st_size
            out.append({"path": path, "type": "file", "size": size})
    return out, False


def _sorted_entries(folder: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return iter(sorted(it, key=lambda e: e.name))
    except OSError:
        return iter(())


def _small_text(path: str, suffix: str) -> str | None:
    """The text of a small file that looks like text, else None."""
    try:
        if os.path.islink(path):
            return None
        with open(path, "rb") as f:
            data = f.read(MAX_TEXT_BYTES + 1)
    except OSError:
        return None
    if b"\0" in data:
        return None
    if (
        suffix not in TEXT_SUFFIXES
        and (mimetypes.guess_type(path)[0] or "").split("/")[0] != "text"
    ):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return data.decode("utf-8", errors="replace")


def lineage(store: Store, rref: RRef) -> dict[str, Any]:
    """The realizations `rref` was built on and those built on it, with their edges and levels.

    Levels: 0 for `rref`, negative upstream (-1: used directly), positive
    downstream. At most MAX_LINEAGE nodes (the nearest are kept).
    """
    up = closure_edges(store.catalogue, [rref])
    down = closure_edges(store.catalogue, [rref], reverse=True)
    level: dict[str, int] = {rref: 0}
    # Longest distances, so that every edge goes from a lower level to a higher one.
    # Up and down are disjoint (the graph has no cycles); each pass settles one more step.
    for _ in range(len(up) + 1):
        changed = False
        for user, dep in up:
            if user in level and (dep not in level or level[user] - 1 < level[dep]):
                level[dep], changed = level[user] - 1, True
        if not changed:
            break
    for _ in range(len(down) + 1):
        changed = False
        for user, dep in down:
            if (
                dep in level
                and level[dep] >= 0
                and (user not in level or level[dep] + 1 > level[user])
            ):
                level[user], changed = level[dep] + 1, True
        if not changed:
            break
    nodes = sorted(level, key=lambda r: (abs(level[r]), level[r], r))[:MAX_LINEAGE]
    kept = set(nodes)
    edges = sorted({(u, d) for u, d in [*up, *down] if u in kept and d in kept})
    fields = stage_labels(store, {rref2dref(RRef(r)) for r in nodes})
    shorts = short_labels(store, nodes)
    labels = {}
    for r in nodes:
        shown = fields.get(rref2dref(RRef(r)), [])
        first = f"{r.rsplit('-', 1)[1]} {shorts[r]}"
        labels[r] = [first] + ([" ".join(f"{k}={v}" for k, v in shown)] if shown else [])
    return {
        "root": rref,
        "nodes": [{"rref": r, "level": level[r]} for r in nodes],
        "edges": edges,
        "labels": labels,
        "truncated": len(level) > len(nodes),
    }


# -- failures, pins, disk --------------------------------------------------------------------


def failed_builds(store: Store, name: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Failed and interrupted builds with their errors, newest first; each with its
    derivation's ``config`` and ``fields``: the ``(field, value)`` in which the derivations
    of its stage differ, so that a failure says which run it was."""
    builds = browse.failed_builds(store, name, limit)
    configs = browse.derivation_configs(store, sorted({b["dref"] for b in builds}))
    labels = stage_labels(store, {b["dref"] for b in builds})
    for b in builds:
        b["config"] = json.loads(configs[b["dref"]]) if b["dref"] in configs else None
        b["fields"] = labels.get(b["dref"], [])
    return builds


def pins(store: Store) -> dict[str, list[dict[str, Any]]]:
    """Named pins and registered links (gc keeps what they name)."""
    return browse.pins_and_links(store)


def disk_use(store: Store) -> list[dict[str, Any]]:
    """Bytes and files per stage name, largest first."""
    return browse.disk_use_by_stage(store)


def ref_label(ref: str) -> str:
    """``name 3fa2c9d1`` for a DRef or RRef."""
    if not (isrref(ref) or isdref(ref)):
        raise InvalidReferenceError(f"not a reference: {ref!r}")
    body = ref.split(":", 1)[1]
    return f"{body.rsplit('-', 1)[1]} {body[:8]}"
