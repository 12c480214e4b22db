"""Executors that run the engine's build tasks elsewhere than in the calling process,
and the choice of one from a realize's keyword arguments.

`lightstore.executors.local` builds on worker processes of this machine
(`jobs=N`, needs cloudpickle); `lightstore.executors.dask` on a Dask
distributed cluster (`client=`, ``pip install 'lightstore[dask]'``). Each is
imported only when asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightstore.engine.executor import Executor
from lightstore.foundation.errors import UsageError


def executor_for(
    *,
    client: Any = None,
    jobs: int | None = None,
    remote: str | None = None,
    worker_root: str | None = None,
    signing_key: Any = None,
    trusted_keys: Iterable[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Executor | None:
    """The executor a realize's keyword arguments ask for; None for the engine's serial one.

    `client` (a `distributed.Client` or a scheduler address) asks for Dask
    (`lightstore.executors.dask.DaskExecutor`); `jobs=N` for N worker
    processes of this machine, kept for the process
    (`lightstore.executors.local.LocalExecutor`). `remote=` with
    `worker_root=` gives the workers of either separate roots exchanging
    through that remote cache (without `client=` or `jobs=`, one worker a
    CPU). Raises UsageError without `lightstore[dask]` for `client=`, without
    cloudpickle for `jobs=`, or for arguments that do not fit together.
    """
    if client is None and jobs is None and remote is None:
        return None
    if client is not None and jobs is not None:
        raise UsageError("give client= or jobs=, not both")
    from lightstore.executors.driving import SeparateRoots

    separate = None
    if remote is not None or worker_root is not None:
        separate = SeparateRoots(remote, worker_root, signing_key, trusted_keys, storage_options)
    if client is not None:
        from lightstore.executors.dask import DaskExecutor

        return DaskExecutor(client=client, separate=separate)
    from lightstore.executors.local import LocalExecutor

    return LocalExecutor(jobs=jobs, separate=separate)
