"""Reading a realization's manifest from a remote: bounded by what the limits leave and,
with trusted keys, only one a trusted key signed.
"""

from __future__ import annotations

import logging

from lightstore.exchange.extract import Limits
from lightstore.exchange.logs import MAX_LOG_BYTES
from lightstore.foundation.errors import (
    ArchiveError,
    RemoteIntegrityError,
    UnknownReferenceError,
    UntrustedError,
)
from lightstore.foundation.refs import RRef
from lightstore.remote._fs import Remote
from lightstore.remote._layout import (
    Manifest,
    manifest_key,
    parse_manifest,
    signature_folder,
    signed_manifest_key,
)
from lightstore.remote._sign import TrustedKeys

log = logging.getLogger("lightstore")

#: No manifest is larger than this, whatever the limits.
MAX_MANIFEST = 64 * 1024 * 1024

#: What a manifest may hold besides its entries (config, context, times, metrics, tags...).
_MANIFEST_OVERHEAD = 4 * 1024 * 1024

#: The most one entry takes in a manifest: a path and a link target of PATH_MAX bytes,
#: every character escaped, and the other fields.
_ENTRY_BYTES = 2 * 6 * 4096 + 256

#: The signature line in front of a signed manifest (base64 of 64 bytes, a newline).
_SIGNATURE_LINE = 129


def _members_left(limits: Limits | None) -> int | None:
    if limits is None or limits.max_members is None:
        return None
    return max(0, int(limits.max_members) - limits.members)


def _read_bounded(
    remote: Remote, key: str, rref: RRef, where: str, limits: Limits | None, extra: int = 0
) -> bytes | None:
    """The object `key` holding the manifest of `rref`, read only if its size fits what the
    limits leave (its entries cannot all fit otherwise): ArchiveError if not, and
    RemoteIntegrityError over `MAX_MANIFEST` or if it is not a regular file."""
    left = _members_left(limits)
    cap = MAX_MANIFEST
    if left is not None:
        cap = min(cap, _MANIFEST_OVERHEAD + left * _ENTRY_BYTES)
    data = remote.read_prefix(key, cap + extra)
    if data is None or len(data) <= cap + extra:
        return data
    if cap < MAX_MANIFEST:
        raise ArchiveError(
            f"{where}: the manifest of {rref} is larger than {cap} bytes, too large to list "
            f"at most {left} files, folders and links (what max_members leaves); refused "
            "before reading it (raise max_members to allow it)"
        )
    raise RemoteIntegrityError(
        f"{where}: the manifest of {rref} is larger than {MAX_MANIFEST} bytes; the remote is "
        "damaged or hostile, nothing of it was added"
    )


def _counted(m: Manifest, limits: Limits | None) -> Manifest:
    """`m`, once its entries (and its build log) are counted against `limits`
    (ArchiveError past them). A log larger than `MAX_LOG_BYTES` is dropped, said so."""
    if m.log is not None and m.log[1] > MAX_LOG_BYTES:
        log.warning(
            "%s names a build log of %d bytes, more than the %d a pull takes: it is left out",
            m.rref,
            m.log[1],
            MAX_LOG_BYTES,
        )
        m.log = None
    if limits is not None:
        if m.log is not None:
            limits.declare(m.log[1], f"the build log of {m.rref}")
        for e in m.files:
            limits.count_member(f"{e.path} of {m.rref}")
            if e.type == "file":
                limits.declare(e.size, f"{e.path} of {m.rref}")
    return m


def read_manifest(
    remote: Remote,
    rref: RRef,
    where: str,
    dependency_of: str | None,
    limits: Limits | None = None,
) -> Manifest:
    """The remote's manifest of `rref`, parsed and checked (no signature involved), its
    entries counted against `limits`."""
    data = _read_bounded(remote, manifest_key(rref), rref, where, limits)
    if data is None:
        if dependency_of is None:
            raise UnknownReferenceError(f"the remote {remote.shown} does not hold {rref}", rref)
        raise RemoteIntegrityError(
            f"{where}: the manifest of {rref}, a dependency of {dependency_of}, is missing; the "
            "remote is incomplete (push it again from a store that has it); nothing was added"
        )
    return _counted(parse_manifest(data, rref, where, _members_left(limits)), limits)


def read_trusted_manifest(
    remote: Remote,
    trusted: TrustedKeys,
    rref: RRef,
    where: str,
    dependency_of: str | None,
    limits: Limits | None = None,
) -> Manifest:
    """The manifest of `rref`; with trusted keys, only one a trusted key signed. Its
    entries are counted against `limits` as it is read (ArchiveError past them).

    A signed manifest's signature is checked over its raw bytes before they
    are parsed, and covers everything the pull imports. A signature by an
    older lightstore covers the RRef alone: it is checked before the shared
    manifest is parsed, and the build times, metrics, series, tags, notes and
    build log, which it does not cover, are dropped with a warning. A signature object that is damaged (too
    large, not a file) counts as one that does not verify. Raises
    UntrustedError otherwise.
    """
    if not trusted:
        return read_manifest(remote, rref, where, dependency_of, limits)
    names = sorted(trusted.keys)
    signed_seen = False
    too_large: ArchiveError | None = None
    for name in names:
        try:
            data = _read_bounded(
                remote, signed_manifest_key(rref, name), rref, where, limits, _SIGNATURE_LINE
            )
        except ArchiveError as e:
            signed_seen = True
            if not isinstance(e, RemoteIntegrityError):
                too_large = e  # the limits' refusal, unless another signature verifies
            continue
        if data is None:
            continue
        signed_seen = True
        body = trusted.signed_manifest(rref, name, data)
        if body is not None:
            return _counted(parse_manifest(body, rref, where, _members_left(limits)), limits)
    # Signed by an older lightstore (or the signed manifest is damaged): a
    # signature of the RRef alone, checked before the shared manifest is parsed.
    rref_seen = False
    for name in names:
        try:
            sig = remote.read(f"{signature_folder(rref)}/{name}", limit=4096)
        except RemoteIntegrityError:
            rref_seen = True
            continue
        if sig is None:
            continue
        rref_seen = True
        if trusted.valid(rref, name, sig):
            manifest, dropped = read_manifest(
                remote, rref, where, dependency_of, limits
            ).without_unsigned()
            if dropped and signed_seen:
                log.warning(
                    "%s: the signed manifest of %s does not verify (forged or damaged); it is "
                    "taken on %s's signature of its RRef alone, which does not cover its %s: "
                    "they were dropped",
                    where,
                    rref,
                    name,
                    " and ".join(dropped),
                )
            elif dropped:
                log.warning(
                    "%s: %s is signed by %s with an older lightstore (its RRef alone), which "
                    "does not cover its %s: they were dropped (push it again with this "
                    "lightstore and the key to sign them)",
                    where,
                    rref,
                    name,
                    " and ".join(dropped),
                )
            return manifest
    if too_large is not None:
        raise too_large
    keys = ", ".join(names)
    if signed_seen or rref_seen:
        raise UntrustedError(
            f"{where}: the signature of {rref} does not verify with the trusted key(s) "
            f"{keys}: forged or damaged"
        )
    if not remote.exists(manifest_key(rref)):
        read_manifest(remote, rref, where, dependency_of)  # raises: not on the remote
    raise UntrustedError(
        f"{where}: {rref} is not signed by any trusted key ({keys}) (push it with a trusted "
        "signing key, or trust its signer's key)"
    )
