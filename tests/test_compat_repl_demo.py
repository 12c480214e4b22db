"""Pylightnix's docs/demos/REPL.py flow, rewritten for lightstore (no TensorFlow).

A training stage whose evaluation step has a bug fails under `realize1`. In a
REPL session the user runs the training by hand on a `Build` subclass that
keeps state between steps, runs a corrected evaluation, and publishes the
result with `repl_continueBuild`; afterwards the stage is simply cached.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lightstore import (
    Build,
    DRef,
    Registry,
    RRef,
    build_cattrs,
    build_outpath,
    build_path,
    build_wrapper_,
    fetchurl2,
    instantiate,
    match,
    mkconfig,
    mkdrv,
    mklens,
    realize1,
    repl_buildargs,
    repl_continueBuild,
    repl_realize,
    rref2path,
    tryread,
)


class Model(Build):
    """The build keeps the data and the fitted model between the steps."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    weights: np.ndarray


def _dataset(path: str) -> str:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 3))
    y = x @ np.array([1.5, -2.0, 0.5]) + 0.01 * rng.normal(size=200)
    np.savez(path, x_train=x[:150], y_train=y[:150], x_test=x[150:], y_test=y[150:])
    return path


def match_best(filename: str):
    """A matcher choosing the realization with the highest number in `filename`."""

    def key(S, rref: RRef):
        text = tryread(os.path.join(rref2path(rref, S), filename))
        return float(text) if text is not None else None

    return match(key, lambda rrefs: rrefs[:1] or None)


def test_repl_demo_flow(S, tmp_path):
    data = _dataset(str(tmp_path / "data.npz"))

    def fetchdata(r: Registry) -> DRef:
        return fetchurl2(data, name="data", r=r)

    def model_config(dataset: DRef, r: Registry):
        name = "linreg"
        # Readable right after mkdrv, before instantiate, as in Pylightnix.
        dataset_file = mklens(dataset, r=r).out.refpath
        learning_rate = 1e-3
        version = 7
        return mkconfig({k: v for k, v in locals().items() if k not in ("dataset", "r")})

    def train(b: Model) -> None:
        c = build_cattrs(b)
        with np.load(build_path(b, c.dataset_file)) as f:
            b.x_train, b.y_train = f["x_train"], f["y_train"]
            b.x_test, b.y_test = f["x_test"], f["y_test"]
        b.weights = np.linalg.lstsq(b.x_train, b.y_train, rcond=None)[0]
        with open(os.path.join(build_outpath(b), "weights.json"), "w") as f:
            json.dump(b.weights.tolist(), f)

    def evaluate_buggy(b: Model) -> None:
        b.model.evaluate(b.x_test)  # there is no `model`: the demo's bug

    def evaluate_correct(b: Model) -> None:
        error = float(np.mean((b.x_test @ b.weights - b.y_test) ** 2))
        with open(os.path.join(build_outpath(b), "accuracy.txt"), "w") as f:
            f.write(str(1.0 / (1.0 + error)))

    def realize_model(b: Model) -> None:
        train(b)
        evaluate_buggy(b)

    def linreg(r: Registry) -> DRef:
        dataset = fetchdata(r)
        # The old call form: the registry first.
        config = model_config(dataset, r)
        return mkdrv(r, config, match_best("accuracy.txt"), build_wrapper_(realize_model, Model))

    registry = Registry(S)
    with pytest.raises(AttributeError):
        try:
            realize1(instantiate(linreg, r=registry), force_rebuild=True)  # spoiler: fails
        except Exception as e:  # the BuildError's cause is the realizer's own error
            raise e.exception from None

    rh = repl_realize(instantiate(linreg, r=registry))
    b = Model(repl_buildargs())
    train(b)
    evaluate_correct(b)
    rref = repl_continueBuild(b)
    assert rref is not None and rh.gen is None
    assert float(tryread(os.path.join(rref2path(rref, S), "accuracy.txt"))) > 0.99
    assert mklens(rref, S=S).dataset_file.syspath.endswith("data.npz")
    # From now on the stage is realized: the same RRef, nothing runs.
    assert realize1(instantiate(linreg, r=Registry(S))) == rref
