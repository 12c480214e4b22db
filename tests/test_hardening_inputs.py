"""Hardening (issue 14): damaged catalogues, hostile values and odd inputs end in a LightstoreError."""

from __future__ import annotations

import json

import pytest

from lightstore.store import Store
from tests.test_cli import build_pipeline, ok


@pytest.mark.parametrize("started,stopped", [(1e300, -1e300), (-1e300, 1e300), (None, 1e308)])
def test_listings_tolerate_absurd_times_in_the_catalogue(S, started, stopped):
    p = build_pipeline(S)
    with Store.open(p.root).catalogue.write() as conn:
        conn.execute(
            "UPDATE realizations SET build_started = ?, build_stopped = ?", (started, stopped)
        )
        conn.execute("UPDATE builds SET started = ?, stopped = ?", (started or 0, stopped))
    for args in (["ls"], ["ls", "-r"], ["history"], ["show", p.eval]):
        ok(p.root, *args)
        ok(p.root, *args, "--json")
    json.loads(ok(p.root, "history", "--json"))
