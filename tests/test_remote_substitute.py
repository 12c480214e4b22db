"""Substitution: realize fetches from remote caches instead of building, and push_to uploads."""

from __future__ import annotations

import logging
import os

import pytest
import remote_helpers
from remote_helpers import pipeline, rewrite, snapshot

from lightstore import (
    build_outpath,
    build_wrapper,
    instantiate,
    match_some,
    mkconfig,
    mkdrv,
    realize,
    realize1,
    realizeMany,
)
from lightstore.hashing import file_digest
from lightstore.remote import generate_signing_key, list_remote
from lightstore.store import Store


@pytest.fixture
def alice(tmp_path) -> Store:
    return Store.open(str(tmp_path / "alice"), create=True)


@pytest.fixture
def bob(tmp_path) -> Store:
    return Store.open(str(tmp_path / "bob"), create=True)


@pytest.fixture
def url(tmp_path) -> str:
    return f"file://{tmp_path}/cache"


@pytest.fixture(autouse=True)
def _runs():
    remote_helpers.RUNS.clear()
    yield
    remote_helpers.RUNS.clear()


def test_bob_fetches_instead_of_building(alice, bob, url):
    rref = realize1(instantiate(pipeline, S=alice.settings), push_to=url)
    assert remote_helpers.RUNS == {"params": 1, "train": 1, "report": 1}
    assert {x.rref for x in list_remote(url)} == {rref} | alice.catalogue.rrefdeps([rref])
    remote_helpers.RUNS.clear()
    got = realize1(instantiate(pipeline, S=bob.settings), substituters=[url])
    assert remote_helpers.RUNS == {}
    assert got == rref
    assert sorted(bob.catalogue.all_rrefs()) == sorted(alice.catalogue.all_rrefs())
    assert bob.verify(check_contents=True).problems == []
    # Cached now: no remote is asked (an unreachable one does not matter).
    assert (
        realize1(instantiate(pipeline, S=bob.settings), substituters=["file:///nonexistent"])
        == rref
    )


def test_substituters_from_the_environment(alice, bob, url, monkeypatch):
    monkeypatch.setenv("LIGHTSTORE_PUSH", url)
    _, _, ctx = realize(instantiate(pipeline, S=alice.settings))
    monkeypatch.delenv("LIGHTSTORE_PUSH")
    monkeypatch.setenv("LIGHTSTORE_SUBSTITUTERS", f"file:///nonexistent-first {url}")
    remote_helpers.RUNS.clear()
    rrefs = realizeMany(instantiate(pipeline, S=bob.settings))
    assert remote_helpers.RUNS == {}
    assert rrefs == ctx[max(ctx, key=lambda d: d.endswith("-report"))]


def test_nondeterministic_stage_matcher_sees_both_sides(alice, bob, url):
    seen: list[list[str]] = []

    def stage(n, r=None):
        def real(b):
            remote_helpers.RUNS["nd"] = remote_helpers.RUNS.get("nd", 0) + 1
            with open(os.path.join(build_outpath(b), "x"), "wb") as f:
                f.write(os.urandom(16))

        def matcher(S, rrefs):
            seen.append(sorted(rrefs))
            return match_some(n)(S, rrefs)

        return mkdrv(mkconfig({"name": "nd"}), matcher, build_wrapper(real), r)

    mine_alice = realize1(instantiate(stage, 1, S=alice.settings), push_to=url)
    mine_bob = realize1(instantiate(stage, 1, S=bob.settings))
    assert mine_alice != mine_bob
    remote_helpers.RUNS.clear()
    seen.clear()
    both = realizeMany(instantiate(stage, 2, S=bob.settings), substituters=[url])
    assert remote_helpers.RUNS == {}
    assert sorted(both) == sorted([mine_alice, mine_bob])
    assert seen[0] == [mine_bob] and seen[-1] == sorted([mine_alice, mine_bob])


def test_a_hostile_substituter_is_skipped_and_the_realizer_runs(alice, bob, url, caplog):
    rref = realize1(instantiate(pipeline, S=alice.settings), push_to=url)
    folder = url[len("file://") :]
    digest = file_digest(os.path.join(alice.rref_path(rref), "report.txt")).hex()
    rewrite(os.path.join(folder, "blobs", digest[:2], digest), b"report 999\n")
    remote_helpers.RUNS.clear()
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        got = realize1(instantiate(pipeline, S=bob.settings), substituters=[url])
    assert got == rref  # built locally: the same deterministic content
    assert remote_helpers.RUNS == {"report": 1}  # the dependencies were fetched
    assert "does not match its hash" in caplog.text
    assert bob.verify(check_contents=True).problems == []


def test_trusted_keys_refuse_unsigned_substitutes(alice, bob, url, tmp_path):
    key = generate_signing_key("team-1")
    realize1(instantiate(pipeline, S=alice.settings), push_to=url)
    before = snapshot(bob)
    remote_helpers.RUNS.clear()
    realize1(instantiate(pipeline, S=bob.settings), substituters=[url], trusted_keys=[key.public])
    assert remote_helpers.RUNS == {"params": 1, "train": 1, "report": 1}
    assert snapshot(bob) != before
    carol = Store.open(str(tmp_path / "carol"), create=True)
    alice.push(url, alice.catalogue.all_rrefs(), signing_key=key)
    remote_helpers.RUNS.clear()
    realize1(instantiate(pipeline, S=carol.settings), substituters=[url], trusted_keys=[key.public])
    assert remote_helpers.RUNS == {}


def test_dry_run_and_force_rebuild_do_not_fetch(alice, bob, url):
    rref = realize1(instantiate(pipeline, S=alice.settings), push_to=url)
    assert realize1(instantiate(pipeline, S=bob.settings), substituters=[url], dry_run=True) is None
    assert bob.catalogue.all_rrefs() == []
    remote_helpers.RUNS.clear()
    got = realize1(instantiate(pipeline, S=bob.settings), substituters=[url], force_rebuild=True)
    assert got == rref and remote_helpers.RUNS == {"report": 1}
