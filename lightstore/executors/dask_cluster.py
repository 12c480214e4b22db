"""Reaching Dask: the `distributed` package, and the LocalCluster of ``jobs=N``."""

from __future__ import annotations

import logging
import sys
from typing import Any

from lightstore.foundation.errors import UsageError

EXTRA_HINT = "install it with `pip install 'lightstore[dask]'`"

MAIN_GUARD = (
    "the worker processes of jobs= import the main script again, so the code that realizes "
    'must run under `if __name__ == "__main__":` (see the README, "Running on many cores")'
)


def distributed_module() -> Any:
    """The `distributed` package; UsageError naming the extra if it is missing."""
    try:
        import distributed
    except ImportError as e:
        raise UsageError(
            f"realizing with client= or jobs= needs Dask distributed ({e}); {EXTRA_HINT}"
        ) from e
    return distributed


def local_cluster(distributed: Any, jobs: int | None) -> Any:
    """A LocalCluster of `jobs` worker processes; UsageError if they cannot start."""
    if _importing_main():
        raise UsageError(
            f"realize(..., jobs=N) ran while a worker imported {_main()}: {MAIN_GUARD}"
        )
    unguarded = _unguarded_main()
    if unguarded is not None:
        raise UsageError(f'{unguarded} has no `if __name__ == "__main__":` block; {MAIN_GUARD}')
    try:
        return distributed.LocalCluster(
            n_workers=jobs,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.WARNING,
        )
    except Exception as e:  # Dask's own errors are plain RuntimeError, OSError, ...
        raise UsageError(
            f"the local Dask cluster of jobs={jobs} did not start ({type(e).__name__}: {e}); "
            f"if the workers' errors above come from importing {_main()}: {MAIN_GUARD}"
        ) from e


def _main() -> str:
    return str(getattr(sys.modules.get("__main__"), "__file__", None) or "the main module")


def _importing_main() -> bool:
    """Whether this process is a spawned child still importing its parent's main module
    (the flag that Python's own check, `multiprocessing.spawn._check_not_importing_main`, reads)."""
    import multiprocessing

    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _unguarded_main() -> str | None:
    """The main script's path if worker processes would re-run it: it has no
    ``if __name__ == "__main__":`` block and workers are not forked."""
    import ast

    import dask

    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or dask.config.get("distributed.worker.multiprocessing-method", "spawn") == "fork":
        return None
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if "__name__" in test and "__main__" in test:
                return None
    return str(path)
