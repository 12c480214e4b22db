"""Hardening (issue 14): damaged catalogues, hostile values and odd inputs end in a LightstoreError."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from lightstore.cli.context import EXIT_BAD_INPUT
from lightstore.errors import QueryError
from lightstore.query import history, iter_sql, open_view
from lightstore.store import Store
from tests.test_cli import build_pipeline, fails, ok


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


def _as_reader(root: str) -> list[str]:
    """A command prefix that runs as a user who can read but not write `root`, or skip."""
    if os.geteuid() != 0:
        return []
    # Root ignores permissions: drop the capabilities that let it, and give the
    # store to another user, so the usual permission bits apply.
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to drop root's capabilities")
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, f) for f in dirs + files)]:
            os.lchown(name, 65534, 65534)
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def test_a_user_who_can_only_read_can_run_every_reading_command(S, tmp_path):
    p = build_pipeline(S)
    for opened in set(Store._instances.values()):
        opened.catalogue.close()  # the last writer closes: -wal and -shm go
    Store.forget_instances()
    for suffix in ("-wal", "-shm"):
        assert not os.path.exists(os.path.join(p.root, "catalogue.sqlite" + suffix))
    for folder in (tmp_path, p.root):
        os.chmod(folder, 0o755)
    prefix = _as_reader(p.root)
    if not prefix:
        os.chmod(p.root, 0o555)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for args in (
        ["ls"],
        ["history", "--json"],
        ["show", p.eval],
        ["sql", "SELECT count(*) FROM realizations"],
    ):
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "lightstore", "--root", p.root, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert proc.returncode == 0, (args, proc.stderr)
    assert not os.path.exists(os.path.join(p.root, "catalogue.sqlite-shm"))
    os.chmod(p.root, 0o755)


FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"


def test_user_sql_has_a_deadline(S):
    p = build_pipeline(S)
    started = time.monotonic()
    result = fails(EXIT_BAD_INPUT, p.root, "sql", FOREVER, "--timeout", "0.5")
    assert "longer than 0.5 s" in result.output
    with pytest.raises(QueryError, match="longer than"):
        history(Store.open(p.root), where=f"({FOREVER}) > 0", timeout=0.3)
    result = fails(EXIT_BAD_INPUT, p.root, "history", "-w", f"({FOREVER}) > 0")
    assert "longer than" in result.output
    assert time.monotonic() - started < 30
    # The connection is usable afterwards, without a deadline left behind.
    assert len(history(Store.open(p.root))) == 5


def test_sql_streams_rows(S):
    p = build_pipeline(S)
    many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 200000) SELECT x FROM c"
    headers, rows = iter_sql(open_view(p.root).catalogue, many, timeout=30)
    assert headers == ["x"] and next(rows) == (1,) and next(rows) == (2,)
    rows.close()
    out = ok(p.root, "sql", many, "--csv")
    assert out.count("\n") == 200001
    assert json.loads(ok(p.root, "sql", "SELECT 1 AS a UNION ALL SELECT 2", "--json")) == [
        {"a": 1},
        {"a": 2},
    ]
    assert json.loads(ok(p.root, "sql", "SELECT 1 AS a WHERE 0", "--json")) == []
