"""How much a statement of user SQL may return: the rows a caller gathers stop at a byte
budget (`row_bytes`, `MAX_RESULT_BYTES`; `BudgetCursor` for the browser), one row at
`MAX_ROW_BYTES`, and streamed rows come in batches of at most `BATCH_BYTES`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

#: Rows gathered in memory (`run_sql`, a table of `lightstore sql`) stop at this many bytes
#: of values (`row_bytes`); streamed rows do not, and come in batches of `BATCH_BYTES`.
MAX_RESULT_BYTES = 256 * 1024 * 1024

#: The most bytes of values in one batch of streamed rows (at most 1,000 rows).
BATCH_BYTES = 4 * 1024 * 1024

#: A row of more bytes of values is refused as soon as it is read, before it is written
#: out (which copies it several times: JSON, base64, the terminal's encoding).
MAX_ROW_BYTES = 64 * 1024 * 1024

#: What `row_bytes` counts for a value besides its text or bytes.
_VALUE_OVERHEAD = 16


def row_bytes(row: Any) -> int:
    """About how many bytes a row's values take: their text and bytes, plus a little each."""
    size = _VALUE_OVERHEAD * len(row)
    for value in row:
        if type(value) is str or type(value) is bytes:
            size += len(value)
    return size


def too_big(limit: int, what: str = "the result") -> str:
    """The refusal of `what` (a result, a row) larger than `limit` bytes."""
    return (
        f"refused: {what} is larger than {limit // (1024 * 1024)} MiB, more than is "
        "gathered in memory here; select fewer rows or columns (LIMIT, substr(), length())"
    )


class BudgetCursor(sqlite3.Cursor):
    """A cursor that refuses, with sqlite3.OperationalError, to fetch more than
    `BudgetConnection.result_bytes` bytes of values (`row_bytes`) for one statement, or
    a statement that runs out of memory (instead of Python's MemoryError). For Datasette,
    which gathers the rows of a query (at most its ``max_returned_rows``), then renders
    them."""

    _spent = 0

    def execute(self, sql: str, parameters: Any = (), /) -> BudgetCursor:
        self._spent = 0
        try:
            super().execute(sql, parameters)
        except MemoryError:
            raise sqlite3.OperationalError(_OUT_OF_MEMORY) from None
        return self

    def fetchone(self) -> Any:
        try:
            row = super().fetchone()
        except MemoryError:
            raise sqlite3.OperationalError(_OUT_OF_MEMORY) from None
        if row is not None:
            self._spent += row_bytes(row)
            limit: int = getattr(self.connection, "result_bytes", MAX_RESULT_BYTES)
            if self._spent > limit:
                raise sqlite3.OperationalError(too_big(limit))
        return row

    def fetchmany(self, size: int | None = None) -> list[Any]:
        rows = []
        for _ in range(self.arraysize if size is None else size):
            row = self.fetchone()
            if row is None:
                break
            rows.append(row)
        return rows

    def fetchall(self) -> list[Any]:
        return list(iter(self.fetchone, None))

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row


_OUT_OF_MEMORY = (
    "refused: the query needs more memory than is allowed here; select fewer or smaller "
    "values (LIMIT, substr(), length())"
)


class BudgetConnection(sqlite3.Connection):
    """A connection whose cursors are `BudgetCursor`s, with `result_bytes` their budget:
    ``sqlite3.connect(path, factory=BudgetConnection)``."""

    result_bytes = MAX_RESULT_BYTES

    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(factory or BudgetCursor)
