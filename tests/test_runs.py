"""Runs on the command line: labels that tell sweep runs apart, diff, cat, and the query API
taking a Store and any REF."""

from __future__ import annotations

import json
import os

import pytest
from helpers import LRS, fails, ok

from lightstore import build_outpath, build_wrapper, instantiate, match_only, mkdrv, realize1
from lightstore.cli.context import EXIT_BAD_INPUT, EXIT_NOT_FOUND
from lightstore.foundation.errors import (
    AmbiguousReferenceError,
    InvalidReferenceError,
    LightstoreError,
    UnknownReferenceError,
)
from lightstore.query import closure, describe, dot, neighbours, tree_lines
from lightstore.query.compare import artifact_path, compare
from lightstore.query.graph import differing_fields, flatten, labels


def test_query_functions_take_a_store_and_any_ref(store, pipeline):
    ev = pipeline.eval
    assert neighbours(store, "eval@latest") == [pipeline.train[0.01]]
    assert neighbours(store, "eval") == [pipeline.dref(pipeline.train[0.01])]
    assert neighbours(store.catalogue, ev) == [pipeline.train[0.01]]  # the old spelling
    assert closure(store, "eval@latest") == sorted([pipeline.train[0.01], pipeline.data])
    assert closure(store, ev[5:13]) == closure(store.catalogue, [ev])
    store.pin("best-total", ev)
    assert describe(store, "best-total")["rref"] == ev
    assert describe(store, ev[5:11])["rref"] == ev
    assert dot(store, "train@all").count("->") == 3
    with pytest.raises(AmbiguousReferenceError):
        tree_lines(store, "train")
    with pytest.raises(InvalidReferenceError):  # also a ValueError, as before
        dot(store, ["eval", "eval@latest"])


def test_labels_show_the_fields_that_differ(store, pipeline):
    lines = tree_lines(store, "data@latest", reverse=True)
    for lr in LRS:
        assert sum(ln.endswith(f"lr={lr}") for ln in lines) == 1, lines
    assert lines[0].startswith("data ") and "lr=" not in lines[0]  # alone of its name
    text = dot(store, "data", reverse=True)
    assert all(f"\\nlr={lr}" in text for lr in LRS)
    full = tree_lines(store, "data", reverse=True, full=True)
    assert any(ln.endswith("-train  lr=0.1") for ln in full)
    # Unit: nested keys, missing fields, long and quoted values.
    configs = [
        {"name": "t", "model": {"depth": 3, "act": "relu"}, "tag": 'say "hi"'},
        {"name": "t", "model": {"depth": 4, "act": "relu"}},
    ]
    assert flatten(configs[0])["model.depth"] == 3
    assert differing_fields(configs) == ["model.depth", "tag"]


def test_label_values_are_safe_in_dot(S, store):
    def stage(tag, r=None):
        def real(b):
            open(os.path.join(build_outpath(b), "x"), "w").close()

        return mkdrv({"name": "q", "tag": tag}, match_only(), build_wrapper(real), r)

    for tag in ('a"b', "c\\d\nnewline", "x" * 100):
        realize1(instantiate(stage, tag, S=S))
    text = dot(store, "q@all")
    assert 'tag=a\\"b' in text and "tag=c\\\\d newline" in text and "…" in text
    assert text.count("[label=") == 3
    assert len(labels(store, [*store.catalogue.all_rrefs()])) == 3


def test_diff(store, pipeline):
    d = compare(store, "train[lr=0.1]@latest", "train[lr=0.01]@latest")
    assert [(c["field"], c["a"], c["b"]) for c in d["config"]] == [("lr", 0.1, 0.01)]
    assert d["context"] == [] and not d["metrics"]  # the same data run; no metrics recorded
    d = compare(store, "eval", "data")
    fields = {c["field"]: c for c in d["config"]}
    assert fields["rows"]["in_a"] is False and fields["rows"]["b"] == 1
    assert compare(store, "eval", "eval")["config"] == []
    out = ok(pipeline.root, "diff", "train@lr=0.1@latest", "train@lr=0.001@latest")
    assert "lr  0.1 -> 0.001" in out
    assert json.loads(ok(pipeline.root, "diff", "--json", "eval", "data"))["b"].startswith("dref:")
    assert "no differences" in ok(pipeline.root, "diff", "eval", "eval")
    fails(EXIT_NOT_FOUND, pipeline.root, "diff", "eval", "nothing-here")


def test_diff_shows_metrics_when_the_catalogue_has_them(store, pipeline):
    for rref, name, value in [
        (pipeline.train[0.1], "loss", 0.5),
        (pipeline.train[0.01], "loss", 0.25),
        (pipeline.train[0.1], "acc", 0.9),
        (pipeline.train[0.01], "acc", 0.9),
    ]:
        store.set_metric(rref, name, value)
    d = compare(store, pipeline.train[0.1], pipeline.train[0.01])
    assert [(c["field"], c["a"], c["b"]) for c in d["metrics"]] == [("loss", 0.5, 0.25)]
    assert "metrics:\n  loss  0.5 -> 0.25" in ok(
        pipeline.root, "diff", pipeline.train[0.1], pipeline.train[0.01]
    )


def test_cat(S, store, pipeline):
    root = pipeline.root
    assert ok(root, "cat", "train[lr=0.01]@latest", "model.txt").strip() == "lr=0.01"
    assert ok(root, "cat", "train[lr=0.01]", "./logs//loss.txt").startswith("0.5")
    assert artifact_path(store, pipeline.eval, "score.txt").startswith(str(store.root))
    for bad in ("../../catalogue.sqlite", "/etc/passwd", "logs/../../x"):
        assert "without '..'" in fails(EXIT_BAD_INPUT, root, "cat", "eval", bad).output
    assert "is a folder" in fails(EXIT_BAD_INPUT, root, "cat", "train@latest", "logs").output
    fails(EXIT_NOT_FOUND, root, "cat", "eval", "nope.txt")
    assert "@latest" in fails(EXIT_BAD_INPUT, root, "cat", "train", "model.txt").output

    outside = os.path.join(os.path.dirname(root), "secret.txt")
    with open(outside, "w") as f:
        f.write("secret")

    def links(r=None):
        def real(b):
            out = build_outpath(b)
            with open(os.path.join(out, "real.txt"), "w") as f:
                f.write("inside")
            os.symlink("real.txt", os.path.join(out, "inner"))
            os.symlink(outside, os.path.join(out, "escape"))
            os.symlink("../../../secret.txt", os.path.join(out, "relative-escape"))

        return mkdrv({"name": "links"}, match_only(), build_wrapper(real), r)

    try:
        rref = realize1(instantiate(links, S=S))
    except LightstoreError:  # a store that refuses escaping links when publishing is fine too
        return
    assert ok(root, "cat", rref, "inner") == "inside"
    for name in ("escape", "relative-escape"):
        with pytest.raises(InvalidReferenceError, match="leads outside"):
            artifact_path(store, rref, name)
    with pytest.raises(UnknownReferenceError):
        artifact_path(store, rref, "missing")


def test_second_unpack_says_what_was_already_present(pipeline, tmp_path):
    archive = str(tmp_path / "eval.tar.gz")
    ok(pipeline.root, "pack", archive, "eval@latest")
    bob = str(tmp_path / "bob")
    ok(bob, "init")
    first = fails(0, bob, "unpack", archive)
    assert first.stdout.split() == [pipeline.eval]
    assert "added 3 realization(s)" in first.stderr and "already" not in first.stderr
    second = fails(0, bob, "unpack", archive)
    assert second.stdout.strip() == f"{pipeline.eval}  (already present)"
    assert "added 0 realization(s); 3 of the 3" in second.stderr


def test_catalogue_query_rows_have_column_names(store, pipeline):
    import pickle

    rows = store.catalogue.query("SELECT rref, size, size AS bytes FROM realizations ORDER BY rref")
    row = rows[0]
    rref, size, _ = row  # still a tuple
    assert row == (rref, size, size) and row[0] == rref and row[-1] == size
    assert row["rref"] == rref and row["bytes"] == size
    assert row.keys() == ["rref", "size", "bytes"] and dict(row) == row.asdict()
    assert dict(row)["size"] == size and "Row(rref=" in repr(row)
    assert pickle.loads(pickle.dumps(row)) == row
    with pytest.raises(KeyError, match="its columns are rref, size, bytes"):
        row["nope"]
    assert dict(store.catalogue.query("SELECT rref, size FROM realizations"))[rref] == size
    assert store.catalogue.query("SELECT 1 WHERE 0") == []


def test_instantiate_prints_short(S):
    from helpers import train_stage

    def sweep(r=None):
        return [train_stage(lr, r) for lr in (0.1, 0.2, 0.3)]

    result = instantiate(sweep, S=S)
    text = repr(result)
    assert len(text) < 400, text
    assert "3 targets: 4 derivation(s) (data, train x3)" in text
    assert repr(result[1].derivations[0]).startswith("<Derivation dref:")
