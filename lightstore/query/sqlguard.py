"""What SQL that users type may do: one set of rules for `lightstore sql`, `history --where`
and the browser's SQL editor (`lightstore ui`).

- `authorize` (a SQLite authorizer) refuses what a read-only connection
  would still allow: ``ATTACH`` (which can create files; ``VACUUM INTO``
  uses it), pragmas that change the connection, functions that reveal the
  process's state or reach outside the catalogue (`DENIED_FUNCTIONS`:
  ``fts3_tokenizer`` returns a memory address, ``load_extension`` loads
  code), and `DENIED_TABLES` (``sqlite_stmt`` lists the statements prepared
  on the connection, in the browser other people's).
- A deadline (a progress handler) is checked between the steps of a
  statement, never inside one function call. So `USER_SQL_LIMITS` bound the
  size of values (and of LIKE/GLOB patterns, whose matching costs their
  length times the text's), and `install_guards` replaces the built-in
  functions whose one call could still run for seconds: ``printf``/
  ``format`` (``printf('%.*c', 1e9, 'x')`` loops a billion times whatever the
  size limit), ``instr``, ``replace`` and the two-argument ``trim``,
  ``ltrim`` and ``rtrim`` (quadratic in their arguments' lengths). A guard
  checks the arguments, refuses what would take too long, and otherwise
  lets SQLite's own function compute the result, on a private connection,
  so results are exactly SQLite's.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

#: Pragmas user SQL may run: introspection only (writes fail on ``mode=ro`` anyway).
SAFE_PRAGMAS = frozenset(
    {
        "collation_list",
        "compile_options",
        "data_version",
        "database_list",
        "foreign_key_check",
        "foreign_key_list",
        "foreign_keys",
        "freelist_count",
        "function_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "integrity_check",
        "module_list",
        "page_count",
        "page_size",
        "pragma_list",
        "quick_check",
        "recursive_triggers",
        "schema_version",
        "synchronous",
        "table_info",
        "table_list",
        "table_xinfo",
        "user_version",
    }
)

#: Functions user SQL may not call: they reveal the process's state (``fts3_tokenizer``
#: returns a pointer, ``fts5`` hands one out), load code or touch files (``load_extension``;
#: ``readfile``, ``writefile``, ``edit`` where the build has them), or write to SQLite's log.
DENIED_FUNCTIONS = frozenset(
    {
        "edit",
        "fts3_tokenizer",
        "fts5",
        "load_extension",
        "readfile",
        "sqlite_log",
        "writefile",
    }
)

#: Tables (virtual) user SQL may not read: ``sqlite_stmt`` shows the SQL prepared on the
#: connection; ``fsdir`` and ``zipfile`` (where the build has them) read files.
DENIED_TABLES = frozenset({"fsdir", "sqlite_stmt", "zipfile"})

#: The longest string or blob user SQL may make or read (bytes).
MAX_LENGTH = 8 * 1024 * 1024
#: The longest LIKE or GLOB pattern; matching costs up to its length times the text's.
MAX_PATTERN_LENGTH = 100
USER_SQL_LIMITS: dict[int, int] = {
    sqlite3.SQLITE_LIMIT_LENGTH: MAX_LENGTH,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: MAX_PATTERN_LENGTH,
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
}


def authorize(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
    """The authorizer of connections that run user SQL (see the module docstring)."""
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() not in SAFE_PRAGMAS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_READ and (arg1 or "").lower() in DENIED_TABLES:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def set_limits(conn: sqlite3.Connection, limits: dict[int, int]) -> dict[int, int]:
    """Set SQLite limits on `conn`; return the previous values (to restore them)."""
    return {category: conn.setlimit(category, value) for category, value in limits.items()}


def prepare_connection(conn: sqlite3.Connection) -> None:
    """Make `conn` one that runs user SQL for good: authorizer, limits and guards.

    For connections that serve nothing else (the browser's); `lightstore sql`
    sets the limits around each statement instead (`iter_sql`), since its
    connection also reads whole records for lightstore itself.
    """
    conn.set_authorizer(authorize)
    set_limits(conn, USER_SQL_LIMITS)
    install_guards(conn, limited=True)


# -- guards ---------------------------------------------------------------------------------

#: How much work one call of a quadratic function may do, in pairs of characters compared
#: (its arguments' lengths multiplied): a tenth of a second or so. instr and replace compare
#: with memcmp, far faster than trim's character by character.
WORK_LIMITS = {"instr": 2 * 10**9, "replace": 2 * 10**9, "trim": 5 * 10**7}
#: What `last_refusal` says when a guard stopped a statement for its deadline.
DEADLINE_PASSED = "the statement's deadline passed"

_local = threading.local()


def enter_user_sql(deadline: float | None) -> None:
    """Say that this thread now runs user SQL, under `USER_SQL_LIMITS`, until `deadline`
    (`time.monotonic()` seconds; None: none): guarded calls refuse to start after it, since
    the progress handler only looks between steps and a thousand steps may hold a thousand
    calls."""
    _local.deadline = deadline
    _local.limited = True


def leave_user_sql() -> None:
    """Undo `enter_user_sql`."""
    _local.deadline = None
    _local.limited = False


class GuardRefusal(Exception):
    """A guard refused a call (raised only where the statement cannot be failed otherwise)."""


def last_refusal() -> str | None:
    """Why a guard refused a call on this thread, and forget it (None if none did)."""
    reason: str | None = getattr(_local, "refusal", None)
    _local.refusal = None
    return reason


def _builtin() -> sqlite3.Connection:
    """This thread's private connection, where SQLite's own functions compute results."""
    conn: sqlite3.Connection | None = getattr(_local, "builtin", None)
    if conn is None:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.text_factory = text_or_bytes
        set_limits(conn, USER_SQL_LIMITS)
        _local.builtin = conn
    return conn


def text_or_bytes(data: bytes) -> str | bytes:
    """SQLite text as a str, or as its bytes when they are not UTF-8 (replace() and trim()
    on blobs make such text): a guard returns them as a blob rather than fail."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _guard(
    name: str, check: Callable[[tuple[Any, ...]], str | None], limited: bool
) -> Callable[..., Any]:
    """SQL function `name`: `check` says why a call is refused (None: it is not); a call
    that is not refused is SQLite's own, computed on the private connection. `limited`:
    the connection always has `USER_SQL_LIMITS` (else only inside `enter_user_sql`)."""
    sql = f"SELECT {name}(" + "{}" + ")"

    def guard(*args: Any) -> Any:
        deadline = getattr(_local, "deadline", None)
        if deadline is not None and time.monotonic() > deadline:
            return _fail(DEADLINE_PASSED, limited)
        reason = check(args)
        if reason is not None:
            return _fail(f"{name}(): {reason}", limited)
        try:
            return _builtin().execute(sql.format(", ".join("?" * len(args))), args).fetchone()[0]
        except sqlite3.DataError as e:  # 'string or blob too big'
            return _fail(f"{name}(): {e}", limited)

    return guard


def _fail(reason: str, limited: bool) -> Any:
    """Make the statement calling a guard fail, and remember why (`last_refusal`).

    Without raising where the limits are known to be in force: an exception in a
    function becomes SQLite's vague 'user-defined function raised exception', with
    a traceback printed where callback tracebacks are on (Datasette turns them on).
    """
    _local.refusal = reason
    if limited or getattr(_local, "limited", False):
        return bytes(MAX_LENGTH + 1)  # which SQLite refuses: 'string or blob too big'
    raise GuardRefusal(reason)


def _length(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, (str, bytes)):
        return len(value)
    return len(repr(value))  # a number, as SQLite writes it (give or take a few digits)


def _quadratic(limit: int) -> Callable[[tuple[Any, ...]], str | None]:
    def check(args: tuple[Any, ...]) -> str | None:
        a, b = _length(args[0]), _length(args[1])
        if a * b > limit:
            return f"on values this long ({a} and {b} characters) it could run for minutes"
        return None

    return check


# One printf conversion: '%', its flags, width, precision and size, then its type.
_CONVERSION = re.compile(r"%([-+ #!0,.*0-9l]*)(.?)", re.DOTALL)
_NUMBER_PREFIX = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def _as_int(value: Any) -> float:
    """How large SQLite may take `value` to be as a width (generously: never smaller)."""
    if isinstance(value, (int, float)):
        return abs(float(value)) if math.isfinite(value) else math.inf
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        m = _NUMBER_PREFIX.match(value)
        return abs(float(m.group(0))) if m else 0.0
    return 0.0


def check_printf(args: tuple[Any, ...]) -> str | None:
    """Why SQLite's printf(*args) is refused, or None: a width or precision (written, or
    taken by ``*`` from the arguments) beyond `MAX_LENGTH`, whose result could not be that
    long anyway, and for which ``%c`` loops that many times before SQLite finds out."""
    if not args or not isinstance(args[0], (str, bytes)):
        return None
    fmt = args[0] if isinstance(args[0], str) else args[0].decode("latin-1")  # a blob is text too
    remaining = list(args[1:])
    for m in _CONVERSION.finditer(fmt):
        spec, kind = m.groups()
        sizes = [float(d) for d in re.findall(r"\d+", spec)]
        for _ in range(spec.count("*")):
            sizes.append(_as_int(remaining.pop(0)) if remaining else 0.0)
        if any(size > MAX_LENGTH for size in sizes):
            return (
                f"a width or precision above {MAX_LENGTH} in {m.group(0)!r} would make a "
                f"string longer than SQL here may make ({MAX_LENGTH} bytes)"
            )
        if not kind:
            break
        if kind not in "%n" and remaining:
            remaining.pop(0)
    return None


def _has_function(name: str) -> bool:
    try:
        _builtin().execute(f"SELECT {name}('')").fetchone()
    except sqlite3.OperationalError:  # no such function
        return False
    return True


def install_guards(conn: sqlite3.Connection, limited: bool = False) -> None:
    """Replace, on `conn`, the built-in functions whose one call could outlast a deadline
    (see the module docstring) by guards that refuse such calls. `limited`: `conn` has
    `USER_SQL_LIMITS` for good (else user SQL runs inside `enter_user_sql`)."""
    for name in ("printf", "format"):
        if _has_function(name):  # format is printf's other name since SQLite 3.38
            guard = _guard(name, check_printf, limited)
            conn.create_function(name, -1, guard, deterministic=True)
    for name, nargs, limit in (
        ("instr", 2, WORK_LIMITS["instr"]),
        ("replace", 3, WORK_LIMITS["replace"]),
        ("trim", 2, WORK_LIMITS["trim"]),
        ("ltrim", 2, WORK_LIMITS["trim"]),
        ("rtrim", 2, WORK_LIMITS["trim"]),
    ):
        guard = _guard(name, _quadratic(limit), limited)
        conn.create_function(name, nargs, guard, deterministic=True)
