"""Remote caches: sharing realizations between machines through object storage.

A remote is an fsspec URL (``file:///srv/cache``, ``s3://bucket/prefix``,
``memory://x``, ``gs://``, ``sftp://`` ... whatever fsspec has a driver for;
S3 needs ``pip install 'lightstore[s3]'``). Options for the driver (endpoint,
profile, credentials) go in `storage_options`; otherwise the driver's usual
configuration applies. See `lightstore.remote._layout` for the layout.

- `push(store, url, refs)` uploads closures; idempotent and resumable.
- `pull(store, url, refs)` downloads closures, verifying every hash (and
  signatures, with trusted keys) before anything is published.
- `list_remote(url, name=, dref=, context=)` lists what a remote holds.
- `substitute(store, dref, context, urls)` fetches the realizations of one
  derivation in one context (what `realize(..., substituters=[...])` does).
- `generate_signing_key(name)`, `load_signing_key(key)`: ed25519 keys
  (``pip install 'lightstore[sign]'``). The key a push signs with is its
  `signing_key`, else ``$LIGHTSTORE_SIGNING_KEY``; see `_sign` for what a
  signature covers and where trust comes from.

Inside: `_reading` opens a remote and reads its objects, `_fs` writes them
and downloads them (local files moved by `_localcopy`), `_layout` names them,
`_redact` keeps credentials out of messages, `transfers` runs them in a
pool; `push` (its files sent by `uploads`), `plan` then `pull` (reading
`manifests`), `listing` and `substitute` are the operations.
"""

from lightstore.foundation.errors import (
    InvalidKeyError,
    RemoteError,
    RemoteIntegrityError,
    UntrustedError,
)
from lightstore.remote._fs import Remote
from lightstore.remote._redact import redact_url
from lightstore.remote._sign import (
    SIGNING_KEY_VARIABLE,
    TRUSTED_KEYS_VARIABLE,
    SigningKey,
    add_trusted_key,
    generate_signing_key,
    load_signing_key,
)
from lightstore.remote.listing import RemoteRealization, list_remote
from lightstore.remote.pull import pull
from lightstore.remote.push import PushReport, push
from lightstore.remote.substitute import (
    PUSH_VARIABLE,
    SUBSTITUTERS_VARIABLE,
    default_push_to,
    default_substituters,
    substitute,
)

__all__ = [
    "InvalidKeyError",
    "PUSH_VARIABLE",
    "SIGNING_KEY_VARIABLE",
    "SUBSTITUTERS_VARIABLE",
    "TRUSTED_KEYS_VARIABLE",
    "PushReport",
    "Remote",
    "RemoteError",
    "RemoteIntegrityError",
    "RemoteRealization",
    "SigningKey",
    "UntrustedError",
    "add_trusted_key",
    "default_push_to",
    "default_substituters",
    "generate_signing_key",
    "list_remote",
    "load_signing_key",
    "pull",
    "push",
    "redact_url",
    "substitute",
]
