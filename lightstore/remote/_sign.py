"""Ed25519 signatures of realizations on a remote (optional extra ``lightstore[sign]``).

A signer stores, per realization, its own copy of the manifest with a
signature of its exact bytes (`signed_manifest_key`): everything a pull
imports (files, config, context, metrics, series, tags, notes, build times,
the build log's hash and size) is in those bytes, so it is all covered, and a pull that requires signatures
checks the signature over the raw bytes before it parses anything. Older
lightstores signed the RRef alone (`signature_folder`); a pull still accepts
such a signature (the RRef covers files, context and config) but drops what
it does not cover (metrics, series, tags, notes, build times, log) with a warning.
Pushes write both, so older readers keep working.

Keys are text, as in Nix: a public key is ``<name>:<base64 of 32 bytes>``;
a secret key is the same with the 32-byte seed and ``ed25519-secret`` in
front (``ed25519-secret:<name>:<base64>``) so that it is never mistaken for
a public one. Where keys come from, everywhere (library, CLI, Dask workers):

- signing: the call's `signing_key`, else ``$LIGHTSTORE_SIGNING_KEY``
  (`signing_key_for`);
- trusting: the call's `trusted_keys`, else ``$LIGHTSTORE_TRUSTED_KEYS``
  (space-separated) with the store's ``trusted-keys`` file (one per line,
  ``#`` comments) (`trusted_keys_for`), resolved once by the caller.

No message ever shows key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lightstore.foundation.errors import InvalidKeyError, LightstoreError
from lightstore.foundation.refs import RRef
from lightstore.remote._layout import KEYNAME_RE, check_keyname

TRUSTED_KEYS_VARIABLE = "LIGHTSTORE_TRUSTED_KEYS"
SIGNING_KEY_VARIABLE = "LIGHTSTORE_SIGNING_KEY"
TRUSTED_KEYS_FILE = "trusted-keys"
_SECRET_PREFIX = "ed25519-secret:"
#: A signature is 64 bytes: 88 characters of base64.
_MAX_SIGNATURE = 128


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise LightstoreError(
            "signing and checking signatures needs the cryptography package: "
            "pip install 'lightstore[sign]'"
        ) from None
    return ed25519


def _message(rref: RRef) -> bytes:
    return b"lightstore-remote-signature:v1\0" + rref.encode("ascii")


def _manifest_message(rref: RRef, manifest: bytes) -> bytes:
    return b"lightstore-remote-manifest-signature:v1\0" + rref.encode("ascii") + b"\0" + manifest


def _decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidKeyError(f"{what} is not valid base64") from None
    if len(raw) != 32:
        raise InvalidKeyError(f"{what} does not hold 32 bytes")
    return raw


def _name(name: str, what: str) -> str:
    """A key name, checked without quoting text that may be key material."""
    if KEYNAME_RE.fullmatch(name) and name not in (".", ".."):
        return name
    raise InvalidKeyError(
        f"{what} has an invalid name (not shown): a key name is 1-64 letters, digits, "
        "'.', '_' or '-'"
    )


@dataclass(frozen=True)
class SigningKey:
    """A named ed25519 secret key. The key bytes are never shown by repr/str."""

    name: str
    seed: bytes

    def __repr__(self) -> str:
        return f"SigningKey(name={self.name!r})"

    __str__ = __repr__

    def _private(self) -> Any:
        return _crypto().Ed25519PrivateKey.from_private_bytes(self.seed)

    def sign(self, rref: RRef) -> str:
        """The base64 signature of `rref` alone (what older lightstores check)."""
        return base64.b64encode(self._private().sign(_message(rref))).decode("ascii")

    def sign_manifest(self, rref: RRef, manifest: bytes) -> bytes:
        """The signed-manifest object for `rref`: the base64 signature of the manifest's
        exact bytes, a newline, then those bytes."""
        sig = self._private().sign(_manifest_message(rref, manifest))
        return base64.b64encode(sig) + b"\n" + manifest

    @property
    def public(self) -> str:
        """The matching public key text, ``<name>:<base64>``."""
        from cryptography.hazmat.primitives import serialization

        raw = (
            self._private()
            .public_key()
            .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        return f"{self.name}:{base64.b64encode(raw).decode('ascii')}"

    def secret_text(self) -> str:
        """The text to keep in a private file (``ed25519-secret:<name>:<base64>``)."""
        return f"{_SECRET_PREFIX}{self.name}:{base64.b64encode(self.seed).decode('ascii')}"


def generate_signing_key(name: str) -> SigningKey:
    """A new random signing key called `name` (its public text is `.public`)."""
    from cryptography.hazmat.primitives import serialization

    key = _crypto().Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return SigningKey(check_keyname(name), seed)


#: A key file is one line; anything much larger is not one (and is not read whole).
_MAX_KEY_FILE = 64 * 1024
#: What the key part of a public key pasted where a secret key goes looks like.
_PUBLIC_KEY_PART = re.compile(r"[A-Za-z0-9+/_-]{40,}={0,2}")


def _parse_secret(text: str, where: str) -> SigningKey:
    """``ed25519-secret:<name>:<base64>`` as a SigningKey; no message quotes any of it."""
    if not text.startswith(_SECRET_PREFIX) or text.count(":") != 2:
        hint = ""
        if _SECRET_PREFIX.rstrip(":") in text:
            hint = (
                " (it holds one with something around it, such as quotes, spaces, a line "
                "break or a variable name: give the key alone, or better its file)"
            )
        raise InvalidKeyError(
            f"{where} is not a secret key 'ed25519-secret:<name>:<base64>'{hint}; not shown, as "
            "it may be one (make a key with `lightstore keygen NAME FILE`)"
        )
    _, name, b64 = text.split(":")
    name = _name(name, where)
    return SigningKey(name, _decode(b64, f"the base64 of {where}"))


def _read_key_file(path: str, shown: str | None) -> str:
    """The text of the key file `path`: UTF-8 (a byte order mark is allowed), stripped.

    `shown` is how errors name the file: None when the caller's text may be a key
    rather than a file name (then it is never quoted)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_KEY_FILE + 1)
    except (OSError, ValueError) as e:  # ValueError: a NUL in the text
        why = getattr(e, "strerror", None) or "not a file name"
        if shown is not None and os.path.lexists(path):
            raise InvalidKeyError(f"cannot read the signing key file {shown!r}: {why}") from None
        raise InvalidKeyError(
            f"the signing key given is neither a readable key file ({why}) nor a secret key "
            "'ed25519-secret:<name>:<base64>' (not shown: it may be a key)"
        ) from None
    where = f"the signing key file {shown!r}" if shown is not None else "the signing key file"
    if len(raw) > _MAX_KEY_FILE:
        raise InvalidKeyError(f"{where} is larger than a key file ({_MAX_KEY_FILE} bytes)")
    try:
        return raw.decode("utf-8-sig").strip()
    except UnicodeError:
        raise InvalidKeyError(f"{where} is not a text file") from None


def load_signing_key(key: Any) -> SigningKey:
    """A SigningKey from a SigningKey, its secret text, or the path (str or os.PathLike)
    of a file holding it.

    Raises InvalidKeyError if it is malformed or unreadable. No message shows key
    material: a text that names no file may be a key, so it is never quoted (only a
    file that exists is named).
    """
    if isinstance(key, SigningKey):
        return key
    if isinstance(key, os.PathLike):
        path = os.fsdecode(os.fspath(key))
        return _from_file(path, path if os.path.lexists(path) else None)
    if not isinstance(key, str):
        raise InvalidKeyError(f"a signing key is a key file or its text, got {type(key).__name__}")
    text = key.strip()
    if text.startswith(_SECRET_PREFIX):
        return _parse_secret(text, "the signing key given")
    path = os.path.expanduser(text)
    if not os.path.lexists(path):
        if text.count(":") == 1 and _PUBLIC_KEY_PART.fullmatch(text.rsplit(":", 1)[-1]):
            raise InvalidKeyError(
                "the signing key given looks like a public key (NAME:KEY, not shown): "
                "signing needs the secret key file made by `lightstore keygen`"
            )
        if _SECRET_PREFIX.rstrip(":") in text:
            return _parse_secret(text, "the signing key given")  # raises, with a hint
    # Named only if it exists: a text that names no file may be a key.
    return _from_file(path, text if os.path.lexists(path) else None)


def _from_file(path: str, shown: str | None) -> SigningKey:
    text = _read_key_file(path, shown)
    where = f"the signing key file {shown!r}" if shown is not None else "the signing key file"
    if text.count(":") == 1 and not text.startswith(_SECRET_PREFIX):
        raise InvalidKeyError(
            f"{where} holds a public key (NAME:KEY): signing needs the secret key file made "
            "by `lightstore keygen`"
        )
    return _parse_secret(text, where)


def signing_key_for(given: Any) -> SigningKey | None:
    """The key a push signs with: `given` (a SigningKey, its text or a key file), else
    ``$LIGHTSTORE_SIGNING_KEY``; None if neither (or `given` is False: unsigned).

    The one place that decides it: the library, the CLI, realize's `push_to` and
    Dask workers all go through it. Raises InvalidKeyError if the key is bad.
    """
    if given is False:
        return None
    if given is None:
        given = os.environ.get(SIGNING_KEY_VARIABLE) or None
        if given is None:
            return None
    return load_signing_key(given)


def parse_public_key(text: str, where: str = "a trusted public key") -> tuple[str, bytes]:
    """``<name>:<base64>`` as (name, 32 key bytes).

    Raises InvalidKeyError if malformed; the message names `where` and never
    quotes the text (it may be a secret key pasted by mistake).
    """
    if not isinstance(text, str):
        raise InvalidKeyError(f"{where} is text '<name>:<base64>', got {type(text).__name__}")
    text = text.strip()
    if text.startswith(_SECRET_PREFIX):
        raise InvalidKeyError(
            f"{where} looks like a secret key ('ed25519-secret:...', not shown): trust the "
            "public key `lightstore keygen` printed (NAME:KEY), and keep the secret key private"
        )
    if text.count(":") != 1:
        raise InvalidKeyError(
            f"{where} is not a public key '<name>:<base64>' (not shown: "
            f"{len(text)} characters, {text.count(':')} ':')"
        )
    name, b64 = text.split(":")
    name = _name(name, where)
    return name, _decode(b64, where)


class TrustedKeys:
    """Public keys whose signatures a pull accepts (empty: signatures are not required).

    `keys` are texts, or (text, where) pairs naming where each came from in
    errors. Picklable, so a caller's resolved trust travels to Dask workers.
    """

    def __init__(self, keys: Iterable[str | tuple[str, str]] = ()) -> None:
        self.keys: dict[str, list[bytes]] = {}
        self.texts: list[str] = []
        for i, item in enumerate(keys):
            text, where = item if isinstance(item, tuple) else (item, f"trusted key {i + 1}")
            name, raw = parse_public_key(text, where)
            self.keys.setdefault(name, []).append(raw)
            self.texts.append(f"{name}:{base64.b64encode(raw).decode('ascii')}")

    def __bool__(self) -> bool:
        return bool(self.keys)

    def trusts(self, key: SigningKey) -> bool:
        """Whether signatures by `key` verify with these keys."""
        name, raw = parse_public_key(key.public)
        return raw in self.keys.get(name, [])

    def _verify(self, name: str, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        ed = _crypto()
        if len(signature) > _MAX_SIGNATURE:
            return False
        try:
            sig = base64.b64decode(signature.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        for raw in self.keys.get(name, []):
            try:
                ed.Ed25519PublicKey.from_public_bytes(raw).verify(sig, message)
                return True
            except InvalidSignature:
                continue
        return False

    def valid(self, rref: RRef, name: str, signature: bytes) -> bool:
        """Whether `signature` (base64 text as stored) signs `rref` alone, by `name`."""
        return self._verify(name, signature, _message(rref))

    def signed_manifest(self, rref: RRef, name: str, data: bytes) -> bytes | None:
        """The manifest bytes of a signed-manifest object by `name`, or None unless its
        signature verifies. Nothing but the signature line is looked at before."""
        signature, newline, manifest = data.partition(b"\n")
        if not newline:
            return None
        return (
            manifest if self._verify(name, signature, _manifest_message(rref, manifest)) else None
        )


def trusted_keys_for(store_root: str, given: Iterable[str] | TrustedKeys | None) -> TrustedKeys:
    """The keys a pull into the store at `store_root` trusts: the call's, else env + store file.

    An explicit empty list requires no signature. Raises InvalidKeyError for
    a malformed key (naming where it came from, never quoting it).
    """
    if isinstance(given, TrustedKeys):
        return given
    if given is not None:
        if isinstance(given, str):
            given = given.split()
        return TrustedKeys([(k, f"trusted key {i + 1} given") for i, k in enumerate(given)])
    keys: list[tuple[str, str]] = [
        (k, f"key {i + 1} of ${TRUSTED_KEYS_VARIABLE}")
        for i, k in enumerate(os.environ.get(TRUSTED_KEYS_VARIABLE, "").split())
    ]
    path = os.path.join(store_root, TRUSTED_KEYS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.split("#", 1)[0].strip()
                if line:
                    keys.append((line, f"line {number} of {path}"))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeError) as e:
        raise InvalidKeyError(
            f"cannot read the store's trusted keys ({path}): {getattr(e, 'strerror', None) or e}"
        ) from None
    return TrustedKeys(keys)


def add_trusted_key(store_root: str, public: str) -> str:
    """Append a public key to the store's ``trusted-keys`` file (checked first); returns
    its name. Raises InvalidKeyError (a secret key is refused without being shown)."""
    name, raw = parse_public_key(public, "the key to trust")
    path = os.path.join(store_root, TRUSTED_KEYS_FILE)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{name}:{base64.b64encode(raw).decode('ascii')}\n")
    except OSError as e:
        raise LightstoreError(f"cannot write {path}: {e.strerror}") from None
    return name
