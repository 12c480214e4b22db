"""The exceptions lightstore raises.

Every error a user can cause is one of these; each also subclasses the
matching built-in where one fits, so ``except KeyError`` keeps working::

    LightstoreError
    ├── InvalidConfigError (ValueError)        a config is not JSON-compatible, or has a bad name
    │   ├── InvalidMetricError                 a metric's name, value or step is invalid
    │   └── InvalidAnnotationError             a tag's name or value, or a note, is invalid
    ├── InvalidReferenceError (ValueError)     a string is not a well-formed DRef/RRef/RefPath
    │   ├── AmbiguousReferenceError            a prefix or name matches several objects (`.candidates`)
    │   └── InvalidSelectorError               a selector (`train@latest`, `train[lr=0.01]`) does not parse
    ├── QueryError (ValueError)                a catalogue query is malformed or would write
    ├── UnknownReferenceError (KeyError)       a well-formed reference the registry/store does not know
    │   └── NotInStoreError (FileNotFoundError) the store does not hold it (Pylightnix found no file there)
    ├── StoreError (OSError)                   the store root or its catalogue cannot be used
    │   ├── StoreNotFoundError                 the root is missing or is not a lightstore store
    │   ├── StoreReadOnlyError                 the root is not writable
    │   ├── DiskFullError                      the disk holding the store is full (ENOSPC, SQLite 'disk is full')
    │   ├── CatalogueVersionError              the catalogue was written by a newer lightstore
    │   ├── CatalogueCorruptError              the catalogue file is damaged (`reindex` rebuilds it)
    │   └── CatalogueError                     SQLite failed otherwise; the message says what lightstore was doing
    ├── BuildError                             a realizer raised; the original is `.cause`
    │   └── PromiseError                       a realizer did not create a promised path
    ├── MatcherError                           a matcher cannot be satisfied
    ├── NotRealizedError                       `assert_realized` / `realized()` found work to do
    ├── IntegrityError                         an operation would break the store's references
    ├── ArchiveError (ValueError)              an archive is malformed, hostile or does not verify
    │   └── RemoteIntegrityError               a remote's object is tampered, missing or lies
    │       └── UntrustedError                 a manifest lacks a valid signature by a trusted key
    ├── RemoteError (OSError)                  a remote cache cannot be reached, read or written
    ├── InvalidKeyError (ValueError)           a signing or public key is malformed or of the wrong kind
    ├── ChecksumError (ValueError)             downloaded/local data does not match its sha256
    ├── LockTimeout (TimeoutError)             a lock was not acquired in time; says who holds it
    └── UsageError                             an API is called in a way it does not support

Pylightnix checks its input with ``assert``; a Pylightnix program catches
those failures with ``except AssertionError``. So that it keeps working, the
errors that stand for such checks also subclass `AssertionError`:
InvalidConfigError, InvalidReferenceError, UnknownReferenceError,
MatcherError, NotRealizedError and UsageError (they are raised, not asserted,
so ``python -O`` changes nothing). `PylightnixException` (lightstore.compat)
is `LightstoreError`, `PromiseException` is `PromiseError` and Pylightnix's
`BuildError` is ours, with its attributes (`exception`, `outpaths`, `S`).

Messages say what was wrong and what to do next; details stay available as
attributes for programs.
"""

from __future__ import annotations

from typing import Any


class LightstoreError(Exception):
    """Base class of every error lightstore raises on purpose.

    Every one survives `pickle` (process pools, Dask) with its message and
    attributes; an attribute that cannot be pickled (say, a realizer's own
    exception holding a socket) travels as text.
    """

    def __str__(self) -> str:
        # KeyError.__str__ would quote the message; keep it readable.
        return str(self.args[0]) if self.args else self.__class__.__name__

    def __reduce__(self) -> tuple[Any, ...]:
        # The default, ``cls(*self.args)``, fails for the subclasses whose
        # constructors take more than the message: rebuild without __init__.
        return _rebuild, (type(self), self.args, _picklable(self.__dict__))


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


def _picklable(state: dict[str, Any]) -> dict[str, Any]:
    return {name: _portable(value) for name, value in state.items()}


def _portable(value: Any, depth: int = 0) -> Any:
    """`value` if a pickled copy of it loads again; else a dict or list of its values made
    portable (`BuildsFailed.failures`), and anything else as text: an exception as an
    Exception of its text. Loading is tried too, since what pickles may not load (an
    exception whose ``__init__`` takes other arguments than its ``args``)."""
    import pickle

    try:
        pickle.loads(pickle.dumps(value))
        return value
    except Exception:  # any failure of a foreign object's own pickling or unpickling
        pass
    if depth < 2 and isinstance(value, dict):
        return {k: _portable(v, depth + 1) for k, v in value.items()}
    if depth < 2 and isinstance(value, (list, tuple)):
        return [_portable(v, depth + 1) for v in value]
    try:
        text = f"{type(value).__name__}: {value}"
    except Exception:  # its __str__ failed too
        text = f"{type(value).__name__} (not shown: its text failed)"
    return Exception(text) if isinstance(value, BaseException) else text


class InvalidConfigError(LightstoreError, ValueError, AssertionError):
    """A config is not JSON-compatible, or its `name` is invalid."""


class InvalidMetricError(InvalidConfigError):
    """A metric's name is malformed, its value is not an int or a float, its step is not an
    integer, or it would be both one number and a series."""


class InvalidAnnotationError(InvalidConfigError):
    """A tag's name or value, or a note's text, is invalid."""


class InvalidReferenceError(LightstoreError, ValueError, AssertionError):
    """A string is not a well-formed reference (DRef, RRef, RefPath or hash)."""


class AmbiguousReferenceError(InvalidReferenceError):
    """A reference prefix or name matches more than one object; `candidates` lists them."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


class InvalidSelectorError(InvalidReferenceError):
    """A selector such as ``train[lr=0.01]@latest`` is malformed; `text` is what was given."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


class QueryError(LightstoreError, ValueError):
    """A query is malformed or refused: bad SQL, a write on the read-only catalogue, a bad filter."""


class UnknownReferenceError(LightstoreError, KeyError, AssertionError):
    """A well-formed reference that the registry or the store does not hold."""

    def __init__(self, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref


class NotInStoreError(UnknownReferenceError, FileNotFoundError):
    """A well-formed reference the store does not hold: Pylightnix, reading its file
    there, raised FileNotFoundError, so this is one too."""

    def __new__(cls, *args: Any, **kwargs: Any) -> NotInStoreError:
        # Instances have OSError's layout: build them (and their pickled copies) with it.
        return FileNotFoundError.__new__(cls, *args)


class StoreError(LightstoreError, OSError):
    """The store root or its catalogue cannot be used."""


class StoreNotFoundError(StoreError):
    """The store root does not exist or holds no lightstore store."""


class StoreReadOnlyError(StoreError):
    """The store root cannot be written to."""


class CatalogueVersionError(StoreError):
    """The catalogue was written by a newer version of lightstore."""

    def __init__(self, message: str, found: int, supported: int) -> None:
        super().__init__(message)
        self.found = found
        self.supported = supported


class DiskFullError(StoreError):
    """The filesystem holding the store has no space left; nothing half-written was kept."""


def disk_full(error: BaseException, what: str) -> DiskFullError | None:
    """A DiskFullError for `error` if it is ENOSPC/EDQUOT or SQLite's 'disk is full', else None."""
    import errno
    import sqlite3

    if isinstance(error, DiskFullError):
        return error
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        detail = error.strerror
    elif isinstance(error, sqlite3.OperationalError) and "disk is full" in str(error):
        detail = str(error)
    else:
        return None
    return DiskFullError(
        f"the disk holding the store is full ({detail}) while {what}; nothing half-written "
        "was kept: free some space (for instance `lightstore gc`) and try again"
    )


class CatalogueCorruptError(StoreError):
    """The catalogue file is damaged; `reindex` rebuilds it from the tree."""


class CatalogueError(StoreError):
    """SQLite failed for a reason that is neither contention nor damage (a full disk, an I/O
    error, a refused constraint); the message says what lightstore was doing."""


class BuildError(LightstoreError):
    """A realizer failed. The store is unchanged except for the failed build record."""

    def __init__(
        self,
        message: str,
        dref: str,
        cause: BaseException | None = None,
        outpaths: list[str] | None = None,
        S: Any = None,
    ) -> None:
        super().__init__(message)
        self.dref = dref
        self.cause = cause
        #: Pylightnix's names: the output folders left behind (removed by now) and the storage.
        self.outpaths: list[str] = list(outpaths or [])
        self.S = S

    @property
    def exception(self) -> BaseException | None:
        """The realizer's own exception (Pylightnix's name for `cause`)."""
        return self.cause


class PromiseError(BuildError):
    """A realizer returned without creating a path its config promised."""

    def __init__(
        self, message: str, dref: str, missing: list[Any], outpath: str | None = None
    ) -> None:
        super().__init__(message, dref)
        self.missing = missing
        #: Pylightnix's form: ``(output folder, [selfref, *path])`` per missing path.
        self.failed: list[tuple[str, list[str]]] = [
            (outpath or "", ["__self__", *p]) for p in missing
        ]


class MatcherError(LightstoreError, AssertionError):
    """A matcher rejected the realizations even after the realizer ran."""

    def __init__(self, message: str, dref: str | None = None) -> None:
        super().__init__(message)
        self.dref = dref


class NotRealizedError(LightstoreError, AssertionError):
    """Realization was required to be cached but would have to run a realizer."""

    def __init__(self, message: str, dref: str | None = None) -> None:
        super().__init__(message)
        self.dref = dref


class IntegrityError(LightstoreError):
    """An operation would leave references pointing at nothing."""


class ArchiveError(LightstoreError, ValueError):
    """An archive is malformed, hostile, too large, or does not verify."""


class RemoteIntegrityError(ArchiveError):
    """Something read from a remote cache does not verify: a blob whose bytes do not
    hash to its name, a missing blob, a manifest that lies about its files, its
    context or its RRef, or a path escaping its realization. Nothing of it was
    added; `added` lists the other realizations of the same pull that verified
    and were added (empty when the whole pull was refused)."""

    added: tuple[str, ...] = ()


class UntrustedError(RemoteIntegrityError):
    """Trusted keys are configured and a manifest is unsigned or wrongly signed."""


class InvalidKeyError(LightstoreError, ValueError):
    """A signing key or a trusted public key is malformed, unreadable or of the wrong kind
    (a secret key where a public one is expected). Messages never show key material."""


class RemoteError(LightstoreError, OSError):
    """A remote cache cannot be used: bad URL, missing driver, unreachable, refused.

    Messages never carry credentials (URLs are shown without user info and
    option values are redacted)."""


class ChecksumError(LightstoreError, ValueError):
    """Data does not match the checksum it was promised to have."""

    def __init__(self, message: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class LockTimeout(LightstoreError, TimeoutError):
    """A lock was not acquired in time. `holder` describes who held it, if known."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class UsageError(LightstoreError, AssertionError):
    """An API was called in a way it does not support (say, recursively, or
    with the wrong number of targets); the message says what to call instead."""
