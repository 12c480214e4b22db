"""End to end: the quick-start demo (``python -m lightstore.demo``) on real stores in tmp folders.

The demo runs once per test module (``--maxiter 20`` keeps it to a few
seconds); each test checks one of its claims against the stores themselves,
not only against what it printed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

from lightstore import (
    RRef,
    StorageSettings,
    Store,
    allrrefs,
    drefrrefs,
    mkSS,
    rref2dref,
    rref2path,
    rrefctx,
)
from lightstore.demo import quickstart
from lightstore.foundation.hashing import tree_digest
from lightstore.maintenance import verify

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STAGE_LINE = re.compile(r"^  (params|anneal|plot)\s+(rref:\S+)  \((built|reused)\)$", re.M)


@dataclass
class DemoRun:
    status: int
    output: str
    root: StorageSettings
    alice: StorageSettings
    bob: StorageSettings

    def find(self, pattern: str) -> list[str]:
        found = re.findall(pattern, self.output, re.M)
        assert found, f"{pattern!r} not found in the demo output:\n{self.output}"
        return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> DemoRun:
    base = tmp_path_factory.mktemp("demo")
    root, work = base / "default-store", base / "work"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = quickstart.main(["--maxiter", "20", "--root", str(root), "--workdir", str(work)])
    return DemoRun(
        status, out.getvalue(), mkSS(str(root)), mkSS(str(work / "alice")), mkSS(str(work / "bob"))
    )


def _verified(S: StorageSettings) -> list[RRef]:
    """Every realization of the store, after `verify` (with content hashes) found no problem."""
    report = verify(Store.open(S.root), check_contents=True)
    assert report.ok, report.problems
    rrefs = allrrefs(S)
    assert report.realizations == len(rrefs)
    return rrefs


def test_demo_succeeds_and_explains_each_step(demo):
    assert demo.status == 0, demo.output
    for step in range(1, 7):
        assert re.search(rf"^{step}\. \S", demo.output, re.M), f"step {step} missing"


def test_plots_are_pngs(demo):
    paths = demo.find(r"^  plot PNG \([^)]*\):\s+(\S+)$")
    assert len(paths) == 2
    for path in paths:
        assert os.path.isfile(path), path
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC


def test_rerun_reused_everything(demo):
    stages = STAGE_LINE.findall(demo.output)
    first, second = stages[:3], stages[3:6]
    assert [how for _, _, how in first] == ["built"] * 3
    assert [how for _, _, how in second] == ["reused"] * 3
    assert [rref for _, rref, _ in first] == [rref for _, rref, _ in second]
    assert demo.find(r"realizers run: (\d+); took") == ["0"]
    assert demo.find(r"same RRefs as step 1: (\w+)") == ["yes"]
    # And once more from here: the realizers do not run, the RRefs are the same.
    again = quickstart.run_pipeline(demo.root, maxiter=20)
    assert again.built == []
    assert list(again.rrefs.values()) == [rref for _, rref, _ in first]


def test_alice_and_bob_stores_verify(demo):
    alice, bob = _verified(demo.alice), _verified(demo.bob)
    # Alice: params, anneal, plot. Bob: his three plus Alice's anneal and plot
    # (the params realization is deterministic, so both stores share it).
    assert len(alice) == 3
    assert len(bob) == 5
    (alice_anneal,) = demo.find(r"Alice's anneal: (rref:\S+)")
    (bob_anneal,) = demo.find(r"Bob's anneal:\s+(rref:\S+)")
    assert alice_anneal != bob_anneal  # no fixed seed: two different realizations
    assert rref2dref(alice_anneal) == rref2dref(bob_anneal)  # of the same derivation


def test_unpacking_keeps_alices_rrefs(demo):
    (alice_anneal,) = demo.find(r"Alice's anneal: (rref:\S+)")
    assert os.path.isfile(os.path.join(os.path.dirname(demo.alice.root), "alice.zip"))
    assert alice_anneal in drefrrefs(rref2dref(alice_anneal), demo.bob)
    assert set(allrrefs(demo.alice)) <= set(allrrefs(demo.bob))
    assert (
        tree_digest(rref2path(alice_anneal, demo.alice)).digest
        == tree_digest(rref2path(alice_anneal, demo.bob)).digest
    )


def test_custom_matcher_picked_the_lower_value(demo):
    (alice_anneal,) = demo.find(r"Alice's anneal: (rref:\S+)")
    (chosen,) = demo.find(r"the matcher chose (rref:\S+)")
    candidates = drefrrefs(rref2dref(alice_anneal), demo.bob)
    assert len(candidates) == 2
    values = {r: quickstart.final_value(r, demo.bob) for r in candidates}
    assert values[chosen] == min(values.values())
    assert quickstart.match_lowest_value(demo.bob, candidates) == [chosen]
    # The plot stage of Bob's last run was realized on the chosen annealing result.
    (plot_png,) = demo.find(r"^  plot PNG \(Bob's best\):\s+(\S+)$")
    plot = [r for r in allrrefs(demo.bob) if rref2path(r, demo.bob) == os.path.dirname(plot_png)]
    assert len(plot) == 1
    assert rrefctx(plot[0], demo.bob)[rref2dref(chosen)] == [chosen]
    assert demo.find(r"the chosen one: (\w+)") == ["yes"]


def test_annealing_records_its_final_value_as_a_metric(demo):
    (alice_anneal,) = demo.find(r"Alice's anneal: (rref:\S+)")
    bob = Store.open(demo.bob.root)
    candidates = drefrrefs(rref2dref(alice_anneal), demo.bob)
    for rref in candidates:  # Bob's own, and Alice's, which came with her archive
        metrics = bob.metrics(rref)
        assert metrics["final_value"] == quickstart.final_value(rref, demo.bob)
        assert isinstance(metrics["evaluations"], int) and metrics["evaluations"] > 0
    # Without metrics the matcher falls back to the files, and agrees.
    with bob.catalogue.write() as conn:
        conn.execute("DELETE FROM metrics WHERE rref = ?", (alice_anneal,))
    try:
        values = {r: quickstart.final_value(r, demo.bob) for r in candidates}
        best = min(candidates, key=lambda r: (values[r], r))
        assert quickstart.match_lowest_value(demo.bob, candidates) == [best]
    finally:
        bob.set_metric(alice_anneal, "final_value", quickstart.final_value(alice_anneal, demo.bob))


def test_module_entry_point(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "lightstore.demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "--maxiter" in done.stdout and "--workdir" in done.stdout
