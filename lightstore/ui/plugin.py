"""The Datasette plugin: lightstore's pages, registered as routes ahead of Datasette's own.

Datasette itself keeps serving the catalogue as a database (`/catalogue`),
with its read-only SQL editor. Pages: ``/`` (stages), ``/stage/NAME``,
``/run/RREF``, ``/compare?r=RREF&r=RREF...``, ``/artifact/RREF/PATH``,
``/failures``, ``/pins``, ``/disk``; the scripts they load are served from
installed files at ``/-/lightstore/NAME`` (`lightstore.ui.assets`).
Imported only when Datasette is installed (`lightstore.ui.make_datasette`).
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
from typing import Any
from urllib.parse import quote, unquote, urlencode

from datasette import hookimpl
from datasette.utils.asgi import AsgiFileDownload, Response

from lightstore.cli.output import human_duration, human_size, human_time
from lightstore.facade import Store
from lightstore.foundation.errors import (
    InvalidReferenceError,
    LightstoreError,
    UnknownReferenceError,
)
from lightstore.foundation.refs import isdref, isrref
from lightstore.query import sqlguard
from lightstore.ui import analysis, assets, data, lineage
from lightstore.ui.artifacts import ArtifactRefused, artifact_file
from lightstore.ui.curves import gap_text
from lightstore.ui.fields import is_number, plot_number, script_json, tag_texts

#: Headers of every served artifact: never run its scripts, never guess its type.
ARTIFACT_HEADERS = {
    "content-security-policy": "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox",
    "x-content-type-options": "nosniff",
    "cache-control": "max-age=3600",  # realizations never change
}
#: Types sent as they are; anything else that a browser would render (HTML...) goes as text.
INLINE_TYPES = frozenset({*data.IMAGE_TYPES.values(), "application/pdf", "application/json"})


def store_of(datasette: Any) -> Store:
    """The read-only store view that `make_datasette` attached to this Datasette.

    Raises LightstoreError for a Datasette not made by `make_datasette`.
    """
    store: Store | None = getattr(datasette, "lightstore_store", None)
    if store is None:
        raise LightstoreError("this Datasette was not started by `lightstore ui`")
    return store


def run_url(rref: str) -> str:
    return "/run/" + quote(rref, safe=":")


def stage_url(name: str, **query: Any) -> str:
    url = "/stage/" + quote(name, safe="")
    params = {k: v for k, v in query.items() if v not in (None, "")}
    return url + ("?" + urlencode(params) if params else "")


def artifact_url(rref: str, path: str) -> str:
    # File names that are not UTF-8 arrive from os.walk with surrogates: keep their bytes.
    return f"/artifact/{quote(rref, safe=':')}/{quote(path, errors='surrogateescape')}"


def shown_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (surrogates from os.walk) become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _cell(value: Any) -> str:
    if isinstance(value, str) and (isdref(value) or isrref(value)):
        return data.ref_label(value)  # `name 3fa2c9d1`; the full reference is on the run page
    return "" if value is None else data.cell_text(value)


@hookimpl
def prepare_connection(conn: Any, database: str, datasette: Any) -> None:
    """Every connection that serves the browser's SQL runs under `lightstore sql`'s rules:
    the same authorizer (deny-list), size limits and function guards."""
    if database == "_internal":  # Datasette's own bookkeeping, which no user query reaches
        return
    if database == "_memory" and database not in datasette.databases:
        return  # /-/versions' scratch connection probing SQLite; no such database is served
    sqlguard.prepare_connection(conn)


def _nonfinite(value: Any) -> str | None:
    """Why a chart cannot place the number `value` (NaN, inf, too large), or None."""
    return plot_number(value)[1] if is_number(value) else None


@hookimpl
def extra_template_vars(datasette: Any) -> dict[str, Any]:
    store: Store | None = getattr(datasette, "lightstore_store", None)
    return {"ls_store_root": store.root if store is not None else None}


@hookimpl
def extra_css_urls(datasette: Any) -> list[str]:
    return [assets.url("lightstore.css")]


@hookimpl
def prepare_jinja2_environment(env: Any, datasette: Any) -> None:
    env.filters.update(
        ls_time=human_time,
        ls_size=human_size,
        ls_duration=human_duration,
        ls_label=data.ref_label,
        ls_cell=_cell,
        ls_run_url=run_url,
        ls_stage_url=stage_url,
        ls_artifact_url=artifact_url,
        ls_json=lambda v: json.dumps(v, indent=2, sort_keys=True),
        ls_name=shown_name,
        ls_script_json=script_json,
        ls_nonfinite=_nonfinite,
        ls_tags=tag_texts,
    )
    env.globals.update(ls_asset=assets.url)


async def _page(datasette: Any, request: Any, template: str, context: dict[str, Any]) -> Response:
    store = store_of(datasette)
    context = {"store_root": store.root, "page": template, **context}

    html = await datasette.render_template(f"lightstore/{template}.html", context, request=request)
    return Response.html(html)


def _not_found(message: str, status: int = 404) -> Response:
    return Response.text(message + "\n", status=status)


async def home(datasette: Any, request: Any) -> Response:
    rows = await asyncio.to_thread(data.stages, store_of(datasette))
    return await _page(datasette, request, "home", {"stages": rows})


def _flag(args: Any, name: str, default: bool) -> bool:
    """A checkbox sent with a hidden ``0`` before it: the last value counts."""
    values = args.getlist(name)
    return default if not values else values[-1] == "1"


async def stage(datasette: Any, request: Any) -> Response:
    name = unquote(request.url_vars["name"])
    args = request.args
    sort = args.get("sort") or None
    descending = args.get("desc") == "1"
    filters = {k[2:]: args.get(k) for k in args.keys() if k.startswith("f.")}  # noqa: SIM118
    everything = args.get("all") == "1"
    store = store_of(datasette)
    table = await asyncio.to_thread(
        analysis.stage_table, store, name, sort, descending, filters, everything
    )
    if not table["total"] and not table["failures"] and not table["collected"]:
        return _not_found(f"no stage named {name!r} has runs or failed builds in this store")
    chart = analysis.chart_data(table, run_url)
    keys = {f["key"] for f in chart["fields"]}
    defaults = analysis.chart_defaults(table)
    x = args.get("x") if args.get("x") in keys else defaults["x"]
    y = args.get("y") if args.get("y") in keys else defaults["y"]
    color = args.get("color") if args.get("color") in keys else ""
    chart["state"] = {
        "x": x,
        "y": y,
        "color": color,
        "logx": _flag(args, "logx", defaults["logx"] if x == defaults["x"] else False),
        "logy": _flag(args, "logy", defaults["logy"] if y == defaults["y"] else False),
        "view": "parcoords" if args.get("view") == "parcoords" else "scatter",
    }
    failures_list = await asyncio.to_thread(data.failed_builds, store, name, 20)
    state = {
        "sort": sort,
        "desc": "1" if descending else None,
        "all": "1" if everything else None,
    }
    state.update({f"f.{k}": v for k, v in filters.items()})

    def link(**changes: Any) -> str:
        return stage_url(name, **{**state, **changes})

    def sort_link(column: str) -> str:
        # First click ascending, second descending.
        return link(sort=column, desc="1" if sort == column and not descending else None)

    return await _page(
        datasette,
        request,
        "stage",
        {
            **table,
            "sort": sort,
            "descending": descending,
            "everything": everything,
            "filters": filters,
            "chart": chart,
            "fields": chart["fields"],
            "show_constants": args.get("const") == "1",
            "link": link,
            "sort_link": sort_link,
            "failures_list": failures_list,
        },
    )


async def compare(datasette: Any, request: Any) -> Response:
    texts = request.args.getlist("r")
    if not texts:
        return _not_found(
            "choose runs to compare: /compare?r=RREF&r=RREF (or tick them on a stage page)", 400
        )
    try:
        found = await asyncio.to_thread(analysis.compare_runs, store_of(datasette), texts)
    except InvalidReferenceError as e:
        return _not_found(str(e), 400)
    if not found["runs"]:
        return _not_found("none of these runs is in this store: " + ", ".join(found["unknown"]))
    curves = {
        "curves": found["curves"],
        "runs": [
            {"rref": r["rref"], "label": r["label"], "url": run_url(r["rref"])}
            for r in found["runs"]
        ],
    }
    return await _page(datasette, request, "compare", {**found, "curves_data": curves})


async def run(datasette: Any, request: Any) -> Response:
    store = store_of(datasette)
    try:
        # Walking the files and reading the catalogue block: keep them off the event loop,
        # which serves every other page meanwhile.
        info = await asyncio.to_thread(data.run_details, store, unquote(request.url_vars["rref"]))
    except InvalidReferenceError as e:
        return _not_found(str(e), 400)
    except UnknownReferenceError as e:
        return _not_found(str(e))
    drawing = await asyncio.to_thread(_lineage_svg, info["lineage"])
    label = data.ref_label(info["rref"])
    series = {
        "curves": {
            name: [{"rref": info["rref"], "label": label, **line, "why": gap_text(line)}]
            for name, line in info["curves"].items()
        },
        "runs": [],
    }
    return await _page(
        datasette, request, "run", {"run": info, "lineage_svg": drawing, "curves_data": series}
    )


def _lineage_svg(graph: dict[str, Any]) -> str:
    nodes = [n["rref"] for n in graph["nodes"]]
    drawn = lineage.layout(nodes, graph["edges"], graph["labels"])
    return lineage.svg(drawn, graph["root"], run_url, {n: n for n in nodes})


async def artifact(datasette: Any, request: Any) -> Any:
    store = store_of(datasette)
    try:
        # Datasette routes on the raw path: the parts are still percent-encoded.
        path = await asyncio.to_thread(
            artifact_file,
            store,
            unquote(request.url_vars["rref"]),
            unquote(request.url_vars["path"], errors="surrogateescape"),
        )
    except ArtifactRefused as e:
        return _not_found(str(e), e.status)
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if kind not in INLINE_TYPES and (kind.startswith("text/") or "xml" in kind or "html" in kind):
        kind = "text/plain; charset=utf-8"
    return AsgiFileDownload(path, content_type=kind, headers=dict(ARTIFACT_HEADERS))


async def failures(datasette: Any, request: Any) -> Response:
    name = request.args.get("name") or None
    rows = await asyncio.to_thread(data.failed_builds, store_of(datasette), name)
    return await _page(datasette, request, "failures", {"builds": rows, "name": name})


async def pins(datasette: Any, request: Any) -> Response:
    rows = await asyncio.to_thread(data.pins, store_of(datasette))
    return await _page(datasette, request, "pins", rows)


async def disk(datasette: Any, request: Any) -> Response:
    rows = await asyncio.to_thread(data.disk_use, store_of(datasette))
    total = sum(r["size"] for r in rows)
    return await _page(datasette, request, "disk", {"rows": rows, "total": total})


async def asset(datasette: Any, request: Any) -> Any:
    found = assets.asset(request.url_vars["name"])
    if found is None:
        return _not_found("no such asset")
    path, kind = found
    # The URL carries the version: a browser may keep the file (Plotly's is 4.6 MB).
    return AsgiFileDownload(
        path,
        content_type=kind,
        headers={"cache-control": "max-age=86400", "x-content-type-options": "nosniff"},
    )


def _guarded(view: Any) -> Any:
    """A catalogue problem (damaged, locked for too long) becomes a plain 500 page that says so."""

    async def inner(datasette: Any, request: Any) -> Any:
        try:
            return await view(datasette, request)
        except LightstoreError as e:
            return Response.text(f"lightstore: {e}\n", status=500)

    inner.__name__ = view.__name__
    return inner


@hookimpl
def register_routes(datasette: Any) -> list[tuple[str, Any]]:
    return [
        (r"^/$", _guarded(home)),
        (r"^/stage/(?P<name>[^/]+)$", _guarded(stage)),
        (r"^/run/(?P<rref>[^/]+)$", _guarded(run)),
        (r"^/compare$", _guarded(compare)),
        (r"^/-/lightstore/(?P<name>[A-Za-z0-9_.-]+)$", _guarded(asset)),
        (r"^/artifact/(?P<rref>[^/]+)/(?P<path>.*)$", _guarded(artifact)),
        (r"^/failures$", _guarded(failures)),
        (r"^/pins$", _guarded(pins)),
        (r"^/disk$", _guarded(disk)),
    ]


@hookimpl
def menu_links(datasette: Any) -> list[dict[str, str]]:
    return [
        {"href": "/", "label": "Stages"},
        {"href": "/failures", "label": "Failed builds"},
        {"href": "/pins", "label": "Pins"},
        {"href": "/disk", "label": "Disk use"},
        {"href": "/catalogue", "label": "SQL (read-only)"},
    ]
