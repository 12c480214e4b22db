"""Everything known about one object, for `lightstore show`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from lightstore.catalogue import HOST
from lightstore.foundation.errors import UnknownReferenceError
from lightstore.foundation.files import pid_alive, walk_tree
from lightstore.foundation.refs import DRef, RRef, isrref, rref2dref
from lightstore.query.curves import series_summaries
from lightstore.query.graph import neighbours
from lightstore.store.layout import CONTEXT_FILE
from lightstore.store.view import StoreView

#: How many build attempts `describe` lists for a derivation (newest).
MAX_BUILDS = 20


def files(folder: str) -> list[dict[str, Any]] | None:
    """The entries below `folder` (path, type, size), sorted; None if it does not exist.

    The store's own `context.json` at the top is left out.
    """
    if not os.path.isdir(folder):
        return None
    out: list[dict[str, Any]] = []
    for e in walk_tree(folder, skip_top=frozenset({CONTEXT_FILE})):
        if e.kind == "link":
            out.append({"path": e.rel, "type": "link", "size": 0, "target": e.target})
        elif e.kind == "dir":
            out.append({"path": e.rel + "/", "type": "dir", "size": 0})
        else:
            out.append({"path": e.rel, "type": "file", "size": e.size})
    out.sort(key=lambda e: e["path"])
    return out


def _one(store: StoreView, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    cur = store.catalogue.conn.execute(sql, params)
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))


def _all(store: StoreView, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    cur = store.catalogue.conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def holder_gone(build: dict[str, Any]) -> bool:
    """Whether a build recorded as running belongs to a process of this host that is gone.

    A writer marks such builds interrupted when it next opens the store;
    read-only commands cannot write, so they report them with this.
    """
    return bool(
        build.get("status") == "running"
        and build.get("host") == HOST
        and build.get("pid") is not None
        and not pid_alive(int(build["pid"]))
    )


def live_status(build: dict[str, Any]) -> dict[str, Any]:
    """`build` with the status a reader should see: a running build whose process is gone
    becomes 'interrupted', with ``holder_gone`` set (the stored record is unchanged)."""
    gone = holder_gone(build)
    out = dict(build)
    out["holder_gone"] = gone
    if gone:
        out["status"] = "interrupted"
        out["error"] = out.get("error") or (
            f"holder gone: process {build['pid']} on {build['host']} is not running"
        )
    return out


def _pins(store: StoreView, ref: str) -> list[str]:
    return store.catalogue.column(
        "SELECT name FROM pins WHERE rref = ? OR dref = ? ORDER BY name", (ref, ref)
    )


def describe(
    store: StoreView,
    ref: DRef | RRef | str,
    *,
    files: bool = True,
    include_collected: bool = False,
) -> dict[str, Any]:
    """A dict describing one object (see `lightstore show --json`); a realization's has
    its metrics, series summaries, tags and notes (`run_annotations`).

    `ref` is anything the command line accepts: a full reference, a hash
    prefix, a pin, a unique name, a selector (``train@latest``). A
    realization's files are listed under ``files`` (every one: a walk of its
    folder), unless `files` is False: then the folder is not walked and
    there is no ``files`` key. Every description has ``collected``: None for
    an object in the store. With `include_collected`, an object gc (or
    rmref, or a repair) removed is described from its record (`resolve`
    finds it): ``collected`` is then ``{"collected": time, "reason": ...}``,
    and a realization's ``files`` is None (they are gone) while its config,
    context, metrics and build record remain. Raises UnknownReferenceError
    if it designates nothing in the store, AmbiguousReferenceError if
    several objects, InvalidReferenceError if it is not a reference.
    """
    from lightstore.query.resolve import collected_record, resolve

    ref = resolve(store, ref, include_collected)
    if isrref(ref):
        if include_collected and not store.catalogue.known_rrefs([ref]):
            return _describe_collected_rref(store, RRef(ref), collected_record(store, ref))
        return _describe_rref(store, RRef(ref), files)
    if include_collected and not store.catalogue.known_drefs([ref]):
        return _describe_collected_dref(store, DRef(ref), collected_record(store, ref))
    return _describe_dref(store, DRef(ref))


def config_of(store: StoreView, dref: str) -> dict[str, Any]:
    """The config of a derivation, present or collected (its record keeps it).

    Raises UnknownReferenceError if the catalogue has neither."""
    if store.catalogue.known_drefs([dref]):
        return store.config(DRef(dref))
    rows = store.catalogue.column(
        "SELECT config FROM collected_derivations WHERE dref = ?", (dref,)
    )
    if not rows:
        raise UnknownReferenceError(f"derivation {dref} is not in the store {store.root}", dref)
    parsed = json.loads(rows[0])
    return parsed if isinstance(parsed, dict) else {}


def collected_realization(store: StoreView, rref: str) -> dict[str, Any] | None:
    """The newest collected record of realization `rref` (a row of
    `collected_realizations`, its context parsed), or None."""
    row = _one(
        store,
        "SELECT * FROM collected_realizations WHERE rref = ? ORDER BY collected DESC LIMIT 1",
        (rref,),
    )
    if row is not None:
        row["context"] = json.loads(row["context"])
    return row


def _describe_collected_rref(
    store: StoreView, rref: RRef, gone: dict[str, Any] | None
) -> dict[str, Any]:
    record = collected_realization(store, rref) or {}
    context = record.get("context") or {}
    info = _run_info(store, rref, record, context, live=False)
    info.update(
        deps=sorted({r for rs in context.values() for r in rs}),
        referrers=[],
        pins=[],
        collected=gone,
        files=None,
    )
    return info


def _run_info(
    store: StoreView, rref: RRef, record: dict[str, Any], context: Any, live: bool
) -> dict[str, Any]:
    """What a realization's record says, present (`live`) or collected."""
    build = None
    if record.get("build_id") is not None:
        build = _one(
            store,
            "SELECT id, status, started, stopped, duration, host, pid, error FROM build_log "
            "WHERE id = ?",
            (record["build_id"],),
        )
        if live and build is not None:
            build = live_status(build)
    dref = rref2dref(rref)
    started, stopped = record.get("build_started"), record.get("build_stopped")
    # A hand-edited catalogue may hold text there: shown as it is, no duration.
    duration = None
    if isinstance(started, (int, float)) and isinstance(stopped, (int, float)):
        duration = stopped - started
    return {
        "rref": rref,
        "dref": dref,
        "name": dref.rsplit("-", 1)[1],
        "path": store.rref_path(rref),
        "config": store.config(dref) if live else config_of(store, dref),
        "context": {k: list(v) for k, v in context.items()},
        "started": started,
        "stopped": stopped,
        "duration": duration,
        "size": record.get("size"),
        "file_count": record.get("file_count"),
        "host": record.get("host"),
        "pid": record.get("pid"),
        "created": record.get("created"),
        "build": build,
        **run_annotations(store, rref),
    }


def _describe_collected_dref(
    store: StoreView, dref: DRef, gone: dict[str, Any] | None
) -> dict[str, Any]:
    row = _one(store, "SELECT name, created FROM collected_derivations WHERE dref = ?", (dref,))
    builds = _all(
        store,
        "SELECT * FROM (SELECT id, status, started, stopped, duration, host, pid, error "
        "FROM build_log WHERE dref = ? ORDER BY started DESC, id DESC LIMIT ?) ORDER BY started, id",
        (dref, MAX_BUILDS),
    )
    return {
        "dref": dref,
        "name": (row or {}).get("name"),
        "created": (row or {}).get("created"),
        "path": store.dref_path(dref),
        "config": config_of(store, dref),
        "deps": [],
        "referrers": [],
        "pins": [],
        "realizations": _all(
            store,
            "SELECT rref, build_started AS started, build_stopped AS stopped, size, file_count, "
            "collected FROM collected_realizations WHERE dref = ? ORDER BY collected, rref",
            (dref,),
        ),
        "builds": builds,
        "collected": gone,
    }


def _describe_dref(store: StoreView, dref: DRef) -> dict[str, Any]:
    config = store.config(dref)
    row = _one(store, "SELECT name, created FROM derivations WHERE dref = ?", (dref,)) or {}
    builds = _all(
        store,
        "SELECT * FROM (SELECT id, status, started, stopped, duration, host, pid, error "
        "FROM build_log WHERE dref = ? ORDER BY started DESC, id DESC LIMIT ?) ORDER BY started, id",
        (dref, MAX_BUILDS),
    )
    builds = [live_status(b) for b in builds]
    return {
        "dref": dref,
        "name": row.get("name"),
        "created": row.get("created"),
        "path": store.dref_path(dref),
        "config": config,
        "deps": neighbours(store.catalogue, dref),
        "referrers": neighbours(store.catalogue, dref, reverse=True),
        "pins": _pins(store, dref),
        "realizations": _all(
            store,
            "SELECT rref, build_started AS started, build_stopped AS stopped, size, file_count "
            "FROM realizations WHERE dref = ? ORDER BY coalesce(build_stopped, created), rref",
            (dref,),
        ),
        "builds": builds,
        "collected": None,
    }


def _describe_rref(store: StoreView, rref: RRef, with_files: bool) -> dict[str, Any]:
    record = store.catalogue.realization_record(rref) or {}
    info = _run_info(store, rref, record, store.context(rref), live=True)
    info.update(
        deps=neighbours(store.catalogue, rref),
        referrers=neighbours(store.catalogue, rref, reverse=True),
        pins=_pins(store, rref),
        collected=None,
    )
    if with_files:
        info["files"] = files(store.rref_path(rref))
    return info


def run_annotations(store: StoreView, rref: str) -> dict[str, Any]:
    """What was said about a realization besides its content: ``metrics`` (name -> value;
    a series' at its last step), ``series`` (name -> `series_summary`), ``tags`` and
    ``notes`` (lists of dicts with who wrote them and when)."""
    return {
        "metrics": store.catalogue.metrics_of([rref]).get(rref, {}),
        "series": series_summaries(store, rref),
        **tags_and_notes(store, [rref]).get(rref, {"tags": [], "notes": []}),
    }


def tags_and_notes(store: StoreView, rrefs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The tags (by name) and notes (oldest first) of each of `rrefs` that has any:
    ``{rref: {"tags": [{"name", "value", "recorded", "author"}], "notes": [{"id", "text",
    "recorded", "author"}]}}``."""
    catalogue = store.catalogue
    tags, notes = catalogue.tags_of(rrefs), catalogue.notes_of(rrefs)
    return {
        rref: {
            "tags": [
                {"name": t.name, "value": t.value, "recorded": t.recorded, "author": t.author}
                for t in tags.get(rref, [])
            ],
            "notes": [
                {"id": n.id, "text": n.text, "recorded": n.recorded, "author": n.author}
                for n in notes.get(rref, [])
            ],
        }
        for rref in rrefs
        if rref in tags or rref in notes
    }


def config_text(config: dict[str, Any]) -> str:
    """A config as indented JSON, keys sorted."""
    return json.dumps(config, indent=2, sort_keys=True)
