"""The browser's SQL editor (Datasette's, on the catalogue): it reads the store it was started
on and runs under the same rules as `lightstore sql`. In-process, through Datasette's client."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("datasette")

from lightstore import (
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkdrv,
    realize1,
    selfref,
)
from lightstore.store import Store
from lightstore.ui import make_datasette


def _stage(name: str):
    def stage(r):
        def real(b):
            with open(f"{build_outpath(b)}/out.txt", "w") as f:
                f.write(name)

        return mkdrv(
            {"name": name, "out": [selfref, "out.txt"]}, match_only(), build_wrapper(real), r
        )

    return stage


def query(root: str, sql: str) -> tuple[int, Any]:
    """Run `sql` in the browser's SQL editor of the store at `root`: (HTTP status, JSON body)."""
    ds = make_datasette(root)

    async def fetch() -> tuple[int, Any]:
        await ds.invoke_startup()
        resp = await ds.client.get(f"/catalogue.json?sql={quote(sql)}&_shape=objects")
        return resp.status_code, json.loads(resp.text)

    return asyncio.run(fetch())


def test_the_catalogue_of_a_store_at_a_path_that_needs_quoting(tmp_path):
    # Unquoted in a SQLite URI, '%41' is 'A', the folder of another store.
    decoy = Store.open(str(tmp_path / "A"), create=True)
    realize1(instantiate(_stage("decoy"), S=decoy.settings))
    for name in ("%41", "a?b", "a#b"):
        store = Store.open(str(tmp_path / name), create=True)
        realize1(instantiate(_stage("target"), S=store.settings))
        status, body = query(store.root, "SELECT name FROM derivations")
        assert status == 200 and body["rows"] == [{"name": "target"}], (name, body)
