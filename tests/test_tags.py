"""Tags and notes on runs: set, listed and filtered by the API and the command line, with who
and when; never part of a hash; kept through gc until forget; carried by pack/unpack and
push/pull under the signature; written by many processes at once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import ok, run

from lightstore import (
    InvalidConfigError,
    Store,
    UnknownReferenceError,
    build_outpath,
    build_wrapper,
    fsinit,
    instantiate,
    match_only,
    mkdrv,
    mkSS,
    realize1,
    selfref,
    spack,
    sunpack,
)
from lightstore.foundation.errors import (
    ArchiveError,
    InvalidAnnotationError,
    InvalidReferenceError,
    QueryError,
)
from lightstore.foundation.tags import MAX_NOTE, MAX_TAG_VALUE, author
from lightstore.query import derivations, history, realizations

#: Tag values and notes: any Unicode text but NUL and lone surrogates (not Unicode).
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))


def _train(lr: float, seed: int = 0):
    def real(b):
        with open(os.path.join(build_outpath(b), "model.txt"), "w") as f:
            f.write(f"lr={lr} seed={seed}\n")

    def stage(r):
        return mkdrv(
            {"name": "train", "lr": lr, "seed": seed, "out": [selfref, "model.txt"]},
            match_only(),
            build_wrapper(real),
            r,
        )

    return stage


@pytest.fixture
def sweep(store, S):
    """Four runs of train: lr 0.1 and 0.5, seeds 0 and 1."""
    return {(lr, seed): realize1(instantiate(_train(lr, seed), S=S))
            for lr in (0.1, 0.5) for seed in (0, 1)}  # fmt: skip


# -- the API -----------------------------------------------------------------------------------


def test_tags_and_notes_of_a_run(store, sweep):
    rref = sweep[0.5, 0]
    store.set_tag(rref, "baseline")
    store.set_tag(rref, "status", "diverged")
    store.set_tag(rref, "status", "diverged at epoch 3")  # replaced
    assert store.tags(rref) == {"baseline": "", "status": "diverged at epoch 3"}
    first = store.add_note(rref, "lr too high")
    second = store.add_note(rref, "rerun with warmup?\nmaybe")
    notes = store.notes(rref)
    assert [(n.id, n.text) for n in notes] == [(first, "lr too high"),
                                               (second, "rerun with warmup?\nmaybe")]  # fmt: skip
    assert all(n.author == author() and n.recorded > 0 for n in notes)
    row = store.catalogue.query("SELECT author, recorded FROM tags WHERE name = 'status'")[0]
    assert row[0] == author() and "@" in row[0] and row[1] > 0
    assert store.remove_tag(rref, "baseline") and not store.remove_tag(rref, "baseline")
    assert store.remove_note(rref, first) and not store.remove_note(rref, first)
    assert [n.text for n in store.notes(rref)] == ["rerun with warmup?\nmaybe"]
    assert store.tags(sweep[0.1, 0]) == {} and store.notes(sweep[0.1, 0]) == []


@pytest.mark.parametrize("name", ["", "1st", "a b", "x=y", "a" * 129, None, 3, "t\u00e4g", "tag\n"])
def test_bad_tag_names_are_refused(store, sweep, name):
    with pytest.raises(InvalidAnnotationError) as info:
        store.set_tag(sweep[0.1, 0], name)
    assert isinstance(info.value, InvalidConfigError) and isinstance(info.value, ValueError)
    assert store.catalogue.query("SELECT count(*) FROM tags") == [(0,)]


@pytest.mark.parametrize("value", [None, 3, b"x", "a\0b", "\ud800", "x" * (MAX_TAG_VALUE + 1)])
def test_bad_tag_values_and_notes_are_refused(store, sweep, value):
    rref = sweep[0.1, 0]
    with pytest.raises(InvalidAnnotationError):
        store.set_tags(rref, {"fine": "ok", "bad": value})
    too_long = isinstance(value, str) and len(value) > MAX_TAG_VALUE
    with pytest.raises(InvalidAnnotationError):
        store.add_note(rref, "x" * (MAX_NOTE + 1) if too_long else value)
    for empty in ("", "  \n"):
        with pytest.raises(InvalidAnnotationError):
            store.add_note(rref, empty)
    assert store.tags(rref) == {} and store.notes(rref) == []  # nothing of a refused call


def test_unknown_runs_are_refused(store, sweep):
    rref = sweep[0.1, 0]
    missing = rref.replace(rref[5:9], "0000" if rref[5:9] != "0000" else "1111")
    for call in (
        lambda: store.set_tag(missing, "x"),
        lambda: store.add_note(missing, "x"),
    ):
        with pytest.raises(UnknownReferenceError):
            call()
    with pytest.raises(InvalidReferenceError):  # not an RRef at all
        store.set_tag("dref:" + "0" * 32 + "-train", "x")


@settings(max_examples=60, deadline=None)
@given(value=TEXT.filter(lambda t: len(t) <= MAX_TAG_VALUE), note=TEXT.filter(str.strip))
def test_any_text_round_trips_through_the_catalogue(tmp_path_factory, value, note):
    store = _one_run_store(tmp_path_factory)
    rref = store.catalogue.all_rrefs()[0]
    store.set_tag(rref, "t", value)
    assert store.tags(rref) == {"t": value}
    note_id = store.add_note(rref, note)
    assert store.notes(rref)[-1].text == note
    assert history(store, tags=[f"t={value}"])[0]["tags"] == {"t": value}
    store.remove_note(rref, note_id)


_STORES: dict[str, Store] = {}


def _one_run_store(tmp_path_factory) -> Store:
    if "one" not in _STORES:
        root = str(tmp_path_factory.mktemp("tags-one") / "store")
        fsinit(mkSS(root))
        realize1(instantiate(_train(0.3), S=mkSS(root)))
        _STORES["one"] = Store.open(root)
    return _STORES["one"]


def test_tags_are_not_part_of_the_hash(tmp_path):
    a = fsinit(mkSS(str(tmp_path / "a")))
    b = fsinit(mkSS(str(tmp_path / "b")))
    ra = realize1(instantiate(_train(0.1), S=a.settings))
    a.set_tag(ra, "baseline")
    a.add_note(ra, "x")
    rb = realize1(instantiate(_train(0.1), S=b.settings))
    assert ra == rb and b.tags(rb) == {}
    assert a.verify(check_contents=True).ok


# -- filters -----------------------------------------------------------------------------------


def test_history_and_ls_filter_by_tag(store, sweep):
    store.set_tag(sweep[0.5, 0], "status", "diverged")
    store.set_tag(sweep[0.5, 1], "status", "ok")
    store.set_tag(sweep[0.1, 1], "baseline")
    store.set_tag(sweep[0.5, 1], "baseline")
    assert {r["rref"] for r in history(store, tags=["status"])} == {sweep[0.5, 0], sweep[0.5, 1]}
    assert [r["rref"] for r in history(store, tags=["status=diverged"])] == [sweep[0.5, 0]]
    assert [r["rref"] for r in history(store, tags=["status=ok", "baseline"])] == [sweep[0.5, 1]]
    assert [r["rref"] for r in history(store, tags=[("status", "diverged")])] == [sweep[0.5, 0]]
    assert history(store, tags=["status="]) == []  # the empty value is a value
    rows = history(store, "train", fields=["lr"])
    assert {r["rref"]: r["tags"] for r in rows}[sweep[0.5, 1]] == {"status": "ok", "baseline": ""}
    assert {r["rref"]: r["tags"] for r in rows}[sweep[0.1, 0]] == {}
    assert len(realizations(store, tags=["baseline"])) == 2
    assert len(derivations(store, tags=["status=diverged"])) == 1
    # The tags column is JSON for a user's condition too.
    where = history(store, where="json_extract(tags, '$.status') = 'ok'")
    assert [r["rref"] for r in where] == [sweep[0.5, 1]]
    with pytest.raises(QueryError):
        history(store, tags=["bad name"])
    pd = pytest.importorskip("pandas")
    frame = history(store, "train", fields=["lr"], tags=["baseline"]).to_pandas()
    assert isinstance(frame, pd.DataFrame) and "tags" in frame.columns
    assert frame["tags"].tolist() == [{"baseline": ""}, {"status": "ok", "baseline": ""}]


def test_the_command_line(store, sweep):
    rref = sweep[0.5, 0]
    ok(store.root, "tag", "train[lr=0.5]@all", "sweep=b")
    ok(store.root, "tag", rref, "status=diverged", "looked-at")
    assert store.tags(rref) == {"sweep": "b", "status": "diverged", "looked-at": ""}
    assert store.tags(sweep[0.5, 1]) == {"sweep": "b"}
    listed = json.loads(ok(store.root, "tag", rref, "--json"))
    assert [(t["name"], t["value"], t["author"]) for t in listed] == [
        ("looked-at", "", author()), ("status", "diverged", author()), ("sweep", "b", author())
    ]  # fmt: skip
    ok(store.root, "tag", rref, "--remove", "looked-at")
    assert "looked-at" not in store.tags(rref)
    assert run(store.root, "tag", rref, "--remove", "looked-at").exit_code == 3
    assert run(store.root, "tag", rref, "bad name").exit_code == 2
    assert run(store.root, "tag", rref, "--remove", "status=x").exit_code == 2
    assert run(store.root, "tag", "train", "x").exit_code == 2  # derivations have no tags
    # Filters and columns.
    table = ok(store.root, "history", "--tag", "status=diverged")
    assert "status=diverged, sweep=b" in table and table.count("train") == 1
    assert set(ok(store.root, "ls", "-r", "-t", "sweep", "-q").split()) == {
        sweep[0.5, 0],
        sweep[0.5, 1],
    }
    data = json.loads(ok(store.root, "history", "--json"))
    assert {r["rref"]: r["tags"] for r in data}[rref] == {"status": "diverged", "sweep": "b"}
    assert "tags" not in ok(store.root, "history", "-n", "nothing").splitlines()[0]
    assert len(json.loads(ok(store.root, "ls", "--tag", "status", "--json"))) == 1
    # Notes.
    out = ok(store.root, "note", rref, "lr too high; \x1b[31mred\x1b[0m")
    note_id = int(out.split("#")[1].split()[0])
    listed = json.loads(ok(store.root, "note", rref, "--json"))
    assert listed[0]["id"] == note_id and listed[0]["text"].startswith("lr too high")
    shown = ok(store.root, "show", rref, "--no-files")
    assert "status=diverged" in shown and f"#{note_id}" in shown and "\\x1b[31m" in shown
    assert "\x1b" not in shown  # a note cannot drive the terminal
    info = json.loads(ok(store.root, "show", rref, "--json", "--no-files"))
    assert [t["name"] for t in info["tags"]] == ["status", "sweep"]
    assert info["notes"][0]["author"] == author()
    ok(store.root, "note", rref, "--remove", str(note_id))
    assert store.notes(rref) == []
    assert run(store.root, "note", rref, "--remove", str(note_id)).exit_code == 3
    assert run(store.root, "note", rref, "x", "--remove", "1").exit_code == 2


# -- history and forget ------------------------------------------------------------------------


def test_tags_and_notes_outlive_gc_and_go_with_forget(store, sweep):
    rref = sweep[0.1, 0]
    store.set_tag(rref, "baseline")
    store.add_note(rref, "kept as history")
    store.gc()
    assert store.catalogue.known_rrefs([rref]) == set()
    assert store.tags(rref) == {"baseline": ""}
    store.set_tag(rref, "collected-later")  # a collected record may still be annotated
    ok(store.root, "note", rref, "noted after gc")  # its full RRef designates it
    rows = history(store, tags=["baseline"], include_collected=True)
    assert [r["rref"] for r in rows] == [rref] and rows[0]["collected"] is not None
    assert history(store, tags=["baseline"]) == []  # not present
    store.forget(everything=True)
    for table in ("tags", "notes"):
        assert store.catalogue.query(f"SELECT count(*) FROM {table}") == [(0,)]


def test_reindex_keeps_tags_and_notes(store, sweep):
    rref = sweep[0.1, 0]
    store.set_tag(rref, "baseline", "v1")
    store.add_note(rref, "note")
    store.reindex()
    again = Store.open(store.root)
    assert again.tags(rref) == {"baseline": "v1"}
    assert [n.text for n in again.notes(rref)] == ["note"]


def test_the_database_refuses_rows_of_unknown_runs(store, sweep):
    from lightstore.foundation.errors import IntegrityError

    for sql in (
        "INSERT INTO tags (rref, name, value, recorded) VALUES ('rref:nope', 'x', '', 0)",
        "INSERT INTO notes (rref, text, recorded) VALUES ('rref:nope', 'x', 0)",
        "INSERT INTO metric_steps (rref, name, step, value, recorded) VALUES (?, 'x', 0, 1, 0)",
    ):
        with pytest.raises(IntegrityError), store.catalogue.write() as conn:
            conn.execute(sql, (sweep[0.1, 0],) if "?" in sql else ())


# -- exchange ----------------------------------------------------------------------------------


def test_pack_unpack_carry_tags_and_notes_once(tmp_path, store, sweep, S):
    rref = sweep[0.1, 0]
    store.set_tag(rref, "baseline", "\u03bb=0.1 \U0001f680")
    store.add_note(rref, "first")
    archive = str(tmp_path / "a.zip")
    spack([rref], archive, S)
    with zipfile.ZipFile(archive) as z:
        entry = json.loads(z.read("manifest.json"))["realizations"][0]
    assert entry["tags"][0]["name"] == "baseline" and entry["notes"][0]["text"] == "first"
    other = fsinit(mkSS(str(tmp_path / "other")))
    sunpack(archive, other.settings)
    assert other.tags(rref) == store.tags(rref)
    got, want = other.notes(rref)[0], store.notes(rref)[0]
    assert (got.text, got.recorded, got.author) == (want.text, want.recorded, want.author)
    tag = other.catalogue.query("SELECT recorded, author FROM tags")[0]
    assert tuple(tag) == tuple(store.catalogue.query("SELECT recorded, author FROM tags")[0])
    # Collected there, then unpacked again: its notes are not repeated.
    other.gc()
    sunpack(archive, other.settings)
    assert [n.text for n in other.notes(rref)] == ["first"]


@pytest.mark.parametrize(
    "field, bad",
    [("tags", [{"name": "bad name", "value": "", "recorded": 1}]),
     ("tags", [{"name": "a", "value": 3, "recorded": 1}]),
     ("tags", [{"name": "a", "value": "", "recorded": float("nan")}]),
     ("tags", [{"name": "a", "value": "", "recorded": 1}] * 2),
     ("tags", {"a": ""}),
     ("notes", [{"text": "", "recorded": 1}]),
     ("notes", [{"text": "x", "recorded": -5}]),
     ("notes", ["x"])],
)  # fmt: skip
def test_unpack_refuses_invalid_tags_and_notes(tmp_path, store, sweep, S, field, bad):
    rref = sweep[0.1, 0]
    archive = str(tmp_path / "a.zip")
    spack([rref], archive, S)
    forged = str(tmp_path / "forged.zip")
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                manifest["realizations"][0][field] = bad
                data = json.dumps(manifest).encode()
            dst.writestr(info, data)
    other = fsinit(mkSS(str(tmp_path / "other")))
    with pytest.raises(ArchiveError, match=field):
        sunpack(forged, other.settings)
    assert other.catalogue.query("SELECT count(*) FROM realizations") == [(0,)]


@settings(max_examples=10, deadline=None)
@given(
    tags=st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-/]{0,20}", fullmatch=True),
        TEXT.filter(lambda t: len(t) <= MAX_TAG_VALUE),
        max_size=4,
    ),
    notes=st.lists(TEXT.filter(str.strip), max_size=3),
)
def test_any_tags_round_trip_through_pack_and_push(tmp_path_factory, tags, notes):
    pytest.importorskip("fsspec")
    root = str(tmp_path_factory.mktemp("tag-trip") / "store")
    fsinit(mkSS(root))
    store = Store.open(root)
    rref = realize1(instantiate(_train(0.7), S=store.settings))
    store.set_tags(rref, tags)
    for text in notes:
        store.add_note(rref, text)
    archive = str(tmp_path_factory.mktemp("archives") / "a.tar.gz")
    spack([rref], archive, store.settings)
    url = (tmp_path_factory.mktemp("remote") / "cache").as_uri()
    store.push(url, [rref])
    for how in ("unpack", "pull"):
        other = fsinit(mkSS(str(tmp_path_factory.mktemp(how) / uuid.uuid4().hex)))
        if how == "unpack":
            sunpack(archive, other.settings)
        else:
            other.pull(url, [rref])
        assert other.tags(rref) == tags
        assert [n.text for n in other.notes(rref)] == notes


def test_the_signature_covers_tags_and_notes(tmp_path, store, sweep, caplog):
    pytest.importorskip("cryptography")
    from lightstore.remote import generate_signing_key
    from lightstore.remote._layout import manifest_key, signed_manifest_key

    key = generate_signing_key("alice-1")
    rref = sweep[0.1, 0]
    store.set_tag(rref, "verdict", "good")
    store.add_note(rref, "signed note")
    folder = tmp_path / "remote"
    url = folder.as_uri()
    store.push(url, [rref], signing_key=key)

    def forge(body: bytes) -> bytes:
        doc = json.loads(body)
        doc["tags"] = [{"name": "verdict", "value": "best ever", "recorded": 1, "author": "x"}]
        doc["notes"] = [{"text": "trust me", "recorded": 1, "author": "x"}]
        return json.dumps(doc).encode()

    def rewrite(path, fn):
        p = folder / path
        os.chmod(p, 0o644)
        p.write_bytes(fn(p.read_bytes()))

    rewrite(manifest_key(rref), forge)
    bob = fsinit(mkSS(str(tmp_path / "bob")))
    bob.pull(url, [rref], trusted_keys=[key.public])
    assert bob.tags(rref) == {"verdict": "good"}
    assert [n.text for n in bob.notes(rref)] == ["signed note"]
    unchecked = fsinit(mkSS(str(tmp_path / "unchecked")))
    unchecked.pull(url, [rref], trusted_keys=[])  # no trusted keys: the hashes only
    assert unchecked.tags(rref) == {"verdict": "best ever"}
    rewrite(
        signed_manifest_key(rref, "alice-1"),
        lambda data: data.partition(b"\n")[0] + b"\n" + forge(data.partition(b"\n")[2]),
    )
    carol = fsinit(mkSS(str(tmp_path / "carol")))
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        carol.pull(url, [rref], trusted_keys=[key.public])
    assert carol.tags(rref) == {} and carol.notes(rref) == []
    assert "tags" in caplog.text and "notes" in caplog.text


def test_a_manifest_with_damaged_tags_still_pulls_the_rest(tmp_path, store, sweep):
    pytest.importorskip("fsspec")
    from lightstore.remote._layout import manifest_key

    rref = sweep[0.1, 0]
    store.set_tags(rref, {"a": "1", "b": "2"})
    store.set_metric(rref, "loss", 0.5, step=1)
    folder = tmp_path / "remote"
    store.push(folder.as_uri(), [rref])
    path = folder / manifest_key(rref)
    doc = json.loads(path.read_bytes())
    doc["tags"][0]["value"] = 7  # not text: that tag is dropped, not the realization
    doc["series"]["bad name"] = [[0, 1]]
    os.chmod(path, 0o644)
    path.write_bytes(json.dumps(doc).encode())
    other = fsinit(mkSS(str(tmp_path / "other")))
    other.pull(folder.as_uri(), [rref])
    assert other.tags(rref) == {"b": "2"}
    assert other.metric_series(rref) == {"loss": [(1, 0.5)]}


# -- processes -------------------------------------------------------------------------------

_CHILD = """
import sys
from lightstore import Store
root, rref, who = sys.argv[1], sys.argv[2], sys.argv[3]
store = Store.open(root)
for i in range(20):
    store.set_tag(rref, "last-writer", who)
    store.set_tag(rref, f"by-{who}", str(i))
    store.add_note(rref, f"{who} {i}")
    store.set_metric(rref, "progress", i, step=int(who) * 100 + i)
"""


def test_many_processes_annotate_one_run_at_once(store, sweep):
    rref = sweep[0.1, 0]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, store.root, rref, str(who)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in range(3)
    ]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    tags = store.tags(rref)
    assert tags["last-writer"] in {"0", "1", "2"}
    assert {k: v for k, v in tags.items() if k.startswith("by-")} == {
        "by-0": "19", "by-1": "19", "by-2": "19"
    }  # fmt: skip
    assert len(store.notes(rref)) == 60
    steps = [s for s, _ in store.metric_series(rref)["progress"]]
    assert len(steps) == 60 and store.metrics(rref)["progress"] == 19  # at step 219, the last
    assert store.verify(check_contents=True).ok
