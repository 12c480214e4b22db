"""Make tests/data/v1_store.tar.gz: a store written by lightstore's schema version 1.

Run from a checkout:  python tools/make_v1_fixture.py
It extracts the library as of commit be1666d (the last release with schema
version 1) with `git archive`, runs a small scenario with it in a child
process, and packs the resulting store with a JSON dump of every table
(tests/data/v1_store.json), which tests/test_schema_v2.py compares with what
the current code reads after migrating.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import tempfile

V1_COMMIT = "be1666d"
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(HERE, "tests", "data")

SCENARIO = r"""
import os, sys
from lightstore import *
from lightstore.facade import Store
root, other = sys.argv[1], sys.argv[2]
S = mkSS(root); fsinit(S)

def write(text):
    def real(b):
        for i, out in enumerate(build_outpaths(b)):
            with open(os.path.join(out, "x"), "w") as f:
                f.write(f"{text}-{i}")
    return real

def fails(b):
    raise RuntimeError("boom")

def stage(r):
    data = mkdrv({"name": "data", "n": 3, "out": [selfref, "x"]}, match_only(), build_wrapper(write("data")), r)
    train = mkdrv({"name": "train", "lr": 0.01, "data": data}, match_some(2), build_wrapper(write("train"), nouts=2), r)
    return mkdrv({"name": "evaluate", "train": train}, match_all, build_wrapper(write("eval")), r)

rref = realize1(instantiate(stage, S=S))
Store.open(root).pin("best", rref)
try:
    realize1(instantiate(lambda r: mkdrv({"name": "broken"}, match_only(), build_wrapper(fails), r), S=S))
except Exception:
    pass
# An import: built in another store, unpacked here.
O = mkSS(other); fsinit(O)
orr = realize1(instantiate(lambda r: mkdrv({"name": "imported", "k": 1}, match_only(), build_wrapper(write("imp")), r), S=O))
spack([orr], other + "/a.tar.gz", S=O)
sunpack(other + "/a.tar.gz", S=S)
"""


def dump(path: str) -> dict[str, list[list[object]]]:
    conn = sqlite3.connect(path)
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name != '_sqlite_migrations' ORDER BY name"
        )
    ]
    out = {}
    for t in tables:
        cur = conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2")
        out[t] = {
            "columns": [c[0] for c in cur.description],
            "rows": [list(r) for r in cur],
        }
    out["user_version"] = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        os.makedirs(src)
        archive = subprocess.run(
            ["git", "-C", HERE, "archive", V1_COMMIT, "lightstore"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
        root = os.path.join(tmp, "store")
        other = os.path.join(tmp, "other")
        subprocess.run(
            [sys.executable, "-c", SCENARIO, root, other],
            check=True,
            env={**os.environ, "PYTHONPATH": src},
            cwd=tmp,
        )
        cat = os.path.join(root, "catalogue.sqlite")
        conn = sqlite3.connect(cat)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        tables = dump(cat)
        os.makedirs(DATA, exist_ok=True)
        with open(os.path.join(DATA, "v1_store.json"), "w") as f:
            json.dump(tables, f, indent=1, sort_keys=True)
        with tarfile.open(os.path.join(DATA, "v1_store.tar.gz"), "w:gz") as tar:
            for name in sorted(os.listdir(root)):
                if name in ("tmp", "locks") or name.endswith(("-wal", "-shm")):
                    continue
                tar.add(os.path.join(root, name), arcname=os.path.join("store", name))


if __name__ == "__main__":
    main()
