"""The experiment browser's analysis pages over a real `lightstore ui` process on a sweep
(tests/ui_sweep.py): the stage chart's defaults, constant columns, upstream (cross-stage)
fields, runs a chart cannot place, the comparison page, the run page's build log, failed
builds with their configs, Datasette's pages with lightstore's navigation, the assets served
from installed files; and the pieces behind them (curve files, the lineage layout).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import sqlite3
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import pytest

pytest.importorskip("datasette")
pytest.importorskip("plotly")
pytest.importorskip("grandalf")

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from test_ui import Server, chart_of, run, url_of
from ui_sweep import DIVERGED_LR, FAILED_LR, FAILURE, LRS, make_sweep

from lightstore import fsinit, mkSS


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sweep") / "store")
    with contextlib.redirect_stdout(io.StringIO()):  # what the realizers print
        return make_sweep(root)


@pytest.fixture(scope="module")
def server(sweep):
    srv = Server(sweep["root"])
    try:
        yield srv
    finally:
        srv.stop()


def page(server: Server, path: str) -> str:
    status, _, body = server.get(path)
    assert status == 200, (path, status, body[-2000:])
    return body.decode()


def header_keys(html: str, css: str = "") -> list[str]:
    """The column keys of the runs table, in order (those with class `css` only)."""
    head = html.split('<table class="ls', 1)[1].split("</thead>", 1)[0]
    return [
        key
        for classes, key in re.findall(r'<th class="([^"]*)" data-key="([^"]+)"', head)
        if not css or css in classes.split()
    ]


def curves_of(html: str) -> dict[str, Any]:
    """The curves a compare or run page hands its script."""
    found = re.search(r'id="ls-curves-data">(.*?)</script>', html, re.S)
    assert found is not None
    return json.loads(found.group(1))["curves"]


# -- the stage page --------------------------------------------------------------------------


def test_the_chart_starts_on_a_varying_field_against_the_first_metric(server):
    """Not on whatever column comes first (batch is 32 in every run: one vertical stripe):
    the varying learning rate, log-spaced, so on a log axis."""
    chart = chart_of(page(server, "/stage/train"))
    assert chart["state"]["x"] == "config:lr" and chart["state"]["y"] == "metric:acc"
    assert chart["state"]["logx"] is True and chart["state"]["logy"] is False
    fields = {f["key"] for f in chart["fields"]}
    assert {"config:lr", "config:seed", "metric:loss", "metric:acc"} <= fields
    assert not {"config:batch", "config:epochs", "config:__source__"} & fields
    # Chosen axes stay chosen; a field that does not exist falls back to the default.
    chart = chart_of(page(server, "/stage/train?x=config:seed&y=metric:loss&color=config:lr"))
    assert chart["state"] == {
        "x": "config:seed",
        "y": "metric:loss",
        "color": "config:lr",
        "logx": False,
        "logy": False,
        "view": "scatter",
    }
    chart = chart_of(page(server, "/stage/train?x=config:nope&logx=0&logx=1"))
    assert chart["state"]["x"] == "config:lr" and chart["state"]["logx"] is True
    assert chart_of(page(server, "/stage/train?logx=0&logx=0"))["state"]["logx"] is False


def test_constant_columns_come_last_and_are_hidden(server):
    html = page(server, "/stage/train")
    keys = header_keys(html)
    constant = header_keys(html, "const")
    assert set(constant) == {
        "config:batch",
        "config:epochs",
        "config:__source__",
        "config:data",
        "config:out",
        "up:data.rows",
        "up:data.out",
    }
    varying = [k for k in keys if k not in constant]
    assert varying == [
        "config:lr",
        "config:seed",
        "metric:acc",
        "metric:acc:min",
        "metric:diverged",
        "metric:loss",
        "metric:loss:min",
    ]
    assert keys == varying + [k for k in keys if k in constant]  # what varies first
    assert 'id="show-constants"' in html and "7 columns with the same value" in html
    assert 'class="ls" id="runs"' in html  # hidden until asked
    assert 'class="ls show-constants" id="runs"' in page(server, "/stage/train?const=1")
    assert "batch=32" in html  # what they hold is said once, above the table


def test_runs_are_analysed_by_the_fields_of_the_stages_they_were_built_on(server, sweep):
    """evaluate's runs carry train's lr and seed (through realization_deps): columns, facets
    and chart fields, filters and sorting."""
    html = page(server, "/stage/evaluate")
    # Varying: which model (a reference, in evaluate's own config), then the metric, then
    # train's learning rate; split (config) and train's seed (all 1) are constant.
    assert [k for k in header_keys(html) if k not in header_keys(html, "const")] == [
        "config:model",
        "metric:r2",
        "up:train.lr",
    ]
    assert "up:train.seed" in header_keys(html, "const")  # every evaluate run used seed 1
    assert 'class="facet up"' in html and "f.up%3Atrain.lr=0.003" in html
    chart = chart_of(html)
    assert chart["state"]["x"] == "up:train.lr" and chart["state"]["y"] == "metric:r2"
    by_lr = {run["v"]["up:train.lr"]: run["v"]["metric:r2"] for run in chart["runs"]}
    assert sorted(by_lr) == sorted(lr for lr in LRS if lr < DIVERGED_LR)
    assert max(by_lr, key=by_lr.get) == 3e-3
    one = page(server, "/stage/evaluate?f.up:train.lr=0.003")
    assert one.count('class="run-link"') == 1
    ordered = chart_of(page(server, "/stage/evaluate?sort=up:train.lr&desc=1"))["runs"]
    assert [r["v"]["up:train.lr"] for r in ordered] == sorted(by_lr, reverse=True)


def test_a_run_built_on_several_runs_of_a_stage_shows_their_values(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from ui_store import make_store

    made = make_store(str(tmp_path / "store"))
    from lightstore.ui.data import upstream_fields

    fields = upstream_fields(made["store"], [made["report"]])[made["report"]]
    assert fields["train.lr"] == [0.1, 0.3] and fields["train.model.depth"] == 2
    assert fields["data.rows"] == 20


def test_runs_a_chart_cannot_place_are_marked_not_dropped(tmp_path):
    """Numbers beyond a float (configs take integers of any size) and non-finite metric
    values reach the page marked with why they are not plotted; their cells are marked."""
    from lightstore import build_metrics, build_wrapper, instantiate, match_only, mkdrv, realize1

    root = str(tmp_path / "store")
    S = fsinit(mkSS(root)).settings

    def stage(n, loss):
        def real(b):
            build_metrics(b, {"loss": loss})

        return lambda r: mkdrv({"name": "odd", "n": n}, match_only(), build_wrapper(real), r)

    rrefs = [
        realize1(instantiate(stage(n, loss), S=S))
        for n, loss in ((1, 0.5), (10**400, 0.25), (3, 0.125))
    ]
    # A non-finite value as a catalogue that records one holds it.
    with sqlite3.connect(str(Path(root) / "catalogue.sqlite")) as conn:
        conn.execute("UPDATE metrics SET value = ? WHERE rref = ?", (math.inf, rrefs[2]))
    srv = Server(root)
    try:
        html = page(srv, "/stage/odd")
    finally:
        srv.stop()
    values = {r["rref"]: r["v"] for r in chart_of(html)["runs"]}
    assert values[rrefs[0]]["config:n"] == 1.0 and values[rrefs[0]]["metric:loss"] == 0.5
    assert values[rrefs[1]]["config:n"] == {"nf": "too large for a float"}
    assert values[rrefs[2]]["metric:loss"] == {"nf": "inf"}
    assert str(10**400) in html  # the table shows every digit
    assert 'title="not plotted: too large for a float"' in html
    assert 'title="not plotted: inf"' in html and html.count(" nonfinite") == 2


# -- several runs side by side ---------------------------------------------------------------------


def test_compare_shows_configs_metrics_and_curves_side_by_side(server, sweep):
    picked = [sweep["train"][(lr, 1)] for lr in (1e-3, 1e-2, DIVERGED_LR)]
    html = page(server, "/compare?" + "&".join(f"r={quote(r, safe=':')}" for r in picked))
    config = html.split('id="compare-config"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'<tr class="differs"><th>([^<]+)</th>', config) == ["lr"]
    assert config.count('<td class="differs">') == 3
    assert "6 fields the same in every run" in html  # batch, epochs, seed, ...
    metrics = html.split('id="compare-metrics"', 1)[1].split("</table>", 1)[0]
    # The diverged run's loss ends NaN: its cell says so, marked, and differs; its smallest
    # loss is a number.
    assert '<th>loss</th><td class="differs">' in metrics
    assert 'class="differs nonfinite">NaN<' in metrics and "<th>loss:min</th>" in metrics
    curves = curves_of(html)
    assert list(curves) == ["acc", "loss"] and len(curves["loss"]) == 3
    diverged = next(c for c in curves["loss"] if c["rref"] == picked[2])
    assert diverged["values"][:3] == [2.5, 2.2121, 1.9627] and diverged["values"][3] is None
    assert diverged["gaps"] == 7 and diverged["nonfinite"] == [[3, 9, "NaN", 7]]
    assert diverged["why"] == "NaN at steps 3-9"
    # Each run's line is labelled by the field in which these runs differ.
    assert [c["label"] for c in curves["loss"]] == ["lr=0.001", "lr=0.01", "lr=0.1"]
    # Tags differ: highlighted; the diverged run's note is shown.
    tags = html.split('id="compare-tags"', 1)[1].split("</tr>", 1)[0]
    assert tags.startswith(' class="differs"') and "status=diverged" in tags
    assert "baseline" in tags and "Diverges at epoch 3" in html
    # Upstream fields are compared too (all the same here: one data run).
    assert "upstream field" in html


def test_compare_refuses_what_it_cannot_show(server, sweep):
    one = sweep["train"][(1e-3, 1)]
    assert server.get("/compare")[0] == 400
    assert server.get("/compare?r=rref:nonsense")[0] == 400
    unknown = "rref:" + "0" * 32 + one[37:]
    assert server.get(f"/compare?r={quote(unknown, safe=':')}")[0] == 404
    both = page(server, f"/compare?r={quote(one, safe=':')}&r={quote(unknown, safe=':')}")
    assert "Not in this store" in both and unknown in both
    many = "&".join(f"r=rref:{i:032x}-{'0' * 32}-train" for i in range(51))
    status, _, body = server.get("/compare?" + many)
    assert status == 400 and b"at most 50 runs" in body


# -- the run page and failed builds ------------------------------------------------------------


def test_run_page_shows_its_build_log_and_a_labelled_lineage(server, sweep):
    rref = sweep["train"][(3e-3, 1)]
    html = page(server, url_of(rref))
    log = html.split('id="build-log">', 1)[1].split("</pre>", 1)[0]
    assert "epoch  0  lr=0.003  loss=2.5" in log and "epoch  9" in log
    # Runs of a stage are labelled by the fields in which that stage's runs differ.
    assert ">lr=0.003 seed=1<" in html
    assert re.search(r">evaluate [0-9a-f]{8}<", html) and ">model=train:" in html
    assert 'id="curves"' in html


def test_failed_builds_name_their_config(server):
    for path in ("/failures", "/stage/train"):
        html = page(server, path)
        assert f'<span class="ls-chip">lr={FAILED_LR}</span>' in html, path
        assert '<span class="ls-chip">seed=1</span>' in html
        assert FAILURE in html and "&#34;lr&#34;: 1.0" in html  # the whole config, escaped


# -- Datasette's own pages, assets -------------------------------------------------------------


def test_datasette_pages_keep_the_navigation_and_start_from_the_views(server):
    for path in ("/catalogue", "/catalogue/history", "/catalogue/runs?name=train", "/-/metadata"):
        html = page(server, path)
        assert 'class="ls-nav"' in html and 'href="/failures"' in html, path
    html = page(server, "/catalogue")
    start = html.index('id="start-here"')
    assert start < html.index('id="tables"')
    for view in ("runs", "history", "build_history", "build_log"):
        assert f'href="/catalogue/{view}"' in html[start:]
    # Bookkeeping tables are hidden, and the SQL editor does not open on one.
    visible = html.split('id="tables"', 1)[1]
    assert "_sqlite_migrations</a>" not in visible.split("hidden tables")[0]
    editor = html.split('id="sql-editor"', 1)[1].split("</textarea>", 1)[0]
    assert "_sqlite_migrations" not in editor
    assert "Runs of a stage, newest first" in html  # canned queries come first


def test_assets_are_served_from_the_installed_files(server):
    from lightstore.ui.assets import plotly_js

    status, headers, body = server.get("/-/lightstore/plotly.min.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert body == Path(plotly_js()).read_bytes()
    status, _, body = server.get("/-/lightstore/lightstore.js")
    assert status == 200 and b"Plotly.react" in body
    for name in ("nothing.js", "..%2F__init__.py", "__init__.py", "../templates"):
        status, _, body = server.get(f"/-/lightstore/{name}")
        assert status != 200 and b"import" not in body, name
    html = page(server, "/stage/train")
    scripts = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert scripts and all(s.startswith("/") for s in scripts), scripts  # nothing from elsewhere


@pytest.mark.parametrize("missing", ["plotly", "grandalf"])
def test_without_a_drawing_library_the_error_names_it_and_the_extra(tmp_path, monkeypatch, missing):
    import sys

    from lightstore.ui import assets

    fsinit(mkSS(str(tmp_path)))
    monkeypatch.setitem(sys.modules, missing, None)
    if missing == "grandalf":
        for name in ("grandalf.graphs", "grandalf.layouts"):
            monkeypatch.setitem(sys.modules, name, None)
    assets.plotly_js.cache_clear()
    try:
        result = run(str(tmp_path), "ui", "--port", "0")
    finally:
        assets.plotly_js.cache_clear()
    assert result.exit_code == 5, result.output
    assert missing.capitalize() in result.output or missing in result.output
    assert "lightstore[ui]" in result.output


# -- curves -------------------------------------------------------------------------------------------


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.integers(-1000, 10**6), NUMBERS, max_size=60), st.integers(2, 8))
def test_a_curve_keeps_its_steps_and_says_where_it_is_not_finite(points, most):
    import lightstore.ui.curves as ui_curves

    line = ui_curves.curve_line(points)
    steps = sorted(points)
    bad = [s for s in steps if not math.isfinite(points[s])]
    assert line["steps"] == steps and line["gaps"] == len(bad)
    assert [v is None for v in line["values"]] == [s in bad for s in steps]
    assert all(
        v == float(points[s]) for s, v in zip(steps, line["values"], strict=True) if v is not None
    )
    # The runs of non-finite steps cover exactly those steps, each with its reason.
    covered = [s for first, last, _, _ in line["nonfinite"] for s in steps if first <= s <= last]
    assert covered == bad[: len(covered)] and sum(r[3] for r in line["nonfinite"]) == len(covered)
    for first, _, why, _ in line["nonfinite"]:
        value = points[first]
        assert why == ("NaN" if math.isnan(value) else "inf" if value > 0 else "-inf")
    assert bool(ui_curves.gap_text(line)) == bool(bad)
    # A long series is thinned for drawing, its last point kept.
    old, ui_curves.MAX_POINTS = ui_curves.MAX_POINTS, most
    try:
        thin = ui_curves.curve_line(points)
    finally:
        ui_curves.MAX_POINTS = old
    assert len(thin["steps"]) == min(len(steps), most) and thin["gaps"] == len(bad)
    assert thin["steps"][-1:] == steps[-1:] and thin["steps"] == sorted(thin["steps"])


def test_series_are_read_through_the_query_api_as_history_reads_them(sweep):
    """A stage's columns of a series (its last value, its smallest) are the values
    `lightstore history -m loss -m loss:min` gives, NaN included; a chart marks a NaN."""
    from lightstore.query import history, open_view
    from lightstore.ui import analysis

    view = open_view(sweep["root"])
    table = analysis.stage_table(view, "train")
    rows = {
        r["rref"]: r
        for r in history(view, "train", metrics=["loss", "loss:min", "acc", "acc:min", "diverged"])
    }
    assert len(table["runs"]) == len(rows) == len(LRS) * 2
    for row in table["runs"]:
        for name in ("loss", "loss:min", "acc", "acc:min", "diverged"):
            mine, theirs = row["values"][f"metric:{name}"], rows[row["rref"]][name]
            assert mine == theirs or (math.isnan(mine) and math.isnan(theirs)), (name, row)
    diverged = sweep["train"][(DIVERGED_LR, 1)]
    row = next(r for r in table["runs"] if r["rref"] == diverged)
    assert math.isnan(row["values"]["metric:loss"]) and row["values"]["metric:loss:min"] < 3
    chart = analysis.chart_data(table, lambda r: r)
    plotted = next(r for r in chart["runs"] if r["rref"] == diverged)["v"]
    assert plotted["metric:loss"] == {"nf": "NaN"} and isinstance(plotted["metric:loss:min"], float)


# -- the lineage layout -------------------------------------------------------------------------------


class Rect(NamedTuple):
    """A box as the lineage drawing places it: top-left corner and size."""

    x: float
    y: float
    w: float
    h: float


def crosses(points: list[tuple[float, float]], box: Any) -> bool:
    """Whether the polyline enters the inside of `box` (its border excluded)."""
    eps = 0.5
    x0, y0, x1, y1 = box.x + eps, box.y + eps, box.x + box.w - eps, box.y + box.h - eps
    for (ax, ay), (bx, by) in itertools.pairwise(points):
        # Clip the segment to the box (Liang-Barsky): does any part remain?
        t0, t1 = 0.0, 1.0
        dx, dy = bx - ax, by - ay
        inside = True
        for p, q in ((-dx, ax - x0), (dx, x1 - ax), (-dy, ay - y0), (dy, y1 - ay)):
            if p == 0:
                if q < 0:
                    inside = False
                    break
            else:
                t = q / p
                if p < 0:
                    t0 = max(t0, t)
                else:
                    t1 = min(t1, t)
        if inside and t0 < t1:
            return True
    return False


def check_layout(drawn: Any, edges: list[tuple[str, str]]) -> None:
    boxes = drawn.boxes
    for (a, box_a), (b, box_b) in ((p, q) for p in boxes.items() for q in boxes.items()):
        if a < b:  # no two boxes overlap
            assert (
                box_a.x + box_a.w <= box_b.x
                or box_b.x + box_b.w <= box_a.x
                or box_a.y + box_a.h <= box_b.y
                or box_b.y + box_b.h <= box_a.y
            ), (a, b)
    assert sorted((u, d) for u, d, _ in drawn.edges) == sorted(set(edges))
    for user, dep, points in drawn.edges:
        # From the dependency's right side to the user's left side, left to right.
        assert points[0] == pytest.approx((boxes[dep].x + boxes[dep].w, points[0][1]))
        assert points[-1] == pytest.approx((boxes[user].x, points[-1][1]))
        assert boxes[dep].x < boxes[user].x
        for node, box in boxes.items():
            assert not crosses(points, box), (user, dep, node)


@st.composite
def dags(draw):
    n = draw(st.integers(min_value=1, max_value=14))
    nodes = [f"rref:{i:02d}" for i in range(n)]
    pairs = [(nodes[j], nodes[i]) for i in range(n) for j in range(i + 1, n)]
    edges = draw(st.lists(st.sampled_from(pairs), max_size=24, unique=True)) if pairs else []
    width = draw(st.lists(st.integers(min_value=1, max_value=40), min_size=n, max_size=n))
    lines = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=n, max_size=n))
    labels = {node: ["x" * width[i]] * lines[i] for i, node in enumerate(nodes)}
    return nodes, edges, labels


@settings(max_examples=60, deadline=None)
@given(dags())
def test_no_lineage_edge_passes_through_a_box(graph):
    from lightstore.ui import lineage as ui_lineage

    nodes, edges, labels = graph
    check_layout(ui_lineage.layout(nodes, edges, labels), edges)


def test_lineage_svg_escapes_labels_and_draws_the_layout():
    from lightstore.ui import lineage as ui_lineage

    nodes = ["rref:a", "rref:b", "rref:c"]
    edges = [("rref:b", "rref:a"), ("rref:c", "rref:a"), ("rref:c", "rref:b")]
    labels = {n: [f"<b>{n}</b>", 'x="1" & y'] for n in nodes}
    drawn = ui_lineage.layout(nodes, edges, labels)
    check_layout(drawn, edges)
    svg = ui_lineage.svg(drawn, "rref:b", lambda r: "/run/" + r + '"><script>', {})
    assert "<b>" not in svg and "<script>" not in svg and "&lt;b&gt;rref:a&lt;/b&gt;" in svg
    assert svg.count('<polyline class="edge"') == 3 and svg.count('class="node root"') == 1


def test_tags_and_notes_become_a_column_facets_filters_and_chips(server, sweep):
    """The catalogue's tags: a column of chips, a facet (a tag with several values by its
    name too), a filter by ``NAME`` or ``NAME=VALUE``; notes beside them; text stays text."""
    from lightstore import Store

    other = sweep["train"][(1e-3, 2)]
    store = Store.open(sweep["root"])
    store.set_tag(other, "status", "<i>x</i>")
    try:
        html = page(server, "/stage/train")
        facet = html.split('class="facet tag"', 1)[1].split("</div>", 1)[0]
        for text, count in (("baseline", 2), ("status", 3), ("status=diverged", 2), ("best", 1)):
            assert re.search(rf">{re.escape(text)}</a> <span class=\"ls-muted\">{count}<", facet)
        assert "status=&lt;i&gt;x&lt;/i&gt;</a>" in html and "<i>x</i>" not in html
        assert 'href="/stage/train?f.tag=best">best</a>' in html
        assert "The one for the paper" in html  # the note, beside the tags
        for wanted, runs in (("status", 3), ("status=diverged", 2), ("best", 1), ("nope", 0)):
            shown = page(server, f"/stage/train?f.tag={quote(wanted)}")
            assert shown.count('class="run-link"') == runs, wanted
        # A filter that leaves no run is an empty table, not an error.
        assert "0 matching the filters" in page(server, "/stage/train?f.config:lr=5")
        chart = chart_of(page(server, "/stage/train?f.tag=best"))
        assert [r["tags"] for r in chart["runs"]] == [["best"]]
    finally:
        store.remove_tag(other, "status")


def test_run_page_draws_its_curves_and_shows_its_tags_and_notes(server, sweep):
    rref = sweep["train"][(DIVERGED_LR, 1)]
    html = page(server, url_of(rref))
    curves = curves_of(html)
    assert sorted(curves) == ["acc", "loss"]
    loss = curves["loss"][0]
    assert loss["steps"] == list(range(10)) and loss["values"][3:] == [None] * 7
    series = html.split('id="series"', 1)[1].split("</table>", 1)[0]
    row = series.split('data-series="loss"', 1)[1].split("</tr>", 1)[0]
    assert '<td class="num nonfinite">NaN</td>' in row  # the last value
    assert "1.9627 <span" in row and "@2" in row  # the smallest, at its step
    assert "NaN at steps 3-9" in row and "nonfinite gaps" in row
    assert 'id="curve-logy"' in html and "plotly.min.js" in html
    tags = html.split('id="tags"', 1)[1].split("</p>", 1)[0]
    assert 'href="/stage/train?f.tag=status%3Ddiverged" title="set by ' in tags
    assert ">status=diverged</a>" in tags
    assert "Diverges at epoch 3: lr too large." in html.split('id="notes"', 1)[1]
    # The metrics table says which values are a series' last.
    assert "(step 9)" in html.split('id="metrics"', 1)[1].split("</table>", 1)[0]
