"""Query results: a list of dict rows that also converts to a pandas DataFrame."""

from __future__ import annotations

from typing import Any

from lightstore.foundation.errors import LightstoreError


class Rows(list[dict[str, Any]]):
    """Rows of a query (a plain list of dicts) with `columns` and `to_pandas()`."""

    def __init__(self, rows: Any = (), columns: list[str] | None = None) -> None:
        super().__init__(rows)
        self.columns: list[str] = list(columns) if columns is not None else []

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame, columns in query order.

        Raises LightstoreError naming the package if pandas is not installed.
        """
        try:
            import pandas
        except ImportError as e:
            raise LightstoreError(
                "to_pandas() needs pandas; install it with `pip install pandas`"
            ) from e
        columns = self.columns or (list(self[0]) if self else [])
        return pandas.DataFrame.from_records(list(self), columns=columns)
