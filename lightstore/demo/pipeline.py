"""The quick start's pipeline: find the minimum of a 2-D function in three cached stages.

Written with the Pylightnix vocabulary that lightstore keeps:

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

`match_lowest_value` is a custom matcher that is a query over the recorded metrics;
`run_pipeline` runs the three stages and says which were built.
"""

from __future__ import annotations

import inspect
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
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
    autostage,
    build_cattrs,
    build_metrics,
    build_path,
    build_wrapper,
    instantiate,
    match_latest,
    match_only,
    mkconfig,
    mkdrv,
    mklens,
    realize,
    selfref,
)

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
