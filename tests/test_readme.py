"""The README's Python examples run as written, and its quick start names real tools."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_python_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", readme(), re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    exec(compile("\n".join(blocks), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "45"
    assert out[1].endswith("data.json") and os.path.exists(out[1])


def test_quick_start_commands_exist():
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", readme(), re.S)
    assert block is not None
    commands = [line.split()[0] for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["./tools/demo", "./tools/test"]
    for command in commands:
        path = os.path.join(ROOT, command)
        assert os.access(path, os.X_OK), path
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        assert "./tools/test" in f.read()


def test_sql_examples_run(store):
    from lightstore import (
        build_outpath,
        build_wrapper,
        instantiate,
        match_only,
        mkdrv,
        realize1,
        selfref,
    )

    def stage(r):
        def real(b):
            with open(os.path.join(build_outpath(b), "f"), "w") as f:
                f.write("x")

        data = mkdrv({"name": "data", "out": [selfref, "f"]}, match_only(), build_wrapper(real), r)
        return mkdrv(
            {"name": "train", "lr": 1e-4, "data": [data, "f"], "out": [selfref, "f"]},
            match_only(),
            build_wrapper(real),
            r,
        )

    realize1(instantiate(stage, S=store))
    queries = re.findall(r"```sql\n(.*?)```", readme(), re.S)
    assert len(queries) >= 3
    results = [store.catalogue.query(q) for q in queries]
    assert [len(r) for r in results[:3]] == [1, 2, 1]
