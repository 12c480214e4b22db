"""A small demo-like store for the experiment browser's tests: a sweep with metrics and images,
a stage built on it, and a failed build. Run as a script to make one: python tests/ui_store.py DIR
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
import zlib

from lightstore import (
    BuildError,
    Store,
    build_metrics,
    build_outpath,
    build_wrapper,
    fsinit,
    instantiate,
    match_only,
    mkdrv,
    mkSS,
    realize1,
    rmref,
    selfref,
)

LRS = (0.3, 0.1, 0.03, 0.01)
FAILURE = "the loss diverged at lr=10"


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid one-colour PNG, made with the standard library."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\0" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def data_stage(r):
    def real(b):
        with open(os.path.join(build_outpath(b), "data.csv"), "w") as f:
            f.write("x,y\n" + "".join(f"{i},{i * i}\n" for i in range(20)))

    return mkdrv(
        {"name": "data", "rows": 20, "out": [selfref, "data.csv"]},
        match_only(),
        build_wrapper(real),
        r,
    )


def train_stage(lr: float, depth: int):
    def stage(r):
        data = data_stage(r)

        def real(b):
            out = build_outpath(b)
            loss = round((lr - 0.05) ** 2 + 0.01 * depth, 6)
            shade = int(255 * min(1.0, lr * 3))
            with open(os.path.join(out, "curve.png"), "wb") as f:
                f.write(png(120, 80, (shade, 90, 255 - shade)))
            with open(os.path.join(out, "shape.svg"), "w") as f:
                f.write(
                    '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><circle cx="20" cy="20" r="15" fill="teal"/></svg>'
                )
            with open(os.path.join(out, "log.txt"), "w") as f:
                f.write(f"training with lr={lr} depth={depth}\nfinal loss {loss}\n")
            os.makedirs(os.path.join(out, "ckpt"))
            with open(os.path.join(out, "ckpt", "weights.bin"), "wb") as f:
                f.write(os.urandom(0) + bytes(range(256)) * 8)
            os.symlink("/etc/passwd", os.path.join(out, "escape"))
            build_metrics(b, {"loss": loss, "steps": int(100 / lr)})

        config = {
            "name": "train",
            "lr": lr,
            "model": {"depth": depth, "act": "relu"},
            "data": data,
            "out": [selfref, "curve.png"],
        }
        return mkdrv(config, match_only(), build_wrapper(real), r)

    return stage


def report_stage(r):
    trains = [train_stage(lr, 2)(r) for lr in LRS[:2]]

    def real(b):
        with open(os.path.join(build_outpath(b), "report.json"), "w") as f:
            json.dump({"runs": len(trains)}, f)

    return mkdrv(
        {"name": "report", "runs": trains, "out": [selfref, "report.json"]},
        match_only(),
        build_wrapper(real),
        r,
    )


def broken_stage(r):
    def real(b):
        raise ValueError(FAILURE)

    return mkdrv(
        {"name": "broken", "lr": 10, "out": [selfref, "x"]}, match_only(), build_wrapper(real), r
    )


def make_store(root: str) -> dict[str, object]:
    """Realize the sweep into a new store at `root`; return its RRefs by role."""
    S = fsinit(mkSS(root)).settings
    train = {}
    for depth in (2, 4):
        for lr in LRS:
            train[(lr, depth)] = realize1(instantiate(train_stage(lr, depth), S=S))
    report = realize1(instantiate(report_stage, S=S))
    with contextlib.suppress(BuildError):
        realize1(instantiate(broken_stage, S=S))
    # One run removed again: its record (and metrics) stay as history.
    collected = realize1(instantiate(train_stage(0.9, 8), S=S))
    rmref(collected, S)
    store = Store.open(root)
    store.pin("best", train[(0.03, 2)])
    return {"train": train, "report": report, "store": store, "collected": collected}


if __name__ == "__main__":
    made = make_store(sys.argv[1])
    print(made["report"])
