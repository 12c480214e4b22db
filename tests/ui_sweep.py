"""A learning-rate sweep as an experiment browser shows it: log-spaced learning rates and two
seeds, constant fields (batch, epochs, a source hash), loss and accuracy curves per run (metric
series by epoch, and a curve.json artifact), diverged runs (NaN from epoch 3), a failed build,
an evaluate stage built on the trained runs, and tags and notes (best, baseline,
status=diverged).

The browser's tests and tools/ui_screenshots.py use it. Run as a script to make one:
python tests/ui_sweep.py DIR
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys

from lightstore import (
    BuildError,
    Store,
    build_cattrs,
    build_metrics,
    build_outpath,
    build_wrapper,
    fsinit,
    instantiate,
    match_only,
    mkdrv,
    mkSS,
    realize1,
    selfref,
)

LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SEEDS = (1, 2)
DIVERGED_LR = 1e-1
BEST_LR = 3e-3
BASELINE_LR = 1e-3
FAILED_LR = 1.0
FAILURE = "loss became NaN at epoch 2"


def data_stage(r):
    def real(b):
        with open(os.path.join(build_outpath(b), "data.csv"), "w") as f:
            f.write("x,y\n" + "".join(f"{i},{(i * 7919) % 101}\n" for i in range(500)))

    config = {"name": "data", "rows": 500, "out": [selfref, "data.csv"]}
    return mkdrv(config, match_only(), build_wrapper(real), r)


def losses(lr: float, seed: int, epochs: int) -> list[float]:
    """A made-up loss curve: fast at a good learning rate, NaN from epoch 3 when too large."""
    best = 3e-3
    rate = 0.35 / (1 + abs(math.log10(lr / best)))
    out = []
    for e in range(epochs):
        if lr >= DIVERGED_LR and e >= 3:
            out.append(math.nan)
        else:
            out.append(round(0.2 + 2.3 * math.exp(-rate * e) + 0.01 * seed * (e % 3), 4))
    return out


def train_stage(lr: float, seed: int):
    def stage(r):
        data = data_stage(r)

        def real(b):
            c = build_cattrs(b)
            curve = losses(c.lr, c.seed, c.epochs)
            with open(os.path.join(build_outpath(b), "curve.json"), "w") as f:
                json.dump({"loss": curve}, f)
            for epoch, loss in enumerate(curve):
                print(f"epoch {epoch:2d}  lr={c.lr:g}  loss={loss}")
                build_metrics(b, {"loss": loss, "acc": round(1 - loss / 3, 4)}, step=epoch)
            if c.lr >= FAILED_LR:
                raise FloatingPointError(FAILURE)
            if math.isnan(curve[-1]):
                print("diverged: the loss is NaN")
            build_metrics(b, {"diverged": int(math.isnan(curve[-1]))})

        config = {
            "name": "train",
            "lr": lr,
            "seed": seed,
            "batch": 32,
            "epochs": 10,
            "__source__": "train.py@7c1e9a2",
            "data": data,
            "out": [selfref, "curve.json"],
        }
        return mkdrv(config, match_only(), build_wrapper(real), r)

    return stage


def evaluate_stage(lr: float, seed: int):
    def stage(r):
        model = train_stage(lr, seed)(r)

        def real(b):
            score = round(0.9 - 0.1 * abs(math.log10(lr / 3e-3)), 4)
            print(f"evaluating the model trained with lr={lr:g}: r2={score}")
            with open(os.path.join(build_outpath(b), "scores.json"), "w") as f:
                json.dump({"r2": score}, f)
            build_metrics(b, {"r2": score})

        config = {
            "name": "evaluate",
            "model": model,
            "split": "test",
            "out": [selfref, "scores.json"],
        }
        return mkdrv(config, match_only(), build_wrapper(real), r)

    return stage


def make_sweep(root: str) -> dict[str, object]:
    """Realize the sweep into a new store at `root`; return its RRefs by role."""
    S = fsinit(mkSS(root)).settings
    train = {}
    for lr in LRS:
        for seed in SEEDS:
            train[(lr, seed)] = realize1(instantiate(train_stage(lr, seed), S=S))
    evaluate = {
        lr: realize1(instantiate(evaluate_stage(lr, 1), S=S)) for lr in LRS if lr < DIVERGED_LR
    }
    with contextlib.suppress(BuildError):
        realize1(instantiate(train_stage(FAILED_LR, 1), S=S))
    store = Store.open(root)
    store.set_tag(train[(BEST_LR, 1)], "best")
    store.add_note(train[(BEST_LR, 1)], "The one for the paper: lowest loss of the sweep.")
    for seed in SEEDS:
        store.set_tag(train[(BASELINE_LR, seed)], "baseline")
        store.set_tag(train[(DIVERGED_LR, seed)], "status", "diverged")
    store.add_note(train[(DIVERGED_LR, 1)], "Diverges at epoch 3: lr too large.")
    return {"root": root, "train": train, "evaluate": evaluate}


if __name__ == "__main__":
    made = make_sweep(sys.argv[1])
    print(made["root"])
