"""Remote caches on file:// and memory:// remotes: push, pull, listing, hostile remotes, signing."""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import signal
from contextlib import contextmanager

import pytest
from helpers import assert_unchanged, snapshot
from hypothesis import given
from hypothesis import strategies as st
from remote_helpers import copies, folder_stage, pipeline, remote_files, rewrite

import lightstore
from lightstore import (
    LightstoreError,
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkconfig,
    mkdrv,
    realize1,
)
from lightstore.exchange._tree import check_links, walk_tree
from lightstore.facade import Store
from lightstore.foundation.errors import (
    ArchiveError,
    IntegrityError,
    RemoteError,
    RemoteIntegrityError,
    UnknownReferenceError,
    UntrustedError,
    UsageError,
)
from lightstore.foundation.hashing import file_digest, tree_digest
from lightstore.foundation.refs import rref2dref, unrref
from lightstore.remote import (
    Remote,
    generate_signing_key,
    list_remote,
    load_signing_key,
    pull,
    redact_url,
)
from lightstore.remote._layout import (
    FileEntry,
    _check_files,
    blob_key,
    entries_digest,
    local_entries,
    manifest_key,
)


@pytest.fixture
def alice(tmp_path) -> Store:
    return Store.open(str(tmp_path / "alice"), create=True)


@pytest.fixture
def bob(tmp_path) -> Store:
    return Store.open(str(tmp_path / "bob"), create=True)


@pytest.fixture(params=["file", "memory"])
def url(request, tmp_path) -> str:
    if request.param == "file":
        yield f"file://{tmp_path}/remote"
        return
    name = f"memory://lightstore-test-{secrets.token_hex(6)}/cache"
    yield name
    import fsspec

    fs = fsspec.filesystem("memory")
    top = name.replace("memory://", "/").rsplit("/", 1)[0]
    if fs.exists(top):  # a refused push writes nothing at all
        fs.rm(top, recursive=True)


@pytest.fixture
def file_url(tmp_path) -> str:
    return f"file://{tmp_path}/remote"


def built(store: Store, **kw) -> str:
    return realize1(instantiate(pipeline, S=store.settings, **kw))


def test_push_pull_roundtrip(alice, bob, url):
    rref = built(alice)
    report = alice.push(url, [rref])
    closure = sorted({rref} | alice.catalogue.rrefdeps([rref]))
    assert report.realizations == closure
    assert sorted(report.uploaded) == closure
    # Identical files (same.txt, data/same-too.txt) are one blob.
    assert report.blobs_uploaded == 5
    again = alice.push(url, [rref])
    assert again.uploaded == [] and again.blobs_uploaded == 0
    added = bob.pull(url, [rref])
    assert sorted(added) == closure
    assert bob.catalogue.all_rrefs() == alice.catalogue.all_rrefs()
    for r in closure:
        assert tree_digest(bob.rref_path(r)) == tree_digest(alice.rref_path(r))
        assert bob.context(r) == alice.context(r)
        assert (bob.catalogue.realization_record(r) or {})["build_started"] == pytest.approx(
            (alice.catalogue.realization_record(r) or {})["build_started"]
        )
    assert bob.verify(check_contents=True).problems == []
    assert os.access(os.path.join(bob.rref_path(closure[0]), "run.sh"), os.X_OK) or any(
        os.access(os.path.join(bob.rref_path(r), "run.sh"), os.X_OK)
        for r in closure
        if os.path.exists(os.path.join(bob.rref_path(r), "run.sh"))
    )
    # A closure already present: nothing is transferred, nothing changes.
    before = snapshot(bob)
    assert bob.pull(url, [rref]) == []
    assert_unchanged(bob, before)


def test_pull_by_dref_brings_every_realization(alice, bob, url):
    first = realize1(instantiate(pipeline, S=alice.settings, nondeterministic=True))
    second = realize1(
        instantiate(pipeline, S=alice.settings, nondeterministic=True), force_rebuild=True
    )
    assert first != second
    alice.push(url, [first, second])
    dref = rref2dref(first)
    added = bob.pull(url, [dref])
    assert {first, second} <= set(added) == set(bob.catalogue.all_rrefs())
    before = snapshot(bob)
    with pytest.raises(UnknownReferenceError):
        bob.pull(url, ["dref:" + "0" * 32 + "-nothing"])
    with pytest.raises(UnknownReferenceError):
        bob.pull(url, ["rref:" + "1" * 32 + "-" + "0" * 32 + "-nothing"])
    assert_unchanged(bob, before)


def test_listing_by_name_derivation_and_context(alice, url):
    rref = built(alice)
    alice.push(url, [rref])
    everything = list_remote(url)
    assert sorted(x.rref for x in everything) == sorted({rref} | alice.catalogue.rrefdeps([rref]))
    only = list_remote(url, name="report")
    assert [x.rref for x in only] == [rref]
    by_dref = list_remote(url, dref=rref2dref(rref))
    assert [x.rref for x in by_dref] == [rref]
    ctx = alice.context(rref)
    assert [x.rref for x in list_remote(url, dref=rref2dref(rref), context=ctx)] == [rref]
    assert list_remote(url, dref=rref2dref(rref), context="0" * 32) == []
    assert list_remote(url, name="missing") == []
    with pytest.raises(lightstore.InvalidReferenceError):
        list_remote(url, context="0" * 32)


def test_push_refuses_a_damaged_local_realization(alice, file_url):
    rref = built(alice)
    target = os.path.join(alice.rref_path(rref), "report.txt")
    rewrite(target, b"changed behind the store's back\n")
    with pytest.raises(IntegrityError, match="verify"):
        alice.push(file_url, [rref])
    # Its dependencies went up, but no manifest of the damaged one.
    assert not os.path.exists(os.path.join(file_url[7:], manifest_key(rref)))


def test_pull_of_a_missing_remote_is_not_found(bob, tmp_path):
    with pytest.raises(UnknownReferenceError, match="not a lightstore remote"):
        bob.pull(f"file://{tmp_path}/nothing", ["dref:" + "0" * 32 + "-x"])


# -- hostile remotes --------------------------------------------------------


def _pushed(alice: Store, file_url: str) -> tuple[str, str, dict]:
    rref = built(alice)
    alice.push(file_url, [rref])
    folder = file_url[len("file://") :]
    return rref, folder, {}


def _manifest(folder: str, rref: str) -> tuple[str, dict]:
    path = os.path.join(folder, manifest_key(rref))
    with open(path) as f:
        return path, json.load(f)


def _params_rref(alice: Store, rref: str) -> str:
    return next(r for r in alice.catalogue.rrefdeps([rref]) if "-params" in r)


def _refused(
    bob: Store, url: str, rref: str, match: str, error=RemoteIntegrityError, **limits
) -> None:
    before = snapshot(bob)
    with pytest.raises(error, match=match):
        bob.pull(url, [rref], **limits)
    assert_unchanged(bob, before)
    assert os.listdir(bob.tmp_dir) == []
    assert bob.verify(check_contents=True).problems == []


def _blob_path(folder: str, alice: Store, rref: str, rel: str) -> str:
    digest = file_digest(os.path.join(alice.rref_path(rref), rel)).hex()
    return os.path.join(folder, "blobs", digest[:2], digest)


def test_flipped_byte_in_a_blob_is_refused(alice, bob, file_url):
    rref, folder, _ = _pushed(alice, file_url)
    params = _params_rref(alice, rref)
    blob = _blob_path(folder, alice, params, "data/deep/values.txt")
    data = bytearray(pathlib.Path(blob).read_bytes())
    data[100] ^= 1
    rewrite(blob, bytes(data))
    _refused(bob, file_url, rref, "does not match its hash")


def test_truncated_blob_is_refused(alice, bob, file_url):
    rref, folder, _ = _pushed(alice, file_url)
    blob = _blob_path(folder, alice, _params_rref(alice, rref), "data/deep/values.txt")
    rewrite(blob, pathlib.Path(blob).read_bytes()[:10])
    _refused(bob, file_url, rref, "tampered or truncated")


def test_missing_blob_is_refused(alice, bob, file_url):
    rref, folder, _ = _pushed(alice, file_url)
    os.unlink(_blob_path(folder, alice, rref, "report.txt"))
    _refused(bob, file_url, rref, "is missing")


def test_missing_dependency_manifest_is_refused(alice, bob, file_url):
    rref, folder, _ = _pushed(alice, file_url)
    os.unlink(os.path.join(folder, manifest_key(_params_rref(alice, rref))))
    _refused(bob, file_url, rref, "missing")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m["files"][-1].update(size=m["files"][-1].get("size", 0) + 1), "hash"),
        (lambda m: m["files"].append({"path": "extra", "type": "dir"}), "do not hash"),
        (lambda m: m["files"].append({"path": "../escape", "type": "dir"}), "escapes"),
        (lambda m: m["files"].append({"path": "a/../../x", "type": "dir"}), "escapes"),
        (
            lambda m: m["files"].append({"path": "evil", "type": "link", "target": "../../../etc"}),
            "outside",
        ),
        (
            lambda m: m["files"].append({"path": "abs", "type": "link", "target": "/etc/passwd"}),
            "absolute",
        ),
        (lambda m: m["files"].append({"path": "context.json", "type": "dir"}), "reserved"),
        (lambda m: m["files"].append({"path": "\ud800", "type": "dir"}), "not valid UTF-8"),
        (
            lambda m: m["files"].append({"path": "l", "type": "link", "target": "a\ud800"}),
            "not valid UTF-8",
        ),
        (lambda m: m.update(rref="rref:" + "0" * 32 + m["rref"][37:]), "describes"),
        (lambda m: m["config"].update(extra=1), "does not hash"),
        (lambda m: m.update(context={}), "context"),
        (lambda m: m["files"].insert(0, m["files"][0]), "twice"),
        (lambda m: m.update(files="x"), "not a list"),
        (lambda m: m.update(version=99), "version"),
    ],
)
def test_lying_manifest_is_refused(alice, bob, file_url, edit, match):
    rref, folder, _ = _pushed(alice, file_url)
    target = _params_rref(alice, rref) if "params" in match else rref
    path, doc = _manifest(folder, target)
    edit(doc)
    rewrite(path, json.dumps(doc).encode())
    _refused(bob, file_url, rref, match)


def test_manifest_of_a_file_that_lies_about_its_content_hash(alice, bob, file_url):
    # The manifest names a different (existing) blob for a file: the RRef check catches it.
    rref, folder, _ = _pushed(alice, file_url)
    params = _params_rref(alice, rref)
    path, doc = _manifest(folder, params)
    other = file_digest(os.path.join(alice.rref_path(params), "run.sh")).hex()
    for e in doc["files"]:
        if e["path"] == "same.txt":
            e["blake3"] = other
            e["size"] = os.path.getsize(os.path.join(alice.rref_path(params), "run.sh"))
    rewrite(path, json.dumps(doc).encode())
    _refused(bob, file_url, rref, "do not hash to its RRef")


def test_not_json_manifest_and_foreign_marker(alice, bob, file_url):
    rref, folder, _ = _pushed(alice, file_url)
    path, _ = _manifest(folder, rref)
    rewrite(path, b"\xff not json")
    _refused(bob, file_url, rref, "not JSON")
    rewrite(os.path.join(folder, "lightstore-remote.json"), b'{"format": "other"}')
    with pytest.raises(RemoteError, match="not a lightstore remote"):
        bob.pull(file_url, [rref])


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) if the block takes longer than `seconds`."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds}s: the call hangs")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _with_empty_file(r):
    def build(b):
        out = build_outpath(b)
        open(os.path.join(out, "empty"), "w").close()
        with open(os.path.join(out, "a"), "w") as f:
            f.write("x" * 10)

    return mkdrv(mkconfig({"name": "e"}), match_only(), build_wrapper(build), r)


def _replace(path: str, make) -> None:
    """Put what `make(path)` makes in place of the file at `path` of a file:// remote."""
    os.chmod(os.path.dirname(path), 0o755)
    os.unlink(path)
    make(path)


@pytest.mark.parametrize("what", ["manifest", "empty-blob", "blob"])
@pytest.mark.parametrize("special", ["fifo", "zero"])
def test_special_files_on_a_file_remote_are_refused(alice, bob, file_url, what, special):
    # A hostile file:// remote serves a FIFO (a pull would block forever) or a symlink to
    # /dev/zero (an endless stream) in place of an object.
    rref = realize1(instantiate(_with_empty_file, S=alice.settings))
    alice.push(file_url, [rref])
    if what == "manifest":
        key = manifest_key(rref)
    else:
        name = "empty" if what == "empty-blob" else "a"
        key = blob_key(file_digest(os.path.join(alice.rref_path(rref), name)).hex())
    path = os.path.join(file_url[len("file://") :], key)
    _replace(path, os.mkfifo if special == "fifo" else lambda p: os.symlink("/dev/zero", p))
    before = snapshot(bob)
    with deadline(8), pytest.raises(LightstoreError, match=r"not a regular file|missing"):
        bob.pull(file_url, [rref])
    assert_unchanged(bob, before)
    assert os.listdir(bob.tmp_dir) == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300, -5.0, 10**400, "soon"])
def test_remote_manifest_with_absurd_build_times_is_refused(alice, bob, file_url, value):
    # Archives refuse such times; a remote manifest must too.
    rref = realize1(instantiate(_with_empty_file, S=alice.settings))
    alice.push(file_url, [rref])
    path, doc = _manifest(file_url[len("file://") :], rref)
    doc["build_started"] = value
    _replace(path, lambda p: pathlib.Path(p).write_text(json.dumps(doc)))
    _refused(bob, file_url, rref, "build time")


# -- limits: pulls are bounded as archives are ----------------------------------------


def _copies_rref(store: Store, count: int = 300, size: int = 4096) -> str:
    return realize1(instantiate(folder_stage, "copies", copies(count, size), S=store.settings))


def test_pull_is_bounded_like_an_archive_before_downloading(alice, bob, url):
    # One 4 KiB blob under 300 paths: 1.2 MB to write, though only 4 KiB travels.
    rref = _copies_rref(alice)
    assert alice.push(url, [rref]).blobs_uploaded == 1
    remote = Remote(url)
    digest = file_digest(os.path.join(alice.rref_path(rref), "copy0")).hex()
    # Without its blob: a refusal that names the limit shows nothing was downloaded first.
    remote.fs.rm(remote.path(blob_key(digest)))
    _refused(bob, url, rref, "more than 1000000 bytes.*max_bytes", ArchiveError, max_bytes=10**6)
    _refused(
        bob, url, rref, "more than 100 files, folders and links", ArchiveError, max_members=100
    )
    for bad in (float("nan"), -1, "1000", True):
        with pytest.raises(UsageError, match="max_bytes"):
            bob.pull(url, [rref], max_bytes=bad)
    assert alice.push(url, [rref], repair=True).blobs_uploaded == 1  # the blob is back
    assert bob.pull(url, [rref], max_bytes=2 * 10**6, max_members=301) == [rref]
    assert bob.verify(check_contents=True).problems == []


def test_pull_refuses_more_than_the_free_space(alice, bob, file_url):
    # File sizes are not part of any hash: a hostile manifest may claim any size.
    rref, folder, _ = _pushed(alice, file_url)
    path, doc = _manifest(folder, rref)
    next(e for e in doc["files"] if e["type"] == "file")["size"] = 2**62
    rewrite(path, json.dumps(doc).encode())
    _refused(bob, file_url, rref, "bytes are free", ArchiveError, max_bytes=None)


def _forge(
    folder: str, name: str, files: list[FileEntry], deps: dict[str, str] | None = None
) -> str:
    """Write a realization that verifies straight onto a file:// remote (its manifest and
    config), as a hostile pusher could; its RRef."""
    from lightstore.foundation.config import canonical_json, mkconfig
    from lightstore.foundation.hashing import config_hash, context_hash, realization_hash
    from lightstore.foundation.refs import mkdref, mkrref, undref
    from lightstore.remote._layout import Manifest, derivation_key

    deps = deps or {}
    config = mkconfig({"name": name, "deps": sorted(deps)})
    dref = mkdref(config_hash(config.val), config.name)
    context = {d: [r] for d, r in deps.items()}
    rref = mkrref(realization_hash(context_hash(context), entries_digest(files)), *undref(dref))
    for key, data in (
        ("lightstore-remote.json", b'{"format":"lightstore-remote","version":1}'),
        (derivation_key(dref), canonical_json(config.val).encode()),
        (manifest_key(rref), Manifest(rref, dref, config, context, files).to_bytes()),
    ):
        path = os.path.join(folder, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return rref


def test_a_manifest_far_over_max_members_is_refused_before_it_is_read_whole(bob, tmp_path):
    import tracemalloc

    folder = str(tmp_path / "remote")
    huge = _forge(folder, "huge", [FileEntry(f"d{i:06d}", "dir") for i in range(200_000)])
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match="more than 100 files, folders and links"):
            bob.pull(f"file://{folder}", [huge], max_members=100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Its 6.6 MB of JSON, read and decoded; parsing all 200 000 entries takes 100 MB more.
    assert peak < 30 * 1024 * 1024, peak


@pytest.mark.parametrize("limit", ["max_members", "max_bytes"])
def test_limits_are_counted_while_manifests_are_read(bob, tmp_path, limit):
    # The root needs `big` (over the limit), then `broken` (its manifest is not JSON): the
    # limit refuses before the next manifest is read.
    folder = str(tmp_path / "remote")
    files = [FileEntry(f"f{i}", "file", False, 10**6, "0" * 64) for i in range(200)]
    for i in range(50):
        big = _forge(folder, f"big{i}", files)
        broken = _forge(folder, f"broken{i}", [FileEntry("x", "dir")])
        if big < broken:
            break
    with open(os.path.join(folder, manifest_key(broken)), "wb") as f:
        f.write(b"{not json")
    root = _forge(folder, "root", [], {rref2dref(big): big, rref2dref(broken): broken})
    before = snapshot(bob)
    with pytest.raises(ArchiveError) as e:
        bob.pull(f"file://{folder}", [root], **{limit: 100})
    assert type(e.value) is ArchiveError and limit in str(e.value), e.value
    assert_unchanged(bob, before)


def _distinct_files(count: int):
    """A `folder_stage` maker: `count` small files, each with its own content (own blob)."""

    def make(out: bytes) -> None:
        for i in range(count):
            with open(os.path.join(out, b"f%d" % i), "wb") as f:
                f.write(b"%d\n" % i)

    return make


def test_a_full_local_disk_is_the_stores_problem_not_the_remotes(
    alice, file_url, small_disk, caplog
):
    import logging

    from lightstore.foundation.errors import DiskFullError
    from lightstore.remote.substitute import _Failures, substitute

    # 1000 files of a few bytes: they fit the free space as declared, but each takes a
    # page of the 3 MiB disk once written.
    rref = realize1(instantiate(folder_stage, "distinct", _distinct_files(1000), S=alice.settings))
    alice.push(file_url, [rref])
    bob = Store.open(os.path.join(small_disk, "store"), create=True)
    before = snapshot(bob)
    with pytest.raises(DiskFullError, match="disk holding the store is full") as e:
        bob.pull(file_url, [rref])
    assert file_url not in str(e.value)
    assert_unchanged(bob, before)
    assert os.listdir(bob.tmp_dir) == []
    failures = _Failures()
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        assert substitute(bob, rref2dref(rref), {}, [file_url], _failures=failures) == []
    assert file_url not in failures.unreachable  # asked again for the next derivation
    assert "disk holding the store is full" in caplog.text


# -- push refuses what every pull refuses, before uploading anything -------------------


def _abs_link(out: bytes) -> None:
    os.symlink(b"/etc/passwd", os.path.join(out, b"abs"))


def _up_link(out: bytes) -> None:
    os.symlink(b"../../x", os.path.join(out, b"up"))


def _lexical_link(out: bytes) -> None:
    # Inside once resolved on disk (d is sub/sub2), outside by its text: every pull refuses it.
    os.makedirs(os.path.join(out, b"sub", b"sub2"))
    os.symlink(b"sub/sub2", os.path.join(out, b"d"))
    os.symlink(b"d/../..", os.path.join(out, b"l"))


def _bytes_name(out: bytes) -> None:
    with open(os.path.join(out, b"ok.txt"), "w") as f:
        f.write("fine\n")
    with open(os.path.join(out, b"caf\xe9.txt"), "w") as f:  # latin-1, not UTF-8
        f.write("x\n")


def _bytes_target(out: bytes) -> None:
    os.symlink(b"caf\xe9", os.path.join(out, b"link"))


def _backslash_name(out: bytes) -> None:
    with open(os.path.join(out, b"a\\b.txt"), "w") as f:
        f.write("x\n")


@pytest.mark.parametrize(
    "make, match",
    [
        (_abs_link, "absolute path"),
        (_up_link, "outside"),
        (_lexical_link, "outside"),
        (_bytes_name, "not valid UTF-8"),
        (_bytes_target, "not valid UTF-8"),
        (_backslash_name, "backslash"),
    ],
)
def test_push_refuses_what_pull_refuses_before_uploading(alice, url, make, match, tmp_path):
    odd = realize1(instantiate(folder_stage, "odd", make, S=alice.settings))
    with pytest.raises(ArchiveError, match=f"cannot push {odd}.*{match}"):
        alice.push(url, [odd])
    assert Remote(url).find("") == []  # not even the marker
    # The same check as `pack` (UTF-8 aside: a tar archive keeps any name).
    if match != "not valid UTF-8":
        with pytest.raises(ArchiveError, match=match):
            lightstore.spack([odd], str(tmp_path / "odd.tar"), alice)


_name_bytes = st.lists(
    st.sampled_from([b"a", b"\xff", b"\xc3\xa9", b"\\", b".", b" "]), min_size=1, max_size=4
).map(b"".join)
_target = st.tuples(
    st.booleans(),
    st.lists(st.sampled_from([b"..", b".", b"a", b"n", b"link", b"\xe9", b"\\", b""]), min_size=1),
).map(lambda t: (b"/" if t[0] else b"") + b"/".join(t[1]))


@given(name=_name_bytes, target=_target)
def test_push_and_pull_agree_on_names_and_links(tmp_path_factory, name, target):
    root = os.fsencode(str(tmp_path_factory.mktemp("names")))
    if name in (b".", b".."):
        return
    with open(os.path.join(root, name), "wb"):
        pass
    if target:
        os.symlink(target, os.path.join(root, b"link"))
    top = os.fsdecode(root)
    try:
        check_links(top, "push", portable=True, utf8_hint="")
        pushed = True
    except ArchiveError:
        pushed = False
    # What pull checks: the manifest's entries (as push would write them), then the
    # assembled folder.
    items = [
        {"path": e.path, "type": e.type, "target": e.target}
        if e.type == "link"
        else {"path": e.path, "type": "file", "size": 0, "blake3": "0" * 64, "executable": False}
        for e in local_entries(top)
    ]
    try:
        _check_files(items, "pull")
        check_links(top, "pull")
        pulled = True
    except ArchiveError:
        pulled = False
    assert pushed == pulled, (name, target)


# -- damaged blobs: named by pull, mended by push --------------------------------------


def test_a_same_size_damaged_blob_is_named_and_repaired(alice, bob, file_url):
    rref, folder, _ = _pushed(alice, file_url)
    params = _params_rref(alice, rref)
    blob = _blob_path(folder, alice, params, "data/deep/values.txt")
    good = pathlib.Path(blob).read_bytes()
    damaged = bytearray(good)
    damaged[100] ^= 1
    rewrite(blob, bytes(damaged))
    digest = os.path.basename(blob)
    with pytest.raises(RemoteIntegrityError) as e:
        bob.pull(file_url, [rref])
    for part in (digest, "'data/deep/values.txt'", params, "content", "push --repair"):
        assert part in str(e.value)
    # Already on the remote: a plain push does not look at it, a repairing one does.
    report = alice.push(file_url, [rref])
    assert (report.uploaded, report.blobs_repaired) == ([], 0)
    assert pathlib.Path(blob).read_bytes() == bytes(damaged)
    report = alice.push(file_url, [rref], repair=True)
    assert (report.uploaded, report.blobs_repaired, report.blobs_uploaded) == ([], 1, 1)
    assert pathlib.Path(blob).read_bytes() == good
    assert rref in bob.pull(file_url, [rref])
    # A new realization sharing a damaged blob: on a local remote, what is skipped is hashed.
    rewrite(blob, bytes(damaged))
    os.unlink(os.path.join(folder, manifest_key(params)))
    report = alice.push(file_url, [rref])
    assert (report.uploaded, report.blobs_repaired) == ([params], 1)
    assert pathlib.Path(blob).read_bytes() == good


@pytest.mark.parametrize("damage", ["truncated", "emptied", "removed"])
def test_repair_rewrites_damaged_manifests_and_derivation_records(alice, bob, file_url, damage):
    from lightstore.remote._layout import derivation_key

    rref, folder, _ = _pushed(alice, file_url)
    params = _params_rref(alice, rref)
    damaged = [
        os.path.join(folder, manifest_key(rref)),
        os.path.join(folder, manifest_key(params)),
        os.path.join(folder, derivation_key(rref2dref(params))),
    ]
    good = [pathlib.Path(p).read_bytes() for p in damaged]
    for path, data in zip(damaged, good, strict=True):
        if damage == "removed" and path.endswith(".json") and "derivations" in path:
            os.unlink(path)
        else:
            rewrite(path, b"" if damage == "emptied" else data[:-20])
    with pytest.raises(RemoteIntegrityError) as refused:
        bob.pull(file_url, [rref])
    report = alice.push(file_url, [rref], repair=True)
    assert [pathlib.Path(p).read_bytes() for p in damaged] == good
    assert rref in bob.pull(file_url, [rref])
    assert bob.verify(check_contents=True).problems == []
    assert report.records_repaired == (2 if damage == "removed" else 3)
    assert report.uploaded == []
    assert alice.push(file_url, [rref], repair=True).records_repaired == 0
    assert "push --repair" in str(refused.value)  # the refusal said what mends it


# -- signatures -----------------------------------------------------------------


def test_signed_remote(alice, bob, file_url, tmp_path):
    key = generate_signing_key("alice-1")
    keyfile = tmp_path / "alice.key"
    keyfile.write_text(key.secret_text())
    assert "alice-1" in repr(key) and key.secret_text().split(":")[2] not in repr(key)
    assert load_signing_key(str(keyfile)) == key
    rref = built(alice)
    alice.push(file_url, [rref], signing_key=str(keyfile))
    assert bob.pull(file_url, [rref], trusted_keys=[key.public])
    assert bob.verify(check_contents=True).problems == []


def test_unsigned_and_forged_are_refused_with_trusted_keys(alice, bob, file_url, tmp_path):
    trusted = generate_signing_key("alice-1")
    mallory = generate_signing_key("alice-1")  # same name, another key
    rref = built(alice)
    alice.push(file_url, [rref])
    _refused_keys = [trusted.public]
    before = snapshot(bob)
    with pytest.raises(UntrustedError, match="not signed"):
        bob.pull(file_url, [rref], trusted_keys=_refused_keys)
    assert_unchanged(bob, before)
    alice.push(file_url, [rref], signing_key=mallory)
    with pytest.raises(UntrustedError, match="forged"):
        bob.pull(file_url, [rref], trusted_keys=_refused_keys)
    assert_unchanged(bob, before)
    # Trusted through the store's file: the same refusal, then acceptance once signed right.
    lightstore.remote.add_trusted_key(bob.root, trusted.public)
    with pytest.raises(UntrustedError):
        bob.pull(file_url, [rref])
    folder = file_url[len("file://") :]
    for r in {rref} | alice.catalogue.rrefdeps([rref]):
        sig = os.path.join(
            folder,
            "signatures",
            *manifest_key(r)[len("realizations/") :][:-5].split("/"),
            "alice-1",
        )
        rewrite(sig, trusted.sign(r).encode())
    assert bob.pull(file_url, [rref])
    # Without keys, signatures are not required.
    assert pull(Store.open(str(tmp_path / "carol"), create=True), file_url, [rref], trusted_keys=[])


def test_malformed_keys_are_refused_without_quoting_them(tmp_path):
    secret = generate_signing_key("k").secret_text()
    with pytest.raises(lightstore.LightstoreError) as e:
        lightstore.remote._sign.TrustedKeys([secret])
    assert secret.split(":")[2] not in str(e.value)
    with pytest.raises(lightstore.LightstoreError, match="base64"):
        lightstore.remote._sign.TrustedKeys(["k:not base64!"])
    with pytest.raises(lightstore.LightstoreError, match="key name"):
        generate_signing_key("../x")
    with pytest.raises(lightstore.LightstoreError, match="neither a readable key file"):
        load_signing_key(str(tmp_path / "none.key"))


def _leaks(output: str, secret: str) -> bool:
    """Whether any 8 characters in a row of the key's base64 appear in `output`."""
    b64 = secret.rsplit(":", 1)[-1]
    return any(b64[i : i + 8] in output for i in range(len(b64) - 7))


def test_a_misplaced_key_is_bad_input_and_never_shown(alice, bob, file_url, tmp_path):
    from helpers import fails, run

    key = generate_signing_key("alice-1")
    secret, public = key.secret_text(), key.public
    bare = secret.rsplit(":", 1)[-1]
    rref = built(alice)
    alice.push(file_url, [rref])
    before = snapshot(bob)
    for pasted in (secret, bare, "alice-1:" + bare + ":x", "not a key:" + bare):
        result = fails(2, bob.root, "trust", pasted)
        assert not _leaks(result.output, secret), result.output
        result = fails(2, bob.root, "pull", file_url, rref, "--trusted-key", pasted)
        assert not _leaks(result.output, secret), result.output
        result = run(bob.root, "pull", file_url, rref, env={"LIGHTSTORE_TRUSTED_KEYS": pasted})
        assert result.exit_code == 2 and not _leaks(result.output, secret), result.output
    assert "secret key" in fails(2, bob.root, "trust", secret).output
    assert (
        "LIGHTSTORE_TRUSTED_KEYS"
        in run(bob.root, "pull", file_url, rref, env={"LIGHTSTORE_TRUSTED_KEYS": secret}).output
    )
    # A public key (or a bare key) where the signing key file goes: also not shown.
    for pasted in (public, bare, secret[:-4]):
        result = fails(2, alice.root, "push", file_url, rref, "--sign-key", pasted)
        assert not _leaks(result.output, secret) and not _leaks(result.output, public)
        result = run(alice.root, "push", file_url, rref, env={"LIGHTSTORE_SIGNING_KEY": pasted})
        assert result.exit_code == 2 and not _leaks(result.output, secret), result.output
    assert_unchanged(bob, before)


def test_keygen_makes_a_private_folder_for_the_key(tmp_path, monkeypatch):
    from helpers import ok

    monkeypatch.setenv("HOME", str(tmp_path / "fresh-home"))
    os.mkdir(tmp_path / "fresh-home")
    public = ok(None, "keygen", "alice-1", "~/.config/lightstore/alice.key").strip()
    folder = tmp_path / "fresh-home" / ".config" / "lightstore"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert load_signing_key(str(folder / "alice.key")).public == public


# -- secrets and errors ---------------------------------------------------------


def test_secrets_never_appear_in_errors():
    assert redact_url("s3://AKIAXXXX:topsecret@bucket/p?token=abc") == "s3://***@bucket/p"
    with pytest.raises(RemoteError) as e:
        Remote("nosuchprotocol://user:hunter22@host/x", {"password": "hunter22"})
    assert "hunter22" not in str(e.value)
    remote = Remote("memory://x", {})
    remote._secrets = ["supersecret"]
    err = remote.error("cannot read", OSError("denied for supersecret at https://u:p4ss@h/"))
    assert "supersecret" not in str(err) and "p4ss" not in str(err)


def test_remote_write_once_and_torn_blob_repair(alice, file_url):
    remote = Remote(file_url)
    assert remote.write_bytes("x/y", b"1", exclusive=True)
    assert not remote.write_bytes("x/y", b"2", exclusive=True)
    assert remote.read("x/y") == b"1"
    rref = built(alice)
    alice.push(file_url, [rref])
    folder = file_url[len("file://") :]
    blob = _blob_path(folder, alice, rref, "report.txt")
    rewrite(blob, b"torn")
    os.unlink(os.path.join(folder, manifest_key(rref)))
    alice.push(file_url, [rref])  # the torn blob (wrong size) is uploaded again
    assert file_digest(blob).hex() == os.path.basename(blob)


def test_temporary_files_of_killed_pushes_are_swept_by_later_pushes(alice, file_url, tmp_path):
    import signal
    import time

    from helpers import run_job
    from remote_helpers import build

    from lightstore.remote._fs import _HOST

    folder = file_url[len("file://") :]
    rref = build(alice.root, "a")
    # Killed with a blob written under its temporary name, before the rename.
    died = run_job("push", alice.root, file_url, rref, failpoint="remote:temporary:blobs")
    assert died.returncode == -signal.SIGKILL, died.stderr
    # One, or more when another upload thread had written its own before the kill.
    leftovers = [f for f in remote_files(folder) if ".tmp." in f]
    assert leftovers
    left = leftovers[0]
    shard = os.path.join(folder, os.path.dirname(left))
    # Beside it: a fresh one of another machine (kept), an old one (swept), one of a live
    # process of this machine (kept).
    kept = [f".tmp.x.0123456789ab.{os.getpid()}.aaaaaa", f".tmp.y.{_HOST}.1.bbbbbb"]
    old = ".tmp.z.0123456789ab.77.cccccc"
    for name in [*kept, old]:
        pathlib.Path(shard, name).write_bytes(b"partial")
    an_hour_ago = time.time() - 3700
    os.utime(os.path.join(shard, old), (an_hour_ago, an_hour_ago))
    run_job("push", alice.root, file_url, rref).result()
    assert sorted(f for f in remote_files(folder) if ".tmp." in f) == sorted(
        os.path.join(os.path.dirname(left), k) for k in kept
    )


# -- the manifest digest equals the store's tree digest ---------------------------

_names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\0", exclude_categories=["Cs"]),
    min_size=1,
    max_size=6,
).filter(lambda s: s not in (".", "..", "context.json"))


@given(
    st.lists(
        st.tuples(st.lists(_names, min_size=1, max_size=3), st.binary(max_size=40)), max_size=8
    )
)
def test_entries_digest_matches_tree_digest(tmp_path_factory, files):
    root = str(tmp_path_factory.mktemp("tree"))
    for parts, data in files:
        folder = os.path.join(root, *parts[:-1])
        try:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, parts[-1]), "xb") as f:
                f.write(data)
        except (FileExistsError, NotADirectoryError, IsADirectoryError, OSError):
            continue
    entries = []
    for e in walk_tree(root):
        digest = file_digest(e.path).hex() if e.kind == "file" else ""
        entries.append(FileEntry(e.rel, e.kind, e.executable, e.size, digest, e.target))
    assert entries_digest(entries) == tree_digest(root).digest


def test_rref_hash_parts_are_used_as_names(alice, file_url):
    rref = built(alice)
    alice.push(file_url, [rref])
    names = remote_files(file_url[len("file://") :])
    assert f"realizations/{unrref(rref)[1]}-report/{unrref(rref)[0]}.json" in names
    assert not [n for n in names if ".tmp." in n]


# -- command line -------------------------------------------------------------------


def test_cli_push_ls_pull_keygen_trust(alice, bob, file_url, tmp_path):
    from helpers import fails, ok

    rref = built(alice)
    out = ok(alice.root, "push", file_url, "report")
    assert "pushed 3 new realization(s) of 3" in out
    assert "pushed 0 new" in ok(alice.root, "push", file_url, rref)
    rows = json.loads(ok(None, "remote-ls", file_url, "--name", "report", "--json"))
    assert [r["rref"] for r in rows] == [rref]
    assert len(json.loads(ok(None, "remote-ls", file_url, "--json"))) == 3
    ctx = rows[0]["context"]
    rows = json.loads(
        ok(None, "remote-ls", file_url, "--derivation", rref2dref(rref), "--context", ctx, "--json")
    )
    assert [r["rref"] for r in rows] == [rref]
    keyfile = str(tmp_path / "k.key")
    public = ok(None, "keygen", "alice-1", keyfile).strip()
    assert public.startswith("alice-1:") and oct(os.stat(keyfile).st_mode & 0o777) == "0o600"
    fails(2, None, "keygen", "alice-1", keyfile)
    ok(bob.root, "trust", public)
    # Bob trusts alice-1: the unsigned remote is refused, and the store is unchanged.
    before = snapshot(bob)
    result = fails(2, bob.root, "pull", file_url, rref)
    assert "not signed" in result.output
    assert_unchanged(bob, before)
    ok(alice.root, "push", file_url, rref, "--sign-key", keyfile)
    added = ok(bob.root, "pull", file_url, rref).split()
    assert rref in added and len(added) == 3
    fails(3, bob.root, "pull", file_url, "dref:" + "0" * 32 + "-x")
    fails(2, bob.root, "pull", file_url, "not a ref!")
    fails(3, bob.root, "pull", file_url, "not-a-ref")  # a name no derivation has there
    fails(2, None, "remote-ls", file_url, "-o", "novalue")


def test_cli_options_reach_the_driver_and_secrets_stay_hidden(bob, tmp_path):
    from helpers import run

    result = run(
        bob.root,
        "pull",
        "s3://no-such-bucket-lightstore/x",
        "dref:" + "0" * 32 + "-x",
        "-o",
        "key=AKIAEXAMPLEKEY",
        "-o",
        "secret=very-secret-value",
        "-o",
        "client_kwargs.endpoint_url=http://127.0.0.1:9",
        "-o",
        "config_kwargs.retries.max_attempts=1",
        "-o",
        "config_kwargs.connect_timeout=1",
    )
    assert result.exit_code != 0
    assert "very-secret-value" not in result.output and "AKIAEXAMPLEKEY" not in result.output


@pytest.mark.parametrize("depth", [50_000, 2_000])
def test_deeply_nested_manifest_is_refused_cleanly(alice, bob, file_url, depth):
    rref, folder, _ = _pushed(alice, file_url)
    path, _ = _manifest(folder, rref)
    text = (
        '{"format": "lightstore-manifest", "version": 1, "rref": "%s", "dref": "%s", "config": %s}'
    )
    nested = "[" * depth + "]" * depth
    rewrite(path, (text % (rref, rref2dref(rref), nested)).encode())
    _refused(bob, file_url, rref, "not JSON|does not hash|invalid|deep")


def test_cli_says_what_is_already_there_bounds_pulls_and_repairs(alice, bob, file_url):
    from helpers import fails, ok

    rref = built(alice)
    first = ok(alice.root, "push", file_url, rref)
    assert "already on the remote" not in first
    again = ok(alice.root, "push", file_url, rref, "report")
    assert again.splitlines()[0] == f"already on the remote: {rref}"
    assert "pushed 0 new realization(s) of 3" in again
    before = snapshot(bob)
    result = fails(2, bob.root, "pull", file_url, rref, "--max-bytes", "1000")
    assert "max_bytes" in result.output
    fails(2, bob.root, "pull", file_url, rref, "--max-members", "3")
    assert_unchanged(bob, before)
    assert rref in ok(bob.root, "pull", file_url, rref).split()
    assert ok(bob.root, "pull", file_url, rref, rref2dref(rref)).splitlines() == [
        f"already present: {rref}",
        f"already present: {rref2dref(rref)}",
    ]
    blob = _blob_path(file_url[len("file://") :], alice, rref, "report.txt")
    rewrite(blob, b"report 1\n")  # the same size as "report 0\n"
    assert "1 damaged one(s) replaced" in ok(alice.root, "push", file_url, rref, "--repair")
    assert pathlib.Path(blob).read_bytes() == b"report 0\n"
