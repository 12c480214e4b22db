"""Executors that run the engine's build tasks elsewhere than in the calling process,
and the choice of one from a realize's keyword arguments.

`lightstore.executors.dask` builds on a Dask distributed cluster
(``pip install 'lightstore[dask]'``); it is imported only when asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightstore.engine.executor import Executor


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

    `client` (a `distributed.Client` or a scheduler address), `jobs=N` (a
    LocalCluster of N worker processes for the realize) or `remote=` (with
    `worker_root=`: separate roots exchanging through that remote cache) ask
    for Dask (`lightstore.executors.dask.DaskExecutor`). Raises UsageError
    without `lightstore[dask]`, or for arguments that do not fit together.
    """
    if client is None and jobs is None and remote is None:
        return None
    from lightstore.executors.dask import DaskExecutor, SeparateRoots

    separate = None
    if remote is not None or worker_root is not None:
        separate = SeparateRoots(remote, worker_root, signing_key, trusted_keys, storage_options)
    return DaskExecutor(client=client, jobs=jobs, separate=separate)
