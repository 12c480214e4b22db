"""Ed25519 signatures of realizations on a remote (optional extra ``lightstore[sign]``).

A signature covers the RRef, and the RRef covers the realization's files,
its context and (through its DRef) its config: a pull recomputes all of
those before it trusts the signature, so one signature per realization is
enough, as Nix signs a store path's fingerprint.

Keys are text, as in Nix: a public key is ``<name>:<base64 of 32 bytes>``;
a secret key is the same with the 32-byte seed and ``ed25519-secret`` in
front (``ed25519-secret:<name>:<base64>``) so that it is never mistaken for
a public one. Trusted public keys come from the call, from
``$LIGHTSTORE_TRUSTED_KEYS`` (space-separated) and from the store's
``trusted-keys`` file (one per line, ``#`` comments).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lightstore.errors import LightstoreError
from lightstore.refs import RRef
from lightstore.remote._layout import check_keyname

TRUSTED_KEYS_VARIABLE = "LIGHTSTORE_TRUSTED_KEYS"
SIGNING_KEY_VARIABLE = "LIGHTSTORE_SIGNING_KEY"
TRUSTED_KEYS_FILE = "trusted-keys"
_SECRET_PREFIX = "ed25519-secret:"


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


def _decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeError, ValueError):
        raise LightstoreError(f"{what} is not valid base64") from None
    if len(raw) != 32:
        raise LightstoreError(f"{what} does not hold 32 bytes")
    return raw


@dataclass(frozen=True)
class SigningKey:
    """A named ed25519 secret key. The key bytes are never shown by repr/str."""

    name: str
    seed: bytes

    def __repr__(self) -> str:
        return f"SigningKey(name={self.name!r})"

    __str__ = __repr__

    def sign(self, rref: RRef) -> str:
        """The base64 signature of `rref`."""
        key = _crypto().Ed25519PrivateKey.from_private_bytes(self.seed)
        return base64.b64encode(key.sign(_message(rref))).decode("ascii")

    @property
    def public(self) -> str:
        """The matching public key text, ``<name>:<base64>``."""
        from cryptography.hazmat.primitives import serialization

        key = _crypto().Ed25519PrivateKey.from_private_bytes(self.seed)
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
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


def load_signing_key(key: Any) -> SigningKey:
    """A SigningKey from a SigningKey, its secret text, or the path of a file holding it.

    Raises LightstoreError (without quoting the key) if it is malformed.
    """
    if isinstance(key, SigningKey):
        return key
    if not isinstance(key, str):
        raise LightstoreError(f"a signing key is a key file or its text, got {type(key).__name__}")
    text = key.strip()
    if not text.startswith(_SECRET_PREFIX):
        try:
            with open(os.path.expanduser(text), encoding="ascii") as f:
                text = f.read().strip()
        except (OSError, UnicodeError) as e:
            raise LightstoreError(
                f"cannot read the signing key file {text!r}: {getattr(e, 'strerror', None) or e}"
            ) from None
    if not text.startswith(_SECRET_PREFIX) or text.count(":") != 2:
        raise LightstoreError(
            "a signing key reads 'ed25519-secret:<name>:<base64>' (make one with "
            "`lightstore keygen NAME`)"
        )
    _, name, b64 = text.split(":")
    return SigningKey(check_keyname(name), _decode(b64, f"the signing key {name!r}"))


def parse_public_key(text: str) -> tuple[str, bytes]:
    """``<name>:<base64>`` as (name, 32 key bytes); raises LightstoreError if malformed."""
    if not isinstance(text, str) or text.startswith(_SECRET_PREFIX) or text.count(":") != 1:
        raise LightstoreError(
            f"a trusted public key reads '<name>:<base64>', got {str(text)[:24]!r}..."
            if isinstance(text, str) and text.startswith(_SECRET_PREFIX)
            else f"a trusted public key reads '<name>:<base64>', got {text!r}"
        )
    name, b64 = text.strip().split(":")
    return check_keyname(name), _decode(b64, f"the public key {name!r}")


class TrustedKeys:
    """Public keys whose signatures a pull accepts (empty: signatures are not required)."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self.keys: dict[str, list[bytes]] = {}
        for text in keys:
            name, raw = parse_public_key(text)
            self.keys.setdefault(name, []).append(raw)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def valid(self, rref: RRef, name: str, signature: bytes) -> bool:
        """Whether `signature` (base64 text as stored) is a valid signature of `rref` by `name`."""
        from cryptography.exceptions import InvalidSignature

        ed = _crypto()
        try:
            sig = base64.b64decode(signature.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        for raw in self.keys.get(name, []):
            try:
                ed.Ed25519PublicKey.from_public_bytes(raw).verify(sig, _message(rref))
                return True
            except InvalidSignature:
                continue
        return False


def trusted_keys_for(store_root: str, given: Iterable[str] | None) -> TrustedKeys:
    """The keys a pull into the store at `store_root` trusts: the call's, else env + store file."""
    if given is not None:
        return TrustedKeys(list(given))
    keys = os.environ.get(TRUSTED_KEYS_VARIABLE, "").split()
    try:
        with open(os.path.join(store_root, TRUSTED_KEYS_FILE), encoding="utf-8") as f:
            for line in f:
                line = line.split("#", 1)[0].strip()
                if line:
                    keys.append(line)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise LightstoreError(f"cannot read the store's trusted keys: {e.strerror}") from None
    return TrustedKeys(keys)


def add_trusted_key(store_root: str, public: str) -> None:
    """Append a public key to the store's ``trusted-keys`` file (checked first)."""
    parse_public_key(public)
    path = os.path.join(store_root, TRUSTED_KEYS_FILE)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(public.strip() + "\n")
    except OSError as e:
        raise LightstoreError(f"cannot write {path}: {e.strerror}") from None
