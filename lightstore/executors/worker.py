"""What runs in a worker process (a Dask worker, or one of the local pool of `jobs=N`):
the build step in the caller's store (shared root) or in the worker's own store,
exchanging through a remote cache (separate roots)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from lightstore.engine.executor import TravellingSubstituter
from lightstore.engine.plan import BuildTask, RealizeOptions, match_existing
from lightstore.engine.step import execute
from lightstore.foundation import terminal
from lightstore.foundation.errors import StoreNotFoundError, UsageError
from lightstore.foundation.refs import RRef
from lightstore.store import LocalStore


@dataclass(frozen=True)
class Exchange:
    """Separate roots as the workers need them, resolved in the caller: the remote and
    its driver's options, the worker stores' root, the caller's trust and signing key."""

    url: str
    worker_root: str
    trusted: Any
    signing_key: Any
    storage_options: Mapping[str, Any] | None = None


def exchange_for(
    store: LocalStore,
    url: str,
    worker_root: str,
    signing_key: Any,
    trusted_keys: Iterable[str] | None,
    storage_options: Mapping[str, Any] | None,
) -> Exchange:
    """The exchange for a realize into `store`: the trust of the caller's store and the
    key to sign with (which that trust must accept; UsageError otherwise)."""
    from lightstore.remote._sign import signing_key_for, trusted_keys_for

    trusted = trusted_keys_for(store.root, trusted_keys)
    key = signing_key_for(signing_key)
    if trusted and (key is None or not trusted.trusts(key)):
        raise UsageError(
            "separate roots exchange through the remote, and this store trusts only signed "
            "realizations: give a signing key whose public key it trusts (signing_key= or "
            "$LIGHTSTORE_SIGNING_KEY; nothing was built)"
        )
    options = dict(storage_options) if storage_options is not None else None
    return Exchange(url, worker_root, trusted, key, options)


def worker_name() -> str:
    """The Dask worker's address; host:pid elsewhere (a local pool's worker)."""
    # A process that has not imported distributed is no Dask worker (and importing it
    # here would cost a local worker a second).
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            return str(distributed.get_worker().address)
        except (AttributeError, ValueError):
            pass
    return f"{socket.gethostname()}:{os.getpid()}"


#: The Dask event topic of what builds print, for a caller that draws a progress bar.
OUTPUT_TOPIC = "lightstore-output"

_relaying = 0
_relaying_lock = threading.Lock()


@contextlib.contextmanager
def _output_to_client() -> Iterator[None]:
    """On a Dask worker: send what builds print to the client as `OUTPUT_TOPIC` events
    instead of the worker's terminal (the sink is the process's: counted across tasks)."""
    global _relaying
    distributed = sys.modules.get("distributed")
    try:
        worker = distributed.get_worker() if distributed is not None else None
    except (AttributeError, ValueError):  # not on a Dask worker
        worker = None
    if worker is None:
        yield
        return

    def send(fd: int, data: bytes) -> None:
        with contextlib.suppress(Exception):  # a worker shutting down: the output is lost
            worker.log_event(OUTPUT_TOPIC, {"fd": fd, "data": data})

    with _relaying_lock:
        _relaying += 1
        if _relaying == 1:
            terminal.set_sink(terminal.Relay(send))
    try:
        yield
    finally:
        with _relaying_lock:
            _relaying -= 1
            if _relaying == 0:
                terminal.set_sink(None)


def build_on_worker(
    root: str,
    task: BuildTask,
    options: RealizeOptions,
    exchange: Exchange | None,
    output_to_client: bool = False,
) -> dict[str, Any]:
    """A worker's task: build `task` in the store at `root` (or, with `exchange`, a worker store).

    Returns the chosen RRefs, where they were built, and what the substituter
    learnt (`TravellingSubstituter.report`). Raises what `execute` raises.
    With `output_to_client` (a Dask client drawing a progress bar), what the
    build prints goes to the client (`OUTPUT_TOPIC`).
    """
    if not output_to_client:
        return _build(root, task, options, exchange)
    with _output_to_client():
        return _build(root, task, options, exchange)


def _build(
    root: str, task: BuildTask, options: RealizeOptions, exchange: Exchange | None
) -> dict[str, Any]:
    if exchange is None:
        try:
            store = LocalStore.open(root)
        except StoreNotFoundError as e:
            raise StoreNotFoundError(
                f"worker {worker_name()} cannot open the caller's store {root}: shared-root "
                "mode needs the root on a filesystem every worker sees; otherwise give "
                "remote= and worker_root= (separate roots)"
            ) from e
        with store.realizing():
            rrefs = execute(store, task, options)
    else:
        rrefs = _build_separate(task, options, exchange)
    sub = options.substitute
    learnt = sub.report() if isinstance(sub, TravellingSubstituter) else None
    return {"rrefs": rrefs, "worker": worker_name(), "pid": os.getpid(), "substituter": learnt}


def _build_separate(task: BuildTask, options: RealizeOptions, exchange: Exchange) -> list[RRef]:
    from lightstore.remote import pull, push, substitute

    url, so, trusted = exchange.url, exchange.storage_options, exchange.trusted
    store = LocalStore.open(exchange.worker_root, create=True)
    drv = task.derivation
    configured = options.substitute
    with store.realizing():
        inputs = sorted({r for rrefs in task.context.values() for r in rrefs})
        missing = sorted(set(inputs) - store.catalogue.known_rrefs(inputs))
        if missing:
            pull(store, url, missing, storage_options=so, trusted_keys=trusted)
        store.record_derivations([(drv.dref, drv.config)])

        def exchange_first(st: LocalStore, t: BuildTask) -> bool:
            """The exchange remote, then the realize's own substituters."""
            context = {str(d): [str(r) for r in rs] for d, rs in t.context.items()}
            got = bool(
                substitute(st, t.dref, context, [url], storage_options=so, trusted_keys=trusted)
            )
            if got and match_existing(st, t.derivation, t.context_hash) is not None:
                return True
            return bool(configured is not None and configured(st, t)) or got

        rrefs = execute(store, task, replace(options, substitute=exchange_first))
        push(store, url, list(rrefs), storage_options=so, signing_key=exchange.signing_key or False)
    return list(rrefs)
