"""What a build printed (`lightstore log`): its record and captured output.

Logs are written by `lightstore.foundation.logs` to ``<root>/logs/<build id>.log``; the
log that came with an imported realization (pull, unpack) is ``logs/imported/<rref>.log``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from lightstore.foundation.errors import UnknownReferenceError
from lightstore.foundation.logs import read_log
from lightstore.foundation.refs import RRef, isrref, rref2dref
from lightstore.query.describe import live_status
from lightstore.query.resolve import resolve
from lightstore.query.rows import Rows
from lightstore.store.view import StoreView

_BUILD_COLUMNS = "id, dref, name, status, started, stopped, duration, host, pid, error"


def builds_of(store: StoreView, ref: str, include_collected: bool = False) -> list[dict[str, Any]]:
    """The build attempts behind `ref`, newest first: for a realization the one that made
    it; for a derivation every attempt (failed and interrupted ones too). With
    `include_collected`, `ref` may be a collected run (its record names its build).

    Raises the errors of `resolve`.
    """
    target = resolve(store, ref, include_collected)
    if isrref(target):
        # A collected run's record keeps its build id (a present record wins).
        sql = (
            f"SELECT {_BUILD_COLUMNS} FROM build_log WHERE id = coalesce("
            "(SELECT build_id FROM realizations WHERE rref = :t), "
            "(SELECT build_id FROM collected_realizations WHERE rref = :t "
            "ORDER BY collected DESC LIMIT 1))"
        )
    else:
        sql = (
            f"SELECT {_BUILD_COLUMNS} FROM build_log WHERE dref = :t ORDER BY started DESC, id DESC"
        )
    cur = store.catalogue.conn.execute(sql, {"t": target})
    names = [d[0] for d in cur.description]
    return [live_status(dict(zip(names, row, strict=True))) for row in cur.fetchall()]


def builds(store: StoreView, recent: int = 0) -> Rows:
    """The builds recorded as running, oldest first, then the `recent` newest finished ones,
    newest first: id, dref, name, status, started, stopped, elapsed (seconds, so far for a
    running build), host, pid, error.

    A running record whose process of this host is gone shows as interrupted
    (``holder_gone``) among the finished ones: a writer records it so when it next opens
    the store. `Rows`: a table in a notebook, datetimes in `to_pandas()`.
    """
    conn = store.catalogue.conn
    cur = conn.execute(
        f"SELECT {_BUILD_COLUMNS} FROM build_log WHERE status = 'running' ORDER BY started, id"
    )
    names = [d[0] for d in cur.description]
    running = [live_status(dict(zip(names, row, strict=True))) for row in cur.fetchall()]
    out = [b for b in running if not b["holder_gone"]]
    finished = [b for b in running if b["holder_gone"]][::-1]
    if recent > 0:
        cur = conn.execute(
            f"SELECT {_BUILD_COLUMNS} FROM build_log WHERE status != 'running' "
            "ORDER BY coalesce(stopped, started) DESC, id DESC LIMIT ?",
            (recent,),
        )
        finished += [live_status(dict(zip(names, row, strict=True))) for row in cur.fetchall()]
        finished.sort(key=lambda b: -(b["stopped"] or b["started"] or 0))
        out += finished[:recent]
    now = time.time()
    for b in out:
        b["elapsed"] = b["duration"] if b["stopped"] is not None else now - (b["started"] or now)
        b.pop("duration", None)
    columns = [*names, "holder_gone", "elapsed"]
    columns.remove("duration")
    return Rows(out, columns, ("started", "stopped"))


def _build(store: StoreView, build: int | None) -> list[dict[str, Any]]:
    cur = store.catalogue.conn.execute(
        f"SELECT {_BUILD_COLUMNS} FROM build_log WHERE id = ?", (build,)
    )
    names = [d[0] for d in cur.description]
    return [live_status(dict(zip(names, row, strict=True))) for row in cur.fetchall()]


def _not_of(
    store: StoreView,
    ref: str,
    build: int,
    theirs: list[dict[str, Any]],
    include_collected: bool = False,
) -> None:
    """Raise UnknownReferenceError saying why build #`build` is not one of `ref`'s."""
    other = _build(store, build)
    target = resolve(store, ref, include_collected)
    if not other:
        raise UnknownReferenceError(f"no build #{build} in {store.root}", str(build))
    if isrref(target) and other[0]["dref"] == rref2dref(target):
        made = f"; build #{theirs[0]['id']} made it" if theirs else ""
        why = f"build #{build} of {other[0]['dref']} did not make {target}{made}"
    elif isrref(target):
        why = (
            f"build #{build} belongs to another derivation, {other[0]['dref']}, not to "
            f"{rref2dref(target)} of {target}"
        )
    else:
        why = f"build #{build} belongs to another derivation, {other[0]['dref']}, not to {target}"
    raise UnknownReferenceError(
        f"{why}; `lightstore log --build {build}` shows it, `lightstore show "
        f"{rref2dref(target) if isrref(target) else target}` lists the builds of {ref!r}",
        str(build),
    )


def build_log(
    store: StoreView,
    ref: str | None = None,
    build: int | None = None,
    *,
    read: bool = True,
    include_collected: bool = False,
) -> dict[str, Any]:
    """One build's record and captured output: ``{"build": {...}, "path", "log"}``, where
    ``log`` is the text printed (None if nothing was captured).

    `ref` picks the realization's build, or a derivation's newest attempt;
    `build` picks an attempt by id (of `ref`'s derivation, if `ref` is given).
    With `read` false, ``log`` is left out (stream the file at ``path``
    instead: a realizer may print gigabytes). With `include_collected`, `ref` may
    designate a run gc removed: its log stays until `lightstore forget`. Raises UnknownReferenceError if there is no such build record (a
    realization imported from another store has none here), and the errors of
    `resolve`.
    """
    if ref is None and build is None:
        raise UnknownReferenceError("give a REF or a build id")
    if build is not None and not -(2**63) <= build < 2**63:
        # No build id is that large (SQLite's integers have 64 bits).
        raise UnknownReferenceError(f"no build #{build} in {store.root}", str(build))
    if ref is not None:
        found = builds_of(store, ref, include_collected)
        if build is not None:
            mine = [b for b in found if b["id"] == build]
            if not mine:
                _not_of(store, ref, build, found, include_collected)
            found = mine
    else:
        found = _build(store, build)
    if not found and ref is not None and build is None:
        imported = _imported(store, ref, include_collected, read)
        if imported is not None:
            return imported
    if not found:
        what = f"build #{build}" if build is not None else repr(ref)
        raise UnknownReferenceError(
            f"no build record for {what} in {store.root}: a realization imported (pull, "
            "unpack) without its build's log, or built before a reindex, has none; see "
            "`lightstore show REF` for the builds",
            str(ref or build),
        )
    record = found[0]
    out: dict[str, Any] = {"build": record, "path": store.log_path(record["id"])}
    if read:
        data = read_log(store.log_path(record["id"]))
        out["log"] = None if data is None else data.decode("utf-8", errors="replace")
    return out


def _imported(
    store: StoreView, ref: str, include_collected: bool, read: bool
) -> dict[str, Any] | None:
    """The log that came with an imported realization (pull, unpack), as `build_log` gives
    a build's: its record has no id, the status ``imported``, and the build times and
    host the source gave; None if `ref` is not such a realization."""
    target = resolve(store, ref, include_collected)
    if not isrref(target):
        return None
    path = store.imported_log_path(RRef(target))
    if not os.path.isfile(path):
        return None
    rows = store.catalogue.query(
        "SELECT build_started, build_stopped, host, pid, imported FROM realizations "
        "WHERE rref = :t UNION ALL SELECT build_started, build_stopped, host, pid, imported "
        "FROM collected_realizations WHERE rref = :t LIMIT 1",
        {"t": target},
    )
    started, stopped, host, pid, imported = rows[0] if rows else (None,) * 5
    record = {
        "id": None,
        "dref": rref2dref(target),
        "name": rref2dref(target).rsplit("-", 1)[-1],
        "status": "imported",
        "started": started,
        "stopped": stopped,
        "duration": stopped - started if started is not None and stopped is not None else None,
        "host": host,
        "pid": pid,
        "error": None,
        "imported": imported,
    }
    out: dict[str, Any] = {"build": record, "path": path}
    if read:
        data = read_log(path)
        out["log"] = None if data is None else data.decode("utf-8", errors="replace")
    return out
