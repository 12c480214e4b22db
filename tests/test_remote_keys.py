"""Signing keys of remote caches: how a key is given (text, file, path object), that no error
ever shows key material, and what a push does with signatures already under its key's name
(a rotated key, another signer with the same name, junk)."""

from __future__ import annotations

import base64
import logging
import os
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from remote_helpers import pipeline, remote_files

from lightstore import instantiate, realize1
from lightstore.facade import Store
from lightstore.foundation.errors import InvalidKeyError, RemoteError, UntrustedError
from lightstore.remote import generate_signing_key, load_signing_key
from lightstore.remote._layout import signature_folder, signed_manifest_key
from lightstore.remote._sign import SigningKey, signing_key_for

pytest.importorskip("cryptography")


@pytest.fixture
def alice(tmp_path) -> Store:
    return Store.open(str(tmp_path / "alice"), create=True)


@pytest.fixture
def bob(tmp_path) -> Store:
    return Store.open(str(tmp_path / "bob"), create=True)


@pytest.fixture
def file_url(tmp_path) -> str:
    return f"file://{tmp_path}/remote"


def _windows(secret_b64: str) -> set[str]:
    """Every 8 characters in a row of a key's base64, in both alphabets."""
    out = set()
    for text in (secret_b64, secret_b64.replace("+", "-").replace("/", "_")):
        out |= {text[i : i + 8] for i in range(len(text) - 7)}
    return out


def _shows(message: str, secret_b64: str) -> bool:
    return any(w in message for w in _windows(secret_b64))


# -- no message shows key material ---------------------------------------------------

_NAMES = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
    min_size=1,
    max_size=20,
).filter(lambda s: s not in (".", ".."))
_AROUND = st.sampled_from(
    ["", '"', "'", "`", " ", "\n", "\r\n", ";", "export ", "LIGHTSTORE_SIGNING_KEY=", "\ufeff"]
)


@st.composite
def _noisy_keys(draw) -> tuple[str, str]:
    """(a text that holds a secret key with noise around or inside it, the key's base64)."""
    seed = draw(st.binary(min_size=32, max_size=32))
    b64 = base64.b64encode(seed).decode("ascii")
    body = draw(
        st.sampled_from(
            [
                f"ed25519-secret:{draw(_NAMES)}:{b64}",
                f"{draw(_NAMES)}:{b64}",  # the prefix lost
                b64,  # the bare seed
                f"ed25519-secret:{b64}",  # the name lost
                f"ed25519-secret:{draw(_NAMES)}:{b64}:x",
            ]
        )
    )
    if draw(st.booleans()):  # URL-safe base64
        body = body.replace("+", "-").replace("/", "_")
    if draw(st.booleans()):  # truncated
        body = body[: draw(st.integers(min_value=len(body) - 30, max_value=len(body)))]
    if draw(st.booleans()):  # wrapped over lines, or with a stray character inside
        at = draw(st.integers(min_value=0, max_value=len(body)))
        body = body[:at] + draw(st.sampled_from(["\n", "\r\n", " ", '"', "\\\n"])) + body[at:]
    return draw(_AROUND) + draw(_AROUND) + body + draw(_AROUND) + draw(_AROUND), b64


@given(_noisy_keys())
def test_no_error_about_a_signing_key_shows_it(noisy):
    text, b64 = noisy
    for attempt in (lambda: load_signing_key(text), lambda: load_signing_key(pathlib.Path(text))):
        try:
            key = attempt()
        except InvalidKeyError as e:
            assert not _shows(str(e), b64), str(e)
        else:
            assert isinstance(key, SigningKey) and base64.b64encode(key.seed).decode() == b64


def test_a_quoted_signing_key_in_the_environment_is_refused_without_showing_it(
    alice, file_url, monkeypatch
):
    from helpers import run

    key = SigningKey("ci", b"\xfb\xef\xbe" * 5 + b"\xff" * 17)  # its base64 has + and /
    secret = key.secret_text()
    b64 = secret.rsplit(":", 1)[-1]
    assert "+" in b64 and "/" in b64
    rref = realize1(instantiate(pipeline, S=alice.settings))
    for pasted in (
        f'"{secret}"',
        f"'{secret}'",
        f"{secret[:30]}\n{secret[30:]}",  # wrapped over two lines
        f"ci:{b64[:30]}",  # truncated, without its prefix
        f"ci:{b64}",
        secret.replace("+", "-").replace("/", "_") + "\n",
        f"export LIGHTSTORE_SIGNING_KEY={secret}",
    ):
        monkeypatch.setenv("LIGHTSTORE_SIGNING_KEY", pasted)
        with pytest.raises(InvalidKeyError) as e:
            signing_key_for(None)
        assert not _shows(str(e.value), b64), str(e.value)
        result = run(alice.root, "push", file_url, rref)
        assert result.exit_code == 2 and not _shows(result.output, b64), result.output
        result = run(alice.root, "push", file_url, rref, "--sign-key", pasted)
        assert result.exit_code == 2 and not _shows(result.output, b64), result.output
    assert "quotes" in str(e.value) or "not shown" in str(e.value)
    assert remote_files(file_url[len("file://") :]) == []  # refused before anything


def test_a_key_file_that_exists_is_named_in_errors(tmp_path):
    unreadable = tmp_path / "folder.key"
    unreadable.mkdir()
    with pytest.raises(InvalidKeyError, match=r"folder\.key"):
        load_signing_key(str(unreadable))
    public = tmp_path / "public.key"
    public.write_text(generate_signing_key("alice-1").public)
    with pytest.raises(InvalidKeyError, match=r"public\.key.* holds a public key"):
        load_signing_key(public)
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InvalidKeyError, match=r"binary\.key.* not a text file"):
        load_signing_key(str(binary))


# -- how a key is given -----------------------------------------------------------


def test_a_key_file_is_a_path_object_and_may_start_with_a_byte_order_mark(
    alice, bob, file_url, tmp_path
):
    key = generate_signing_key("alice-1")
    path = tmp_path / "alice.key"
    # Written by an editor that adds a byte order mark and Windows line ends.
    path.write_bytes(b"\xef\xbb\xbf" + key.secret_text().encode() + b"\r\n")
    assert load_signing_key(path) == key
    assert load_signing_key(str(path)) == key
    rref = realize1(instantiate(pipeline, S=alice.settings))
    alice.push(file_url, [rref], signing_key=path)
    assert rref in bob.pull(file_url, [rref], trusted_keys=[key.public])


# -- signatures already under the key's name ---------------------------------------------


def _object(file_url: str, key: str) -> pathlib.Path:
    return pathlib.Path(file_url[len("file://") :]) / key


def test_a_rotated_key_with_the_same_name_replaces_the_old_signatures(
    alice, bob, file_url, tmp_path, caplog
):
    old, new = generate_signing_key("alice"), generate_signing_key("alice")
    rref = realize1(instantiate(pipeline, S=alice.settings))
    assert alice.push(file_url, [rref], signing_key=old).signatures_replaced == 0
    with caplog.at_level(logging.WARNING, logger="lightstore"):
        report = alice.push(file_url, [rref], signing_key=new)
    assert report.signatures_replaced == 3  # the closure: params, train, report
    assert "own key name" in caplog.text
    assert rref in bob.pull(file_url, [rref], trusted_keys=[new.public])
    with pytest.raises(UntrustedError, match="forged"):  # the name now stands for the new key
        Store.open(str(tmp_path / "carol"), create=True).pull(
            file_url, [rref], trusted_keys=[old.public]
        )
    # A signature by the same key stays, though another store's build times differ.
    signed = _object(file_url, signed_manifest_key(rref, "alice")).read_bytes()
    dave = Store.open(str(tmp_path / "dave"), create=True)
    assert realize1(instantiate(pipeline, S=dave.settings)) == rref
    assert dave.push(file_url, [rref], signing_key=new).signatures_replaced == 0
    assert _object(file_url, signed_manifest_key(rref, "alice")).read_bytes() == signed


@pytest.mark.parametrize("junk", ["bytes", "fifo", "huge"])
def test_junk_under_the_key_name_is_replaced_by_a_signed_push(alice, bob, file_url, junk):
    key = generate_signing_key("alice")
    rref = realize1(instantiate(pipeline, S=alice.settings))
    alice.push(file_url, [rref])  # unsigned first
    for name in (signed_manifest_key(rref, "alice"), f"{signature_folder(rref)}/alice"):
        path = _object(file_url, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if junk == "fifo":
            os.mkfifo(path)
        elif junk == "huge":
            with open(path, "wb") as f:
                f.truncate(65 * 1024 * 1024)  # sparse: costs no disk
        else:
            path.write_bytes(b"planted by someone else\n{}")
    assert alice.push(file_url, [rref], signing_key=key).signatures_replaced == 1
    assert rref in bob.pull(file_url, [rref], trusted_keys=[key.public])


def test_a_folder_under_the_key_name_is_refused_clearly(alice, file_url):
    key = generate_signing_key("alice")
    rref = realize1(instantiate(pipeline, S=alice.settings))
    alice.push(file_url, [rref])
    (_object(file_url, signed_manifest_key(rref, "alice")) / "x").mkdir(parents=True)
    with pytest.raises(RemoteError, match="alice"):
        alice.push(file_url, [rref], signing_key=key)
