"""How a remote cache is laid out, and what a manifest holds.

Layout under the remote's root (every object is written once and never
replaced with different content)::

    lightstore-remote.json                 {"format": "lightstore-remote", "version": 1}
    blobs/<h[:2]>/<h>                      file contents, named by their 64-hex blake3
    derivations/<H>-<name>.json            canonical config of each derivation
    realizations/<H>-<name>/<R>.json       one manifest per realization
    index/<H>-<name>/<context hash>/<R>    empty marker: <R> exists in that context
    signatures/<H>-<name>/<R>/<key name>   base64 ed25519 signature of the RRef alone
    signed-manifests/<H>-<name>/<R>/<key name>
                                           the signer's own manifest, signed: base64
                                           signature of its bytes, newline, the bytes

A push writes, for each realization, dependencies first: its blobs, the
configs, the manifest, then the index marker and signatures. So a reader
that finds a marker finds its manifest, and a manifest's blobs and
dependencies exist. Finding the realizations of (derivation, context) is one
listing of ``index/<H>-<name>/<context hash>/``.

A manifest records the RRef, DRef, config, context and every entry of the
realization (path, type, executable bit, size, blake3, link target), plus
informational fields (build times, metrics, metric series, tags, notes, and the
build log: a blob named by its hash and size) that no hash covers; a value that is not finite is the text "NaN", "Infinity" or
"-Infinity" there (JSON has none), as in archives. The tree
digest, and so the RRef, can be recomputed from the entries alone, which lets
a pull refuse a lying manifest before downloading anything. A signed
manifest covers the informational fields too (see `lightstore.remote._sign`).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from lightstore.exchange._ingest import Annotations, checked_config, checked_context
from lightstore.exchange._tree import check_utf8_name, link_leaves, walk_tree
from lightstore.exchange.archive import _time, annotation_fields
from lightstore.foundation.config import Config, canonical_json
from lightstore.foundation.errors import (
    ArchiveError,
    InvalidAnnotationError,
    InvalidMetricError,
    LightstoreError,
    RemoteError,
    RemoteIntegrityError,
)
from lightstore.foundation.hashing import (
    _len_prefixed,
    _tagged,
    config_bytes_hash,
    realization_hash,
)
from lightstore.foundation.metrics import check_metric_name, decode_series, decode_value
from lightstore.foundation.refs import DRef, RRef, parse_rref, rref2dref, undref, unrref
from lightstore.foundation.tags import decode_notes, decode_tags
from lightstore.remote._fs import Remote
from lightstore.store.layout import CONTEXT_FILE

FORMAT = "lightstore-remote"
MANIFEST_FORMAT = "lightstore-manifest"
VERSION = 1
MARKER = "lightstore-remote.json"
_BLOB_RE = re.compile(r"[0-9a-f]{64}")
KEYNAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def blob_key(digest: str) -> str:
    return f"blobs/{digest[:2]}/{digest}"


def dref_folder(dref: DRef) -> str:
    h, name = undref(dref)
    return f"{h}-{name}"


def derivation_key(dref: DRef) -> str:
    return f"derivations/{dref_folder(dref)}.json"


def manifest_key(rref: RRef) -> str:
    return f"realizations/{dref_folder(rref2dref(rref))}/{unrref(rref)[0]}.json"


def index_key(rref: RRef, ctx_hash: str) -> str:
    return f"index/{dref_folder(rref2dref(rref))}/{ctx_hash}/{unrref(rref)[0]}"


def signature_folder(rref: RRef) -> str:
    return f"signatures/{dref_folder(rref2dref(rref))}/{unrref(rref)[0]}"


def signed_manifest_key(rref: RRef, key_name: str) -> str:
    return f"signed-manifests/{dref_folder(rref2dref(rref))}/{unrref(rref)[0]}/{key_name}"


def config_bytes_match(dref: DRef, data: bytes) -> bool:
    """Whether `data`, as a push writes it (canonical JSON), hashes to `dref`'s config
    hash: a check of a derivation's config before anything parses it."""
    return config_bytes_hash(data) == undref(dref)[0]


@dataclass(frozen=True)
class FileEntry:
    """One entry of a realization: '/'-separated path, type, and what identifies its content."""

    path: str
    type: str  # "dir", "file" or "link"
    executable: bool = False
    size: int = 0
    blake3: str = ""
    target: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "type": self.type}
        if self.type == "file":
            out.update(executable=self.executable, size=self.size, blake3=self.blake3)
        elif self.type == "link":
            out["target"] = self.target
        return out


@dataclass
class Manifest:
    """What a remote says about one realization."""

    rref: RRef
    dref: DRef
    config: Config
    context: dict[str, list[str]]
    files: list[FileEntry]
    build_started: float | None = None
    build_stopped: float | None = None
    #: Metrics, series, tags and notes (informational: no hash covers them).
    said: Annotations = field(default_factory=Annotations)
    #: The build log, a blob: (blake3, size); informational, like `said`.
    log: tuple[str, int] | None = None

    @property
    def metrics(self) -> dict[str, int | float]:
        return self.said.metrics

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "version": VERSION,
            "rref": self.rref,
            "dref": self.dref,
            "config": self.config.val,
            "context": self.context,
            "files": [e.to_json() for e in self.files],
            "build_started": self.build_started,
            "build_stopped": self.build_stopped,
        }
        doc.update(annotation_fields(self.said))
        if self.log is not None:
            doc["log"] = {"blake3": self.log[0], "size": self.log[1]}
        return canonical_json(doc).encode("utf-8")

    def without_unsigned(self) -> tuple[Manifest, list[str]]:
        """This manifest without what a signature of its RRef alone does not cover
        (build times, metrics, series, tags, notes, the log), and the names of what was
        dropped."""
        said = self.said
        dropped = [
            k
            for k, v in (
                ("build times", self.build_started is not None or self.build_stopped is not None),
                ("metrics", bool(said.metrics)),
                ("series", bool(said.series)),
                ("tags", bool(said.tags)),
                ("notes", bool(said.notes)),
                ("build log", self.log is not None),
            )
            if v
        ]
        return Manifest(self.rref, self.dref, self.config, self.context, self.files), dropped

    @property
    def size(self) -> int:
        return sum(e.size for e in self.files)

    @property
    def deps(self) -> list[RRef]:
        return sorted({RRef(r) for rrefs in self.context.values() for r in rrefs})


def _sort_key(path: str) -> tuple[tuple[bytes, ...], bytes]:
    # tree_digest hashes a folder's entries (sorted by their UTF-8 bytes), then
    # descends into its subfolders in that order: entries are ordered by their
    # parent folder in depth-first preorder (its component tuple), then by name.
    parts = [p.encode("utf-8", "surrogateescape") for p in path.split("/")]
    return tuple(parts[:-1]), parts[-1]


def entries_digest(files: list[FileEntry]) -> str:
    """The tree digest `hashing.tree_digest` would compute for a folder holding `files`."""
    h = _tagged(b"lightstore:tree:v1")
    for e in sorted(files, key=lambda e: _sort_key(e.path)):
        encoded = _len_prefixed(e.path.encode("utf-8", "surrogateescape"))
        if e.type == "dir":
            h.update(b"d" + encoded)
        elif e.type == "link":
            h.update(b"l" + encoded + _len_prefixed(e.target.encode("utf-8", "surrogateescape")))
        else:
            h.update((b"x" if e.executable else b"f") + encoded + bytes.fromhex(e.blake3))
    return h.hexdigest()


def local_entries(folder: str) -> list[FileEntry]:
    """The entries of a local realization folder (without hashes of file contents)."""
    out = []
    for e in walk_tree(folder, skip_top=frozenset({CONTEXT_FILE})):
        out.append(FileEntry(e.rel, e.kind, e.executable, e.size, "", e.target))
    return out


def _bad(where: str, why: str) -> RemoteIntegrityError:
    return RemoteIntegrityError(
        f"{where}: {why}; the remote is damaged or hostile, nothing of it was added (a store "
        "that holds it repairs the remote with `lightstore push --repair`)"
    )


def _check_path(path: Any, where: str) -> str:
    if not isinstance(path, str) or not path:
        raise _bad(where, f"an entry has the path {path!r}")
    parts = path.split("/")
    if any(p in ("", ".", "..") or "\0" in p or "\\" in p for p in parts):
        raise _bad(where, f"the path {path!r} escapes its realization or is not normalised")
    if path == CONTEXT_FILE:
        raise _bad(where, f"the entry {CONTEXT_FILE!r} is reserved for the store")
    _check_name(path, "the path", where)
    return path


def _check_name(text: str, what: str, where: str) -> None:
    """Names are UTF-8 text on both sides: push refuses others with the same check."""
    try:
        check_utf8_name(text, what)
    except ArchiveError as e:
        raise _bad(where, str(e)) from None


def _check_files(raw: Any, where: str) -> list[FileEntry]:
    if not isinstance(raw, list):
        raise _bad(where, "'files' is not a list")
    seen: dict[str, str] = {}
    out: list[FileEntry] = []
    for item in raw:
        if not isinstance(item, dict):
            raise _bad(where, "an entry of 'files' is not an object")
        path = _check_path(item.get("path"), where)
        kind = item.get("type")
        if path in seen:
            raise _bad(where, f"the path {path!r} is listed twice")
        parent = path.rpartition("/")[0]
        if parent and seen.get(parent) != "dir":
            raise _bad(where, f"the parent of {path!r} is not a folder listed before it")
        if kind == "dir":
            entry = FileEntry(path, "dir")
        elif kind == "file":
            size, digest, exe = item.get("size"), item.get("blake3"), item.get("executable")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise _bad(where, f"the size of {path!r} is {size!r}")
            if not isinstance(digest, str) or not _BLOB_RE.fullmatch(digest):
                raise _bad(where, f"the blake3 of {path!r} is {digest!r}")
            if not isinstance(exe, bool):
                raise _bad(where, f"the executable bit of {path!r} is {exe!r}")
            entry = FileEntry(path, "file", exe, size, digest)
        elif kind == "link":
            target = item.get("target")
            if not isinstance(target, str) or not target or "\0" in target:
                raise _bad(where, f"the link {path!r} has the target {target!r}")
            _check_name(target, f"the target of the link {path!r}", where)
            if target.startswith("/"):
                raise _bad(where, f"the link {path!r} points to the absolute path {target!r}")
            if link_leaves(path, target):
                raise _bad(where, f"the link {path!r} points outside its realization")
            entry = FileEntry(path, "link", target=target)
        else:
            raise _bad(where, f"the entry {path!r} has the type {kind!r}")
        seen[path] = kind
        out.append(entry)
    return out


class _TooManyEntries(Exception):
    pass


def _load_json(data: bytes, max_entries: int | None) -> Any:
    """`data` parsed, stopping as soon as it holds more than `max_entries` objects that
    look like entries (so a hostile manifest costs memory in proportion to the limit,
    not to its size)."""
    if max_entries is None:
        return json.loads(data.decode("utf-8"))
    count = 0

    def counted(obj: dict[str, Any]) -> dict[str, Any]:
        nonlocal count
        if "path" in obj and "type" in obj:
            count += 1
            if count > max_entries:
                raise _TooManyEntries
        return obj

    return json.loads(data.decode("utf-8"), object_hook=counted)


def parse_manifest(data: bytes, rref: RRef, where: str, max_entries: int | None = None) -> Manifest:
    """Parse and check a manifest read from a remote for `rref`.

    Checks that the config hashes to the DRef, the context fits the config,
    every path stays inside the realization, and that the entries with the
    context hash to `rref`. Raises RemoteIntegrityError otherwise, and
    ArchiveError, while parsing, for a manifest listing more than
    `max_entries` entries (None: no limit).
    """
    try:
        doc = _load_json(data, max_entries)
    except _TooManyEntries:
        raise ArchiveError(
            f"{where}: the manifest of {rref} lists more than {max_entries} files, folders and "
            "links (what max_members leaves); refused before reading it whole (raise "
            "max_members to allow it)"
        ) from None
    except (UnicodeError, ValueError, RecursionError) as e:
        raise _bad(where, f"the manifest of {rref} is not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise _bad(where, f"the manifest of {rref} is not a lightstore manifest")
    if doc.get("version") != VERSION:
        raise RemoteIntegrityError(
            f"{where}: the manifest of {rref} has version {doc.get('version')!r}; this "
            f"lightstore reads version {VERSION} (upgrade lightstore)"
        )
    if doc.get("rref") != rref:
        raise _bad(where, f"the manifest stored for {rref} describes {doc.get('rref')!r}")
    dref = rref2dref(rref)
    if doc.get("dref") != dref:
        raise _bad(where, f"the manifest of {rref} names the derivation {doc.get('dref')!r}")
    try:
        _, config = checked_config(dref, doc.get("config"), where)
        context = checked_context(rref, doc.get("context"), config, where)
    except LightstoreError as e:
        raise _bad(where, str(e)) from None
    files = _check_files(doc.get("files"), where)
    from lightstore.foundation.hashing import context_hash

    if realization_hash(context_hash(context), entries_digest(files)) != unrref(rref)[0]:
        raise _bad(
            where,
            f"the manifest of {rref} lists files (or a context) that do not hash to its RRef",
        )
    # The same bounds as archives: a hostile time (NaN, 1e300, a 400-digit int)
    # must not reach the catalogue (an int that large overflowed SQLite).
    try:
        times = [_time(doc.get(k), f"{where}: {rref}") for k in ("build_started", "build_stopped")]
    except ArchiveError as e:
        raise _bad(where, str(e)) from None
    return Manifest(
        rref, dref, config, context, files, times[0], times[1], _annotations(doc), _log(doc)
    )


def _log(doc: dict[str, Any]) -> tuple[str, int] | None:
    """The build log a manifest names (a blob and its size), or None; informational, so a
    malformed one is dropped."""
    raw = doc.get("log")
    if not isinstance(raw, dict):
        return None
    digest, size = raw.get("blake3"), raw.get("size")
    if not isinstance(digest, str) or not _BLOB_RE.fullmatch(digest):
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    return digest, size


def _annotations(doc: dict[str, Any]) -> Annotations:
    """The metrics, series, tags and notes of a manifest. Informational: an entry that
    is not valid is dropped, not fatal (one of the rest may still be taken)."""
    said = Annotations()
    raw = doc.get("metrics")
    if isinstance(raw, dict):
        for k, v in raw.items():
            with contextlib.suppress(InvalidMetricError):
                said.metrics[check_metric_name(k)] = decode_value(k, v)
    raw = doc.get("series")
    if isinstance(raw, dict):
        for k, v in raw.items():
            with contextlib.suppress(InvalidMetricError):
                said.series.update(decode_series({k: v}))
    for key, decode in (("tags", decode_tags), ("notes", decode_notes)):
        raw = doc.get(key)
        if isinstance(raw, list):
            kept: list[Any] = []
            for item in raw:
                with contextlib.suppress(InvalidAnnotationError):
                    kept += decode([item])
            setattr(said, key, kept)
    # A tag listed twice (a forged manifest) is kept once.
    said.tags = list({t.name: t for t in said.tags}.values())
    return said


def check_keyname(name: str) -> str:
    """A signing key's name (used as an object name on the remote)."""
    if not isinstance(name, str) or not KEYNAME_RE.fullmatch(name) or name in (".", ".."):
        raise LightstoreError(
            f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return name


def parse_rref_key(folder: str, name: str) -> RRef | None:
    """The RRef named by a manifest or marker file name in a derivation folder, or None."""
    r = name[:-5] if name.endswith(".json") else name
    try:
        return parse_rref(f"rref:{r}-{folder}")
    except LightstoreError:
        return None


def ensure_marker(remote: Remote, create: bool) -> bool:
    """Check the remote's format marker (write it if `create`); False if absent."""
    data = remote.read(MARKER, limit=4096)
    if data is None:
        if not create:
            return False
        remote.write_bytes(
            MARKER, canonical_json({"format": FORMAT, "version": VERSION}).encode(), exclusive=True
        )
        return True
    try:
        doc = json.loads(data)
        ok = isinstance(doc, dict) and doc.get("format") == FORMAT
        version = doc.get("version") if ok else None
    except (ValueError, RecursionError):
        ok, version = False, None
    if not ok:
        raise RemoteError(f"{remote.shown} is not a lightstore remote (its {MARKER} is not ours)")
    if version != VERSION:
        raise RemoteError(
            f"the remote {remote.shown} has layout version {version!r}; this lightstore uses "
            f"version {VERSION} (upgrade lightstore)"
        )
    return True
