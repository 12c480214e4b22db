"""Formatting rows and values for the terminal, and progress bars.

Tables are for people (short references, local times, human sizes); JSON,
newline-delimited JSON, CSV and TSV are for programs (full references, Unix
seconds, bytes). Progress bars go to stderr, and only when stdout is a
terminal, so piped output carries nothing extra.

Text for people goes through `terminal_safe` (tables here, every other line
through `echo`): file names, config values and host names come from
realizations that may have been pulled from someone else, and a terminal
acts on the escape sequences they could hold (set the title, write the
clipboard with OSC 52, move the cursor, hide text), and invisible characters
(zero-width spaces, tag characters) can make one text look like another.
These are shown escaped (``\x1b``, ``\n``, ``\u200b``) instead. JSON (which escapes them
itself), CSV and TSV stay exact, as do `cat` and a build's log, which print
bytes as they are (but for a log built elsewhere, escaped on a terminal).
"""

from __future__ import annotations

import base64
import csv
import functools
import inspect
import json
import math
import re
import sys
import textwrap
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click
from tabulate import tabulate

Row = dict[str, Any]
Formatter = Callable[[Any], str]
ProgressFn = Callable[..., None]

FORMATS = ("table", "json", "nl", "csv", "tsv")
#: Formats for programs: raw values, full references.
MACHINE_FORMATS = ("json", "nl", "csv", "tsv")


# What a terminal may act on, or hides: every character that is not printable but for
# spaces, i.e. of the Unicode categories Cc (C0 and C1 controls: ESC starts CSI and OSC
# sequences, C1 CSI and OSC are one character each; DEL), Cf (formats: the bidirectional
# overrides and isolates show text in another order; zero-width spaces and joiners, the
# soft hyphen, the byte order mark and the tag characters of U+E0000 hide text), Zl and Zp
# (line and paragraph separators, which some terminals break lines on), and Cs (lone
# surrogates: bytes of a file name that are not UTF-8).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_NOT_ASCII_PRINTABLE = re.compile("[^\x20-\x7e]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    if unicodedata.category(c) not in _HIDDEN_CATEGORIES:
        return c
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def terminal_safe(text: str) -> str:
    """`text` with every character a terminal would act on, or that hides text, written as
    an escape (``\\x1b``, ``\\n``, ``\\u202e``, ``\\u200b``, ``\\U000e0041``; a non-UTF-8
    byte of a file name as ``\\xff``); other characters, spaces included, are kept."""
    if text.isprintable():  # the common case, checked fast (isprintable is stricter)
        return text
    return _NOT_ASCII_PRINTABLE.sub(_escape, text)


def echo(*lines: str, err: bool = False) -> None:
    """Print lines of text for people (on stderr with `err`), each made `terminal_safe`;
    a newline inside one is shown as ``\n``, so no value can forge a line of its own."""
    click.echo("\n".join(terminal_safe(line) for line in lines), err=err)


def echo_text(text: str, err: bool = False) -> None:
    """Print a message of several lines for people: `echo` of each of its lines."""
    echo(*text.split("\n"), err=err)


def human_size(n: int | float | None) -> str:
    """``1536`` -> ``1.5 KiB``; what is not a finite number (an edited catalogue) as ``? (...)``."""
    if n is None:
        return ""
    try:
        size = float(n)
    except (TypeError, ValueError, OverflowError):
        size = math.nan
    if isinstance(n, bool) or not math.isfinite(size):
        return f"? ({n!r})"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_time(t: float | None) -> str:
    """Unix seconds -> local ``YYYY-MM-DD HH:MM:SS``."""
    if t is None:
        return ""
    try:
        return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError, TypeError):
        # The catalogue is public and can be edited: show what is there.
        return f"? ({t!r})"


def human_duration(d: float | None) -> str:
    """Seconds -> ``0.42s``, ``3m07s``, ``2h05m``."""
    if d is None:
        return ""
    if not isinstance(d, int | float) or not math.isfinite(d) or abs(d) > 1e12:
        return f"? ({d!r})"
    if d < 60:
        return f"{d:.2f}s" if d < 10 else f"{d:.1f}s"
    minutes, seconds = divmod(round(d), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def short_ref(ref: str | None) -> str:
    """The first 8 hex digits of a reference's own hash (enough for `lightstore show`)."""
    if not ref:
        return ""
    return ref.split(":", 1)[1][:8]


def plain(value: Any) -> str:
    """A value for a table cell: JSON for lists and dicts, empty for None."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def output_options(
    fn: Callable[..., Any] | None = None, *, json_help: str = "Output a JSON array of objects."
) -> Any:
    """Add --json/--nl/--csv/--tsv/--fmt; the command receives `fmt` (a FORMATS name or a
    tabulate table format). Use bare, or as ``@output_options(json_help=...)``."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @click.option("--json", "fmt", flag_value="json", help=json_help)
        @click.option("--nl", "fmt", flag_value="nl", help="Output one JSON object per line.")
        @click.option("--csv", "fmt", flag_value="csv", help="Output CSV with a header row.")
        @click.option("--tsv", "fmt", flag_value="tsv", help="Output TSV with a header row.")
        @click.option(
            "--fmt",
            "table_format",
            default=None,
            metavar="STYLE",
            help="Table style (tabulate's: simple, github, grid, psql, ...).",
        )
        @functools.wraps(fn)
        def wrapper(*args: Any, fmt: str | None, table_format: str | None, **kw: Any) -> Any:
            return fn(*args, fmt=format_choice(fmt or table_format or "table"), **kw)

        return wrapper

    return decorate(fn) if fn is not None else decorate


def emit_rows(
    rows: Iterable[Row],
    columns: Sequence[str],
    fmt: str,
    display: dict[str, Formatter] | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Print `rows` in `fmt`. Tables apply `display[column]` to cells and rename
    columns with `headers`; the other formats print raw values under the column names.
    JSON, lines and CSV are written row by row, so an iterator of rows is streamed.
    """
    if fmt == "json":
        first = True
        for r in rows:
            text = json_text({c: r.get(c) for c in columns}, indent=2)
            click.echo(("[\n" if first else ",\n") + textwrap.indent(text, "  "), nl=False)
            first = False
        click.echo("[]" if first else "\n]")
    elif fmt == "nl":
        for r in rows:
            click.echo(json_text({c: r.get(c) for c in columns}))
    elif fmt in ("csv", "tsv"):
        lines = _Lines()
        writer = csv.writer(lines, dialect="excel-tab" if fmt == "tsv" else "excel")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_csv_cell(r.get(c)) for c in columns])
            if lines.size > 1 << 16:
                lines.flush()
        lines.flush()
    else:
        rows = list(rows)
        display = display or {}
        headers = headers or {}
        names = [terminal_safe(headers.get(c, c)) for c in columns]
        cells = [[terminal_safe(display.get(c, plain)(r.get(c))) for c in columns] for r in rows]
        if fmt == "table":
            numeric = [_is_numeric(rows, c) for c in columns]
            click.echo(simple_table(names, cells, numeric))
        else:
            click.echo(tabulate(cells, headers=names, tablefmt=fmt, disable_numparse=True))


class _Lines:
    """Where `csv.writer` writes: lines kept as they are, printed together by `flush` (a
    StringIO would copy a long line into a buffer of four bytes per character)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def write(self, line: str) -> None:
        self.parts.append(line)
        self.size += len(line)

    def flush(self) -> None:
        if self.parts:
            click.echo("".join(self.parts), nl=False)
        self.parts, self.size = [], 0


def _is_numeric(rows: Sequence[Row], column: str) -> bool:
    values = [r.get(column) for r in rows if r.get(column) is not None]
    return bool(values) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    )


def simple_table(
    headers: Sequence[str], cells: Sequence[Sequence[str]], right: Sequence[bool]
) -> str:
    """A table in tabulate's 'simple' style, numbers right-aligned.

    Written out here because tabulate takes seconds for the 50,000 rows of a
    big store's `ls`; this is linear and fast.
    """
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            if len(cell) > widths[i]:
                widths[i] = len(cell)

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
        ).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


def json_text(value: Any, indent: int | None = None) -> str:
    """`value` as JSON that every parser reads: BLOBs as ``{"$base64": true, ...}``, and a
    float that is not finite (SQL's ``9e999``), which JSON cannot hold, as the text
    ``"Infinity"``, ``"-Infinity"`` or ``"NaN"`` (what ``float()`` reads back)."""
    try:
        return json.dumps(value, indent=indent, default=_json_default, allow_nan=False)
    except ValueError:  # a non-finite float somewhere: rare, so looked for only then
        return json.dumps(_finite(value), indent=indent, default=_json_default)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    # BLOBs, as sqlite-utils writes them.
    if isinstance(value, bytes):
        return {"$base64": True, "encoded": base64.b64encode(value).decode("ascii")}
    return str(value)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bytes):  # a BLOB: its base64, as in JSON's {"$base64": ...}
        return base64.b64encode(value).decode("ascii")
    return "" if value is None else value


def emit_json(value: Any) -> None:
    """Print one JSON document (`json_text`)."""
    click.echo(json_text(value, indent=2))


def stdout_is_terminal() -> bool:
    """Whether stdout is a terminal (progress bars are shown only then)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def progress(label: str) -> Iterator[ProgressFn | None]:
    """A ``progress(done, total, *item)`` callback drawing a bar on stderr, or None when
    stdout is not a terminal. The bar appears at the first call.
    """
    if not stdout_is_terminal():
        yield None
        return
    bar: Any = None

    def update(done: int, total: int, *_: Any) -> None:  # some callers add the item
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr)
            bar.__enter__()
        bar.update(max(0, done - bar.pos))

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def call_with_progress(fn: Callable[..., Any], label: str, *args: Any, **kw: Any) -> Any:
    """Call `fn`, passing a progress callback if it accepts ``progress=``."""
    if "progress" not in inspect.signature(fn).parameters:
        return fn(*args, **kw)
    with progress(label) as update:
        return fn(*args, progress=update, **kw)


def format_choice(fmt: str) -> str:
    """Check a --fmt table style; raise click.BadParameter for an unknown one."""
    from tabulate import tabulate_formats

    if fmt in FORMATS or fmt in tabulate_formats:
        return fmt
    raise click.BadParameter(
        f"unknown table style {fmt!r}; choose one of: {', '.join(sorted(tabulate_formats))}",
        param_hint="--fmt",
    )
