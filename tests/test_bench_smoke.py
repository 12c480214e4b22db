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
HUGE = os.path.join(ROOT, "tools", "bench_huge.py")
sys.path.insert(0, os.path.join(ROOT, "tools"))


def test_bench_entry_point_is_valid_bash():
    subprocess.run(["bash", "-n", os.path.join(ROOT, "tools", "bench")], check=True)


@pytest.mark.slow
def test_bench_quick_lightstore_only(tmp_path):
    out = tmp_path / "bench.json"
    workloads = ["populate", "populate-files", "disk", "list", "gc", "history", "cached-chain"]
    workloads.append("many-cached")
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
        for w in ("populate", "populate-files", "list", "gc", "history", "cached-chain"):
            assert (w, json.dumps({"size": size})) in seen
    assert {r["workload"] for r in doc["results"]} == set(workloads)
    for r in doc["results"]:
        ls = r["lightstore"]
        assert ls["samples"] and ls["median"] >= 0
        assert r["ratio"] is None and "pylightnix" not in r
    listed = [r for r in doc["results"] if r["workload"] == "list" and r["metric"] == "time"]
    # 40 populated realizations and the 20-stage chain kept for gc and the cached chain.
    assert listed[-1]["lightstore"]["extra"]["answer"] >= 60
    statuses = {t["status"] for t in doc["targets"]}
    assert statuses <= {"met", "MISSED", "n/a"}
    # Temporary stores are removed.
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]


def test_report_section_is_replaced_in_place(tmp_path):
    from bench_common import read_section, replace_section

    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nfigures\n")
    replace_section(str(path), "million", "first table")
    replace_section(str(path), "million", "second table")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\nfigures\n")
    assert "first table" not in text and text.count("second table") == 1
    kept = read_section(str(path), "million")
    assert kept.startswith("<!-- million:start -->") and "second table" in kept
    assert read_section(str(tmp_path / "missing.md"), "million") == ""


@pytest.mark.slow
def test_bench_huge_small_store(tmp_path):
    """A store of one unit (1,000 realizations) and the 100 datasets: built by two
    processes, measured, reported; the store is kept under --root and resumes."""
    root = tmp_path / "store"
    out, report = tmp_path / "huge.json", tmp_path / "BENCHMARKS.md"
    cmd = [sys.executable, HUGE, "--sizes", "1100", "--procs", "2", "--reps", "1"]
    cmd += ["--root", str(root), "--json", str(out), "--report", str(report)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    rows = {r["what"]: r for r in doc["results"]}
    size = rows["allrrefs"]["size"]
    # The kept 20-stage chain is realized by the measurement itself.
    assert size == 1100 and rows["allrrefs"]["rows"] == size + 20
    assert rows["verify"]["ok"] is True and rows["verify --check-contents"]["ok"] is True
    assert rows["reindex"]["skipped"] == 0 and rows["reindex"]["realizations"] == size + 20
    assert rows["gc plan, 99% garbage"]["garbage"] > 0.9
    assert 0 < rows["gc plan, 1% garbage"]["garbage"] < 0.05
    assert rows["gc (collection, ~1% garbage)"]["rrefs"] > 0
    assert rows["referrers --closure (popular)"]["rows"] >= 10
    assert "Million" in report.read_text() and "| allrrefs |" in report.read_text()
    # Nothing left pinned; a second run at the same size builds nothing.
    proc = subprocess.run(
        [*cmd[:2], "--sizes", "1000", "--build-only", "--root", str(root), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "building" not in proc.stderr
