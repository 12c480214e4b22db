"""What the experiment browser shows, as plain data read from a read-only view of a store.

Every function takes a `Store` whose catalogue is a `ReadOnlyCatalogue`
(`lightstore.query.open_view`) and returns dicts and lists; the web layer
only renders them. Runs are read from the `runs` view, so whatever the
`history` view means (for example, leaving collected records out) applies.
"""

from __future__ import annotations

import json
import math
import mimetypes
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from lightstore.facade import Store
from lightstore.foundation.errors import InvalidReferenceError, UnknownReferenceError
from lightstore.foundation.refs import RRef, isdref, isrref, parse_rref, rref2dref
from lightstore.query import browse
from lightstore.query.describe import describe
from lightstore.query.graph import closure_edges
from lightstore.store.layout import CONTEXT_FILE

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


# -- home ------------------------------------------------------------------------------------


def stages(store: Store) -> list[dict[str, Any]]:
    """One row per stage name: runs, last run, failed builds, total size; newest activity first."""
    return browse.stage_summaries(store)


# -- a stage ---------------------------------------------------------------------------------


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config keys joined by dots (``{"model": {"depth": 4}}`` -> ``model.depth``); a
    key with a dot of its own is quoted as JSON (``{"model.depth": 4}`` -> ``"model.depth"``),
    so both stay columns of their own.

    Lists stay values (shown as JSON).
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key_segment(key)}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def key_segment(key: str) -> str:
    """A config key as one part of a dotted name: as it is, or quoted as JSON if it holds
    a dot (or starts with a quote), which would read as more parts."""
    return json.dumps(key) if "." in key or key.startswith('"') else key


def _sort_key(value: Any) -> tuple[int, Any]:
    # Numbers before text before the rest; missing values go last in either direction.
    if isinstance(value, bool):
        return (1, str(value))
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True))


def cell_text(value: Any) -> str:
    """How a config or metric value is written in a table cell and in a facet link."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def stage_table(
    store: Store,
    name: str,
    sort: str | None = None,
    descending: bool = False,
    filters: Mapping[str, str] | None = None,
    include_collected: bool = False,
) -> dict[str, Any]:
    """The runs of stage `name` with every config field and metric as columns.

    `sort` is ``config:<field>``, ``metric:<name>`` or one of ``stopped``,
    ``duration``, ``size`` (default: newest first). `filters` keep runs whose
    config field (``config:<field>``) has the given `cell_text`. Returns the
    rows, the column names, facets (value counts of fields with 2-20 values),
    and counts. Records that gc removed (history) are left out unless
    `include_collected`.
    """
    runs = browse.stage_runs(store, name, include_collected)
    config_keys: dict[str, None] = {}
    metric_keys: dict[str, None] = {}
    for run in runs:
        run["config"] = flatten(json.loads(run["config"]))
        run["metrics"] = json.loads(run["metrics"] or "{}")
        config_keys.update(dict.fromkeys(run["config"]))
        metric_keys.update(dict.fromkeys(run["metrics"]))
    configs = sorted(k for k in config_keys if k != "name")
    metrics = sorted(metric_keys)
    facets = []
    for key in configs:
        counts = Counter(cell_text(run["config"].get(key)) for run in runs)
        if 2 <= len(counts) <= 20:
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            facets.append({"key": key, "values": ranked})
    total = len(runs)
    for column, wanted in (filters or {}).items():
        kind, _, key = column.partition(":")
        if kind == "config" and key in config_keys:
            runs = [r for r in runs if cell_text(r["config"].get(key)) == wanted]
    if sort:
        kind, _, key = sort.partition(":")

        def value(run: dict[str, Any]) -> Any:
            if kind == "config":
                return run["config"].get(key)
            if kind == "metric":
                return run["metrics"].get(key)
            return run.get(sort) if sort in ("stopped", "duration", "size", "started") else None

        present = [r for r in runs if value(r) is not None]
        missing = [r for r in runs if value(r) is None]
        present.sort(key=lambda r: _sort_key(value(r)), reverse=descending)
        runs = present + missing
    return {
        "name": name,
        "runs": runs[:MAX_RUNS],
        "shown": min(len(runs), MAX_RUNS),
        "matching": len(runs),
        "total": total,
        "config_keys": configs,
        "metric_keys": metrics,
        "facets": facets,
        "collected": browse.collected_runs(store, name),
        "failures": browse.failure_count(store, name),
    }


def chart_points(
    runs: Iterable[Mapping[str, Any]], x: str, y: str
) -> list[tuple[float, float, str]]:
    """(config field `x`, metric `y`, rref) of the runs where both are finite floats.

    Integers too large for a float (configs take integers of any size) and
    non-finite values are left out of the chart; the table still shows them.
    """
    points = []
    for run in runs:
        xv, yv = finite_float(run["config"].get(x)), finite_float(run["metrics"].get(y))
        if xv is not None and yv is not None:
            points.append((xv, yv, run["rref"]))
    return points


def finite_float(value: Any) -> float | None:
    """`value` as a finite float, or None if it is not a number or has no finite float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond 1.8e308
        return None
    return number if math.isfinite(number) else None


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
    shown = sum(e["type"] != "dir" for e in entries)
    count = info.get("file_count")
    info.update(
        files=None if listed is None else entries,
        files_truncated=more,
        # Files and links past the listing (the catalogue counts them: no walk needed).
        files_more=max(count - shown, 1) if more and isinstance(count, int) else 0,
        images=images,
        texts=texts,
        metrics=store.metrics(rref),
        failed_builds=failed,
        lineage=lineage(store, rref),
    )
    return info


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
    return {
        "root": rref,
        "nodes": [{"rref": r, "level": level[r]} for r in nodes],
        "edges": edges,
        "truncated": len(level) > len(nodes),
    }


# -- failures, pins, disk --------------------------------------------------------------------


def failed_builds(store: Store, name: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Failed and interrupted builds with their errors, newest first."""
    return browse.failed_builds(store, name, limit)


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
