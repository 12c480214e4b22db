"""Query results in a notebook: `Rows` shows itself as a table (plain text and escaped HTML)
and converts to a pandas DataFrame with datetimes for time columns."""

from __future__ import annotations

import datetime
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightstore import build_metric, build_wrapper, instantiate, match_only, mkdrv, realize1
from lightstore.facade import Store
from lightstore.foundation.errors import LightstoreError
from lightstore.query import Rows, derivations, history
from lightstore.query.rows import MAX_SHOWN
from lightstore.query.upstream import Several


def _stage(lr, note):
    def real(b):
        build_metric(b, "loss", 1 / 3 + lr)

    return lambda r: mkdrv(
        {"name": "train", "lr": lr, "note": note}, match_only(), build_wrapper(real), r
    )


@pytest.fixture
def runs(S, store):
    for lr, note in ((0.1, "<b>bold</b> & co"), (0.01, "plain")):
        realize1(instantiate(_stage(lr, note), S=S))
    return Store.open(store.root)


def test_history_rows_show_as_a_table(runs):
    rows = history(runs, "train", fields=["lr", "note"], metrics=["loss"])
    text = repr(rows)
    header, rule, *body, count = text.splitlines()
    assert header.split()[:3] == ["rref", "dref", "name"] and header.split()[-3:] == [
        "lr",
        "note",
        "loss",
    ]
    assert set(rule) <= {"-", " "} and len(body) == 2 and count == "(2 rows)"
    assert "0.433333" in text and repr(1 / 3 + 0.1) not in text  # 6 significant digits
    started = datetime.datetime.fromtimestamp(rows[0]["started"]).strftime("%Y-%m-%d %H:%M")
    assert started in text  # times as local dates
    assert rows == [dict(r) for r in rows]  # still a list of dicts


def test_the_notebook_table_is_escaped_html(runs):
    rows = history(runs, "train", fields=["note"])
    page = rows._repr_html_()
    assert page.startswith('<table class="lightstore-rows">')
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page and "<b>bold" not in page
    assert page.count("<tr>") == 3 and "(2 rows)" in page


@settings(max_examples=50, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["a", "<x>", "b&"]), st.text()), max_size=5))
def test_any_value_is_escaped(dicts):
    page = Rows(dicts, ["a", "<x>", "b&"])._repr_html_()
    inside = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    stripped = inside.replace("<tr>", "").replace("</tr>", "")
    stripped = stripped.replace("<td>", "").replace("</td>", "")
    assert "<" not in stripped and ">" not in stripped
    assert "<th>&lt;x&gt;</th>" in page


def test_long_results_show_their_first_rows_and_count_the_rest():
    rows = Rows([{"n": i, "x": Several([1, 2])} for i in range(MAX_SHOWN + 7)], ["n", "x"])
    text = repr(rows)
    assert text.endswith(f"({MAX_SHOWN + 7} rows; the first {MAX_SHOWN} shown)")
    assert "1 | 2" in text
    assert repr(Rows()) == "Rows([])"


def test_to_pandas_gives_utc_datetimes_and_seconds(runs):
    pandas = pytest.importorskip("pandas")
    rows = history(runs, "train", fields=["lr"], metrics=["loss"], include_collected=True)
    df = rows.to_pandas()
    assert list(df.columns) == rows.columns
    assert isinstance(df.started.dtype, pandas.DatetimeTZDtype) and str(df.started.dt.tz) == "UTC"
    assert df.started[0] == pandas.Timestamp(rows[0]["started"], unit="s", tz="UTC")
    assert df.collected.isna().all()  # present runs: no collection time
    assert df.duration.dtype.kind == "f"  # seconds
    assert df.sort_values("lr").lr.tolist() == [0.01, 0.1]
    ds = derivations(runs, "train")
    assert isinstance(ds, Rows) and str(ds.to_pandas().created.dt.tz) == "UTC"


def test_to_pandas_names_the_package_when_it_is_missing(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(LightstoreError, match="pip install pandas"):
        history(runs, "train").to_pandas()
