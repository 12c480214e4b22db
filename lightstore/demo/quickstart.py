"""The classic quick start: find the minimum of a 2-D function with a cached pipeline.

Three stages, written with the Pylightnix vocabulary that lightstore keeps:

- ``params`` (`mkdrv` + `build_wrapper`): saves the 13 parameters of the
  function to ``params.json``. Deterministic, so ``match_only()``.
- ``anneal`` (`autostage`): runs ``scipy.optimize.dual_annealing`` from
  (2, 2), traces every improvement and the minima its callback reports, and saves
  ``trace.json`` and ``result.json``, and records the final value and the
  number of evaluations as metrics (``final_value``, ``evaluations``) in the
  catalogue. No random seed is fixed, so every run
  gives a new realization; ``match_latest()`` picks the newest, and the
  source of `objective` is part of the config (``sourcedeps``), so editing
  the function re-runs the stage.
- ``plot`` (`mkdrv` + `build_wrapper`): draws the trace on the function's
  contour map to ``trace.png`` (matplotlib, Agg canvas).

`main` walks through caching, reuse, two independent stores (Alice and Bob),
moving results between them with `spack`/`sunpack`, and a custom matcher
that is a query over the recorded metrics.
Run it with ``python -m lightstore.demo --help``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightstore import (
    Build,
    DRef,
    Registry,
    RRef,
    StorageSettings,
    Store,
    allrrefs,
    autostage,
    build_cattrs,
    build_metrics,
    build_path,
    build_wrapper,
    drefrrefs,
    fsinit,
    instantiate,
    match_latest,
    match_only,
    mkconfig,
    mkdrv,
    mklens,
    mkSS,
    realize,
    redefine,
    rref2dref,
    rref2path,
    selfref,
    spack,
    sunpack,
)
from lightstore.foundation.errors import LightstoreError

#: The parameters of `objective`, as in the Pylightnix quick start.
PARAMS: dict[str, float] = {
    "a": 2,
    "b": 3,
    "c": 7,
    "d": 8,
    "e": 9,
    "f": 10,
    "g": 44,
    "h": -1,
    "i": 2,
    "j": 26,
    "k": 1,
    "l": -2,
    "scale": 0.5,
}
MAXITER = 500

#: How many times each stage's realizer ran in this process. The demo reads
#: differences of it to show that a cached run builds nothing.
REALIZER_RUNS: Counter[str] = Counter()


def objective(x: Any, y: Any, p: Mapping[str, float]) -> Any:
    """f(x, y): a quadratic bowl with two Gaussian wells (works on numbers and numpy arrays)."""
    return (
        p["a"] * x**2
        + p["b"] * x * y
        + p["c"] * y**2
        + p["d"] * x
        + p["e"] * y
        + p["f"]
        - p["g"] * np.exp(-((x - p["h"]) ** 2 + (y - p["i"]) ** 2) / p["scale"])
        - p["j"] * np.exp(-((x - p["k"]) ** 2 + (y - p["l"]) ** 2) / p["scale"])
    )


# -- stage 1: the parameters (mkdrv + build_wrapper) ----------------------------


def _write_params(b: Build) -> None:
    REALIZER_RUNS["params"] += 1
    c = build_cattrs(b)
    params = {name: getattr(c, name) for name in PARAMS}
    with open(build_path(b, c.out), "w", encoding="utf-8") as f:
        json.dump(params, f, indent=1, sort_keys=True)


def stage_params(r: Registry) -> DRef:
    """The parameters of `objective`, saved to ``params.json``."""
    config = mkconfig({"name": "params", **PARAMS, "out": [selfref, "params.json"]})
    return mkdrv(config, match_only(), build_wrapper(_write_params), r=r)


# -- stage 2: simulated annealing (autostage) -----------------------------------


@autostage(
    name="anneal",
    ref_params=stage_params,
    maxiter=MAXITER,
    bounds=[[-10.0, 10.0], [-10.0, 10.0]],
    x0=[2.0, 2.0],
    trace=[selfref, "trace.json"],
    result=[selfref, "result.json"],
    sourcedeps=[objective],
    matcher=match_latest(),
)
def stage_anneal(
    ref_params: Any,
    maxiter: int,
    bounds: list[list[float]],
    x0: list[float],
    trace: str,
    result: str,
    build: Build,
) -> None:
    """Minimize `objective` with dual annealing, tracing every improvement of the best value.

    `ref_params` is the parameter stage's realization (its ``out`` field is the
    system path of ``params.json``); `trace` and `result` are paths in this
    stage's output folder; `build` is the running build (to record metrics). The
    trace holds every evaluation that improved on
    the best value so far, and the minima that dual annealing reported
    through its callback.
    """
    from scipy.optimize import dual_annealing

    REALIZER_RUNS["anneal"] += 1
    with open(ref_params.out, encoding="utf-8") as f:
        params = json.load(f)
    improvements: list[dict[str, Any]] = []
    minima: list[dict[str, Any]] = []
    evaluations = 0

    def traced(v: Any) -> float:
        nonlocal evaluations
        evaluations += 1
        value = float(objective(v[0], v[1], params))
        if not improvements or value < improvements[-1]["f"]:
            point = {"x": float(v[0]), "y": float(v[1]), "f": value}
            improvements.append({**point, "evaluation": evaluations})
        return value

    phases = {0: "annealing", 1: "local search", 2: "dual annealing"}

    def found_minimum(x: Any, value: float, context: int) -> None:
        point = {"x": float(x[0]), "y": float(x[1]), "f": float(value)}
        minima.append({**point, "evaluation": evaluations, "phase": phases.get(context, "?")})

    # No fixed seed: every run draws a fresh one, so each run explores differently
    # (a non-deterministic realizer). The seed is saved so that a run can be replayed,
    # and so that two runs that happen to reach the very same point (likely with a
    # small maxiter) are still two distinct realizations.
    seed = secrets.randbits(63)
    rng_keyword = "rng" if "rng" in inspect.signature(dual_annealing).parameters else "seed"
    found = dual_annealing(
        traced,
        bounds=bounds,
        maxiter=maxiter,
        x0=x0,
        callback=found_minimum,
        **{rng_keyword: np.random.default_rng(seed)},
    )
    with open(trace, "w", encoding="utf-8") as f:
        json.dump({"improvements": improvements, "minima": minima}, f, indent=1)
    optimum = {
        "x": float(found.x[0]),
        "y": float(found.x[1]),
        "f": float(found.fun),
        "nfev": int(found.nfev),
        "seed": seed,
        "message": " ".join(np.atleast_1d(found.message).astype(str)),
    }
    with open(result, "w", encoding="utf-8") as f:
        json.dump(optimum, f, indent=1)
    # Into the catalogue with the realization: queryable, and not part of its hash.
    build_metrics(build, {"final_value": float(found.fun), "evaluations": int(found.nfev)})


# -- stage 3: the plot (mkdrv + build_wrapper) ----------------------------------


def _plot(b: Build) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    REALIZER_RUNS["plot"] += 1
    anneal = mklens(b).anneal  # the annealing realization this build uses
    trace = json.loads(anneal.trace.contents)
    optimum = json.loads(anneal.result.contents)
    params = json.loads(anneal.ref_params.out.contents)

    steps = trace["improvements"]
    xs = np.array([s["x"] for s in steps])
    ys = np.array([s["y"] for s in steps])
    lo = min(-4.0, float(xs.min()) - 0.5, float(ys.min()) - 0.5)
    hi = max(4.0, float(xs.max()) + 0.5, float(ys.max()) + 0.5)
    grid = np.linspace(lo, hi, 301)
    gx, gy = np.meshgrid(grid, grid)
    gz = objective(gx, gy, params)

    # An explicit Agg canvas: no pyplot, no global backend switch, no display needed.
    fig = Figure(figsize=(11, 4.6))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    levels = np.linspace(float(gz.min()), float(gz.min()) + 80.0, 41)
    filled = left.contourf(gx, gy, gz, levels=levels, cmap="viridis", extend="max")
    fig.colorbar(filled, ax=left, label="f(x, y)")
    left.plot(xs, ys, ".-", color="tab:red", label="improvements")
    left.plot(
        [m["x"] for m in trace["minima"]],
        [m["y"] for m in trace["minima"]],
        "o",
        color="tab:orange",
        markerfacecolor="none",
        markersize=10,
        label="minima found",
    )
    left.plot([optimum["x"]], [optimum["y"]], "*", color="white", markersize=16, label="optimum")
    left.set(xlabel="x", ylabel="y", title="dual annealing from (2, 2)")
    left.legend(loc="upper right")
    right.step(
        [s["evaluation"] for s in steps] + [optimum["nfev"]],
        [s["f"] for s in steps] + [steps[-1]["f"]],
        where="post",
        color="tab:red",
    )
    right.set_xscale("log")
    # The start value dwarfs the late, small improvements: show the last 15 units.
    right.set_ylim(optimum["f"] - 0.5, min(steps[0]["f"], optimum["f"] + 15.0) + 0.5)
    right.set(
        xlabel="evaluations",
        ylabel="best f so far",
        title=f"final f = {optimum['f']:.6f} ({optimum['nfev']} evaluations)",
    )
    right.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(mklens(b).out.syspath, dpi=90)


def stage_plot(r: Registry, anneal: DRef) -> DRef:
    """A PNG of the annealing trace."""
    config = mkconfig({"name": "plot", "anneal": anneal, "out": [selfref, "trace.png"]})
    # match_latest, not match_only: PNG bytes may differ between matplotlib versions.
    return mkdrv(config, match_latest(), build_wrapper(_plot), r=r)


# -- the pipeline ---------------------------------------------------------------

STAGES = ("params", "anneal", "plot")


def pipeline(
    r: Registry, maxiter: int = MAXITER, anneal: Callable[..., DRef] = stage_anneal
) -> dict[str, DRef]:
    """All three stages; `anneal` may be a redefined annealing stage (another matcher)."""
    params = stage_params(r)
    annealed = anneal(r=r, ref_params=params, maxiter=maxiter)
    return {"params": params, "anneal": annealed, "plot": stage_plot(r, annealed)}


def final_value(rref: RRef, S: StorageSettings) -> float:
    """The final value of an annealing realization, read from its ``result.json``."""
    return float(json.loads(mklens(rref, S=S).result.contents)["f"])


#: The matcher's question, over the catalogue's `metrics` table: the best
#: candidate, and how many candidates have the metric at all.
LOWEST_VALUE_SQL = """
SELECT rref, count(*) OVER () FROM metrics
WHERE name = 'final_value' AND rref IN (SELECT value FROM json_each(:rrefs))
ORDER BY value, rref LIMIT 1
"""


def match_lowest_value(S: StorageSettings, rrefs: list[RRef]) -> list[RRef] | None:
    """A custom matcher: of the annealing results in this context, the one with the lowest value.

    One SQL query over the metrics the annealing stage recorded. If some
    candidate has no metric (built before metrics existed), every candidate
    is compared by its ``result.json`` instead, as
    ``match_some(1, key=lambda S, r: -final_value(r, S))`` would.
    """
    if not rrefs:
        return None
    rows = Store.open(S).catalogue.query(LOWEST_VALUE_SQL, {"rrefs": json.dumps(rrefs)})
    if rows and rows[0][1] == len(set(rrefs)):
        return [RRef(rows[0][0])]
    return [min(rrefs, key=lambda rref: (final_value(rref, S), rref))]


@dataclass
class Run:
    """One realization of the pipeline: the RRef of each stage and what had to be built."""

    rrefs: dict[str, RRef]
    built: list[str]
    seconds: float


def run_pipeline(
    S: StorageSettings, maxiter: int, anneal: Callable[..., DRef] = stage_anneal
) -> Run:
    """Instantiate and realize the pipeline in store `S`."""
    before = Counter(REALIZER_RUNS)
    started = time.perf_counter()
    drefs, _, context = realize(instantiate(pipeline, S=S, maxiter=maxiter, anneal=anneal))
    seconds = time.perf_counter() - started
    rrefs = {stage: context[dref][0] for stage, dref in drefs.items()}
    built = [stage for stage in STAGES if REALIZER_RUNS[stage] > before[stage]]
    return Run(rrefs, built, seconds)


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
