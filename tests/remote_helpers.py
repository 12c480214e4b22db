"""Pipelines and remote inspection shared by the remote-cache tests."""

from __future__ import annotations

import os
import random

from helpers import run_job

from lightstore import (
    build_outpath,
    build_wrapper,
    match_all,
    match_latest,
    match_only,
    mkconfig,
    mkdrv,
)

#: Realizer runs of this process, per stage name (tests check "no realizer ran").
RUNS: dict[str, int] = {}


def _count(name: str) -> None:
    RUNS[name] = RUNS.get(name, 0) + 1


def pipeline(r, scale: int = 1, nondeterministic: bool = False):
    """params -> train -> report; `train` draws random bytes when `nondeterministic`."""

    def params(b):
        _count("params")
        out = build_outpath(b)
        os.makedirs(os.path.join(out, "data", "deep"))
        with open(os.path.join(out, "data", "deep", "values.txt"), "w") as f:
            f.write("1 2 3\n" * 1000)
        with open(os.path.join(out, "run.sh"), "w") as f:
            f.write("#!/bin/sh\necho hi\n")
        os.chmod(os.path.join(out, "run.sh"), 0o755)
        with open(os.path.join(out, "same.txt"), "w") as f:
            f.write("identical content\n")
        with open(os.path.join(out, "data", "same-too.txt"), "w") as f:
            f.write("identical content\n")
        os.symlink("data/deep/values.txt", os.path.join(out, "link"))
        os.mkdir(os.path.join(out, "empty"))

    def train(b):
        _count("train")
        data = os.urandom(3000) if nondeterministic else bytes(range(256)) * 12 * scale
        with open(os.path.join(build_outpath(b), "model.bin"), "wb") as f:
            f.write(data)

    def report(b):
        _count("report")
        with open(os.path.join(build_outpath(b), "report.txt"), "w") as f:
            f.write(f"report {random.random() if nondeterministic else 0}\n")

    p = mkdrv(mkconfig({"name": "params", "scale": scale}), match_only(), build_wrapper(params), r)
    t = mkdrv(
        mkconfig({"name": "train", "params": p, "nd": nondeterministic}),
        match_all if nondeterministic else match_only(),
        build_wrapper(train),
        r,
    )
    return mkdrv(
        mkconfig({"name": "report", "model": t}),
        match_latest(1) if nondeterministic else match_only(),
        build_wrapper(report),
        r,
    )


def remote_files(folder: str) -> list[str]:
    """Every file below a file:// remote's folder, relative, temporary files included."""
    out = []
    for dirpath, _, filenames in os.walk(folder):
        for n in filenames:
            out.append(os.path.relpath(os.path.join(dirpath, n), folder))
    return sorted(out)


def rewrite(path: str, data: bytes) -> None:
    """Replace a read-only file of a file:// remote (as an attacker with access would)."""
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(data)


def many_files_stage(r, count: int = 120):
    """One realization with `count` small files in a few folders."""

    def real(b):
        _count("many")
        out = build_outpath(b)
        for i in range(count):
            folder = os.path.join(out, f"d{i % 7}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"f{i}.txt"), "w") as f:
                f.write(f"file {i}\n" * (i % 13 + 1))

    return mkdrv(mkconfig({"name": "many", "count": count}), match_only(), build_wrapper(real), r)


def folder_stage(name: str, make, r=None):
    """One realization of the derivation `name`, whose output folder (bytes path) `make`
    fills: for odd names, links and layouts that a pipeline would not make."""

    def real(b):
        _count(name)
        make(os.fsencode(build_outpath(b)))

    return mkdrv(mkconfig({"name": name}), match_only(), build_wrapper(real), r)


def copies(count: int, size: int):
    """A `folder_stage` maker: `count` files with the same `size` bytes (one blob)."""

    def make(out: bytes) -> None:
        data = bytes(range(256)) * (size // 256)
        for i in range(count):
            with open(os.path.join(out, b"copy%d" % i), "wb") as f:
                f.write(data)

    return make


def build(root: str, variant: str, env: dict[str, str] | None = None) -> str:
    """Realize the test pipeline `variant` (see the `build` job of tests/workers.py) in a
    child process; its target's RRef."""
    return run_job("build", root, variant, env=env).result()["rref"]
