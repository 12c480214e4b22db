"""The experiment browser in a real browser: Playwright driving Debian's headless Chromium
against a `lightstore ui` process on a sweep (tests/ui_sweep.py), with every request that
is not to the local server refused, so that charts are drawn from the installed assets.

Charts (Plotly), the log-axis toggle, colour by a field, the runs not plotted, parallel
coordinates, the constant-columns toggle, selecting runs and comparing them with their
curves overlaid, a run page's build log and lineage graph (no edge through a box), and
Datasette's pages with lightstore's navigation.
"""

from __future__ import annotations

import contextlib
import io
import os
from urllib.parse import quote

import pytest

pytest.importorskip("datasette")
pytest.importorskip("plotly")
pytest.importorskip("grandalf")
pytest.importorskip("playwright.sync_api")

from playwright import sync_api
from test_ui import CHROMIUM, Server
from test_ui_analysis import Rect, crosses
from ui_sweep import DIVERGED_LR, LRS, SEEDS, make_sweep

from lightstore import build_wrapper, fsinit, instantiate, match_only, mkdrv, mkSS, realize1

pytestmark = pytest.mark.slow

#: Flags for a headless Chromium on a machine without network or GPU (software WebGL, which
#: Plotly's parallel coordinates need).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-swiftshader",
]
RUNS = len(LRS) * len(SEEDS)
DIVERGED = len(SEEDS)  # runs without a loss


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sweep") / "store")
    with contextlib.redirect_stdout(io.StringIO()):
        return make_sweep(root)


@pytest.fixture(scope="module")
def server(sweep):
    srv = Server(sweep["root"])
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (tools/test installs Debian's chromium as root)")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60000)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser, server):
    """A page whose requests off the local server are refused and recorded, and whose
    script errors and dialogs fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(20000)
    refused: list[str] = []
    errors: list[str] = []

    def route(r):
        if r.request.url.startswith(server.url + "/"):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    tab.route("**/*", route)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))
    tab.base = server.url  # type: ignore[attr-defined]
    yield tab
    context.close()
    assert not refused, f"requests off the local server: {refused}"
    assert not errors, errors


def chart_state(page) -> dict:
    return page.evaluate(
        """() => { const d = document.getElementById('chart');
        return {points: d.querySelectorAll('.scatterlayer .point').length,
                xaxis: d.layout.xaxis.type, yaxis: d.layout.yaxis.type,
                traces: d.data.length, colorbar: d.querySelectorAll('.colorbar').length,
                legend: d.querySelectorAll('.legend .traces').length}; }"""
    )


def wait_drawn(page, count: int | None = None) -> None:
    page.wait_for_selector("#chart .scatterlayer .point")
    if count is not None:
        page.wait_for_function(
            f"() => document.querySelectorAll('#chart .scatterlayer .point').length === {count}"
        )


def test_the_chart_is_drawn_from_local_assets(page):
    """Plotly comes from this server (the network is blocked): points, a log x axis."""
    page.goto(page.base + "/stage/train")
    wait_drawn(page, RUNS - DIVERGED)  # their accuracy ends NaN: listed, not plotted
    assert page.evaluate("() => typeof Plotly") == "object"
    state = chart_state(page)
    assert (
        state["points"] == RUNS - DIVERGED
        and state["xaxis"] == "log"
        and state["yaxis"] == "linear"
    )
    assert page.locator("#chart .xtitle").text_content() == "lr"
    assert page.locator("#chart .ytitle").text_content() == "acc"


def test_log_axis_toggle_and_colour_by(page):
    page.goto(page.base + "/stage/train?y=metric:loss:min")
    wait_drawn(page, RUNS)
    page.uncheck("#chart-logx")
    page.wait_for_function("() => document.getElementById('chart').layout.xaxis.type === 'linear'")
    page.check("#chart-logy")
    page.wait_for_function("() => document.getElementById('chart').layout.yaxis.type === 'log'")
    assert "logx=0" in page.url and "logy=1" in page.url
    # Colour by a numeric field: one trace with a colour scale.
    page.select_option("#chart-color", "config:seed")
    page.wait_for_selector("#chart .colorbar")
    assert chart_state(page)["traces"] == 1
    # The state survives a reload (it is in the URL).
    page.reload()
    wait_drawn(page, RUNS)
    state = chart_state(page)
    assert state["xaxis"] == "linear" and state["yaxis"] == "log" and state["colorbar"] == 1


def test_colour_by_a_text_field_gives_a_legend(page, server, tmp_path):
    root = str(tmp_path / "store")
    S = fsinit(mkSS(root)).settings
    for act in ("relu", "tanh", "gelu"):
        for width in (8, 16):

            def stage(r, act=act, width=width):
                def real(b):
                    from lightstore import build_metrics

                    build_metrics(b, {"loss": width / 10 + len(act)})

                config = {"name": "net", "act": act, "width": width}
                return mkdrv(config, match_only(), build_wrapper(real), r)

            realize1(instantiate(stage, S=S))
    srv = Server(root)
    try:
        page.unroute("**/*")
        page.route(
            "**/*",
            lambda r: r.continue_() if r.request.url.startswith(srv.url + "/") else r.abort(),
        )
        page.goto(srv.url + "/stage/net?color=config:act")
        wait_drawn(page, 6)
        state = chart_state(page)
        assert state["traces"] == 3 and state["legend"] == 3 and state["colorbar"] == 0
        names = page.locator("#chart .legend .legendtext").all_text_contents()
        assert sorted(names) == ["gelu", "relu", "tanh"]
        # A text field as the x axis: categories.
        page.select_option("#chart-x", "config:act")
        page.wait_for_function(
            "() => document.getElementById('chart').layout.xaxis.type === 'category'"
        )
    finally:
        srv.stop()


def test_runs_without_a_plottable_value_are_listed(page, sweep):
    page.goto(page.base + "/stage/train?y=metric:loss")
    wait_drawn(page, RUNS - DIVERGED)
    items = page.locator("#not-plotted li")
    assert items.count() == DIVERGED
    assert set(items.all_inner_texts()) == {
        f"{label}: loss: NaN"
        for label in page.locator("#runs tr.not-plotted td.run code").all_inner_texts()
    }
    diverged = {sweep["train"][(DIVERGED_LR, s)] for s in SEEDS}
    marked = page.locator("#runs tr.not-plotted").evaluate_all(
        "rows => rows.map(r => r.dataset.rref)"
    )
    assert set(marked) == diverged
    # Back to a metric every run has a number for (the smallest loss): nothing is listed.
    page.select_option("#chart-y", "metric:loss:min")
    wait_drawn(page, RUNS)
    assert page.locator("#not-plotted li").count() == 0
    assert page.locator("#runs tr.not-plotted").count() == 0


def test_parallel_coordinates_of_a_stage(page):
    page.goto(page.base + "/stage/train")
    wait_drawn(page)
    page.click("#view-parcoords")
    page.wait_for_selector("#parcoords .parcoords")
    assert page.locator("#chart").is_hidden()
    dims = page.evaluate(
        "() => document.getElementById('parcoords').data[0].dimensions.map(d => d.label)"
    )
    assert dims == ["lr (log)", "seed", "acc", "acc:min", "diverged", "loss", "loss:min"]
    assert page.locator("#not-plotted li").count() == DIVERGED  # a NaN loss is not drawn
    assert "view=parcoords" in page.url


def test_constant_columns_toggle(page):
    page.goto(page.base + "/stage/train")
    batch = page.locator('#runs th[data-key="config:batch"]')
    lr = page.locator('#runs th[data-key="config:lr"]')
    assert batch.is_hidden() and lr.is_visible()
    # What varies is on screen; the metrics are not pushed off it.
    assert page.locator('#runs th[data-key="metric:loss"]').bounding_box()["x"] < 1280
    page.check("#show-constants")
    assert batch.is_visible() and "const=1" in page.url
    page.uncheck("#show-constants")
    assert batch.is_hidden()
    # Timestamps stay on one line.
    cell = page.locator("#runs td.time").first
    height = cell.bounding_box()["height"]
    line = cell.evaluate("c => parseFloat(getComputedStyle(c).lineHeight) || 20")
    assert height < 2 * line + 8


def test_select_runs_and_compare_them(page, sweep):
    page.goto(page.base + "/stage/train?sort=config:lr")
    boxes = page.locator("#runs input.select-run")
    assert page.locator("#compare-button").is_disabled()
    for i in (0, 4, 8):
        boxes.nth(i).check()
    assert page.locator("#selected-count").inner_text() == "3 selected"
    page.click("#compare-button")
    page.wait_for_url("**/compare?**")
    assert page.locator("#compare-runs thead th").count() == 4
    differing = page.locator("#compare-config tr.differs th").all_inner_texts()
    assert differing == ["lr"]
    assert page.locator("#compare-config td.differs").count() == 3
    assert page.locator("#compare-config-same").is_visible()
    page.wait_for_selector("#curves .main-svg")
    page.wait_for_function("() => document.getElementById('curves').dataset.lines === '3'")
    assert page.locator("#curves .scatterlayer .trace").count() == 3
    page.check("#curve-logy")
    page.wait_for_function("() => document.getElementById('curves').layout.yaxis.type === 'log'")


def test_compare_overlays_curves_labelled_by_what_differs(page, sweep):
    picked = [sweep["train"][(lr, 1)] for lr in (1e-3, 3e-3, DIVERGED_LR)]
    page.goto(page.base + "/compare?" + "&".join(f"r={quote(r, safe=':')}" for r in picked))
    page.wait_for_function("() => document.getElementById('curves').dataset.lines === '3'")
    page.select_option("#curve-name", "loss")
    page.wait_for_function(
        "() => document.getElementById('curves').layout.yaxis.title.text === 'loss'"
    )
    names = page.evaluate("() => document.getElementById('curves').data.map(t => t.name)")
    assert names == ["lr=0.001", "lr=0.003", "lr=0.1"]
    assert page.locator("#curves .legend .traces").count() == 3
    # The diverged run's NaN steps are shaded and labelled on the chart, and listed below.
    assert page.evaluate("() => document.getElementById('curves').layout.shapes.length") == 1
    marks = page.locator("#curves .annotation-text").evaluate_all(
        "ts => ts.map(t => t.textContent)"
    )
    assert marks == ["NaN \u00d77"]  # NaN at 7 steps
    assert page.locator("#curve-gaps li").all_inner_texts() == ["lr=0.1: NaN at steps 3-9"]
    # Tags differ between the runs: highlighted like any difference.
    assert page.locator("#compare-tags td.differs").count() == 3
    assert "status=diverged" in page.locator("#compare-tags").inner_text()


def test_run_page_draws_one_chart_per_series_with_a_log_toggle(page, sweep):
    rref = sweep["train"][(DIVERGED_LR, 1)]
    page.goto(page.base + "/run/" + quote(rref, safe=":"))
    page.wait_for_function("() => document.getElementById('curves').dataset.drawn === '2'")
    charts = page.locator("#curves .ls-plot")
    assert charts.evaluate_all("cs => cs.map(c => c.dataset.series)") == ["acc", "loss"]
    assert page.locator("#curves .ls-plot .main-svg").count() >= 2
    # Its NaN steps are shaded in both, and said in the table.
    assert charts.evaluate_all("cs => cs.map(c => c.dataset.shaded)") == ["1", "1"]
    assert "NaN at steps 3-9" in page.locator('#series tr[data-series="loss"]').inner_text()
    page.check("#curve-logy")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#curves .ls-plot')]"
        ".every(c => c.layout.yaxis.type === 'log')"
    )
    assert page.locator("#tags a.ls-chip").all_inner_texts() == ["status=diverged"]
    page.locator("#tags a.ls-chip").click()
    page.wait_for_url("**/stage/train?f.tag=status%3Ddiverged")
    assert page.locator("#runs a.run-link").count() == DIVERGED


def test_run_page_log_and_lineage_without_edges_through_boxes(page, sweep):
    rref = sweep["train"][(3e-3, 1)]
    page.goto(page.base + "/run/" + quote(rref, safe=":"))
    assert "epoch  9  lr=0.003" in page.locator("#build-log").inner_text()
    page.wait_for_selector("#curves .main-svg")
    nodes = page.locator("#lineage g.node")
    assert nodes.count() == 3  # data -> train -> evaluate
    assert "lr=0.003 seed=1" in page.locator("#lineage g.root").text_content()
    boxes = {
        g["ref"]: Rect(g["x"], g["y"], g["w"], g["h"])
        for g in page.locator("#lineage g.node").evaluate_all(
            """gs => gs.map(g => { const r = g.querySelector('rect');
              return {ref: g.dataset.ref, x: +r.getAttribute('x'), y: +r.getAttribute('y'),
                      w: +r.getAttribute('width'), h: +r.getAttribute('height')}; })"""
        )
    }
    edges = page.locator("#lineage polyline.edge").evaluate_all(
        "es => es.map(e => [e.dataset.user, e.dataset.dep, e.getAttribute('points')])"
    )
    assert len(edges) == 2
    for user, dep, text in edges:
        points = [tuple(map(float, p.split(","))) for p in text.split()]
        assert points[0][0] == pytest.approx(boxes[dep].x + boxes[dep].w, abs=0.1)
        assert points[-1][0] == pytest.approx(boxes[user].x, abs=0.1)
        for box in boxes.values():
            assert not crosses(points, box)
    # A box is a link to its run.
    page.locator("#lineage g.node:not(.root)").first.click()
    page.wait_for_url("**/run/**")
    assert rref not in page.url


def test_datasette_pages_keep_lightstores_navigation(page):
    page.goto(page.base + "/catalogue")
    nav = page.locator("header .ls-nav a")
    assert nav.all_inner_texts()[:2] == ["Stages", "Failed builds"]
    assert page.locator("#start-here").is_visible()
    page.click("#ls-views a:text-is('history')")
    page.wait_for_url("**/catalogue/history")
    page.click("header .ls-nav a:text-is('Stages')")
    page.wait_for_url(page.base + "/")
    assert page.locator("a.stage-link:text-is('train')").is_visible()


def test_hostile_values_stay_text(page, tmp_path):
    """Config keys and values holding markup are shown as text in the table, the facets,
    the chart (Plotly reads some tags in labels), the comparison and the lineage graph."""
    root = str(tmp_path / "store")
    S = fsinit(mkSS(root)).settings
    hostile = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    rrefs = []
    for i, value in enumerate((hostile, hostile + "&amp;", "<b>bold</b>")):

        def stage(r, i=i, value=value):
            def real(b):
                from lightstore import build_metrics

                build_metrics(b, {"loss": i / 4})

            config = {"name": "odd", hostile: value, "n": i}
            return mkdrv(config, match_only(), build_wrapper(real), r)

        rrefs.append(realize1(instantiate(stage, S=S)))
    srv = Server(root)
    try:
        page.unroute("**/*")
        page.route(
            "**/*",
            lambda r: r.continue_() if r.request.url.startswith(srv.url + "/") else r.abort(),
        )
        injected = """() => document.querySelectorAll('img[src="x"]').length +
            [...document.querySelectorAll('b, script:not([type="application/json"])')].filter(
              e => /bold|alert/.test(e.textContent)).length"""
        key = "config:" + hostile
        page.goto(srv.url + "/stage/odd?" + f"x={quote(key)}&color={quote(key)}")
        wait_drawn(page, 3)
        legend = page.locator("#chart .legend .legendtext").all_text_contents()
        assert sorted(legend) == sorted(["<b>bold</b>", hostile, hostile + "&amp;"])
        assert page.locator("#chart .xtitle").text_content() == hostile
        assert page.evaluate(injected) == 0
        page.click("#view-parcoords")
        page.wait_for_selector("#parcoords .parcoords")
        assert page.evaluate(injected) == 0
        for path in (
            "/compare?" + "&".join("r=" + quote(r, safe=":") for r in rrefs),
            "/run/" + quote(rrefs[0], safe=":"),
            "/catalogue/runs",
        ):
            page.goto(srv.url + path)
            assert page.evaluate(injected) == 0, path
    finally:
        srv.stop()
