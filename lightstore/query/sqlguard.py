"""What SQL that users type may do: one set of rules for `lightstore sql`, `history --where`
and the browser's SQL editor (`lightstore ui`).

- `lightstore.query.sqlauthorizer.authorize` (a SQLite authorizer) lets a
  statement read and nothing else: no write, no object (temporary ones
  included), no transaction, no ``ATTACH``, only introspection pragmas, and
  neither the functions nor the tables of its deny-lists. User SQL also
  runs on a connection opened read-only (``mode=ro``).
- A ``where`` fragment (`history --where`) must be one expression:
  `check_expression` refuses text that closes more parentheses than it
  opens, or leaves a string, a quoted name or a comment open, which could
  reach outside the parentheses it is put in.
- A deadline (a progress handler) is checked between the steps of a
  statement, never inside one function call. So `USER_SQL_LIMITS` bound the
  size of values (and of LIKE/GLOB patterns, whose matching costs their
  length times the text's), and `install_guards` replaces the built-in
  functions whose one call could still run for seconds: ``printf``/
  ``format`` (``printf('%.*c', 1e9, 'x')`` loops a billion times whatever the
  size limit), ``instr``, ``replace``, the two-argument ``trim``, ``ltrim``
  and ``rtrim``, and ``json_patch`` (quadratic in their arguments' lengths;
  ``json_patch`` in their numbers of keys). A guard checks the arguments,
  refuses what would take too long, and otherwise lets SQLite's own function
  compute the result, on a private connection, so results are exactly
  SQLite's (but ``json_patch``'s is plain JSON text, as if read from a table:
  inside another JSON function, wrap it in ``json()``).
- What a statement returns is bounded too: values by `MAX_LENGTH`, a row by
  `MAX_COLUMNS` of them, and the rows a caller gathers by a byte budget
  (`lightstore.query.sqlbudget`).

`prepare_connection` puts all of them on a connection for good.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from lightstore.foundation.errors import QueryError
from lightstore.query.sqlauthorizer import authorize

#: The longest string or blob user SQL may make or read (bytes).
MAX_LENGTH = 8 * 1024 * 1024
#: The longest LIKE or GLOB pattern; matching costs up to its length times the text's.
MAX_PATTERN_LENGTH = 100
#: The most columns a statement may return: a row holds at most this many values of up to
#: `MAX_LENGTH` bytes, all in memory at once (the widest view, `runs`, has 19).
MAX_COLUMNS = 32
USER_SQL_LIMITS: dict[int, int] = {
    sqlite3.SQLITE_LIMIT_LENGTH: MAX_LENGTH,
    sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH: MAX_PATTERN_LENGTH,
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
    sqlite3.SQLITE_LIMIT_COLUMN: MAX_COLUMNS,
}


_local = threading.local()


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


def check_expression(text: str) -> None:
    """Raise QueryError unless `text`, put between parentheses, stays one expression there:
    its parentheses balance and never close more than they opened, and every string
    (``'..'``), quoted name (``".."``, ``[..]``, ```..```) and ``/* */`` comment ends;
    ``;`` is refused. A ``--`` comment may end the text (the parentheses are closed on a
    new line)."""

    def refuse(why: str) -> QueryError:
        return QueryError(
            f"invalid SQL condition {text!r}: {why}; give one expression over the columns, "
            "such as \"duration > 60 AND host = 'gpu1'\""
        )

    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"`[":
            close = "]" if c == "[" else c
            j = i + 1
            while True:
                j = text.find(close, j)
                if j < 0:
                    raise refuse(f"{c} at {i} is not closed")
                if close != "]" and text.startswith(close * 2, j):
                    j += 2  # a doubled quote stands for itself
                    continue
                break
            i = j + 1
            continue
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise refuse(f"the comment at {i} is not closed")
            i = end + 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise refuse(f"')' at {i} closes a parenthesis it did not open")
        elif c == ";":
            raise refuse("';' ends the statement")
        i += 1
    if depth:
        raise refuse("a '(' is not closed")


# -- guards ---------------------------------------------------------------------------------

#: How much work one call of a quadratic function may do, in pairs of characters compared
#: (its arguments' lengths multiplied): a tenth of a second or so. instr and replace compare
#: with memcmp, far faster than trim's character by character. json_patch looks up each key
#: of the patch among the target's keys: its work is counted in pairs of keys (``:``s).
WORK_LIMITS = {"instr": 2 * 10**9, "replace": 2 * 10**9, "trim": 5 * 10**7, "json_patch": 5 * 10**7}
#: What `last_refusal` says when a guard stopped a statement for its deadline.
DEADLINE_PASSED = "the statement's deadline passed"


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
        except sqlite3.Error as e:  # 'string or blob too big', 'malformed JSON'
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


def _keys(value: Any) -> int:
    """At most how many keys JSON text `value` holds (its ``:``s)."""
    if isinstance(value, str):
        return value.count(":")
    if isinstance(value, bytes):
        return value.count(b":")
    return 0


def check_json_patch(args: tuple[Any, ...]) -> str | None:
    """Why SQLite's json_patch(*args) is refused, or None: it looks up every key of the
    patch among the target's keys, one by one, so two objects of many keys could keep it
    busy for minutes."""
    a, b = _keys(args[0]), _keys(args[1])
    if a * b > WORK_LIMITS["json_patch"]:
        return f"on objects of this many keys (up to {a} and {b}) it could run for minutes"
    return None


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


def _has_function(name: str, args: str = "''") -> bool:
    try:
        _builtin().execute(f"SELECT {name}({args})").fetchone()
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
    if _has_function("json_patch", "'{}', '{}'"):  # JSON is built in since SQLite 3.38
        guard = _guard("json_patch", check_json_patch, limited)
        conn.create_function("json_patch", 2, guard, deterministic=True)
