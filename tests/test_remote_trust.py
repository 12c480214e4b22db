"""Signed remote caches end to end, on a real S3 endpoint (moto's server on 127.0.0.1) with
builds and pushes in real child processes: what a signature covers, what reaches the parser,
unsigned siblings, and where the signing key comes from."""

from __future__ import annotations

import json
import logging
import signal

import pytest
import remote_helpers
from helpers import assert_unchanged, run_job, snapshot
from remote_helpers import build, pipeline

from lightstore import instantiate, realize, realize1
from lightstore.facade import Store
from lightstore.foundation.errors import RemoteIntegrityError, UntrustedError
from lightstore.remote import add_trusted_key, generate_signing_key, list_remote
from lightstore.remote._layout import manifest_key, signed_manifest_key

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("cryptography")


@pytest.fixture(autouse=True)
def _runs():
    remote_helpers.RUNS.clear()
    yield
    remote_helpers.RUNS.clear()


@pytest.fixture
def key(tmp_path):
    """A signing key for "alice-1", also written to a key file (`key.file`)."""
    k = generate_signing_key("alice-1")
    path = tmp_path / "alice.key"
    path.write_text(k.secret_text())
    return k, str(path)


def _object(url: str, key: str) -> str:
    return url[len("s3://") :] + "/" + key


def read_object(url: str, key: str) -> bytes:
    return s3fs.S3FileSystem().cat_file(_object(url, key))


def write_object(url: str, key: str, data: bytes) -> None:
    """Replace an object on the bucket, as anyone who can write the remote can."""
    s3fs.S3FileSystem().pipe_file(_object(url, key), data)


def remove_object(url: str, key: str) -> None:
    s3fs.S3FileSystem().rm_file(_object(url, key))


def forge_informational(data: bytes) -> bytes:
    """A manifest with better metrics and other build times (nothing a hash covers)."""
    doc = json.loads(data)
    doc["metrics"] = {"loss": 1e-9}
    doc["build_started"], doc["build_stopped"] = 1.0, 2.0
    return json.dumps(doc).encode()


def new_store(tmp_path, name: str) -> Store:
    return Store.open(str(tmp_path / name), create=True)


def times(store: Store, rref: str) -> tuple[float | None, float | None]:
    rec = store.catalogue.realization_record(rref) or {}
    return rec.get("build_started"), rec.get("build_stopped")


# -- what a signature covers ------------------------------------------------------------


def test_rewritten_metrics_and_build_times_of_a_signed_push_are_not_imported(
    tmp_path, s3_url, key, caplog
):
    k, _ = key
    root = str(tmp_path / "alice")
    rref = build(root, "a")
    alice = Store.open(root)
    alice.set_metric(rref, "loss", 0.5)
    alice.push(s3_url, [rref], signing_key=k)
    # Someone with write access to the bucket improves the shared manifest.
    write_object(
        s3_url, manifest_key(rref), forge_informational(read_object(s3_url, manifest_key(rref)))
    )

    bob = new_store(tmp_path, "bob")
    assert rref in bob.pull(s3_url, [rref], trusted_keys=[k.public])
    assert bob.metrics(rref) == {"loss": 0.5}
    assert times(bob, rref) == times(alice, rref)
    assert bob.verify(check_contents=True).problems == []

    # The signed copy rewritten too: its signature fails. The signature of the RRef alone
    # still vouches for the files, so they are taken, but nothing it does not cover is.
    signed = signed_manifest_key(rref, "alice-1")
    data = read_object(s3_url, signed)
    sig, _, body = data.partition(b"\n")
    write_object(s3_url, signed, sig + b"\n" + forge_informational(body))
    carol = new_store(tmp_path, "carol")
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        assert rref in carol.pull(s3_url, [rref], trusted_keys=[k.public])
    assert carol.metrics(rref) == {}
    assert times(carol, rref) == (None, None)
    assert "does not verify" in caplog.text and "metrics" in caplog.text

    # Without trusted keys nothing is verified beyond the hashes (documented).
    dave = new_store(tmp_path, "dave")
    assert rref in dave.pull(s3_url, [rref], trusted_keys=[])
    assert dave.metrics(rref) == {"loss": 1e-9}


def test_pushes_of_the_previous_version_still_pull(tmp_path, s3_url, key, caplog):
    k, _ = key
    root = str(tmp_path / "alice")
    rref = build(root, "a")
    alice = Store.open(root)
    alice.set_metric(rref, "loss", 0.5)
    alice.push(s3_url, [rref], signing_key=k)
    closure = sorted({rref} | alice.catalogue.rrefdeps([rref]))
    # What the previous version left: the shared manifest and a signature of the RRef.
    for r in closure:
        remove_object(s3_url, signed_manifest_key(r, "alice-1"))
    bob = new_store(tmp_path, "bob")
    assert sorted(bob.pull(s3_url, [rref], trusted_keys=[])) == closure
    assert bob.metrics(rref) == {"loss": 0.5} and times(bob, rref) == times(alice, rref)
    carol = new_store(tmp_path, "carol")
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        assert sorted(carol.pull(s3_url, [rref], trusted_keys=[k.public])) == closure
    assert carol.metrics(rref) == {} and times(carol, rref) == (None, None)
    assert "older lightstore" in caplog.text
    assert carol.verify(check_contents=True).problems == []
    # Pushing again with this version signs the manifests, metrics included.
    alice.push(s3_url, [rref], signing_key=k)
    dave = new_store(tmp_path, "dave")
    dave.pull(s3_url, [rref], trusted_keys=[k.public])
    assert dave.metrics(rref) == {"loss": 0.5}


# -- nothing unsigned reaches the parser ---------------------------------------------------


@pytest.mark.parametrize("garbage", [b"not json at all", b"[" * 100_000 + b"]" * 100_000])
def test_with_trusted_keys_an_unsigned_manifest_is_never_parsed(tmp_path, s3_url, key, garbage):
    k, _ = key
    rref = build(str(tmp_path / "alice"), "a")
    Store.open(str(tmp_path / "alice")).push(s3_url, [rref])  # unsigned
    write_object(s3_url, manifest_key(rref), garbage)
    bob = new_store(tmp_path, "bob")
    before = snapshot(bob)
    # Refused for what it lacks, a signature, not for what a parser made of it.
    with pytest.raises(UntrustedError, match="not signed") as e:
        bob.pull(s3_url, [rref], trusted_keys=[k.public])
    assert "JSON" not in str(e.value)
    # A signed manifest whose bytes were replaced is refused on its signature alone.
    write_object(s3_url, signed_manifest_key(rref, "alice-1"), b"A" * 88 + b"\n" + garbage)
    with pytest.raises(UntrustedError, match="forged") as e:
        bob.pull(s3_url, [rref], trusted_keys=[k.public])
    assert "JSON" not in str(e.value)
    assert_unchanged(bob, before)
    # Without trusted keys the same manifest is parsed, and refused as damaged.
    with pytest.raises(RemoteIntegrityError, match=r"not JSON|deep"):
        bob.pull(s3_url, [rref], trusted_keys=[])


# -- unsigned siblings ---------------------------------------------------------------------


@pytest.mark.slow
def test_an_unsigned_sibling_does_not_hide_a_signed_realization(tmp_path, s3_url, key, caplog):
    from helpers import run

    k, keyfile = key
    roots = {name: str(tmp_path / name) for name in ("alice", "carol", "dave")}
    # Three stores build the nondeterministic pipeline: the same params, their own
    # train and report, so the remote lists three realizations of train in one context.
    targets = {name: build(root, "nd") for name, root in roots.items()}
    alice = Store.open(roots["alice"])
    alice.push(s3_url, [targets["alice"]], signing_key=k)
    # Carol pushes without a key; Dave's signed push is killed between index and signature.
    run_job("push", roots["carol"], s3_url, targets["carol"]).result()
    died = run_job(
        "push",
        roots["dave"],
        s3_url,
        targets["dave"],
        env={"LIGHTSTORE_SIGNING_KEY": keyfile},
        failpoint="push:indexed",
    )
    assert died.returncode == -signal.SIGKILL, died.stderr
    trains = {x.rref for x in list_remote(s3_url, name="train")}
    assert len(trains) == 3

    bob = new_store(tmp_path, "bob")
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        got = realize1(
            instantiate(pipeline, S=bob.settings, nondeterministic=True),
            substituters=[s3_url],
            trusted_keys=[k.public],
        )
    assert remote_helpers.RUNS == {}  # nothing was built
    assert got == targets["alice"]
    assert sorted(bob.catalogue.all_rrefs()) == sorted(alice.catalogue.all_rrefs())
    # One warning for the remote (the second one left out is logged at debug level).
    assert caplog.text.count("left out") == 1 and "not signed" in caplog.text

    # A pull of several: the verified one is added, the others are named.
    carol_own = set(Store.open(roots["carol"]).catalogue.all_rrefs()) - set(
        alice.catalogue.all_rrefs()
    )
    erin = new_store(tmp_path, "erin")
    with pytest.raises(UntrustedError) as e:
        erin.pull(s3_url, [targets["alice"], targets["carol"]], trusted_keys=[k.public])
    assert targets["alice"] in e.value.added and targets["carol"] in str(e.value)
    assert targets["alice"] in erin.catalogue.all_rrefs()
    assert not carol_own & set(erin.catalogue.all_rrefs())
    # The command line prints what it added and exits 2 naming the rest.
    frank = new_store(tmp_path, "frank")
    result = run(
        frank.root,
        "pull",
        s3_url,
        targets["carol"],
        targets["alice"],
        "--trusted-key",
        k.public,
    )
    assert result.exit_code == 2, result.output
    assert targets["alice"] in result.stdout.split()
    assert targets["carol"] in result.output and "not signed" in result.output


# -- where the signing key comes from ------------------------------------------------------


@pytest.mark.slow
def test_the_signing_key_variable_signs_every_push(tmp_path, s3_url, key, monkeypatch):
    k, keyfile = key
    # A build process pushing through $LIGHTSTORE_PUSH, keyed by $LIGHTSTORE_SIGNING_KEY.
    signing = {"LIGHTSTORE_SIGNING_KEY": keyfile}
    rref = build(str(tmp_path / "alice"), "a", env={"LIGHTSTORE_PUSH": s3_url, **signing})
    bob = new_store(tmp_path, "bob")
    add_trusted_key(bob.root, k.public)
    assert realize1(instantiate(pipeline, S=bob.settings), substituters=[s3_url]) == rref
    assert remote_helpers.RUNS == {}

    # Store.push in a process of its own.
    other = str(tmp_path / "other-bucket")
    url2 = s3_url.rsplit("/", 1)[0] + "/second"
    rref_b = build(other, "b")
    run_job("push", other, url2, rref_b, env=signing).result()
    carol = new_store(tmp_path, "carol")
    assert rref_b in carol.pull(url2, [rref_b], trusted_keys=[k.public])

    # realize(push_to=) in this process; False refuses the variable's key.
    monkeypatch.setenv("LIGHTSTORE_SIGNING_KEY", keyfile)
    url3 = s3_url.rsplit("/", 1)[0] + "/third"
    url4 = s3_url.rsplit("/", 1)[0] + "/fourth"
    dave = new_store(tmp_path, "dave")
    _, _, ctx = realize(instantiate(pipeline, S=dave.settings, scale=3), push_to=url3)
    realize(instantiate(pipeline, S=dave.settings, scale=3), push_to=url4, signing_key=False)
    (target,) = [r for rs in ctx.values() for r in rs if "report" in r]
    erin = new_store(tmp_path, "erin")
    assert target in erin.pull(url3, [target], trusted_keys=[k.public])
    with pytest.raises(UntrustedError, match="not signed"):
        new_store(tmp_path, "fred").pull(url4, [target], trusted_keys=[k.public])
