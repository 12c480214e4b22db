"""The classic quick start, walked through: ``python -m lightstore.demo --help``.

`main` runs the pipeline of `lightstore.demo.pipeline` (the minimum of a 2-D
function, in three cached stages) and shows caching, reuse, two independent
stores (Alice and Bob), moving results between them with `spack`/`sunpack`,
and a custom matcher that is a query over the recorded metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from lightstore import (
    RRef,
    StorageSettings,
    allrrefs,
    drefrrefs,
    fsinit,
    mklens,
    mkSS,
    redefine,
    rref2dref,
    rref2path,
    spack,
    sunpack,
)
from lightstore.demo.pipeline import (
    LOWEST_VALUE_SQL,
    MAXITER,
    PARAMS,
    STAGES,
    Run,
    final_value,
    match_lowest_value,
    run_pipeline,
    stage_anneal,
)
from lightstore.foundation.errors import LightstoreError

# -- the walk-through -------------------------------------------------------------


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(title: str) -> None:
    _say()
    _say(title)
    _say("-" * len(title))


def _show(run: Run) -> None:
    for stage in STAGES:
        how = "built" if stage in run.built else "reused"
        _say(f"  {stage:<7} {run.rrefs[stage]}  ({how})")


def _optimum(rref: RRef, S: StorageSettings) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(mklens(rref, S=S).result.contents)
    return result


def _fresh_store(root: str) -> StorageSettings:
    # remove_existing refuses to delete a folder that is not a lightstore store.
    return fsinit(mkSS(root), remove_existing=True).settings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lightstore.demo",
        description="The lightstore quick start: a cached, three-stage optimization pipeline.",
    )
    parser.add_argument(
        "--maxiter", type=int, default=MAXITER, help="dual annealing iterations (default: 500)"
    )
    parser.add_argument(
        "--workdir",
        help="folder for the Alice and Bob stores and the archive "
        "(default: a new temporary folder, kept afterwards)",
    )
    parser.add_argument(
        "--root", help="the default store (default: $LIGHTSTORE_ROOT or ~/.local/share/lightstore)"
    )
    args = parser.parse_args(argv)
    if args.maxiter < 1:
        parser.error("--maxiter must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the walk-through; return the exit status."""
    args = parse_args(argv)
    try:
        walk_through(args.maxiter, args.root, args.workdir)
    except LightstoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


def walk_through(maxiter: int, root: str | None, workdir: str | None) -> None:
    """The six steps of the quick start, printed as they happen."""
    _say("lightstore quick start: minimize f(x, y) with dual annealing, then plot the trace")
    _say(f"(maxiter = {maxiter}; the parameters are {PARAMS})")

    store = fsinit(mkSS(root)) if root else fsinit()
    S = store.settings
    _step(f"1. Run the pipeline on the default store {S.root}")
    first = run_pipeline(S, maxiter)
    _show(first)
    best = _optimum(first.rrefs["anneal"], S)
    _say(f"  optimum: f({best['x']:.6f}, {best['y']:.6f}) = {best['f']!r}")
    if len(first.built) < len(STAGES):
        _say("  (stages marked 'reused' were already in this store from an earlier run)")
    _say(f"  took {first.seconds:.2f} s")

    _step("2. Run it again: every stage is reused, nothing is rebuilt")
    again = run_pipeline(S, maxiter)
    _show(again)
    ran = len(again.built)
    _say(f"  realizers run: {ran}; took {again.seconds:.3f} s (first run: {first.seconds:.2f} s)")
    same = again.rrefs == first.rrefs
    _say(f"  same RRefs as step 1: {'yes' if same else 'NO'}")

    work = workdir or tempfile.mkdtemp(prefix="lightstore-demo-")
    os.makedirs(work, exist_ok=True)
    S_alice = _fresh_store(os.path.join(work, "alice"))
    S_bob = _fresh_store(os.path.join(work, "bob"))
    _step(f"3. Alice and Bob run the same pipeline in their own stores (under {work})")
    alice = run_pipeline(S_alice, maxiter)
    bob = run_pipeline(S_bob, maxiter)
    value_alice = final_value(alice.rrefs["anneal"], S_alice)
    value_bob = final_value(bob.rrefs["anneal"], S_bob)
    _say(f"  Alice's anneal: {alice.rrefs['anneal']}  final value {value_alice!r}")
    _say(f"  Bob's anneal:   {bob.rrefs['anneal']}  final value {value_bob!r}")
    difference = abs(value_alice - value_bob)
    if difference:
        _say(f"  difference: {difference:.3g} (no fixed seed: each run explores differently)")
    else:
        _say("  same value: both found the same point, along different random paths")
    same_params = alice.rrefs["params"] == bob.rrefs["params"]
    _say(
        "  their params RRefs are "
        + ("identical" if same_params else "DIFFERENT")
        + " (a deterministic stage gives the same RRef in every store)"
    )

    archive = os.path.join(work, "alice.zip")
    _step("4. Alice packs her results; Bob unpacks them into his store")
    spack([alice.rrefs["plot"]], archive, S_alice)
    _say(f"  spack([{alice.rrefs['plot']}], {archive!r}, S_alice)")
    _say(
        f"  archive size: {os.path.getsize(archive)} bytes (the plot and everything it depends on)"
    )
    sunpack(archive, S_bob)
    _say(f"  sunpack({archive!r}, S_bob)")
    held = drefrrefs(rref2dref(alice.rrefs["anneal"]), S_bob)
    has_alice = alice.rrefs["anneal"] in held
    _say(
        f"  Bob's store now holds {len(held)} annealing results; Alice's RRef is there, "
        f"unchanged: {'yes' if has_alice else 'NO'}"
    )
    _say(f"  Bob's store holds {len(allrrefs(S_bob))} realizations in all")

    _step("5. Bob re-runs the pipeline with a custom matcher: the lowest final value wins")
    for rref in sorted(held):
        owner = "Alice" if rref == alice.rrefs["anneal"] else "Bob"
        _say(f"  candidate {rref}  ({owner}'s)  final value {final_value(rref, S_bob)!r}")
    _say("  the matcher is one query over the metrics the annealing stage recorded:")
    _say("    " + " ".join(LOWEST_VALUE_SQL.split()))
    best_anneal = redefine(stage_anneal, new_matcher=match_lowest_value)
    chosen = run_pipeline(S_bob, maxiter, anneal=best_anneal)
    winner = chosen.rrefs["anneal"]
    owner = "Alice" if winner == alice.rrefs["anneal"] else "Bob"
    _say(f"  the matcher chose {winner}  ({owner}'s, final value {final_value(winner, S_bob)!r})")
    used = mklens(chosen.rrefs["plot"], S=S_bob).anneal.rref
    _say(f"  the plot stage used: {used}  (the chosen one: {'yes' if used == winner else 'NO'})")
    _say(
        "  realizers run: "
        + (", ".join(chosen.built) if chosen.built else "none")
        + (
            " (the plot for Alice's result came with her archive)"
            if owner == "Alice" and not chosen.built
            else ""
        )
    )

    _step("6. The plots")
    _say(f"  plot PNG (default store):   {mklens(first.rrefs['plot'], S=S).out.syspath}")
    _say(f"  plot PNG (Bob's best):      {mklens(chosen.rrefs['plot'], S=S_bob).out.syspath}")
    _say(f"  Bob's plot folder:          {rref2path(chosen.rrefs['plot'], S_bob)}")
    _say()
    _say(f"Done. Alice's and Bob's stores and the archive are kept in {work}.")
    _say(
        f"Compare the runs: lightstore --root {S_bob.root} history -n anneal -m final_value --sort final_value"
    )
    _say(f"Browse them:      lightstore --root {S_bob.root} ui   (pip install 'lightstore[ui]')")
