"""Hardening (issue 14): damaged catalogues, hostile values and odd inputs end in a LightstoreError."""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import time

import pytest
from helpers import build_pipeline, fails, ok

from lightstore import (
    build_wrapper,
    instantiate,
    match_only,
    mkconfig,
    mkdrv,
    realize1,
    rref2dref,
    sunpack,
)
from lightstore.cli.context import EXIT_BAD_INPUT
from lightstore.facade import Store
from lightstore.foundation.config import MAX_CONFIG_DEPTH
from lightstore.foundation.errors import (
    ArchiveError,
    InvalidConfigError,
    InvalidReferenceError,
    LightstoreError,
    QueryError,
)
from lightstore.maintenance import reindex
from lightstore.query import history, iter_sql, open_view


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


def _chain(S, n: int):
    """A pipeline of `n` stages, each depending on the one before."""

    def stages(r):
        prev = None
        for i in range(n):
            config = {"name": f"s{i}"} if prev is None else {"name": f"s{i}", "prev": prev}
            prev = mkdrv(config, match_only(), build_wrapper(lambda b: None), r)
        return prev

    return instantiate(stages, S=S)


@pytest.mark.slow
def test_deep_chains_are_walked_without_recursion(S):
    top = realize1(_chain(S, 1100))
    first = Store.open(S.root).catalogue.column("SELECT rref FROM history WHERE name = 's0'")[0]
    tree = ok(S.root, "deps", top, "--tree")
    assert tree.count("\n") == 1100
    tree = ok(S.root, "referrers", first, "--tree")
    assert tree.count("\n") == 1100
    ok(S.root, "deps", rref2dref(top), "--tree")
    report = reindex(S.root)
    assert (report.derivations, report.realizations, report.skipped) == (1100, 1100, [])


def test_deeply_nested_configs_are_refused():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidConfigError, match="nested"):
        mkconfig({"name": "deep", "x": deep})
    loop: list = []
    loop.append(loop)
    with pytest.raises(InvalidConfigError, match="nested"):
        mkconfig({"x": loop})
    fine: list = []
    for _ in range(MAX_CONFIG_DEPTH - 2):
        fine = [fine]
    mkconfig({"x": fine})


def test_deeply_nested_archive_manifest_is_refused(S, tmp_path):
    path = str(tmp_path / "deep.tar")
    data = ('{"format": "lightstore-archive", "x": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ArchiveError):
        sunpack(path, Store.open(S.root))
    assert fails(EXIT_BAD_INPUT, S.root, "unpack", path)


def test_names_longer_than_the_limit_are_refused_up_front(store):
    from lightstore.foundation.refs import MAX_NAME_LENGTH

    def stage(name):
        return lambda r: mkdrv({"name": name}, match_only(), build_wrapper(lambda b: None), r)

    with pytest.raises(InvalidConfigError, match="at most"):
        instantiate(stage("n" * 250), S=store.settings)
    rref = realize1(instantiate(stage("n" * MAX_NAME_LENGTH), S=store.settings))
    assert store.verify(check_contents=True).problems == []
    with pytest.raises(InvalidReferenceError, match="at most"):
        store.pin("p" * 300, rref)
    store.pin("p" * MAX_NAME_LENGTH, rref)
    assert fails(EXIT_BAD_INPUT, store.root, "pin", "p" * 300, rref)
    assert reindex(store.root).pins == 1


def test_huge_integers_in_configs_are_refused():
    with pytest.raises(InvalidConfigError, match="digits"):
        mkconfig({"x": 10**5000})
    with pytest.raises(InvalidConfigError, match="digits"):
        mkconfig({"x": [-(10**4300)]})
    mkconfig({"x": 10**3000})


def test_limit_beyond_64_bits(S):
    p = build_pipeline(S)
    for cmd in ("history", "ls", "du"):
        ok(p.root, cmd, "--limit", str(2**63 - 1))
        fails(EXIT_BAD_INPUT, p.root, cmd, "--limit", "99999999999999999999")
    assert len(history(Store.open(p.root), limit=10**20)) == 5
    with pytest.raises(QueryError):
        history(Store.open(p.root), limit=-1)


def test_store_open_accepts_a_store_and_refuses_nonsense(store, tmp_path):
    assert Store.open(store) is store
    assert Store.open(pathlib.Path(store.root)) is store
    for bad in (None, 42, "", b"/tmp"):
        with pytest.raises(LightstoreError):
            Store.open(bad)


def test_reindex_without_write_access_is_a_store_error(S):
    p = build_pipeline(S)
    for opened in set(Store._instances.values()):
        opened.catalogue.close()
    Store.forget_instances()
    prefix = _as_reader(p.root)
    if not prefix:
        os.chmod(p.root, 0o555)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "lightstore", "--root", p.root, "reindex"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    finally:
        os.chmod(p.root, 0o755)
    assert proc.returncode == 5, proc.stderr
    assert "write access" in proc.stderr and "Traceback" not in proc.stderr
