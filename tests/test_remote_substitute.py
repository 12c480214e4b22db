"""Substitution: realize fetches from remote caches instead of building, and push_to uploads."""

from __future__ import annotations

import json
import logging
import os

import pytest
import remote_helpers
from helpers import assert_unchanged, snapshot
from remote_helpers import pipeline, rewrite

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
from lightstore.facade import Store
from lightstore.foundation.hashing import file_digest
from lightstore.foundation.refs import rref2dref
from lightstore.remote import generate_signing_key, list_remote
from lightstore.remote._layout import manifest_key


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
    _, closure = instantiate(pipeline, S=bob.settings)
    before = snapshot(bob)
    assert realize1(closure, substituters=[url], dry_run=True) is None
    assert_unchanged(bob, before)
    remote_helpers.RUNS.clear()
    got = realize1(instantiate(pipeline, S=bob.settings), substituters=[url], force_rebuild=True)
    assert got == rref and remote_helpers.RUNS == {"report": 1}


def _substituter_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "lightstore" and r.levelno == logging.WARNING and "substituter" in r.msg
    ]


def test_an_unreachable_substituter_is_warned_about_once_per_realize(bob, caplog, monkeypatch):
    pytest.importorskip("s3fs")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    options = {
        "key": "testing-key-id",
        "secret": "testing-secret",
        # Nothing listens on port 9 (discard) of 127.0.0.1: every request fails at once.
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    unreachable = "s3://no-bucket-here/cache"
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        realize1(
            instantiate(pipeline, S=bob.settings),
            substituters=[unreachable],
            storage_options=options,
        )
    assert remote_helpers.RUNS == {"params": 1, "train": 1, "report": 1}
    warned = _substituter_warnings(caplog)
    assert len(warned) == 1, warned  # three derivations, one remote: one warning
    assert "s3://no-bucket-here/cache" in warned[0] and "not asked again" in warned[0]
    assert "testing-secret" not in caplog.text
    # Each realize warns anew.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        realize1(
            instantiate(pipeline, S=bob.settings, scale=2),
            substituters=[unreachable],
            storage_options=options,
        )
    assert len(_substituter_warnings(caplog)) == 1


def test_a_damaged_substituter_is_warned_about_once_per_realize(alice, bob, url, caplog):
    realize1(instantiate(pipeline, S=alice.settings), push_to=url)
    # Every blob damaged: each of the three derivations fails on this remote.
    for dirpath, _, names in os.walk(os.path.join(url[len("file://") :], "blobs")):
        for n in names:
            rewrite(os.path.join(dirpath, n), b"damaged")
    remote_helpers.RUNS.clear()
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        realize1(instantiate(pipeline, S=bob.settings), substituters=[url])
    assert remote_helpers.RUNS == {"params": 1, "train": 1, "report": 1}
    # A damaged file leaves out the realizations using it, not the remote.
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and url in r.getMessage()
    ]
    assert len(warned) == 1 and "does not match its hash" in warned[0], warned
    assert "left out" in warned[0]


def test_a_name_that_is_not_unicode_on_a_substituter_is_skipped(alice, bob, url, caplog):
    rref = realize1(instantiate(pipeline, S=alice.settings), push_to=url)
    path = os.path.join(url[len("file://") :], manifest_key(rref))
    with open(path) as f:
        doc = json.load(f)
    doc["files"].append({"path": "\ud800", "type": "dir"})
    rewrite(path, json.dumps(doc).encode())
    remote_helpers.RUNS.clear()
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        got = realize1(instantiate(pipeline, S=bob.settings), substituters=[url])
    assert got == rref  # built locally; its dependencies came from the remote
    assert remote_helpers.RUNS == {"report": 1}
    assert "not valid UTF-8" in caplog.text
    assert bob.verify(check_contents=True).problems == []


def test_substitution_is_bounded_like_a_pull(alice, bob, url, caplog):
    from remote_helpers import copies, folder_stage

    from lightstore.remote import substitute

    rref = realize1(instantiate(folder_stage, "copies", copies(300, 4096), S=alice.settings))
    alice.push(url, [rref])
    dref = rref2dref(rref)
    before = snapshot(bob)
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        assert substitute(bob, dref, {}, [url], max_bytes=10**6) == []
    assert "max_bytes" in caplog.text
    assert_unchanged(bob, before)
    assert substitute(bob, dref, {}, [url]) == [rref]


# -- one damaged or hostile sibling does not hide the others ------------------------------


def _plant_sibling(folder: str, alice: Store, rref: str, kind: str) -> str:
    """Add, next to `rref` in its (derivation, context), a realization that does not verify
    or does not fit the limits, as anyone who can write the remote can; its RRef."""
    from lightstore.foundation.hashing import context_hash, realization_hash
    from lightstore.remote._layout import (
        FileEntry,
        entries_digest,
        index_key,
        signature_folder,
        signed_manifest_key,
    )

    ctx = {str(d): sorted(str(r) for r in rs) for d, rs in alice.context(rref).items()}
    fake = "rref:" + "f" * 32 + rref[len("rref:") + 32 :]
    if kind in ("claims-too-much", "missing-file"):
        # A realization that verifies, but claims a file of 2**62 bytes (sizes are no part
        # of the hash: more than max_bytes and any disk), or whose file is not there.
        size = 2**62 if kind == "claims-too-much" else 10
        entries = [FileEntry("data", "file", False, size, "0" * 64)]
        h = realization_hash(context_hash(ctx), entries_digest(entries))
        fake = f"rref:{h}" + rref[len("rref:") + 32 :]
        with open(os.path.join(folder, manifest_key(rref))) as f:
            doc = json.load(f)
        doc.update(rref=fake, metrics={}, files=[e.to_json() for e in entries])
        with open(os.path.join(folder, manifest_key(fake)), "w") as f:
            json.dump(doc, f)
    objects = {
        "big-signature": (f"{signature_folder(fake)}/alice", b"A" * 5000),
        "folder": (signed_manifest_key(fake, "alice"), None),
        "fifo": (signed_manifest_key(fake, "alice"), "fifo"),
        "huge-manifest": (manifest_key(fake), "huge"),
        "claims-too-much": (None, None),
        "missing-file": (None, None),
    }
    key, data = objects[kind]
    if key is not None:
        path = os.path.join(folder, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if data is None:
            os.mkdir(path)
        elif data == "fifo":
            os.mkfifo(path)
        elif data == "huge":
            with open(path, "wb") as f:
                f.truncate(65 * 1024 * 1024)  # sparse: costs no disk
        else:
            with open(path, "wb") as f:
                f.write(data)
    if kind in ("big-signature", "folder", "fifo"):  # listed as a realization of its derivation
        os.makedirs(os.path.dirname(os.path.join(folder, manifest_key(fake))), exist_ok=True)
        with open(os.path.join(folder, manifest_key(fake)), "wb") as f:
            f.write(b"{}")
    marker = os.path.join(folder, index_key(fake, context_hash(ctx)))
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    open(marker, "wb").close()
    return fake


@pytest.mark.parametrize(
    "kind, signed",
    [
        ("big-signature", True),
        ("folder", True),
        ("fifo", True),
        ("huge-manifest", False),
        ("claims-too-much", False),
        ("missing-file", False),
    ],
)
def test_a_bad_sibling_does_not_stop_substitution_of_the_good_one(
    alice, bob, url, tmp_path, caplog, kind, signed
):
    from lightstore.foundation.errors import ArchiveError

    key = generate_signing_key("alice")
    trusted = [key.public] if signed else []
    rref = realize1(instantiate(pipeline, S=alice.settings))
    alice.push(url, [rref], signing_key=key if signed else False)
    fake = _plant_sibling(url[len("file://") :], alice, rref, kind)
    remote_helpers.RUNS.clear()
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        got = realize1(
            instantiate(pipeline, S=bob.settings), substituters=[url], trusted_keys=trusted
        )
    assert got == rref and remote_helpers.RUNS == {}  # nothing was built
    assert "left out" in caplog.text and fake in caplog.text
    assert "not asked again" not in caplog.text
    assert fake not in bob.catalogue.all_rrefs()
    # Pulling the derivation: the good realization is added, the bad one named.
    carol = Store.open(str(tmp_path / "carol"), create=True)
    with pytest.raises(ArchiveError) as e:
        carol.pull(url, [rref2dref(rref)], trusted_keys=trusted)
    assert fake in str(e.value)
    assert set(e.value.added) == {rref} | alice.catalogue.rrefdeps([rref])
    assert rref in carol.catalogue.all_rrefs() and fake not in carol.catalogue.all_rrefs()
    assert carol.verify(check_contents=True).problems == []
