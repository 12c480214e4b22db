"""Finding results on a remote cache: pull and push by selector, hash prefix and metric
order, `remote-ls` with fields and metrics, and build logs that travel with push, pull,
pack and unpack (signed when signatures are required)."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from helpers import REPO, assert_unchanged, child_env, fails, ok, run, snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from lightstore import (
    build_metric,
    build_outpath,
    build_wrapper,
    instantiate,
    match_only,
    mkconfig,
    mkdrv,
    realize1,
)
from lightstore.catalogue import register_functions
from lightstore.facade import Store, find_on_remote
from lightstore.foundation.errors import (
    AmbiguousReferenceError,
    RemoteIntegrityError,
    UnknownReferenceError,
)
from lightstore.query.among import select_among, sort_runs
from lightstore.query.filters import ConfigCondition
from lightstore.remote import generate_signing_key
from lightstore.remote._fs import Remote
from lightstore.remote._layout import blob_key, manifest_key, signed_manifest_key

LRS = (0.1, 0.01, 0.001)


def loss_of(lr: float) -> float:
    return abs(lr - 0.01) * 10 + 0.1  # lowest at lr=0.01


def train(lr: float):
    def make(r):
        def real(b):
            print(f"training with lr={lr}")
            with open(os.path.join(build_outpath(b), "model.txt"), "w") as f:
                f.write(f"{lr}\n")
            build_metric(b, "loss", loss_of(lr))

        return mkdrv(mkconfig({"name": "train", "lr": lr}), match_only(), build_wrapper(real), r)

    return make


def sweep(store: Store) -> dict[float, str]:
    """Alice's sweep: a train stage over three learning rates, each printing and
    recording a loss."""
    return {lr: realize1(instantiate(train(lr), S=store.settings)) for lr in LRS}


@pytest.fixture
def alice(tmp_path) -> Store:
    return Store.open(str(tmp_path / "alice"), create=True)


@pytest.fixture
def bob(tmp_path) -> Store:
    return Store.open(str(tmp_path / "bob"), create=True)


@pytest.fixture(params=["file", "s3"])
def url(request, tmp_path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/remote"
    return request.getfixturevalue("s3_url")


def test_the_best_run_on_the_remote_pulled_by_selector(alice, bob, url):
    runs = sweep(alice)
    ok(alice.root, "push", url, "train@all")  # a selector, evaluated in alice's store
    out = ok(bob.root, "pull", url, "train@all", "--sort", "loss", "--limit", "1")
    assert out.split() == [runs[0.01]]
    assert bob.catalogue.all_rrefs() == [runs[0.01]]
    # Its build log came along: `log` prints what alice's build printed.
    result = run(bob.root, "log", "train@latest")
    assert result.exit_code == 0, result.output
    assert result.stdout == "training with lr=0.01\n"
    assert "imported" in result.stderr
    # Descending, and a selector with a condition; a repeat is pulled once.
    out = ok(bob.root, "pull", url, "train@all", "train@all", "--sort", "-loss", "--limit", "1")
    assert out.split() == [runs[0.1]]
    out = ok(bob.root, "pull", url, "train[lr<0.01]@latest")
    assert out.split() == [runs[0.001]]
    # What is already here is said so, not pulled again.
    assert ok(bob.root, "pull", url, "train@lr=0.01").strip() == f"already present: {runs[0.01]}"


def test_remote_ls_shows_varying_fields_and_metrics(alice, tmp_path):
    url = f"file://{tmp_path}/remote"
    runs = sweep(alice)
    alice.push(url, ["train@all"])
    rows = json.loads(
        ok(
            None,
            "remote-ls",
            url,
            "--name",
            "tr*",
            "--varying",
            "-m",
            "loss",
            "--sort",
            "loss",
            "--json",
        )
    )
    assert [r["rref"] for r in rows] == [runs[0.01], runs[0.001], runs[0.1]]
    assert [r["lr"] for r in rows] == [0.01, 0.001, 0.1]
    assert [r["loss"] for r in rows] == [pytest.approx(loss_of(x)) for x in (0.01, 0.001, 0.1)]
    assert all(r["stopped"] is not None and r["name"] == "train" for r in rows)
    table = ok(None, "remote-ls", url, "-s", "train[lr>=0.01]@all", "-f", "lr", "-m", "*")
    assert "lr" in table and "loss" in table and runs[0.1] in table and runs[0.001] not in table
    # Numbers as history shows them (6 significant digits).
    assert f" {loss_of(0.1):.6g}" in table and repr(loss_of(0.1)) not in table
    csv = ok(None, "remote-ls", url, "--varying", "--limit", "2", "--sort", "-lr", "--csv")
    assert csv.splitlines()[0].split(",")[-1] == "lr" and runs[0.1] in csv.splitlines()[1]
    assert len(csv.splitlines()) == 3 and runs[0.001] not in csv
    # The index alone, as before, when nothing needs the manifests.
    plain = json.loads(ok(None, "remote-ls", url, "--json"))
    assert sorted(r["rref"] for r in plain) == sorted(runs.values())
    assert set(plain[0]) == {"name", "rref", "dref", "context"}


def test_pull_by_hash_prefix_name_and_their_errors(alice, bob, tmp_path):
    url = f"file://{tmp_path}/remote"
    runs = sweep(alice)
    alice.push(url, ["train@all"])
    before = snapshot(bob)
    # A name several derivations have: ambiguous, nothing pulled (exit 2).
    result = fails(2, bob.root, "pull", url, "train")
    assert "ambiguous" in result.output and "train@latest" in result.output
    with pytest.raises(AmbiguousReferenceError):
        bob.pull(url, ["train"])
    # Nothing matches: exit 3, saying which values exist.
    result = fails(3, bob.root, "pull", url, "train[lr=5]@all")
    assert "values of lr there: 0.001, 0.01, 0.1" in result.output
    fails(3, bob.root, "pull", url, "eval@latest")
    fails(3, bob.root, "pull", url, "ffff0000")
    assert_unchanged(bob, before)
    # A prefix of 6 hex digits of a run's hash, unique on the remote.
    prefix = runs[0.1][5:11]
    assert ok(bob.root, "pull", url, prefix).split() == [runs[0.1]]
    # A prefix of a derivation's hash: its runs.
    dprefix = runs[0.001].split("-")[1][:8]
    assert bob.pull(url, [dprefix]) == [runs[0.001]]


def _run(rref: str, lr: Any, stopped: float, loss: float | None = None) -> Any:
    return FakeRun(
        rref,
        "dref:" + rref.split("-", 1)[1],
        "train",
        {"name": "train", "lr": lr},
        stopped - 1,
        stopped,
        {} if loss is None else {"loss": loss},
    )


@dataclass(frozen=True)
class FakeRun:
    rref: str
    dref: str
    name: str
    config: dict[str, Any] | None
    build_started: float | None
    build_stopped: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)


def test_ambiguous_prefixes_and_metric_order_among_runs():
    a = _run("rref:" + "ab12" + "0" * 28 + "-" + "1" * 32 + "-train", 0.1, 10, 2.0)
    b = _run("rref:" + "ab12" + "f" * 28 + "-" + "2" * 32 + "-train", 0.2, 20, float("nan"))
    c = _run("rref:" + "cd34" + "0" * 28 + "-" + "3" * 32 + "-train", 0.3, 30, 1.0)
    d = _run("rref:" + "ef56" + "0" * 28 + "-" + "4" * 32 + "-train", 0.4, 40)
    runs = [a, b, c, d]
    with pytest.raises(AmbiguousReferenceError) as e:
        select_among("ab12", runs, "on the remote x")
    assert a.rref in str(e.value) and b.rref in str(e.value)
    assert select_among("ab120", runs, "x") == [a]
    assert select_among("ab12-2222", runs, "x") == [b]
    assert select_among("train@latest", runs, "x") == [d]
    assert select_among("train[lr>0.15]@all", runs, "x") == [b, c, d]
    # Lowest loss first; NaN and missing last, in either direction (as history --sort).
    assert sort_runs(runs, "loss") == [c, a, b, d]
    assert sort_runs(runs, "-loss") == [a, c, b, d]
    assert sort_runs(runs, "-lr") == [d, c, b, a]
    with pytest.raises(UnknownReferenceError):
        select_among("train@lr=7", runs, "x")


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False, width=64)
    | st.sampled_from(["a", "b", "0.1", "1", "", "é", "true"]),
    lambda inner: st.lists(inner, max_size=2),
    max_leaves=3,
)


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(st.just("missing"), _json_values),
    target=_json_values,
    op=st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
)
def test_a_condition_holds_on_a_config_as_sqlite_decides_it(value, target, op):
    if target is None and op not in ("=", "!="):
        return
    config: dict[str, Any] = {"name": "x"} if value == "missing" else {"name": "x", "f": value}
    cond = ConfigCondition("f", op, target)
    conn = sqlite3.connect(":memory:")
    register_functions(conn)
    term, params = cond.sql("config")
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    want = conn.execute(f"SELECT {term} FROM (SELECT ? AS config)", [*params, text]).fetchone()
    assert cond.holds(config) == bool(want[0]), (config, cond, want)


def test_a_decimal_condition_compares_exactly():
    assert ConfigCondition("lr", "=", Decimal("0.01")).holds({"lr": 0.01})
    assert not ConfigCondition("lr", "<", Decimal("0.01")).holds({"lr": 0.01})
    assert ConfigCondition("n", ">", 2**64).holds({"n": 2**64 + 1})


def test_push_takes_selectors_in_the_python_api(alice, tmp_path):
    url = f"file://{tmp_path}/remote"
    runs = sweep(alice)
    report = alice.push(url, ["train[lr<0.01]@all", "train@lr=0.1"])
    assert sorted(report.realizations) == sorted([runs[0.001], runs[0.1]])
    assert find_on_remote(url, ["train@all"], sort="loss") == [runs[0.001], runs[0.1]]


def _signed_push(alice: Store, url: str, tmp_path) -> tuple[Any, dict[float, str]]:
    runs = sweep(alice)
    key = generate_signing_key("alice")
    alice.push(url, ["train@all"], signing_key=key)
    return key, runs


def _rewrite_signed(remote: Remote, rref: str, change) -> None:
    """Change what the signed (and plain) manifests of `rref` say, keeping the signature."""
    for key in (manifest_key(rref), signed_manifest_key(rref, "alice")):
        data = remote.read(key) or b""
        sig, nl, body = data.partition(b"\n") if key.startswith("signed") else (b"", b"", data)
        doc = json.loads(body)
        change(doc)
        body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        remote.write_bytes(key, sig + nl + body)


def test_a_tampered_metric_is_not_believed_when_signatures_are_required(alice, bob, tmp_path):
    url = f"file://{tmp_path}/remote"
    key, runs = _signed_push(alice, url, tmp_path)
    remote = Remote(url)
    # Someone makes the worst run look best on the remote.
    _rewrite_signed(remote, runs[0.1], lambda doc: doc.update(metrics={"loss": 0.0}))
    # Without trust, the lie is believed...
    assert find_on_remote(url, ["train@all"], sort="loss", limit=1, trusted_keys=[]) == [runs[0.1]]
    # ...with alice's key required it is not: its metrics are dropped (its signature of
    # the RRef alone still holds), and the best signed run is pulled.
    out = ok(
        bob.root,
        "pull",
        url,
        "train@all",
        "--sort",
        "loss",
        "--limit",
        "1",
        "--trusted-key",
        key.public,
    )
    assert out.split() == [runs[0.01]]


def test_a_tampered_log_is_refused_or_dropped_when_signatures_are_required(alice, bob, tmp_path):
    url = f"file://{tmp_path}/remote"
    key, runs = _signed_push(alice, url, tmp_path)
    remote = Remote(url)
    # The log blob of one run altered: the pull of that run is refused, nothing added.
    doc = json.loads(remote.read(manifest_key(runs[0.1])) or b"")
    path = remote.path(blob_key(doc["log"]["blake3"]))
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        f.write("training with lr=0.0\n")  # the same size
    before = snapshot(bob)
    with pytest.raises(RemoteIntegrityError, match="build log"):
        bob.pull(url, [runs[0.1]], trusted_keys=[key.public])
    assert_unchanged(bob, before)
    # The log of another named in its manifest instead: the signed manifest no longer
    # verifies; the run is taken on its RRef signature without its log, said so.
    other = json.loads(remote.read(manifest_key(runs[0.001])) or b"")["log"]
    _rewrite_signed(remote, runs[0.01], lambda d: d.update(log=other))
    assert bob.pull(url, [runs[0.01]], trusted_keys=[key.public]) == [runs[0.01]]
    result = run(bob.root, "log", runs[0.01])
    assert result.exit_code == 3 and "lr=0.001" not in result.output
    # Untouched: its log comes along.
    bob.pull(url, [runs[0.001]], trusted_keys=[key.public])
    assert ok(bob.root, "log", runs[0.001]) == "training with lr=0.001\n"


def test_the_log_travels_with_pack_and_unpack(alice, bob, tmp_path):
    runs = sweep(alice)
    archive = str(tmp_path / "best.tar.gz")
    ok(alice.root, "pack", archive, runs[0.01])
    ok(bob.root, "unpack", archive)
    assert ok(bob.root, "log", runs[0.01]) == "training with lr=0.01\n"
    # A closure without logs makes an archive older lightstores read (version 1).
    for log in os.listdir(os.path.join(alice.root, "logs")):
        os.remove(os.path.join(alice.root, "logs", log))
    plain = str(tmp_path / "plain.tar")
    ok(alice.root, "pack", plain, runs[0.1])
    with tarfile.open(plain) as t:
        manifest = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest["version"] == 1 and not any(n.startswith("logs") for n in t.getnames())
    ok(bob.root, "unpack", plain)
    assert fails(3, bob.root, "log", runs[0.1]).stdout == ""


def test_an_imported_log_lives_as_long_as_the_record_of_its_run(alice, bob, tmp_path):
    url = f"file://{tmp_path}/remote"
    runs = sweep(alice)
    alice.push(url, [runs[0.01]])
    bob.pull(url, ["train@latest"])
    path = bob.imported_log_path(runs[0.01])
    assert os.path.isfile(path)
    bob.gc()  # the run goes; its record, and so its log, stays
    assert bob.catalogue.all_rrefs() == [] and os.path.isfile(path)
    assert ok(bob.root, "log", runs[0.01]) == "training with lr=0.01\n"
    bob.forget(everything=True)
    assert not os.path.exists(path)


HOSTILE_OUTPUT = "ok\x1b]52;c;cHduZWQ=\x07\x1b[2Jhidden\ttab\n"


def _log_on_a_terminal(root: str, ref: str) -> bytes:
    """What `lightstore log REF` prints to stdout when stdout is a terminal (a pty)."""
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lightstore", "--root", root, "log", ref],
            stdout=follower,
            stderr=subprocess.DEVNULL,
            env=child_env(),
            cwd=REPO,
            timeout=60,
            check=True,
        )
        assert done.returncode == 0
        os.close(follower)
        follower = -1
        out = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the pty has nothing more
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


def test_a_log_from_elsewhere_is_shown_escaped_on_a_terminal(alice, bob, tmp_path):
    def real(b):
        print(HOSTILE_OUTPUT, end="")
        open(os.path.join(build_outpath(b), "x"), "w").close()

    rref = realize1(
        instantiate(
            lambda r: mkdrv(mkconfig({"name": "loud"}), match_only(), build_wrapper(real), r),
            S=alice.settings,
        )
    )
    archive = str(tmp_path / "loud.tar")
    ok(alice.root, "pack", archive, rref)
    ok(bob.root, "unpack", archive)
    shown = _log_on_a_terminal(bob.root, rref)
    assert b"\x1b" not in shown and b"\x07" not in shown
    assert b"ok\\x1b]52;c;cHduZWQ=\\x07\\x1b[2Jhidden\\ttab" in shown
    # Piped, it stays exact; a log built here is printed as it is on a terminal too.
    assert run(bob.root, "log", rref).stdout == HOSTILE_OUTPUT
    assert b"\x1b]52" in _log_on_a_terminal(alice.root, rref)
