"""`lightstore ui`, started as a real process on a small sweep (metrics, images, a failed build):
HTTP-level checks of every page and of the artifact route against path traversal, and a real
browser (Playwright driving Debian's Chromium) clicking through it.

The README's screenshots (docs/ui-*.png) are made by tools/ui_screenshots.py; the browser's
own tests of charts, comparison, lineage and navigation are in tests/test_ui_browser.py.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

pytest.importorskip("datasette")

from helpers import address_space, run
from hypothesis import given
from hypothesis import strategies as st
from ui_store import FAILURE, make_store

from lightstore import fsinit, match_only, mkSS
from lightstore.query.graph import flatten as graph_flatten
from lightstore.ui import exposure_warning, is_loopback, loopback_literal
from lightstore.ui.data import flatten, lineage
from lightstore.ui.fields import chart_value, script_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CHROMIUM = "/usr/bin/chromium"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Server:
    """`python -m lightstore ui --port 0` as a child process; its URL is read from its first line."""

    def __init__(self, root: str, *options: str, memory: int | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lightstore", "--root", root, "ui", "--port", "0", *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=address_space(memory) if memory else None,
        )
        # stderr is read all along: a server whose pipe filled up would stop answering.
        self._stderr: list[str] = []
        self._drain = threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr))
        self._drain.start()
        line: list[str] = []

        def read_stdout() -> None:  # the first line, then the rest is drained for the same reason
            line.append(self.proc.stdout.readline())
            for _ in self.proc.stdout:
                pass

        reader = threading.Thread(target=read_stdout, daemon=True)
        reader.start()
        for _ in range(600):
            if line or not reader.is_alive():
                break
            time.sleep(0.1)
        if not line or "http://" not in line[0]:
            errors = self.stop()
            raise RuntimeError(f"lightstore ui did not start: {line} {errors}")
        self.first_line = line[0]
        self.url = line[0].split(" at ", 1)[1].split()[0].rstrip("/")
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port

    def get(self, path: str, host: str | None = None) -> tuple[int, dict[str, str], bytes]:
        """GET `path` exactly as given (no normalisation of '..' by the client)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request("GET", path, headers={"Host": host} if host else {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def stop(self) -> str:
        """Stop the server; return what it wrote on stderr."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._drain.join(10)
        return "".join(self._stderr)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ui") / "store")
    made = make_store(root)
    made["root"] = root
    return made


@pytest.fixture(scope="module")
def server(sweep):
    srv = Server(sweep["root"])
    try:
        yield srv
    finally:
        srv.stop()


def url_of(rref: str) -> str:
    return "/run/" + quote(rref, safe=":")


def artifact(rref: str, path: str) -> str:
    return f"/artifact/{quote(rref, safe=':')}/{path}"


# -- pages ---------------------------------------------------------------------------------------


def test_home_lists_each_stage_with_runs_failures_and_size(server):
    status, headers, body = server.get("/")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/html")
    for name in ("train", "data", "report", "broken"):
        assert f'href="/stage/{name}"' in text
    assert "read-only" in text


def test_stage_page_has_config_and_metric_columns_facets_and_chart(server, sweep):
    status, _, body = server.get("/stage/train?sort=metric:loss")
    text = body.decode()
    assert status == 200
    for column in ("lr", "model.depth", "model.act", "loss", "steps"):
        assert f">{column}</a>" in text
    assert 'id="facets"' in text and 'id="chart"' in text
    assert len(chart_of(text)["runs"]) == len(sweep["train"])
    losses = [float(v) for v in _cells(text, "metric-value")[::2]]
    assert losses == sorted(losses)
    status, _, body = server.get("/stage/train?f.config:lr=0.1")
    assert body.decode().count('class="run-link"') == 2
    # The removed run is history: hidden by default, listed (without a link) on request.
    assert "show 1 collected" in text and ">collected<" not in text
    everything = server.get("/stage/train?all=1&sort=metric:loss")[2].decode()
    assert everything.count('class="run-link"') == len(sweep["train"])
    assert ">collected<" in everything
    assert len(chart_of(everything)["runs"]) == len(sweep["train"]) + 1
    status, _, body = server.get(url_of(sweep["collected"]))
    assert status == 404 and b"removed from the store" in body
    assert server.get("/stage/no-such-stage")[0] == 404


def _realize_runs(root: str, name: str, runs: list[tuple[dict, dict]], files: int = 1) -> list[str]:
    """Realize one run of stage `name` per (config fields, metrics), each with `files` files."""
    from lightstore import build_metrics, build_outpath, build_wrapper, instantiate, mkdrv, realize1

    def stage(fields, metrics):
        def real(b):
            for i in range(files):
                with open(os.path.join(build_outpath(b), f"f{i:05d}.bin"), "w") as f:
                    f.write(str(i))
            build_metrics(b, metrics)

        return lambda r: mkdrv({"name": name, **fields}, match_only(), build_wrapper(real), r)

    S = mkSS(root)
    return [realize1(instantiate(stage(f, m), S=S)) for f, m in runs]


EXTREMES = [
    ({"n": 10**400, "lr": 0.1}, {"loss": 1.0, "acc": 1e308}),
    ({"n": -(10**400), "lr": 1e-300}, {"loss": 1e308, "acc": -1e308}),
    ({"n": 3, "lr": 1e300}, {"loss": -1e308, "acc": 5e-324}),
    ({"n": 2**63, "lr": 5e-324}, {"loss": 1.7976931348623157e308, "acc": 0}),
]


def test_stage_page_shows_numbers_too_big_for_a_float(tmp_path):
    """Configs take integers of any size, metrics any finite float: the runs table always shows
    (the chart leaves out what it cannot place)."""
    root = str(tmp_path / "store")
    fsinit(mkSS(root))
    rrefs = _realize_runs(root, "extreme", EXTREMES)
    srv = Server(root)
    try:
        pages = [
            f"/stage/extreme?x={x}&y={y}" + (f"&sort={sort}" if sort else "")
            for x in ("n", "lr")
            for y in ("loss", "acc")
            for sort in ("", "config:n", "metric:loss", "metric:acc&desc=1")
        ]
        for path in pages:
            status, _, body = srv.get(path)
            text = body.decode()
            assert status == 200, (path, text[-2000:])
            assert text.count('class="run-link"') == len(rrefs), path
            assert str(10**400) in text and "1e+308" in text
        for rref in rrefs:
            assert srv.get(url_of(rref))[0] == 200
    finally:
        srv.stop()


finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([1e308, -1e308, 1.7976931348623157e308, 5e-324, -5e-324, 0.0, 10**309]),
)


@given(st.lists(st.tuples(finite_or_not, finite_or_not), min_size=1, max_size=8))
def test_any_numbers_reach_the_chart_as_finite_floats_or_marked(values):
    """What the page's script gets for a number is a finite float, or a mark saying why a
    chart cannot place it (NaN, inf, too large for a float): never dropped, never NaN in JSON."""
    import math

    for pair in values:
        for value in pair:
            got = chart_value(value)
            if isinstance(got, float):
                assert math.isfinite(got) and got == float(value)
            else:
                assert got["nf"] in ("NaN", "inf", "-inf", "too large for a float")
                assert (isinstance(value, float) and not math.isfinite(value)) or abs(value) > 1e308
    text = script_json([[chart_value(v) for v in pair] for pair in values])
    # JSON.parse in the browser refuses NaN and Infinity: the text must hold none.
    parsed = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in {text}"))
    assert parsed == [[chart_value(v) for v in pair] for pair in values]


def chart_of(html: str) -> dict:
    """The chart data a stage page hands its script."""
    import re

    found = re.search(r'<script type="application/json" id="ls-chart-data">(.*?)</script>', html)
    assert found, "no chart data"
    return json.loads(found.group(1))


def _cells(html: str, css: str) -> list[str]:
    import re

    return re.findall(rf'<td class="num {css}">([^<]*)</td>', html)


def test_run_page_shows_everything(server, sweep):
    rref = sweep["train"][(0.1, 2)]
    status, _, body = server.get(url_of(rref))
    text = body.decode()
    assert status == 200
    assert 'id="lineage"' in text and "<svg" in text and "report" in text  # downstream too
    assert 'src="' + artifact(rref, "curve.png") in text
    assert "shape.svg" in text and "final loss" in text  # a small text file, shown
    assert "weights.bin" in text and "2.0 KiB" in text
    assert "loss" in text and "steps" in text
    assert server.get("/run/rref:nonsense")[0] == 400
    unknown = "rref:" + "0" * 32 + rref[37:]
    assert server.get(url_of(unknown))[0] == 404


def test_failed_builds_show_their_traceback(server):
    status, _, body = server.get("/failures")
    assert status == 200
    text = body.decode()
    assert FAILURE in text and "Traceback" in text and "ValueError" in text


def test_pins_and_disk_pages(server, sweep):
    text = server.get("/pins")[2].decode()
    assert "best" in text and quote(sweep["train"][(0.03, 2)], safe=":") in text
    text = server.get("/disk")[2].decode()
    assert all(f'href="/stage/{n}"' in text for n in ("train", "data", "report"))


def test_sql_editor_is_read_only(server, sweep):
    ok = server.get(
        "/catalogue.json?sql=" + quote("SELECT count(*) AS n FROM metrics") + "&_shape=array"
    )
    assert ok[0] == 200 and json.loads(ok[2])[0]["n"] == 2 * (
        len(sweep["train"]) + 1
    )  # the collected run keeps its metrics
    for sql in (
        "DELETE FROM metrics",
        "UPDATE metrics SET value = 0",
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "PRAGMA writable_schema = 1",
    ):
        status, _, body = server.get("/catalogue.json?sql=" + quote(sql))
        assert status >= 400 or json.loads(body).get("ok") is False, sql
    ok = server.get(
        "/catalogue.json?sql=" + quote("SELECT count(*) AS n FROM metrics") + "&_shape=array"
    )
    assert json.loads(ok[2])[0]["n"] == 2 * (
        len(sweep["train"]) + 1
    )  # the collected run keeps its metrics


def test_datasette_pages_about_itself_work(server):
    """/-/versions probes SQLite on a scratch in-memory connection of its own, which no user
    SQL reaches: the guard of the catalogue's connections is not applied there."""
    status, _, body = server.get("/-/versions.json")
    assert status == 200, body[:300]
    info = json.loads(body)
    assert info["sqlite"]["version"] and "compile_options" in info["sqlite"]
    assert server.get("/-/versions")[0] == 200
    for page in ("/-/plugins.json", "/-/settings.json", "/-/databases.json"):
        assert server.get(page)[0] == 200, page
    assert server.get("/_memory.json?sql=" + quote("SELECT 1"))[0] == 404  # no database to query


def test_a_query_cannot_fill_the_servers_memory(sweep):
    """Any web page can send these to a server on 127.0.0.1: each is refused with a message,
    the server's memory bounded (here its address space, so a regression fails, no more)."""
    many_rows = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) "
        "SELECT zeroblob(8000000) AS z FROM c"
    )
    wide = "SELECT " + ", ".join(f"zeroblob(8000000) AS c{i}" for i in range(150))
    srv = Server(sweep["root"], memory=2 << 30)
    try:
        for sql, message in ((many_rows, "larger than 16 MiB"), (wide, "too many columns")):
            status, _, body = srv.get("/catalogue.json?sql=" + quote(sql))
            assert status == 400 and message in body.decode(), (sql[:40], status, body[:300])
            # Datasette's CSV of a failed query is empty.
            status, _, body = srv.get("/catalogue.csv?sql=" + quote(sql))
            assert status in (200, 400) and len(body) < 1000, (sql[:40], status, body[:300])
        status, _, body = srv.get("/catalogue.json?sql=" + quote("SELECT 1 AS one"))
        assert status == 200 and json.loads(body)["rows"] == [[1]]
    finally:
        srv.stop()


# -- the artifact route ---------------------------------------------------------------------------


def test_artifacts_are_served_with_safe_headers(server, sweep):
    rref = sweep["train"][(0.1, 2)]
    status, headers, body = server.get(artifact(rref, "curve.png"))
    assert status == 200 and body.startswith(PNG_MAGIC)
    assert headers["content-type"] == "image/png"
    assert "sandbox" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, _ = server.get(artifact(rref, "shape.svg"))
    assert status == 200 and headers["content-type"] == "image/svg+xml"
    status, headers, body = server.get(artifact(rref, "ckpt/weights.bin"))
    assert status == 200 and len(body) == 2048


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("../../../catalogue.sqlite", 400),
        ("..%2F..%2F..%2Fcatalogue.sqlite", 400),
        ("%2e%2e/%2e%2e/%2e%2e/catalogue.sqlite", 400),
        ("ckpt/../log.txt", 400),
        ("./log.txt", 400),
        ("/etc/passwd", 400),
        ("%2Fetc%2Fpasswd", 400),
        ("..\\..\\catalogue.sqlite", 400),
        ("log.txt%00.png", 400),
        ("escape", 403),  # a symlink in the realization pointing at /etc/passwd
        ("ckpt", 404),  # a folder
        ("ckpt/", 400),
        ("missing.txt", 404),
        ("", 400),
    ],
)
def test_artifact_route_refuses_paths_leaving_the_realization(server, sweep, path, status):
    rref = sweep["train"][(0.1, 2)]
    got, _, body = server.get(f"/artifact/{quote(rref, safe=':')}/{path}")
    if path == "":
        assert got in (400, 404)  # no file named: the route itself may not match
    else:
        assert got == status, body
    assert b"root:" not in body and b"SQLite format" not in body


def test_artifact_route_refuses_unknown_and_malformed_realizations(server, sweep):
    rref = sweep["train"][(0.1, 2)]
    unknown = "rref:" + "0" * 32 + rref[37:]
    assert server.get(artifact(unknown, "curve.png"))[0] == 404
    assert server.get(artifact("rref:zz", "curve.png"))[0] == 400
    assert server.get("/artifact/..%2F..%2Fcatalogue.sqlite/x")[0] == 400


def test_only_loopback_host_names_are_answered(server):
    """A page on a DNS-rebound name (evil.example -> 127.0.0.1) cannot read the store."""
    for host in ("evil.example", "evil.example:8001", "10.0.0.1"):
        status, _, body = server.get("/", host=host)
        assert status == 421 and b"stage" not in body
    for host in (f"127.0.0.1:{server.port}", "localhost", f"[::1]:{server.port}"):
        assert server.get("/", host=host)[0] == 200


def _in_process(root: str):
    """A Datasette made by `make_datasette`, answering through its own ASGI client."""
    from lightstore.ui import make_datasette

    return make_datasette(root)


def test_run_page_lists_the_first_files_and_says_how_many_more(tmp_path, monkeypatch):
    import asyncio

    from lightstore.ui import data as ui_data

    root = str(tmp_path / "store")
    fsinit(mkSS(root))
    (rref,) = _realize_runs(root, "many", [({}, {})], files=30)
    monkeypatch.setattr(ui_data, "MAX_FILES", 10)
    import importlib

    describing = importlib.import_module("lightstore.query.describe")  # the function shadows it

    def no_walk(*_args, **_kw):
        raise AssertionError("the whole folder was walked")

    # Only the listing walks, and stops at MAX_FILES: a million files cost no more than 10.
    monkeypatch.setattr(describing, "walk_tree", no_walk)
    entries, more = ui_data.listing(os.path.join(root, "objects"), 10)
    assert len(entries) == 10 and more
    ds = _in_process(root)

    async def fetch() -> str:
        await ds.invoke_startup()
        page = await ds.client.get(url_of(rref))
        assert page.status_code == 200
        return page.text

    text = asyncio.run(fetch())
    assert text.count('href="/artifact/') == 10
    assert "f00009.bin" in text and "f00010.bin" not in text
    assert "20 more files not shown" in text


def test_a_large_run_page_does_not_hold_up_other_pages(tmp_path, monkeypatch):
    """While a run page walks its files (held here until the other pages have answered),
    the server answers other pages: the walk runs in a thread, not on the event loop."""
    import asyncio

    from lightstore.ui import data as ui_data

    root = str(tmp_path / "store")
    fsinit(mkSS(root))
    (rref,) = _realize_runs(root, "big", [({"k": 1}, {"loss": 0.5})], files=3)
    entered, release = threading.Event(), threading.Event()
    real_listing = ui_data.listing

    def held_listing(folder: str, limit: int):
        entered.set()
        release.wait(60)  # stands for the walk of a folder of a million files
        return real_listing(folder, limit)

    monkeypatch.setattr(ui_data, "listing", held_listing)
    # Only if the walk blocked the event loop: let it go on, so the test fails instead of hanging.
    safety = threading.Timer(15, release.set)
    safety.start()
    ds = _in_process(root)

    async def scenario():
        await ds.invoke_startup()
        run_page = asyncio.create_task(ds.client.get(url_of(rref)))
        assert await asyncio.to_thread(entered.wait, 60)
        others = [(await ds.client.get(p)).status_code for p in ("/", "/stage/big", "/disk")]
        while_walking = not release.is_set()
        release.set()
        return (await run_page).status_code, others, while_walking

    try:
        run_status, others, while_walking = asyncio.run(scenario())
    finally:
        safety.cancel()
    assert while_walking, "other pages waited for the run page's walk"
    assert others == [200, 200, 200] and run_status == 200


# -- the command ------------------------------------------------------------------------------------


def test_loopback_is_decided_by_address_not_spelling():
    for host in ("127.1", "127.0.0.2", "::1", "[::1]", "localhost", "0x7f.1", "::ffff:127.0.0.1"):
        assert is_loopback(host) and loopback_literal(host), host
    for host in ("0.0.0.0", "", "::", "[::]", "192.168.1.5", "10.0.0.1", "127.1 x", "evil.example"):
        assert not is_loopback(host) and not loopback_literal(host), host


@pytest.mark.parametrize(("host", "header"), [("127.1", "127.0.0.1"), ("localhost.", "localhost.")])
def test_a_loopback_address_in_another_spelling_is_served_locally(sweep, host, header):
    """`--host 127.1` and `localhost.` (with DNS's root) are loopback: no exposure warning,
    they are bound, and the Host check stays on."""
    srv = Server(sweep["root"], "--host", host)
    try:
        assert srv.get("/", host="evil.example")[0] == 421
        assert srv.get("/", host=f"{header}:{srv.port}")[0] == 200
    finally:
        errors = srv.stop()
    assert "warning" not in errors, errors


def test_loopback_is_the_default_and_elsewhere_is_warned_about(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    warning = exposure_warning("0.0.0.0", str(tmp_path))
    for word in ("0.0.0.0", str(tmp_path), "artifact", "SQL", "127.0.0.1"):
        assert word in warning


def test_without_datasette_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasette", None)
    result = run(str(tmp_path), "ui")
    assert result.exit_code == 5
    assert "lightstore[ui]" in result.output


def test_a_missing_store_is_not_found(tmp_path):
    result = run(str(tmp_path / "nowhere"), "ui", "--port", "0")
    assert result.exit_code == 3, result.output


def test_flatten_and_lineage_levels(sweep):
    assert flatten({"a": {"b": {"c": 1}}, "d": [1], "e": {}}) == {"a.b.c": 1, "d": [1], "e": {}}
    # A key with a dot of its own stays apart from the nested key it looks like.
    both = {"a.b": 1, "a": {"b": 2}, "x": {"y.z": 3}}
    assert flatten(both) == {'"a.b"': 1, "a.b": 2, 'x."y.z"': 3}
    assert graph_flatten(both) == flatten(both)
    graph = lineage(sweep["store"], sweep["train"][(0.1, 2)])
    levels = {n["rref"]: n["level"] for n in graph["nodes"]}
    assert sorted(levels.values()) == [-1, 0, 1]
    assert all(levels[dep] < levels[user] for user, dep in graph["edges"])


# -- a real browser -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_browse_in_chromium(server, sweep, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} is missing (tools/test installs Debian's chromium when run as root)"
        )
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=60000)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 820})
            page.set_default_timeout(20000)
            page.goto(server.url + "/")
            page.click("a.stage-link:text-is('train')")
            page.wait_for_url("**/stage/train")
            page.click("#runs th.metric a:text-is('loss')")
            page.wait_for_url("**sort=metric%3Aloss**")
            cells = page.locator("#runs td.metric-value").all_inner_texts()
            losses = [float(c) for c in cells[::2]]
            assert losses == sorted(losses) and len(losses) == len(sweep["train"])
            page.wait_for_selector("#chart .scatterlayer .point")
            assert page.locator("#chart .scatterlayer .point").count() == len(sweep["train"])
            shot = tmp_path / "ui.png"
            page.screenshot(path=str(shot), full_page=False)
            page.locator("#runs a.run-link").first.click()
            page.wait_for_url("**/run/**")
            image = page.locator(".ls-images img").first
            image.wait_for()
            page.wait_for_function(
                "() => [...document.querySelectorAll('.ls-images img')].every(i => i.complete)"
            )
            assert image.evaluate("img => img.naturalWidth") == 120
            assert page.locator("#lineage svg g.node").count() >= 2
            assert page.locator("#lineage svg g.root").count() == 1
            page.click(".ls-nav a:text-is('Failed builds')")
            page.wait_for_url("**/failures")
            assert FAILURE in page.locator("pre.traceback").first.inner_text()
        finally:
            browser.close()
    assert shot.read_bytes().startswith(PNG_MAGIC)


def test_file_names_that_are_not_utf8_or_need_quoting(tmp_path):
    """A realization's files are listed and served whatever bytes or URL characters their
    names hold (in-process, through Datasette's own ASGI client)."""
    import asyncio
    import re

    from lightstore import (
        build_outpath,
        build_wrapper,
        fsinit,
        instantiate,
        match_only,
        mkdrv,
        mkSS,
        realize1,
    )
    from lightstore.ui import make_datasette

    S = fsinit(mkSS(str(tmp_path / "s"))).settings

    def real(b):
        out = os.fsencode(build_outpath(b))
        for name, data in ((b"caf\xff.txt", b"latin\n"), (b"a b#c?%.txt", b"quoted\n")):
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)

    rref = realize1(
        instantiate(lambda r: mkdrv({"name": "odd"}, match_only(), build_wrapper(real), r), S=S)
    )
    ds = make_datasette(S.root)

    async def fetch() -> dict[str, bytes]:
        await ds.invoke_startup()
        page = await ds.client.get(url_of(rref))
        assert page.status_code == 200
        got = {}
        for href in re.findall(r'href="(/artifact/[^"]+)"', page.text):
            resp = await ds.client.get(href)
            got[href.rsplit("/", 1)[1]] = (resp.status_code, resp.content)
        return got

    got = asyncio.run(fetch())
    assert got == {"caf%FF.txt": (200, b"latin\n"), "a%20b%23c%3F%25.txt": (200, b"quoted\n")}


def test_what_ui_prints_is_terminal_safe(tmp_path):
    """The store's path and the host are printed escaped: the serving line, the exposure
    warning and the error of a host that cannot be bound."""
    root = str(tmp_path / "esc\x1b]0;PWN\x07root")
    fsinit(mkSS(root))
    srv = Server(root)
    try:
        assert "\x1b" not in srv.first_line and "\\x1b]0;PWN\\x07root" in srv.first_line
        assert srv.get("/")[0] == 200
    finally:
        errors = srv.stop()
    assert "\x1b" not in errors
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "lightstore", "--root", root, "ui", "--host", "\x1b]0;PWN\x07"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode != 0 and "warning: serving on \\x1b]0;PWN\\x07" in done.stderr
    assert "\x1b" not in done.stderr + done.stdout, done.stderr
