"""Reaching Dask: the `distributed` package, imported only when `client=` asks for it."""

from __future__ import annotations

from typing import Any

from lightstore.foundation.errors import UsageError

EXTRA_HINT = "install it with `pip install 'lightstore[dask]'`"


def distributed_module() -> Any:
    """The `distributed` package; UsageError naming the extra if it is missing."""
    try:
        import distributed
    except ImportError as e:
        raise UsageError(
            f"realizing with client= needs Dask distributed ({e}); {EXTRA_HINT}"
        ) from e
    return distributed
