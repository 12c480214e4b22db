"""History that outlives gc (schema version 2), forget, gc that asks, import provenance,
and SQLite errors mapped into lightstore's hierarchy."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers import assert_unchanged, fails, ok, snapshot

from lightstore import (
    LockTimeout,
    UnknownReferenceError,
    alldrefs,
    allrrefs,
    build_outpaths,
    build_wrapper,
    copy_closure,
    drefcfg,
    drefrrefs,
    fsinit,
    instantiate,
    linkrref,
    match_only,
    match_some,
    mkdrv,
    mkSS,
    realize1,
    rmref,
    selfref,
    spack,
    sunpack,
)
from lightstore.catalogue import connection, translate_error
from lightstore.facade import Store
from lightstore.foundation.errors import (
    CatalogueCorruptError,
    CatalogueError,
    DiskFullError,
    IntegrityError,
    QueryError,
)
from lightstore.maintenance import marking as gc_marking
from lightstore.query import derivations, history

RUNS: list[str] = []


def pipeline(tag: str = "x", lr: float = 0.1):
    """data -> train (two outputs from one build) -> evaluate; deterministic."""

    def write(text: str):
        def real(b):
            RUNS.append(text)
            time.sleep(0.02)
            for i, out in enumerate(build_outpaths(b)):
                with open(os.path.join(out, "f"), "w") as f:
                    f.write(f"{text}{i}")

        return real

    def stage(r):
        data = mkdrv(
            {"name": "data", "tag": tag, "out": [selfref, "f"]},
            match_only(),
            build_wrapper(write("data")),
            r,
        )
        train = mkdrv(
            {"name": "train", "lr": lr, "data": [data, "f"]},
            match_some(2),
            build_wrapper(write(f"train{lr}"), nouts=2),
            r,
        )
        return mkdrv(
            {"name": "evaluate", "train": train},
            match_only(),
            build_wrapper(write("eval")),
            r,
        )

    return stage


def sql(store: Store, query: str, params=()) -> list[tuple]:
    """Plain SQL on the catalogue file, as a user would run it (read-only)."""
    conn = sqlite3.connect(f"file:{store.catalogue.path}?mode=ro", uri=True)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


# -- history outlives gc ---------------------------------------------------------------------


def test_gc_keeps_the_record_and_hides_it_from_every_query(store):
    top = realize1(instantiate(pipeline(), S=store))
    before = history(store)
    assert len(before) == 4
    builds_before = sql(store, "SELECT count(*) FROM build_log")[0][0]
    report = store.gc()
    assert len(report.rrefs) == 4 and len(report.drefs) == 3
    # Gone for matching, dependencies and the Pylightnix queries...
    assert allrrefs(store) == [] and alldrefs(store) == []
    assert history(store) == [] and derivations(store) == []
    with pytest.raises(UnknownReferenceError):
        drefcfg(before[0]["dref"], store)
    # ...kept on record, through the API and plain SQL.
    kept = history(store, include_collected=True)
    assert {r["rref"] for r in kept} == {r["rref"] for r in before}
    assert {r["collected_reason"] for r in kept} == {"gc"}
    assert all(r["collected"] >= r["stopped"] for r in kept)
    assert sql(store, "SELECT count(*) FROM history WHERE collected IS NULL") == [(0,)]
    lrs = sql(store, "SELECT json_extract(config, '$.lr') FROM history WHERE name = 'train'")
    assert lrs == [(0.1,), (0.1,)]
    contexts = sql(store, "SELECT context FROM history WHERE rref = ?", (top,))
    assert json.loads(contexts[0][0])  # the context names the train realizations
    assert sql(store, "SELECT count(*) FROM build_log")[0][0] == builds_before
    collected_drv = derivations(store, include_collected=True)
    assert {d["name"] for d in collected_drv} == {"data", "train", "evaluate"}
    assert all(d["collected"] is not None for d in collected_drv)


def test_per_build_questions_count_a_multi_output_build_once(store):
    realize1(instantiate(pipeline(), S=store))
    train = [r for r in history(store) if r["name"] == "train"]
    assert len(train) == 2 and len({r["build_id"] for r in train}) == 1
    (row,) = sql(
        store,
        "SELECT outputs, present, duration, size FROM build_history WHERE name = 'train'",
    )
    outputs, present, duration, size = row
    assert (outputs, present) == (2, 2) and size == sum(r["size"] for r in train)
    # The per-output rows would count the build twice.
    assert sum(r["duration"] for r in train) > duration * 1.5
    store.gc()
    assert sql(store, "SELECT outputs, present FROM build_history WHERE name = 'train'") == [(2, 0)]


def test_collected_is_never_matched_and_a_rebuild_keeps_the_older_record(store):
    top = realize1(instantiate(pipeline(), S=store))
    store.gc()
    RUNS.clear()
    again = realize1(instantiate(pipeline(), S=store))
    assert again == top  # deterministic: the same RRef...
    assert RUNS == ["data", "train0.1", "eval"]  # ...built again, nothing matched from the record
    assert top in allrrefs(store)
    rows = [r for r in history(store, include_collected=True) if r["rref"] == top]
    assert sorted(r["collected_reason"] or "present" for r in rows) == ["gc", "present"]
    old, new = sorted(rows, key=lambda r: r["stopped"])
    assert old["collected"] is not None and new["collected"] is None
    assert old["build_id"] != new["build_id"]
    assert len(drefrrefs(rows[0]["dref"], store)) == 1
    # The derivation is present again, keeping when it was first recorded.
    (d,) = [d for d in derivations(store, include_collected=True) if d["name"] == "evaluate"]
    assert d["collected"] is None
    assert d["created"] <= old["started"]
    assert store.verify(check_contents=True).ok


def test_rmref_and_repair_say_why(store):
    top = realize1(instantiate(pipeline(), S=store))
    rmref(top, store)
    (row,) = [r for r in history(store, include_collected=True) if r["rref"] == top]
    assert row["collected_reason"] == "rmref"
    # A realization whose folder vanished: verify --repair drops it, on record.
    data = next(r["rref"] for r in history(store) if r["name"] == "data")
    train = [r["rref"] for r in history(store) if r["name"] == "train"]
    for r in train:
        rmref(r, store)
    folder = store.rref_path(data)
    os.chmod(folder, 0o755)
    subprocess.run(["rm", "-rf", folder], check=True)
    report = store.verify(repair=True)
    assert any(p.repaired for p in report.problems)
    reasons = {r["rref"]: r["collected_reason"] for r in history(store, include_collected=True)}
    assert reasons[data] == "repair"


def test_a_collected_object_cannot_be_linked_or_pinned(store, tmp_path):
    top = realize1(instantiate(pipeline(), S=store))
    store.gc()
    with pytest.raises(UnknownReferenceError):
        linkrref(top, destdir=str(tmp_path), S=store)
    assert not os.path.lexists(tmp_path / f"result-{top.rsplit('-', 1)[1]}")
    with pytest.raises(UnknownReferenceError):
        store.pin("p", top)


# -- forget ------------------------------------------------------------------------------------


def test_forget_by_name_age_and_everything(store):
    realize1(instantiate(pipeline("a"), S=store))
    store.gc()
    cutoff = time.time()
    time.sleep(0.01)
    realize1(instantiate(pipeline("b", lr=0.2), S=store))
    store.gc()
    all_records = history(store, include_collected=True)
    assert len(all_records) == 8
    with pytest.raises(QueryError):
        store.forget()
    dry = store.forget(name="evaluate", dry_run=True)
    assert (dry.realizations, dry.derivations, dry.dry_run) == (2, 2, True)
    assert len(history(store, include_collected=True)) == 8
    assert store.forget(name="eval*").realizations == 2
    old = store.forget(before=cutoff)
    assert old.realizations == 3 and old.derivations == 2  # data-a, train 0.1
    names = sorted(r["name"] for r in history(store, include_collected=True))
    assert names == ["data", "train", "train"]
    rest = store.forget(everything=True)
    assert rest.realizations == 3 and rest.builds > 0
    assert history(store, include_collected=True) == []
    assert sql(store, "SELECT count(*) FROM builds") == [(0,)]


def test_forget_never_touches_what_is_present(store):
    top = realize1(instantiate(pipeline(), S=store))
    store.pin("keep", top)
    assert store.forget(everything=True).realizations == 0
    assert len(history(store)) == 4 and top in allrrefs(store)


# -- import provenance -------------------------------------------------------------------------


def test_unpack_and_copy_keep_the_builders_provenance(tmp_path):
    alice = fsinit(mkSS(str(tmp_path / "alice")))
    top = realize1(instantiate(pipeline(), S=alice))
    built = {r["rref"]: r for r in history(alice)}
    archive = str(tmp_path / "a.tar.gz")
    spack([top], archive, S=alice)
    # Unpack in another process, so the importer's pid differs from the builder's.
    bob_root = str(tmp_path / "bob")
    fsinit(mkSS(bob_root))
    code = (
        "import sys; from lightstore import sunpack, mkSS; "
        "sunpack(sys.argv[1], S=mkSS(sys.argv[2])); print(__import__('os').getpid())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, archive, bob_root],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    importer = int(out.stdout.strip())
    bob = Store.open(bob_root)
    for row in history(bob):
        src = built[row["rref"]]
        assert (row["host"], row["pid"]) == (src["host"], src["pid"])
        assert (row["started"], row["stopped"]) == (src["started"], src["stopped"])
        assert row["imported"] is not None and row["import_host"] == socket.gethostname()
        assert row["build_id"] is None
    assert {p for (p,) in sql(bob, "SELECT import_pid FROM realizations")} == {importer}
    # copy_closure likewise.
    carol = fsinit(mkSS(str(tmp_path / "carol")))
    copy_closure([top], alice, carol)
    for row in history(carol):
        assert row["pid"] == built[row["rref"]]["pid"] and row["imported"] is not None
    # An archive unpacked twice adds nothing and keeps the first import's record.
    first = sql(bob, "SELECT rref, imported FROM realizations ORDER BY rref")
    sunpack(archive, S=bob)
    assert sql(bob, "SELECT rref, imported FROM realizations ORDER BY rref") == first


def test_keep_since_counts_the_later_of_built_and_imported(tmp_path):
    month = 30 * 86400
    alice = fsinit(mkSS(str(tmp_path / "alice")))
    bob = fsinit(mkSS(str(tmp_path / "bob")))
    imported = realize1(instantiate(pipeline("alice"), S=alice))
    # Built a month ago (the catalogue is where build times are recorded).
    with Store.open(alice.root).catalogue.write() as conn:
        conn.execute(
            "UPDATE realizations SET build_started = build_started - ?, "
            "build_stopped = build_stopped - ?",
            (month, month),
        )
    archive = str(tmp_path / "a.zip")
    spack([imported], archive, S=alice)
    sunpack(archive, S=bob)
    own = realize1(instantiate(pipeline("bob"), S=bob))
    store = Store.open(bob.root)
    with store.catalogue.write() as conn:
        conn.execute(
            "UPDATE realizations SET build_started = build_started - ?, "
            "build_stopped = build_stopped - ? WHERE imported IS NULL",
            (month, month),
        )
    week_ago = time.time() - 7 * 86400
    assert all(r["stopped"] < week_ago for r in history(store))  # every build is old
    came = {r for (r,) in sql(store, "SELECT rref FROM realizations WHERE imported IS NOT NULL")}
    assert imported in came and own not in came
    for mode in ("sparse", "dense"):
        dead = gc_marking._mark(store, [], [], True, "7d", mode)[1]
        assert set(dead).isdisjoint(came), mode
    report = store.gc(keep_since="7d")
    assert own in report.rrefs and not set(report.rrefs) & came
    assert set(allrrefs(bob)) == came
    assert store.verify().ok


# -- SQLite errors -----------------------------------------------------------------------------


def test_a_busy_catalogue_is_a_lock_timeout(store, monkeypatch):
    monkeypatch.setattr(connection, "BUSY_TIMEOUT_S", 0.2)
    other = Store(store.root)  # a fresh instance: its own connection, with the short timeout
    blocker = sqlite3.connect(store.catalogue.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(LockTimeout, match="recording derivations"):
            other.record_derivations(
                [(other.derivation_of(c), c) for c in [__import__("lightstore").mkconfig({"k": 1})]]
            )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_a_damaged_catalogue_names_reindex(tmp_path):
    root = str(tmp_path / "s")
    fsinit(mkSS(root))
    Store.forget_instances()
    path = os.path.join(root, "catalogue.sqlite")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    with open(path, "r+b") as f:
        f.write(b"this is no longer a sqlite database header" * 4)
    with pytest.raises(CatalogueCorruptError, match=r"run `lightstore reindex`"):
        Store.open(root)
    Store.forget_instances()


def test_every_sqlite_error_becomes_ours():
    cases = {
        sqlite3.OperationalError("database is locked"): LockTimeout,
        sqlite3.DatabaseError("database disk image is malformed"): CatalogueCorruptError,
        sqlite3.IntegrityError("FOREIGN KEY constraint failed"): IntegrityError,
        sqlite3.OperationalError("database or disk is full"): DiskFullError,
        sqlite3.OperationalError("disk I/O error"): CatalogueError,
        sqlite3.ProgrammingError("Cannot operate on a closed database."): CatalogueError,
    }
    for error, kind in cases.items():
        mapped = translate_error(error, "/s/catalogue.sqlite", "doing something")
        assert isinstance(mapped, kind) and not isinstance(mapped, sqlite3.Error), error
        assert "doing something" in str(mapped)


# -- gc on the command line --------------------------------------------------------------------


def _pipeline_root(store) -> str:
    realize1(instantiate(pipeline("keep"), S=store))
    realize1(instantiate(pipeline("drop", lr=0.3), S=store))
    return store.root


def test_cli_gc_refuses_without_a_terminal_and_yes(store):
    root = _pipeline_root(store)
    before = snapshot(store)
    result = fails(5, root, "gc")
    assert "--yes" in result.output and "terminal" in result.output
    assert_unchanged(store, before)  # nothing went
    assert len(allrrefs(store)) == 8
    assert "would remove 8 realization(s)" in ok(root, "gc", "--dry-run")
    ok(root, "gc", "--yes")
    assert allrrefs(store) == []


def test_cli_gc_keep_since_and_history_all(store):
    realize1(instantiate(pipeline("old"), S=store))
    cutoff = time.time()
    time.sleep(0.05)
    realize1(instantiate(pipeline("new", lr=0.5), S=store))
    root = store.root
    # An age works too: nothing is older than a day.
    assert "would remove 0 realization(s)" in ok(root, "gc", "--dry-run", "--keep-since", "1d")
    out = ok(root, "gc", "--yes", "--keep-since", str(cutoff))
    assert "removed 4 realization(s)" in out, out
    assert {r["name"] for r in history(store)} == {"data", "train", "evaluate"}
    assert len(history(store)) == 4
    present = ok(root, "history", "--json")
    assert len(json.loads(present)) == 4
    everything = json.loads(ok(root, "history", "--all", "--json"))
    assert len(everything) == 8
    assert {r["collected_reason"] for r in everything} == {None, "gc"}
    table = ok(root, "history", "--all")
    assert "collected" in table and "present" in table
    assert len(ok(root, "ls", "-r", "-q").split()) == 4
    assert len(ok(root, "ls", "-r", "--all", "-q").split()) == 8
    assert "collected" in ok(root, "ls", "--all")
    assert "forgot 4 realization record(s)" in ok(root, "forget", "--all-collected")
    assert len(json.loads(ok(root, "history", "--all", "--json"))) == 4


def _converse(argv: list[str], answer: bytes, timeout: float = 60) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal, answer its question, return (status, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command on the terminal
        os.execv(sys.executable, [sys.executable, "-m", "lightstore", *argv])
    out = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
                if not answered and b"Remove them?" in out:
                    os.write(fd, answer)
                    answered = True
            else:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), out.decode(errors="replace")
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_cli_gc_asks_on_a_terminal(store, monkeypatch):
    root = _pipeline_root(store)
    monkeypatch.setenv("PYTHONPATH", os.getcwd())
    before = snapshot(store)
    status, out = _converse(["--root", root, "gc"], b"n\n")
    assert status == 5, out
    assert "would remove 8 realization(s)" in out and "largest:" in out and "bytes" in out
    assert "nothing was removed" in out
    assert_unchanged(store, before)
    assert len(allrrefs(store)) == 8
    status, out = _converse(["--root", root, "gc"], b"y\n")
    assert status == 0, out
    assert "removed 8 realization(s)" in out
    assert allrrefs(store) == []


def test_cli_reports_a_damaged_catalogue_without_a_traceback(store):
    top = realize1(instantiate(pipeline(), S=store))
    store.catalogue.shrink()  # fold the WAL into the file
    Store.forget_instances()
    path = store.catalogue.path
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # keep the header page, damage the rest
        f.seek(4096)
        f.write(b"\xff\x13" * ((size - 4096) // 2))
    for args in (["history"], ["show", top], ["ls", "-r"], ["gc", "--dry-run"]):
        result = fails(5, store.root, *args)
        assert "reindex" in result.output and "internal error" not in result.output, (
            args,
            result.output,
        )
    Store.forget_instances()


def test_times_given_as_text_are_parsed_never_compared_as_text(store):
    realize1(instantiate(pipeline(), S=store))
    # As text, '1d' would sort after every number in SQL and keep nothing.
    assert store.gc(dry_run=True, keep_since="1d").rrefs == []
    assert store.gc(keep_since="1d").rrefs == []
    store.gc()
    assert store.forget(before="30d").realizations == 0  # collected just now
    for bad in (object(), True, float("nan"), "next tuesday"):
        with pytest.raises(QueryError):
            store.forget(before=bad)
        with pytest.raises(QueryError):
            store.gc(dry_run=True, keep_since=bad)
    with pytest.raises(QueryError):
        store.forget(name=3)
    assert len(history(store, include_collected=True)) == 4
