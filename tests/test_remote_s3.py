"""Remote caches on a real S3 endpoint (moto's server on 127.0.0.1), and pushes that
overlap or are killed, on S3 and file:// remotes."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from helpers import Worker, assert_unchanged, go, run_job, snapshot
from remote_helpers import build, remote_files

from lightstore.facade import Store
from lightstore.remote import list_remote
from lightstore.remote._layout import parse_manifest

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")


def check_remote(url: str, store: Store, rrefs: list[str]) -> None:
    """A fresh store pulls `rrefs` and verifies clean; every manifest parses."""
    added = store.pull(url, rrefs)
    assert set(rrefs) <= set(store.catalogue.all_rrefs())
    assert set(added) == set(store.catalogue.all_rrefs())
    assert store.verify(check_contents=True).problems == []
    from lightstore.remote._fs import Remote
    from lightstore.remote._layout import manifest_key

    remote = Remote(url)
    for x in list_remote(url):
        parse_manifest(remote.read(manifest_key(x.rref)) or b"", x.rref, "test")


def test_push_pull_on_s3(tmp_path, s3_url):
    root = str(tmp_path / "alice")
    rref = build(root, "a")
    alice = Store.open(root)
    report = alice.push(s3_url, [rref])
    assert len(report.uploaded) == 3 and report.blobs_uploaded == 5
    assert alice.push(s3_url, [rref]).uploaded == []
    assert [x.rref for x in list_remote(s3_url, name="report")] == [rref]
    bob = Store.open(str(tmp_path / "bob"), create=True)
    check_remote(s3_url, bob, [rref])
    before = snapshot(bob)
    assert bob.pull(s3_url, [rref]) == []
    assert_unchanged(bob, before)


def test_storage_options_instead_of_the_environment(tmp_path, s3_url, aws_env, monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k)
    s3fs.S3FileSystem.clear_instance_cache()
    options = {
        "key": aws_env["AWS_ACCESS_KEY_ID"],
        "secret": aws_env["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": aws_env["AWS_ENDPOINT_URL"]},
    }
    root = str(tmp_path / "alice")
    rref = build(root, "a")
    Store.open(root).push(s3_url, [rref], storage_options=options)
    bob = Store.open(str(tmp_path / "bob"), create=True)
    assert rref in bob.pull(s3_url, [rref], storage_options=options)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["s3", "file"])
def test_two_processes_push_overlapping_closures_at_once(tmp_path, s3_url, kind, workers):
    url = s3_url if kind == "s3" else f"file://{tmp_path}/remote"
    # Two stores built the same deterministic pipeline (equal RRefs, different build
    # times), and each also has a target of its own; both push at the same instant.
    roots = [str(tmp_path / f"pusher{i}" / "store") for i in range(2)]
    shared = [build(r, "a") for r in roots]
    assert shared[0] == shared[1]
    own = build(roots[1], "b")
    procs = [
        workers.start("push_at_go", root, url, *refs)
        for root, refs in ((roots[0], [shared[0]]), (roots[1], [shared[1], own]))
    ]
    for p in procs:
        p.wait_for("ready")
    for root in roots:
        go(root)
    results = workers.results(procs)
    uploaded = [set(r["uploaded"]) for r in results]
    assert own in uploaded[1]
    check_remote(url, Store.open(str(tmp_path / "reader"), create=True), [shared[0], own])
    if kind == "file":
        assert not [f for f in remote_files(url[7:]) if ".tmp." in f]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["s3", "file"])
def test_push_killed_then_run_again(tmp_path, s3_url, kind):
    url = s3_url if kind == "s3" else f"file://{tmp_path}/remote"
    root = str(tmp_path / "alice")
    rref = build(root, "many")
    # Killed by SIGKILL after 40 blobs, then after the manifest but before the marker.
    died = run_job("push", root, url, rref, failpoint="push:blob:40")
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert list_remote(url) == []
    reader = Store.open(str(tmp_path / "early-reader"), create=True)
    before = snapshot(reader)
    with pytest.raises(KeyError):
        reader.pull(url, [rref])
    assert_unchanged(reader, before)
    died = run_job("push", root, url, rref, failpoint="push:manifest")
    assert died.returncode == -signal.SIGKILL, died.stderr
    report = run_job("push", root, url, rref).result()
    assert report["blobs"] == 0  # everything had been uploaded before the kills
    assert [x.rref for x in list_remote(url)] == [rref]
    check_remote(url, Store.open(str(tmp_path / "bob"), create=True), [rref])


@pytest.mark.slow
def test_push_killed_at_a_random_instant(tmp_path):
    url = f"file://{tmp_path}/remote"
    root = str(tmp_path / "alice")
    rref = build(root, "many")
    for delay in (0.3, 0.6):
        with Worker("push", root, url, rref):
            time.sleep(delay)
    run_job("push", root, url, rref).result()
    check_remote(url, Store.open(str(tmp_path / "bob"), create=True), [rref])


def test_bob_substitutes_from_the_bucket(tmp_path, s3_url):
    import remote_helpers
    from remote_helpers import pipeline

    from lightstore import instantiate, realize

    alice = Store.open(str(tmp_path / "alice"), create=True)
    bob = Store.open(str(tmp_path / "bob"), create=True)
    _, _, chosen_alice = realize(instantiate(pipeline, S=alice.settings), push_to=s3_url)
    remote_helpers.RUNS.clear()
    _, _, chosen_bob = realize(instantiate(pipeline, S=bob.settings), substituters=[s3_url])
    assert remote_helpers.RUNS == {}
    assert chosen_bob == chosen_alice
    assert sorted(bob.catalogue.all_rrefs()) == sorted(alice.catalogue.all_rrefs())
    assert bob.verify(check_contents=True).problems == []


@pytest.mark.slow
@pytest.mark.parametrize("point", ["pull:assembled", "publish:renamed", "publish:committed"])
def test_pull_killed_leaves_a_clean_store_and_runs_again(tmp_path, point):
    url = f"file://{tmp_path}/remote"
    root = str(tmp_path / "alice")
    rref = build(root, "a")
    Store.open(root).push(url, [rref])
    bob_root = str(tmp_path / "bob")
    died = run_job("pull", bob_root, url, rref, failpoint=point)
    assert died.returncode == -signal.SIGKILL, died.stderr
    Store.forget_instances()
    bob = Store.open(bob_root)
    assert bob.verify(check_contents=True).problems == []
    assert os.listdir(bob.tmp_dir) == []
    run_job("pull", bob_root, url, rref).result()
    Store.forget_instances()
    bob = Store.open(bob_root)
    assert rref in bob.catalogue.all_rrefs()
    assert bob.verify(check_contents=True).problems == []


# -- limits, names, links and damaged blobs on S3 ---------------------------------------


def _blob_of(store: Store, rref: str, rel: str) -> str:
    from lightstore.foundation.hashing import file_digest

    return file_digest(os.path.join(store.rref_path(rref), rel)).hex()


def test_damaged_blob_on_s3_is_named_by_pull_and_mended_by_repair(tmp_path, s3_url):
    from remote_helpers import pipeline

    from lightstore import instantiate, realize1
    from lightstore.foundation.errors import RemoteIntegrityError
    from lightstore.remote._layout import blob_key

    alice = Store.open(str(tmp_path / "alice"), create=True)
    bob = Store.open(str(tmp_path / "bob"), create=True)
    rref = realize1(instantiate(pipeline, S=alice.settings))
    alice.push(s3_url, [rref])
    digest = _blob_of(alice, rref, "report.txt")
    fs = s3fs.S3FileSystem()
    key = f"{s3_url[len('s3://') :]}/{blob_key(digest)}"
    fs.pipe_file(key, b"report 1\n")  # the same size as the real "report 0\n"
    before = snapshot(bob)
    with pytest.raises(RemoteIntegrityError) as e:
        bob.pull(s3_url, [rref])
    for part in (digest, "'report.txt'", rref, "push --repair"):
        assert part in str(e.value)
    assert_unchanged(bob, before)
    # Hashing an S3 object is a download: only a repairing push does it.
    assert alice.push(s3_url, [rref]).blobs_repaired == 0
    report = alice.push(s3_url, [rref], repair=True)
    assert (report.blobs_repaired, report.uploaded) == (1, [])
    assert fs.cat_file(key) == b"report 0\n"
    check_remote(s3_url, bob, [rref])


def test_pull_from_s3_is_bounded_before_downloading(tmp_path, s3_url):
    from remote_helpers import copies, folder_stage

    from lightstore import instantiate, realize1
    from lightstore.foundation.errors import ArchiveError
    from lightstore.remote._layout import blob_key

    alice = Store.open(str(tmp_path / "alice"), create=True)
    bob = Store.open(str(tmp_path / "bob"), create=True)
    rref = realize1(instantiate(folder_stage, "copies", copies(300, 4096), S=alice.settings))
    assert alice.push(s3_url, [rref]).blobs_uploaded == 1
    fs = s3fs.S3FileSystem()
    fs.rm(f"{s3_url[len('s3://') :]}/{blob_key(_blob_of(alice, rref, 'copy0'))}")
    before = snapshot(bob)
    with pytest.raises(ArchiveError, match="max_bytes"):
        bob.pull(s3_url, [rref], max_bytes=10**6)  # 1.2 MB over 300 paths
    assert_unchanged(bob, before)
    assert os.listdir(bob.tmp_dir) == []
    assert alice.push(s3_url, [rref], repair=True).blobs_uploaded == 1
    assert bob.pull(s3_url, [rref], max_bytes=2 * 10**6) == [rref]


def test_push_to_s3_refuses_what_pull_refuses_before_uploading(tmp_path, s3_url):
    from remote_helpers import folder_stage

    from lightstore import instantiate, realize1
    from lightstore.foundation.errors import ArchiveError, RemoteIntegrityError
    from lightstore.remote._layout import manifest_key

    def escaping(out: bytes) -> None:
        os.symlink(b"../../../etc", os.path.join(out, b"up"))

    def latin1(out: bytes) -> None:
        with open(os.path.join(out, b"caf\xe9"), "wb") as f:
            f.write(b"x")

    alice = Store.open(str(tmp_path / "alice"), create=True)
    fs = s3fs.S3FileSystem()
    bucket = s3_url[len("s3://") :].split("/")[0]
    for name, make, match in (("up", escaping, "outside"), ("latin1", latin1, "UTF-8")):
        odd = realize1(instantiate(folder_stage, name, make, S=alice.settings))
        with pytest.raises(ArchiveError, match=match):
            alice.push(s3_url, [odd])
        fs.invalidate_cache()
        assert fs.find(bucket) == []
    # And a pull of a manifest holding a name that is not Unicode fails cleanly.
    ok = realize1(instantiate(folder_stage, "fine", lambda out: None, S=alice.settings))
    alice.push(s3_url, [ok])
    key = f"{s3_url[len('s3://') :]}/{manifest_key(ok)}"
    doc = json.loads(fs.cat_file(key))
    doc["files"].append({"path": "\ud800", "type": "dir"})
    fs.pipe_file(key, json.dumps(doc).encode())
    bob = Store.open(str(tmp_path / "bob"), create=True)
    before = snapshot(bob)
    with pytest.raises(RemoteIntegrityError, match="not valid UTF-8"):
        bob.pull(s3_url, [ok])
    assert_unchanged(bob, before)


@pytest.mark.parametrize("when", ["after the size is read", "before the pull", "while it is read"])
def test_a_large_blob_replaced_on_s3_is_never_downloaded_past_its_size(
    tmp_path, s3_url, monkeypatch, when
):
    from remote_helpers import folder_stage

    from lightstore import instantiate, realize1
    from lightstore.foundation.errors import RemoteIntegrityError
    from lightstore.remote._fs import SMALL_OBJECT, Remote
    from lightstore.remote._layout import blob_key

    size = SMALL_OBJECT + 1024 * 1024  # streamed, not read in one request

    def big(out: bytes) -> None:
        with open(os.path.join(out, b"big"), "wb") as f:
            f.write(os.urandom(size))

    alice = Store.open(str(tmp_path / "alice"), create=True)
    rref = realize1(instantiate(folder_stage, "big", big, S=alice.settings))
    alice.push(s3_url, [rref])
    fs = s3fs.S3FileSystem()
    obj = f"{s3_url[len('s3://') :]}/{blob_key(_blob_of(alice, rref, 'big'))}"
    replacement = b"\0" * (4 * size)

    if when == "before the pull":
        fs.pipe_file(obj, replacement)
    elif when == "while it is read":
        real_open = Remote._open_streamed

        def open_then_swap(self, key):
            opened = real_open(self, key)
            fs.pipe_file(obj, replacement)
            return opened

        monkeypatch.setattr(Remote, "_open_streamed", open_then_swap)
    else:  # swapped right after any size check of the blob
        real_size = Remote.size

        def size_then_swap(self, key):
            found = real_size(self, key)
            if key.startswith("blobs/"):
                fs.pipe_file(obj, replacement)
            return found

        monkeypatch.setattr(Remote, "size", size_then_swap)
    downloaded: list[int] = []
    real_download = Remote.download_file

    def measured(self, key, local_path, size=None):
        try:
            return real_download(self, key, local_path, size)
        finally:
            downloaded.append(os.path.getsize(local_path))

    monkeypatch.setattr(Remote, "download_file", measured)
    bob = Store.open(str(tmp_path / "bob"), create=True)
    before = snapshot(bob)
    try:
        bob.pull(s3_url, [rref])
    except RemoteIntegrityError as e:
        assert "does not match its hash" in str(e) or "changed while it was read" in str(e)
        assert_unchanged(bob, before)
    else:  # no size check left a window for the swap
        assert when == "after the size is read"
    assert downloaded and max(downloaded) <= size + 1, downloaded
