"""Hardening (issue 14): damaged catalogues, hostile values and odd inputs end in a LightstoreError."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

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
