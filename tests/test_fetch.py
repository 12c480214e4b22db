"""fetchurl and fetchlocal, built-in stages, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import sys
import tarfile
import threading
import zipfile
from functools import partial

import pytest

import lightstore.compat.fetch as compat_fetch
import lightstore.stages.fetch as fetch_module
from lightstore import (
    ArchiveError,
    BuildError,
    ChecksumError,
    InvalidConfigError,
    allrrefs,
    cfgdict,
    drefcfg,
    fetchlocal,
    fetchurl,
    fetchurl2,
    instantiate,
    mklens,
    realize1,
)
from lightstore.stages.download import download_with, wget_command


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cause(e: BaseException) -> BaseException:
    """The original error under BuildError wrappers."""
    while isinstance(e, BuildError) and e.cause is not None:
        e = e.cause
    return e


class Handler(http.server.SimpleHTTPRequestHandler):
    hits: list[str]

    def do_GET(self):
        self.hits.append(self.path)
        if self.path == "/short":  # announces more than it sends
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only this")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def www(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    return folder


@pytest.fixture
def server(www):
    """Serves `www` on 127.0.0.1 (a missing file is a 404); yields (base URL, hits)."""
    hits: list[str] = []
    handler = partial(type("H", (Handler,), {"hits": hits}), directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def make_tar_gz(path, files: dict[str, bytes]) -> bytes:
    with tarfile.open(path, "w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            t.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def make_zip(path, files: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path.read_bytes()


FILES = {"pkg/README": b"read me\n", "pkg/bin/run.sh": b"#!/bin/sh\n", "top.txt": b"top"}


# -- fetchurl ------------------------------------------------------------------------


def test_fetchurl_downloads_and_checks(S, www, server):
    base, hits = server
    data = os.urandom(3000)
    (www / "data.bin").write_bytes(data)

    def stage(r):
        return fetchurl(r, f"{base}/data.bin", sha(data))

    rref = realize1(instantiate(stage, S=S))
    with open(mklens(rref, S=S).out_path.syspath, "rb") as f:
        assert f.read() == data
    assert sorted(os.listdir(os.path.dirname(mklens(rref, S=S).out_path.syspath))) == [
        "context.json",
        "data.bin",
    ]
    cfg = cfgdict(drefcfg(mklens(rref, S=S).dref, S))
    assert (
        cfg["sha256"] == sha(data) and cfg["filename"] == "data.bin" and cfg["name"] == "fetchurl"
    )
    assert realize1(instantiate(stage, S=S)) == rref  # cached: no second download
    assert hits == ["/data.bin"]
    assert os.listdir(S.tmpdir) == []


def test_fetchurl_name_filename_and_extra_config(S, www, server):
    base, _ = server
    (www / "x").write_bytes(b"x")
    rref = realize1(
        instantiate(
            lambda r: fetchurl(
                r, f"{base}/x?v=1", sha(b"x"), name="thing", filename="x.txt", note="n"
            ),
            S=S,
        )
    )
    assert rref.endswith("-thing")
    assert mklens(rref, S=S).out_path.syspath.endswith("/x.txt")
    assert mklens(rref, S=S).note.val == "n"


def test_fetchurl_wrong_checksum_stores_nothing(store, S, www, server):
    base, _ = server
    (www / "data.bin").write_bytes(b"actual data")
    with pytest.raises((ChecksumError, BuildError)) as e:
        realize1(instantiate(lambda r: fetchurl(r, f"{base}/data.bin", sha(b"other data")), S=S))
    err = cause(e.value)
    assert isinstance(err, ChecksumError)
    assert err.expected == sha(b"other data") and err.actual == sha(b"actual data")
    assert "sha256" in str(err)
    assert allrrefs(S) == []
    assert os.listdir(S.tmpdir) == []
    assert store.catalogue.column("SELECT status FROM builds") == ["failed"]


def test_fetchurl_http_404(S, server):
    base, _ = server
    with pytest.raises(BuildError, match="404"):
        realize1(instantiate(lambda r: fetchurl(r, f"{base}/missing.bin", "0" * 64), S=S))
    assert allrrefs(S) == []
    assert os.listdir(S.tmpdir) == []


def test_fetchurl_cut_short(S, server):
    base, _ = server
    with pytest.raises(BuildError, match=r"short|IncompleteRead|announced"):
        realize1(instantiate(lambda r: fetchurl(r, f"{base}/short", "0" * 64, filename="s"), S=S))
    assert allrrefs(S) == []


def test_fetchurl_unreachable(S):
    with pytest.raises(BuildError, match="cannot download"):
        realize1(
            instantiate(lambda r: fetchurl(r, "http://127.0.0.1:9/x", "0" * 64, timeout=5), S=S)
        )
    assert allrrefs(S) == []


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_fetchurl_unpack(S, www, server, kind):
    base, _ = server
    archive = www / f"pkg.{kind}"
    data = make_tar_gz(archive, FILES) if kind == "tar.gz" else make_zip(archive, FILES)
    rref = realize1(
        instantiate(lambda r: fetchurl(r, f"{base}/pkg.{kind}", sha(data), unpack=True), S=S)
    )
    out = mklens(rref, S=S).out_path.syspath
    assert sorted(os.listdir(out)) == ["context.json", "pkg", "top.txt"]  # the archive is not kept
    for name, content in FILES.items():
        with open(os.path.join(out, name), "rb") as f:
            assert f.read() == content
    if kind == "tar.gz":
        assert os.access(os.path.join(out, "pkg", "bin", "run.sh"), os.X_OK)


def test_fetchurl_unpack_refuses_hostile_archive(S, www, server, tmp_path):
    base, _ = server
    with tarfile.open(www / "evil.tar", "w") as t:
        info = tarfile.TarInfo("../../escaped")
        info.size = 1
        t.addfile(info, io.BytesIO(b"x"))
    data = (www / "evil.tar").read_bytes()
    with pytest.raises((ArchiveError, BuildError)) as e:
        realize1(
            instantiate(lambda r: fetchurl(r, f"{base}/evil.tar", sha(data), unpack=True), S=S)
        )
    assert isinstance(cause(e.value), ArchiveError)
    assert allrrefs(S) == []
    assert not os.path.exists(os.path.join(S.tmpdir, "..", "escaped"))


def test_fetchurl_unpack_size_limit(S, www, server):
    base, _ = server
    data = make_zip(www / "big.zip", {"zeros": bytes(200_000)})
    with pytest.raises((ArchiveError, BuildError)) as e:
        realize1(
            instantiate(
                lambda r: fetchurl(r, f"{base}/big.zip", sha(data), unpack=True, max_bytes=100_000),
                S=S,
            )
        )
    assert "max_bytes" in str(cause(e.value))


def test_fetchurl_file_url(S, tmp_path):
    path = tmp_path / "local.txt"
    path.write_bytes(b"local")
    rref = realize1(instantiate(lambda r: fetchurl(r, path.as_uri(), sha(b"local")), S=S))
    assert mklens(rref, S=S).out_path.contents == "local"


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("ftp://host/x", "0" * 64), {}, "http, https or file"),
        (("http://host/x", "abc"), {}, "64 hexadecimal"),
        (("http://host/", "0" * 64), {}, "filename="),
        (("http://host/x", "0" * 64), {"filename": "a/b"}, "plain file name"),
        (("http://host/x.rar", "0" * 64), {"unpack": True}, "unknown archive type"),
        (("http://host/x", "0" * 64), {"name": "bad name"}, "invalid name"),
        (("http://host/x", "0" * 64), {"out_path": 1}, "out_path"),
    ],
)
def test_fetchurl_bad_arguments_fail_at_once(S, args, kwargs, match):
    with pytest.raises(InvalidConfigError, match=match):
        instantiate(lambda r: fetchurl(r, *args, **kwargs), S=S)


# -- fetchlocal --------------------------------------------------------------------------


def test_fetchlocal(S, tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b\n")
    rref = realize1(instantiate(lambda r: fetchlocal(r, str(path), sha(b"a,b\n")), S=S))
    assert mklens(rref, S=S).out_path.contents == "a,b\n"
    assert rref.endswith("-fetchlocal")
    assert mklens(rref, S=S).path.val == str(path)


def test_fetchlocal_wrong_checksum_and_missing_file(S, tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b\n")
    with pytest.raises((ChecksumError, BuildError)) as e:
        realize1(instantiate(lambda r: fetchlocal(r, str(path), sha(b"other")), S=S))
    assert isinstance(cause(e.value), ChecksumError)
    with pytest.raises(BuildError, match="cannot read"):
        realize1(instantiate(lambda r: fetchlocal(r, str(tmp_path / "nope"), "0" * 64), S=S))
    assert allrrefs(S) == []
    assert os.listdir(S.tmpdir) == []


def test_fetchlocal_unpack(S, tmp_path):
    data = make_tar_gz(tmp_path / "pkg.tgz", FILES)
    rref = realize1(
        instantiate(lambda r: fetchlocal(r, str(tmp_path / "pkg.tgz"), sha(data), unpack=True), S=S)
    )
    with open(os.path.join(mklens(rref, S=S).out_path.syspath, "top.txt"), "rb") as f:
        assert f.read() == b"top"


# -- progress on a terminal ----------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [True, False])
def test_progress_only_on_a_terminal(S, www, server, monkeypatch, tty):
    base, _ = server
    data = os.urandom(50_000)
    (www / "big.bin").write_bytes(data)
    monkeypatch.setattr(fetch_module, "PROGRESS_MIN_BYTES", 10_000)
    err = FakeTerminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    realize1(instantiate(lambda r: fetchurl(r, f"{base}/big.bin", sha(data)), S=S))
    if tty:
        assert "(100%)" in err.getvalue() and err.getvalue().endswith("\n")
    else:
        assert err.getvalue() == ""


def test_no_progress_for_small_downloads(S, www, server, monkeypatch):
    base, _ = server
    (www / "small.bin").write_bytes(b"small")
    err = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", err)
    realize1(instantiate(lambda r: fetchurl(r, f"{base}/small.bin", sha(b"small")), S=S))
    assert err.getvalue() == ""


def test_unpacking_fetches_work_repeatedly_and_leave_no_download(S, www, server, tmp_path):
    """Each unpacking fetch downloads into its own build area, removed after success or failure."""
    base, _ = server
    first = make_tar_gz(tmp_path / "a.tgz", {"one.txt": b"1"})
    second = make_tar_gz(tmp_path / "b.tgz", {"two.txt": b"2"})
    (www / "b.tgz").write_bytes(second)
    with pytest.raises(ChecksumError):
        realize1(
            instantiate(
                lambda r: fetchlocal(r, str(tmp_path / "a.tgz"), "0" * 64, unpack=True), S=S
            )
        )
    assert os.listdir(S.tmpdir) == []
    a = realize1(
        instantiate(lambda r: fetchlocal(r, str(tmp_path / "a.tgz"), sha(first), unpack=True), S=S)
    )
    b = realize1(instantiate(lambda r: fetchurl(r, f"{base}/b.tgz", sha(second), unpack=True), S=S))
    assert os.path.isfile(os.path.join(mklens(a, S=S).out_path.syspath, "one.txt"))
    assert os.path.isfile(os.path.join(mklens(b, S=S).out_path.syspath, "two.txt"))
    assert os.listdir(S.tmpdir) == []


# -- a download program the user chose (Pylightnix's WGET/CURL) ----------------------------


def mock_program(folder, source, status: int = 0):
    """A real program that records its arguments, leaves a stray file in its working folder
    and, as Pylightnix's mock wget/curl do, copies `source` to the path after --output*."""
    program = folder / "mockget"
    program.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{folder}/args"\n'
        "touch stray-log\n"
        'while [ "$#" -gt 0 ]; do\n'
        '  case "$1" in --output|--output-document) out="$2";; esac; shift\n'
        "done\n"
        f'cp "{source}" "$out"\n'
        f"exit {status}\n"
    )
    program.chmod(0o755)
    return program


@pytest.mark.parametrize("url", ["-O/tmp/elsewhere", "--execute=x"])
def test_a_download_program_never_gets_a_url_it_would_take_for_an_option(store, tmp_path, url):
    (tmp_path / "data.bin").write_bytes(b"data")
    program = mock_program(tmp_path, tmp_path / "data.bin")
    with pytest.raises(BuildError, match="may not start with '-'"):
        download_with(store, wget_command(str(program)), url, str(tmp_path / "out"), "dref:x")
    assert not (tmp_path / "args").exists()  # the program did not run
    assert os.listdir(store.tmp_dir) == []


@pytest.fixture
def no_program_env(monkeypatch):
    monkeypatch.delenv("PYLIGHTNIX_WGET", raising=False)
    monkeypatch.delenv("PYLIGHTNIX_CURL", raising=False)


def test_replaced_wget_downloads_as_in_pylightnix(S, tmp_path, monkeypatch, no_program_env):
    """Pylightnix's test_fetchurl: WGET replaced, a URL only the program knows, unpacked."""
    archive = tmp_path / "data.tar.gz"
    data = make_tar_gz(archive, {"mockdata": b"blala"})
    program = mock_program(tmp_path, archive)
    url = "mockwget://result.tar.gz"
    with pytest.raises(InvalidConfigError, match="http, https or file"):
        instantiate(lambda r: fetchurl(url, sha256=sha(data), filename="v.tar.gz", r=r), S=S)
    monkeypatch.setattr(compat_fetch, "WGET", lambda: str(program))
    rref = realize1(
        instantiate(lambda r: fetchurl(url, sha256=sha(data), filename="v.tar.gz", r=r), S=S)
    )
    out = mklens(rref, S=S).syspath
    assert sorted(os.listdir(out)) == ["context.json", "mockdata"]  # no stray-log, no archive
    with open(os.path.join(out, "mockdata"), "rb") as f:
        assert f.read() == b"blala"
    args = (tmp_path / "args").read_text().splitlines()
    assert args[:2] == ["--continue", "--output-document"] and args[3] == url
    assert args[2].endswith("v.tar.gz.tmp")
    assert os.listdir(S.tmpdir) == []


def test_pylightnix_wget_variable_downloads_with_the_same_dref(
    S, www, server, tmp_path, monkeypatch, no_program_env
):
    base, hits = server
    (tmp_path / "data.bin").write_bytes(b"from the program")
    (www / "data.bin").write_bytes(b"from the program")
    url, digest = f"{base}/data.bin", sha(b"from the program")
    plain = instantiate(lambda r: fetchurl(r, url, digest), S=S)[0]
    monkeypatch.setenv("PYLIGHTNIX_WGET", str(mock_program(tmp_path, tmp_path / "data.bin")))
    closure = instantiate(lambda r: fetchurl(r, url, digest), S=S)
    assert closure[0] == plain  # the program is not part of the config
    rref = realize1(closure)
    assert mklens(rref, S=S).out_path.contents == "from the program"
    assert hits == []  # the program fetched it, not urllib


def test_download_program_failures_store_nothing(S, tmp_path, monkeypatch, no_program_env):
    (tmp_path / "data.bin").write_bytes(b"actual")
    url = "mock://host/data.bin"

    def fetch(digest):
        return realize1(instantiate(lambda r: fetchurl(r, url, digest), S=S))

    monkeypatch.setattr(compat_fetch, "WGET", lambda: str(tmp_path / "no-such-program"))
    with pytest.raises(BuildError, match="cannot run the download program"):
        fetch(sha(b"actual"))
    monkeypatch.setattr(
        compat_fetch, "WGET", lambda: str(mock_program(tmp_path, tmp_path / "data.bin", 3))
    )
    with pytest.raises(BuildError, match="exited with status 3"):
        fetch(sha(b"actual"))
    monkeypatch.setattr(
        compat_fetch, "WGET", lambda: str(mock_program(tmp_path, tmp_path / "data.bin"))
    )
    with pytest.raises((ChecksumError, BuildError)) as e:
        fetch(sha(b"expected"))
    assert isinstance(cause(e.value), ChecksumError)
    assert allrrefs(S) == []
    assert os.listdir(S.tmpdir) == []


def test_replaced_curl_downloads_for_fetchurl2(S, tmp_path, monkeypatch, no_program_env):
    """Pylightnix's test_fetchurl2: CURL replaced; sha256 and sha1 both checked."""
    (tmp_path / "data.tar.gz").write_bytes(b"curl data")
    program = mock_program(tmp_path, tmp_path / "data.tar.gz")
    monkeypatch.setattr(compat_fetch, "CURL", lambda: str(program))
    url = "mockcurl://result.tar.gz"
    rref = realize1(
        instantiate(
            lambda r: fetchurl2(url, sha256=sha(b"curl data"), filename="v.tar.gz", r=r), S=S
        )
    )
    assert mklens(rref, S=S).out.contents == "curl data"
    assert sorted(os.listdir(mklens(rref, S=S).syspath)) == ["context.json", "v.tar.gz"]
    args = (tmp_path / "args").read_text().splitlines()
    assert args[:3] == ["--continue-at", "-", "--output"] and args[4] == url
    wrong_sha1 = hashlib.sha1(b"other").hexdigest()
    with pytest.raises((ChecksumError, BuildError)) as e:
        realize1(instantiate(lambda r: fetchurl2(url, sha1=wrong_sha1, filename="w", r=r), S=S))
    assert isinstance(cause(e.value), ChecksumError)
    assert os.listdir(S.tmpdir) == []
