"""The rows `Database.query` returns: tuples whose values can also be read by column name."""

from __future__ import annotations

from typing import Any


class Row(tuple):
    """A result row of `Database.query`: still a tuple (it unpacks, indexes and compares
    as one), and its values can be read by column name as with sqlite-utils or
    `sqlite3.Row`: ``row["size"]``, ``row.keys()``, ``dict(row)``, ``row.asdict()``.
    """

    __slots__ = ()
    _names: tuple[str, ...] = ()
    _index: dict[str, int] = {}  # noqa: RUF012 - replaced per column list by row_class

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                key = self._index[key]
            except KeyError:
                raise KeyError(
                    f"no column {key!r} in this row; its columns are {', '.join(self._names)}"
                ) from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._names)

    def asdict(self) -> dict[str, Any]:
        """The row as a dict of column name to value."""
        return dict(zip(self._names, self, strict=True))

    def __repr__(self) -> str:
        return (
            "Row(" + ", ".join(f"{n}={v!r}" for n, v in zip(self._names, self, strict=True)) + ")"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (make_row, (self._names, tuple(self)))


_ROW_CLASSES: dict[tuple[str, ...], type[Row]] = {}


def row_class(names: tuple[str, ...]) -> type[Row]:
    """The `Row` subclass for one list of column names (cached: queries repeat)."""
    cls = _ROW_CLASSES.get(names)
    if cls is None:
        index: dict[str, int] = {}
        for i, n in enumerate(names):
            index.setdefault(n, i)  # a repeated name reads its first column
        cls = type("Row", (Row,), {"__slots__": (), "_names": names, "_index": index})
        if len(_ROW_CLASSES) < 4096:
            _ROW_CLASSES[names] = cls
    return cls


def make_row(names: tuple[str, ...], values: tuple[Any, ...]) -> Row:
    """A `Row` with these column names and values (also how rows unpickle)."""
    return row_class(tuple(names))(values)
