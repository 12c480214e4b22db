"""The one-pass data path of push and pull: files hashed while they are copied, blobs
downloaded straight into their places, nothing read twice, with every check kept."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import stat
import subprocess
import sys

import pytest
from blake3 import blake3
from helpers import run_job, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st
from remote_helpers import copies, folder_stage, remote_files, rewrite

from lightstore import instantiate, realize1
from lightstore.facade import Store
from lightstore.foundation.errors import RemoteIntegrityError
from lightstore.foundation.hashing import context_hash, file_digest, realization_hash
from lightstore.foundation.refs import mkrref, unrref
from lightstore.remote import Remote, _localcopy
from lightstore.remote._layout import _check_files, blob_key, entries_digest, manifest_key
from lightstore.remote._localcopy import copy_hashed
from lightstore.remote._reading import file_system_type

MiB = 1024 * 1024


@pytest.fixture
def alice(tmp_path) -> Store:
    return Store.open(str(tmp_path / "alice"), create=True)


@pytest.fixture
def bob(tmp_path) -> Store:
    return Store.open(str(tmp_path / "bob"), create=True)


@pytest.fixture(params=["file", "memory"])
def url(request, tmp_path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/remote"
    import secrets

    return f"memory://lightstore-speed-{secrets.token_hex(6)}/cache"


# -- copy_hashed: one pass, what it writes is what it hashes -----------------------------


def _copy(src: str, dst: str, limit: int, hash_written: bool) -> tuple[int, bytes]:
    fin = os.open(src, os.O_RDONLY)
    fout = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        return copy_hashed(fin, fout, limit, hash_written)
    finally:
        os.close(fin)
        os.close(fout)


@settings(max_examples=40, deadline=None)
@given(
    size=st.one_of(st.integers(0, 70_000), st.sampled_from([0, 4095, 4096, 4097, 10_000, 20_001])),
    cut=st.one_of(st.none(), st.integers(0, 70_000)),
    hash_written=st.booleans(),
)
def test_copy_hashed_returns_the_hash_of_what_it_wrote(tmp_path_factory, size, cut, hash_written):
    folder = tmp_path_factory.mktemp("copy")
    data = os.urandom(size)
    (folder / "src").write_bytes(data)
    limit = size + 1 if cut is None else cut
    with pytest.MonkeyPatch.context() as mp:
        # Small windows, not a multiple of the page size: many windows, unaligned offsets.
        mp.setattr(_localcopy, "WHOLE_FILE", 4096)
        mp.setattr(_localcopy, "_WINDOW", 10_000)
        count, digest = _copy(str(folder / "src"), str(folder / "dst"), limit, hash_written)
    expected = data[:limit]
    assert count == len(expected)
    assert digest == blake3(expected).digest()
    assert (folder / "dst").read_bytes() == expected


def test_copy_hashed_reads_files_that_report_no_size(tmp_path):
    # procfs files have size 0: a kernel copy finds nothing, a read finds the bytes.
    source = "/proc/self/cmdline"
    if not os.path.exists(source):
        pytest.skip("no procfs")
    with open(source, "rb") as f:
        expected = f.read()
    assert os.stat(source).st_size == 0 and expected
    count, digest = _copy(source, str(tmp_path / "dst"), 64 * MiB, hash_written=True)
    assert (count, digest) == (len(expected), blake3(expected).digest())
    assert (tmp_path / "dst").read_bytes() == expected


def test_copy_hashed_between_file_systems(tmp_path):
    other = "/dev/shm"
    if not os.path.isdir(other) or file_system_type(other) == file_system_type(str(tmp_path)):
        pytest.skip("no second file system")
    data = os.urandom(3 * MiB + 17)
    src = os.path.join(other, f"lightstore-test-{os.getpid()}")
    try:
        pathlib.Path(src).write_bytes(data)
        for hash_written in (True, False):
            dst = tmp_path / f"dst-{hash_written}"
            count, digest = _copy(src, str(dst), len(data) + 1, hash_written)
            assert (count, digest) == (len(data), blake3(data).digest())
            assert dst.read_bytes() == data
    finally:
        os.unlink(src)


def test_file_system_type():
    if not os.path.exists("/proc/self/mountinfo"):
        pytest.skip("no /proc")
    assert file_system_type("/proc/self") == "proc"
    assert file_system_type("/") != ""


# -- large files: staged on a local remote, copied by the kernel ------------------------


def _large_files(out: bytes) -> None:
    # Two windows and a tail; the same content twice (one blob); one executable.
    data = os.urandom(9 * MiB + 12345)
    for name in (b"a.bin", b"same.bin"):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    os.mkdir(os.path.join(out, b"sub"))
    with open(os.path.join(out, b"sub", b"tool"), "wb") as f:
        f.write(os.urandom(2 * MiB))
    os.chmod(os.path.join(out, b"sub", b"tool"), 0o755)
    with open(os.path.join(out, b"small.txt"), "wb") as f:
        f.write(b"small\n")


def test_large_files_round_trip(alice, bob, url):
    rref = realize1(instantiate(folder_stage, "large", _large_files, S=alice.settings))
    report = alice.push(url, [rref])
    assert report.blobs_uploaded == 3  # a.bin and same.bin are one blob
    assert alice.push(url, [rref]).blobs_uploaded == 0
    remote = Remote(url)
    for rel in ("a.bin", "sub/tool", "small.txt"):
        digest = file_digest(os.path.join(alice.rref_path(rref), rel)).hex()
        assert remote.digest(blob_key(digest)) == digest
    if url.startswith("file://"):
        assert not [f for f in remote_files(url[len("file://") :]) if ".tmp." in f]
    assert bob.pull(url, [rref]) == [rref]
    assert bob.verify(check_contents=True).problems == []
    folder = bob.rref_path(rref)
    for rel, mode in (("a.bin", 0o444), ("same.bin", 0o444), ("sub/tool", 0o555)):
        assert stat.S_IMODE(os.stat(os.path.join(folder, rel)).st_mode) == mode
        assert file_digest(os.path.join(folder, rel)) == file_digest(
            os.path.join(alice.rref_path(rref), rel)
        )
    assert not os.stat(os.path.join(folder, "sub")).st_mode & 0o222
    assert os.listdir(bob.tmp_dir) == []


def test_a_damaged_large_blob_is_repaired_by_the_next_push(alice, bob, tmp_path):
    url = f"file://{tmp_path}/remote"
    rref = realize1(instantiate(folder_stage, "large", _large_files, S=alice.settings))
    alice.push(url, [rref])
    digest = file_digest(os.path.join(alice.rref_path(rref), "a.bin")).hex()
    blob = os.path.join(tmp_path, "remote", blob_key(digest))
    good = pathlib.Path(blob).read_bytes()
    damaged = bytearray(good)
    damaged[MiB] ^= 1
    rewrite(blob, bytes(damaged))
    with pytest.raises(RemoteIntegrityError, match="does not match its hash"):
        bob.pull(url, [rref])
    # A new realization sharing the blob: found damaged on the remote, uploaded again.
    os.unlink(os.path.join(tmp_path, "remote", manifest_key(rref)))
    report = alice.push(url, [rref])
    assert (report.blobs_repaired, report.uploaded) == (1, [rref])
    assert pathlib.Path(blob).read_bytes() == good
    assert bob.pull(url, [rref]) == [rref]


@pytest.mark.slow
def test_a_push_killed_with_a_staged_large_blob_is_cleaned_up_by_the_next(tmp_path):
    url = f"file://{tmp_path}/remote"
    root = str(tmp_path / "alice")
    alice = Store.open(root, create=True)
    rref = realize1(instantiate(folder_stage, "large", _large_files, S=alice.settings))
    died = run_job("push", root, url, rref, failpoint="remote:temporary:blobs")
    assert died.returncode == -signal.SIGKILL, died.stderr
    folder = str(tmp_path / "remote")
    assert [f for f in remote_files(folder) if ".tmp." in f]
    Store.forget_instances()
    bob = Store.open(str(tmp_path / "bob"), create=True)
    with pytest.raises(KeyError):
        bob.pull(url, [rref])  # nothing is listed, no blob is half there
    run_job("push", root, url, rref).result()
    assert not [f for f in remote_files(folder) if ".tmp." in f]
    assert bob.pull(url, [rref]) == [rref]
    assert bob.verify(check_contents=True).problems == []


# -- sizes no hash covers, links checked on disk -----------------------------------------


def test_an_entry_lying_about_its_size_is_refused(alice, bob, tmp_path):
    # Two paths, one blob of 4 KiB; the manifest says the second holds 1 byte. Sizes are
    # not hashed: counted against max_bytes as 4097 bytes, the pull would write 8 KiB.
    url = f"file://{tmp_path}/remote"
    rref = realize1(instantiate(folder_stage, "copies", copies(2, 4096), S=alice.settings))
    alice.push(url, [rref])
    path = os.path.join(tmp_path, "remote", manifest_key(rref))
    doc = json.loads(pathlib.Path(path).read_bytes())
    files = [e for e in doc["files"] if e["type"] == "file"]
    assert [e["size"] for e in files] == [4096, 4096]
    files[1]["size"] = 1
    rewrite(path, json.dumps(doc).encode())
    before = snapshot(bob)
    with pytest.raises(RemoteIntegrityError, match=r"its size \(2 bytes, 1 expected\)"):
        bob.pull(url, [rref], max_bytes=5000)
    assert snapshot(bob) == before
    assert os.listdir(bob.tmp_dir) == []


def _forged(folder: str, rref: str, files: list[dict]) -> str:
    """A manifest of `rref`'s derivation and context listing `files` instead, under the RRef
    those entries hash to (what a hostile writer of the remote can make)."""
    path = os.path.join(folder, manifest_key(rref))
    doc = json.loads(pathlib.Path(path).read_bytes())
    entries = _check_files(files, "test")
    _, dhash, name = unrref(rref)
    forged = mkrref(
        realization_hash(context_hash(doc["context"]), entries_digest(entries)), dhash, name
    )
    doc.update(rref=forged, files=files)
    target = os.path.join(folder, manifest_key(forged))
    pathlib.Path(target).write_bytes(json.dumps(doc).encode())
    return forged


def test_links_that_leave_the_realization_on_disk_are_refused(alice, bob, tmp_path):
    # Each link stays inside by its text; on disk, dir/s is dir itself, so dir/l climbs
    # two folders from dir: out of the realization.
    url = f"file://{tmp_path}/remote"
    rref = realize1(instantiate(folder_stage, "plain", copies(1, 10), S=alice.settings))
    alice.push(url, [rref])
    forged = _forged(
        str(tmp_path / "remote"),
        rref,
        [
            {"path": "dir", "type": "dir"},
            {"path": "dir/l", "type": "link", "target": "s/../../x"},
            {"path": "dir/s", "type": "link", "target": "."},
        ],
    )
    before = snapshot(bob)
    with pytest.raises(RemoteIntegrityError, match="'dir/l' is a symlink pointing outside"):
        bob.pull(url, [forged])
    assert snapshot(bob) == before
    assert os.listdir(bob.tmp_dir) == []


# -- memory stays flat ---------------------------------------------------------------------

_RSS = """
import json, resource, sys
from lightstore.facade import Store
mode, root, url, rref = sys.argv[1:]
store = Store.open(root, create=True)
(store.push if mode == "push" else store.pull)(url, [rref])
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))
"""


def _peak_rss(*args: str) -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    done = subprocess.run(
        [sys.executable, "-c", _RSS, *args], capture_output=True, text=True, env=env, check=True
    )
    return int(json.loads(done.stdout.split()[-1]))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS in KiB as Linux reports it")
def test_memory_stays_flat_whatever_the_file_size(tmp_path):
    # A 160 MiB file moves through windows: neither side holds it whole.
    url = f"file://{tmp_path}/remote"
    root = str(tmp_path / "alice")
    alice = Store.open(root, create=True)

    def big(out: bytes) -> None:
        with open(os.path.join(out, b"big"), "wb") as f:
            for _ in range(10):
                f.write(os.urandom(16 * MiB))

    rref = realize1(instantiate(folder_stage, "big", big, S=alice.settings))
    small = realize1(instantiate(folder_stage, "tiny", copies(1, 10), S=alice.settings))
    Store.forget_instances()
    baseline = _peak_rss("push", root, url, small)
    assert _peak_rss("push", root, url, rref) < baseline + 64 * MiB
    assert _peak_rss("pull", str(tmp_path / "bob"), url, rref) < baseline + 64 * MiB
