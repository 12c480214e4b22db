"""References: the typed names of derivations and realizations.

- ``DRef``  ``dref:<H>-<name>``: a derivation, `<H>` = 32 hex of its config hash.
- ``RRef``  ``rref:<R>-<H>-<name>``: a realization of that derivation, `<R>` =
  32 hex of the hash of its content and context.
- ``RefPath`` ``[DRef, "dir", "file"]``: a path inside a derivation's output.
- ``selfref`` in ``[selfref, "file"]`` promises a path in the derivation's own output.

`DRef`, `RRef` and `Path` are `NewType`s of `str`, as in Pylightnix: a type
checker keeps them apart, while at run time they are plain strings, so a
million references cost what a million strings cost. `isdref`/`isrref` tell
them apart at run time.

A `DRef` or `RRef` built by `mkdref`/`mkrref`/`parse_*` is well-formed; the
constructors check it once, so the rest of the code never builds a filesystem
path from an unchecked string.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any, NewType

from lightstore.foundation.errors import InvalidConfigError, InvalidReferenceError

HASH_LEN = 32
NAME_PATTERN = r"[A-Za-z0-9_-]+"
#: The longest object (and pin) name: an object folder is ``<32 hex>-<name>``, and
#: file names stop at 255 bytes on common filesystems; this leaves room for
#: temporary names built from it.
MAX_NAME_LENGTH = 200

Name = NewType("Name", str)
HashPart = NewType("HashPart", str)
Context = dict["DRef", list["RRef"]]
RefPath = list[Any]

#: Marks a promised output path in a config: ``[selfref, "out.json"]``.
selfref = "__self__"

_HEX = f"[0-9a-f]{{{HASH_LEN}}}"
_NAME_RE = re.compile(NAME_PATTERN)
_HASH_RE = re.compile(_HEX)
_DREF_RE = re.compile(f"dref:({_HEX})-({NAME_PATTERN})")
_RREF_RE = re.compile(f"rref:({_HEX})-({_HEX})-({NAME_PATTERN})")


#: A derivation reference, ``dref:<H>-<name>``. Create with `mkdref` or `parse_dref`.
DRef = NewType("DRef", str)
#: A realization reference, ``rref:<R>-<H>-<name>``. Create with `mkrref` or `parse_rref`.
RRef = NewType("RRef", str)
#: A filesystem path (a plain `str`, typed for readers).
Path = NewType("Path", str)


def mkname(s: Any) -> Name:
    """Check that `s` is a valid object name and return it.

    As in Pylightnix, a name that is not a string stands for its text (``1``
    names ``1``), and one trailing newline, which Pylightnix's check lets
    through, is dropped: a reference or a folder name never holds a line
    break. Raises InvalidConfigError for names outside ``[A-Za-z0-9_-]+`` or
    longer than `MAX_NAME_LENGTH`.
    """
    if type(s) is str and len(s) <= MAX_NAME_LENGTH and _NAME_RE.fullmatch(s):
        return Name(s)  # the common case, checked once
    text = _name_text(s)
    if text is None or not _NAME_RE.fullmatch(text):
        raise InvalidConfigError(
            f"invalid name {s!r}: names use only letters, digits, '_' and '-' "
            f"(pattern {NAME_PATTERN}); rename the config's 'name' field"
        )
    if len(text) > MAX_NAME_LENGTH:
        raise InvalidConfigError(
            f"the name {text[:40]}... is {len(text)} characters long; names may have at most "
            f"{MAX_NAME_LENGTH} (they become folder names); shorten the config's 'name' field"
        )
    return Name(text)


def _name_text(s: Any) -> str | None:
    """The text a name value stands for, without one trailing newline; None if it has none."""
    if isinstance(s, int) and s.bit_length() > 4 * MAX_NAME_LENGTH:
        return None  # far too long to be a name (and Python would refuse to print it)
    if not (s is None or isinstance(s, str | int | float)):
        return None
    text = str(s)
    return text[:-1] if text.endswith("\n") else text


def _hashpart(h: str) -> HashPart:
    if not isinstance(h, str) or not _HASH_RE.fullmatch(h):
        raise InvalidReferenceError(
            f"invalid hash part {h!r}: expected {HASH_LEN} lowercase hex digits"
        )
    return HashPart(h)


def mkdref(dhash: str, name: str) -> DRef:
    """Build a DRef from a config hash part and a name."""
    return DRef(f"dref:{_hashpart(dhash)}-{mkname(name)}")


def mkrref(rhash: str, dhash: str, name: str) -> RRef:
    """Build an RRef from a realization hash part, a config hash part and a name."""
    return RRef(f"rref:{_hashpart(rhash)}-{_hashpart(dhash)}-{mkname(name)}")


def isdref(x: Any) -> bool:
    """True if `x` is a string in DRef format."""
    return isinstance(x, str) and _DREF_RE.fullmatch(x) is not None


def isrref(x: Any) -> bool:
    """True if `x` is a string in RRef format."""
    return isinstance(x, str) and _RREF_RE.fullmatch(x) is not None


def isrefpath(x: Any) -> bool:
    """True if `x` is a RefPath: a list whose head is a DRef and whose tail are strings."""
    return (
        isinstance(x, list)
        and len(x) > 0
        and isdref(x[0])
        and all(isinstance(p, str) and not isdref(p) and not isrref(p) for p in x[1:])
    )


def isselfpath(x: Any) -> bool:
    """True if `x` is a promise path ``[selfref, ...]``."""
    return (
        isinstance(x, list)
        and len(x) > 0
        and x[0] == selfref
        and all(isinstance(p, str) for p in x[1:])
    )


def check_relpath(parts: Any, what: str = "path") -> list[str]:
    """Return the components of a relative path inside an object folder, or raise.

    Components may contain '/', but no piece may be empty (absolute paths,
    ``a//b``), be ``..``, or hold a NUL: such a path would leave the folder.
    Raises InvalidConfigError naming `what`.
    """
    out = []
    for p in parts:
        if not isinstance(p, str):
            raise InvalidConfigError(f"{what}: component {p!r} is not a string")
        pieces = p.split("/")
        if "\0" in p or any(x in ("", "..") for x in pieces):
            raise InvalidConfigError(
                f"{what}: component {p!r} would leave the object's folder; paths inside "
                "an object must be relative, without '..', empty components or NUL"
            )
        out.append(p)
    return out


def parse_dref(s: Any) -> DRef:
    """Return `s` as a DRef, or raise InvalidReferenceError saying what is wrong."""
    if not isdref(s):
        hint = " (this is an RRef; use rref2dref)" if isrref(s) else ""
        raise InvalidReferenceError(
            f"not a derivation reference: {s!r}{hint}; expected 'dref:<32 hex>-<name>'"
        )
    return DRef(s)


def parse_rref(s: Any) -> RRef:
    """Return `s` as an RRef, or raise InvalidReferenceError saying what is wrong."""
    if not isrref(s):
        hint = " (this is a DRef; realize it to get an RRef)" if isdref(s) else ""
        raise InvalidReferenceError(
            f"not a realization reference: {s!r}{hint}; expected 'rref:<32 hex>-<32 hex>-<name>'"
        )
    return RRef(s)


def undref(r: DRef | str) -> tuple[HashPart, Name]:
    """Split a DRef into its hash part and name."""
    m = _DREF_RE.fullmatch(r) if isinstance(r, str) else None
    if m is None:
        parse_dref(r)  # raises with the explanation
        raise AssertionError("unreachable")
    return HashPart(m.group(1)), Name(m.group(2))


def unrref(r: RRef | str) -> tuple[HashPart, HashPart, Name]:
    """Split an RRef into its realization hash, config hash and name."""
    m = _RREF_RE.fullmatch(r) if isinstance(r, str) else None
    if m is None:
        parse_rref(r)
        raise AssertionError("unreachable")
    return HashPart(m.group(1)), HashPart(m.group(2)), Name(m.group(3))


def rref2dref(r: RRef | str) -> DRef:
    """The DRef of the derivation that `r` realizes."""
    _, dhash, name = unrref(r)
    return DRef(f"dref:{dhash}-{name}")


def map_drefs(value: Any, replace: Callable[[DRef], Any]) -> Any:
    """A copy of `value` (nested lists, tuples, dicts) with each DRef string replaced by
    ``replace(dref)``; other values are kept as they are."""
    if isdref(value):
        return replace(DRef(value))
    if isinstance(value, list):
        return [map_drefs(x, replace) for x in value]
    if isinstance(value, tuple):
        return tuple(map_drefs(x, replace) for x in value)
    if isinstance(value, dict):
        return {k: map_drefs(x, replace) for k, x in value.items()}
    return copy.deepcopy(value)


def check_file_name(name: Any, what: str = "file name") -> str:
    """`name` if it is a plain file name (no folder part); raises InvalidConfigError."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
    ):
        raise InvalidConfigError(
            f"{what} {name!r} must be a plain file name (no '/', not '.' or '..')"
        )
    return name
