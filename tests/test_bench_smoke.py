"""Smoke test of the benchmark tool: it runs and answers in the documented JSON shape.

Times are never asserted here (the machine running the tests is not a
benchmark machine); the baseline (Pylightnix, installed by tools/bench in a
scratch venv) is skipped to stay fast and offline.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tools", "bench_driver.py")
HUGE = os.path.join(ROOT, "tools", "bench_huge.py")
AGAINST = os.path.join(ROOT, "tools", "bench_against.py")
REDUN = os.path.join(ROOT, "tools", "bench_redun.py")
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bench_against  # noqa: E402
import bench_redun  # noqa: E402


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


@pytest.mark.slow
def test_bench_against_head(tmp_path):
    """`--against HEAD`: the revision checked out beside, both sides run interleaved in
    their own processes, every workload compared; the checkout and stores are removed."""
    out = tmp_path / "against.json"
    cmd = [sys.executable, AGAINST, "--against", "HEAD", "--size", "10", "--rounds", "1"]
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\nfigures\n")
    cmd += ["--reps", "1", "--json", str(out), "--tmp", str(tmp_path), "--report", str(report)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    # One round cannot reach p < 0.05, so nothing is marked and the exit status is 0.
    assert proc.returncode == 0, proc.stderr[-3000:]
    head = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    doc = json.loads(out.read_text())
    assert doc["base"]["commit"] == doc["head"]["commit"] == head
    # The processes ran A B B A, each side's lightstore imported from its own tree.
    assert proc.stderr.count("[") >= 4 and "working tree" in proc.stderr
    rows = {(r["workload"], r["metric"]) for r in doc["rows"]}
    assert rows == {(w, m) for w in bench_against.NAMES for m in ("cpu", "wall")}
    for r in doc["rows"]:
        assert len(r["base_runs"]) == len(r["head_runs"]) == 2
        assert r["base"] > 0 and r["head"] > 0 and r["mark"] == ""
        assert r["ratio"] == pytest.approx(r["head"] / r["base"])
    for w in bench_against.NAMES:
        assert w in proc.stdout
    assert "pyperf compare_to" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["against.json", "BENCHMARKS.md", f"{head[:9]}.json", f"{head[:9]}-tree.json"]
    )
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nfigures\n") and "<!-- against:start -->" in text
    assert "| populate, per trivial realization | cpu |" in text
    worktrees = subprocess.run(
        ["git", "-C", ROOT, "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert str(tmp_path) not in worktrees


def test_bench_against_refuses_unknown_revision(tmp_path):
    proc = subprocess.run(
        [sys.executable, AGAINST, "--against", "no-such-revision", "--tmp", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0 and "not a commit" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_bench_redun_tiny(tmp_path):
    """`tools/bench --redun` at tiny sizes: redun in its scratch venv and lightstore here run
    in alternating processes, every row has both figures and their ratio, the checks find
    nothing, and the section is written into the report. Skipped when redun cannot be
    installed (no network)."""
    out, report, tmp = tmp_path / "redun.json", tmp_path / "BENCHMARKS.md", tmp_path / "tmp"
    tmp.mkdir()
    report.write_text("# Benchmarks\n\nfigures\n")
    cmd = [sys.executable, REDUN, "--quick", "--chain", "3", "--deep", "4", "--sweep", "5"]
    cmd += ["--results", "50", "--reps", "1", "--rounds", "2", "--json", str(out)]
    cmd += ["--report", str(report), "--tmp", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode == bench_redun.NOT_INSTALLABLE:
        pytest.skip(f"redun cannot be installed here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["versions"]["redun"] == bench_redun.REDUN_VERSION and not doc["full"]
    assert doc["problems"] == []
    # Both sides found the same history row (i = 43 is the one p3 result below 50 with lr < 0.05).
    answers = doc["answers"]
    assert answers["lightstore"]["history-api"] == answers["redun"]["history-sql"] == 1
    timed = {(w, m) for w, _ in bench_redun.WORKLOADS for m in bench_redun.METRICS}
    disk = {("disk", "bytes"), ("disk", "inodes")}
    assert {(r["workload"], r["metric"]) for r in doc["rows"]} == timed | disk
    for r in doc["rows"]:
        assert r["lightstore"] > 0 and r["redun"] > 0
        assert r["ratio"] == pytest.approx(r["redun"] / r["lightstore"])
        assert r["status"] == ("met" if r["ratio"] >= bench_redun.GOAL else "MISSED")
        if r["workload"] != "disk":  # two rounds, one sample each
            assert len(r["lightstore_samples"]) == len(r["redun_samples"]) == 2
    # The processes alternated, lightstore first.
    assert [line.split()[-1] for line in proc.stderr.splitlines() if line.startswith("[")][-4:] == [
        "lightstore",
        "redun",
        "lightstore",
        "redun",
    ]
    assert "new 3-stage chain" in proc.stdout
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\nfigures\n") and "<!-- redun:start -->" in text
    assert "| new 3-stage chain | cpu |" in text and "### What each side does" in text
    assert list(tmp.iterdir()) == []  # temporary stores removed


@pytest.mark.slow
def test_bench_redun_not_installable_exits_3(tmp_path):
    """Without a package index redun cannot be installed: exit status 3, nothing measured."""
    env = dict(os.environ)
    env.update(
        LIGHTSTORE_BENCH_REDUN_VENV=str(tmp_path / "venv"),
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(tmp_path),
    )
    out = tmp_path / "redun.json"
    cmd = [sys.executable, REDUN, "--quick", "--json", str(out), "--tmp", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == bench_redun.NOT_INSTALLABLE, proc.stderr[-2000:]
    assert f"could not install {bench_redun.REDUN_REQUIREMENT}" in proc.stderr
    assert not out.exists()


def _round(builds: dict[str, int], answers: dict[str, int]) -> dict:
    samples = {name: {"wall": [0.02], "cpu": [0.01]} for name in builds}
    return {"samples": samples, "builds": {k: [v] for k, v in builds.items()}, "answers": answers}


def test_bench_redun_checks_and_report():
    """The run's checks catch a cached workload that built, a new one that did not build
    everything and different history answers; rows carry both medians and the ratio."""
    import bench_report

    plan = bench_redun.QUICK
    want = bench_redun.expected_builds(plan)
    answers = {"history-api": 3, "history-sql": 3}
    built = {
        lib: {"builds": plan.results, "disk": {"bytes": b, "inodes": i}}
        for lib, b, i in (("lightstore", 20000.0, 5.0), ("redun", 10000.0, 1.0))
    }
    good = {"lightstore": [_round(want, answers)], "redun": [_round(want, answers)]}
    assert bench_redun.check(good, built, plan) == []
    bad = {
        "lightstore": [_round({**want, "cached-chain": 1}, answers)],
        "redun": [_round({**want, "new-chain": 1}, {**answers, "history-sql": 4})],
    }
    problems = bench_redun.check(bad, built, plan)
    assert any(p.startswith("lightstore cached-chain") for p in problems)
    assert any(p.startswith("redun new-chain") for p in problems)
    assert any("different answers" in p for p in problems)

    rows = bench_redun.compare(good, built, plan)
    first = rows[0]
    assert (first["workload"], first["metric"], first["ratio"]) == ("new-chain", "cpu", 1.0)
    assert first["status"] == "MISSED"
    disk = [r for r in rows if r["workload"] == "disk"]
    assert [(r["metric"], r["ratio"]) for r in disk] == [("bytes", 0.5), ("inodes", 0.2)]
    doc = {
        "machine": {"line": "a machine", "commit": "abc"},
        "command": "tools/bench --redun --quick",
        "started": "2026-01-01T00:00:00+00:00",
        "duration_s": 60.0,
        "load": [1.0, 2.0],
        "versions": {"lightstore": "0.1.0", "redun": bench_redun.REDUN_VERSION},
        "plan": dataclasses.asdict(plan),
        "goal": bench_redun.GOAL,
        "full": False,
        "history": {lib: {"cpu": 1.0, "wall": 2.0} for lib in built},
        "rows": rows,
        "problems": problems,
    }
    text = bench_report.redun_markdown(doc)
    assert (
        "Partial run" in text
        and "| new 5-stage chain | cpu | 10.00 ms | 10.00 ms | 1.00x |" in text
    )
    assert "| disk per result: inodes | inodes | 5.00 | 1.00 | 0.20x | MISSED |" in text
    assert "different answers" in text
    assert "new 5-stage chain" in bench_report.redun_table_text(doc)
