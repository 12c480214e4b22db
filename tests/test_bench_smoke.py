"""Smoke test of the benchmark tool: it runs and answers in the documented JSON shape.

Times are never asserted here (the machine running the tests is not a
benchmark machine); the baseline (Pylightnix, installed by tools/bench in a
scratch venv) is skipped to stay fast and offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tools", "bench_driver.py")


def test_bench_entry_point_is_valid_bash():
    subprocess.run(["bash", "-n", os.path.join(ROOT, "tools", "bench")], check=True)


@pytest.mark.slow
def test_bench_quick_lightstore_only(tmp_path):
    out = tmp_path / "bench.json"
    workloads = ["populate", "disk", "list", "gc", "history", "cached-chain", "many-cached"]
    cmd = [sys.executable, DRIVER, "--quick", "--no-baseline", "--sizes", "20,40", "--reps", "2"]
    cmd += ["--only", ",".join(workloads), "--json", str(out), "--tmp", str(tmp_path)]
    env = dict(os.environ)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cached-chain" in proc.stdout  # the table

    doc = json.loads(out.read_text())
    assert {"command", "machine", "versions", "plan", "results", "growth", "targets"} <= set(doc)
    assert doc["versions"] == {"lightstore": doc["versions"]["lightstore"]}
    assert not doc["full"]
    seen = {(r["workload"], json.dumps(r["param"], sort_keys=True)) for r in doc["results"]}
    for size in (20, 40):
        for w in ("populate", "list", "gc", "history", "cached-chain"):
            assert (w, json.dumps({"size": size})) in seen
    assert {r["workload"] for r in doc["results"]} == set(workloads)
    for r in doc["results"]:
        ls = r["lightstore"]
        assert ls["samples"] and ls["median"] >= 0
        assert r["ratio"] is None and "pylightnix" not in r
    listed = [r for r in doc["results"] if r["workload"] == "list"]
    # 40 populated realizations and the 20-stage chain kept for gc and the cached chain.
    assert listed[-1]["lightstore"]["extra"]["answer"] >= 60
    statuses = {t["status"] for t in doc["targets"]}
    assert statuses <= {"met", "MISSED", "n/a"}
    # Temporary stores are removed.
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]
