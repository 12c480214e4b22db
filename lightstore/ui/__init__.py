"""`lightstore ui`: a read-only experiment browser on Datasette (the optional extra `ui`).

`make_datasette(root)` returns a Datasette serving the store's catalogue
read-only (``mode=ro``, as `lightstore sql`), with lightstore's pages from
`lightstore.ui.plugin` in front; `serve` runs it. Datasette, Plotly (whose own
``plotly.min.js`` the pages load from this server) and grandalf (graph
layout) are looked for only here, lazily: without one of them the error
names it and says ``pip install 'lightstore[ui]'``.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
import sqlite3
import sys
import threading
import webbrowser
from collections.abc import Callable
from importlib import resources
from typing import Any

from lightstore.catalogue import limit_process_heap, sqlite_uri
from lightstore.cli.output import terminal_safe
from lightstore.foundation.errors import LightstoreError
from lightstore.query.readonly import catalogue_path, open_view
from lightstore.query.sqlbudget import BudgetConnection

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
#: How long one query of the browser may run (Datasette's sql_time_limit_ms).
SQL_TIME_LIMIT_MS = 5000
#: The most rows one query of the browser returns (Datasette's max_returned_rows).
MAX_RETURNED_ROWS = 1000
#: The most bytes of values one query of the browser returns (and of a CSV it writes).
RESULT_BYTES = 16 * 1024 * 1024
#: The most memory SQLite may take in the browser's process, all queries together: a page
#: anywhere can send queries to a server on 127.0.0.1.
HEAP_BYTES = 512 * 1024 * 1024
#: The name Datasette gives the catalogue (its SQL editor is at /catalogue).
DATABASE = "catalogue"
#: Bookkeeping tables Datasette's catalogue page lists only under "hidden tables".
HIDDEN_TABLES = ("_sqlite_migrations", "intents", "build_inputs", "sqlite_stat1", "sqlite_stat4")
#: The views a user starts from, described on Datasette's catalogue page.
VIEWS = {
    "runs": "One row per realization, present or collected, with its config and metrics (JSON).",
    "history": "One row per realization record, present or collected (`collected` is NULL "
    "while present): name, config, context, times, size, build.",
    "build_history": "One row per build attempt with its outputs, whether they are present, "
    "and their size.",
    "build_log": "One row per build attempt with its derivation's name, status, duration "
    "and error.",
}
#: Canned queries, listed first on Datasette's catalogue page.
QUERIES = {
    "runs_of_a_stage": {
        "title": "Runs of a stage, newest first, with config and metrics",
        "sql": "SELECT rref, datetime(stopped, 'unixepoch', 'localtime') AS finished, "
        "round(duration, 2) AS seconds, config, metrics FROM runs WHERE name = :stage "
        "AND collected IS NULL ORDER BY stopped DESC LIMIT 1000",
    },
    "failed_builds": {
        "title": "Failed and interrupted builds, newest first",
        "sql": "SELECT id, name, status, datetime(started, 'unixepoch', 'localtime') AS "
        "started_at, host, pid, error FROM build_log WHERE status IN ('failed', "
        "'interrupted') ORDER BY started DESC LIMIT 200",
    },
    "stages": {
        "title": "Runs, time and space per stage",
        "sql": "SELECT name, count(*) AS runs, round(sum(duration), 1) AS seconds, sum(size) "
        "AS bytes FROM history WHERE collected IS NULL GROUP BY name ORDER BY bytes DESC",
    },
}


def _datasette() -> Any:
    try:
        import datasette.app
    except ImportError as e:
        raise LightstoreError(
            f"the experiment browser needs Datasette ({e}); install it with "
            "`pip install 'lightstore[ui]'`"
        ) from e
    return datasette.app


def require_libraries() -> None:
    """Check for the browser's drawing libraries before serving.

    Raises LightstoreError naming the missing one and the extra that brings it.
    """
    from lightstore.ui.assets import plotly_js
    from lightstore.ui.lineage import require_grandalf

    plotly_js()
    require_grandalf()


def templates_dir() -> str:
    """The folder of the package's templates (package data)."""
    return str(resources.files("lightstore.ui") / "templates")


def make_datasette(root: str) -> Any:
    """A Datasette instance serving the store at `root` read-only, with lightstore's pages.

    Raises LightstoreError (naming the extra) without Datasette, StoreNotFoundError if `root`
    holds no store, CatalogueVersionError if its catalogue is newer than this code.
    """
    app = _datasette()
    require_libraries()
    from datasette.plugins import pm

    from lightstore.ui import plugin

    view = open_view(root)  # also applies pending migrations, before Datasette opens it
    if not pm.is_registered(plugin):
        pm.register(plugin, name="lightstore-ui")
    ds = app.Datasette(
        files=[catalogue_path(root)],
        template_dir=templates_dir(),
        settings={
            "allow_download": False,  # a copy of a live WAL database would be inconsistent
            "default_page_size": 100,
            "sql_time_limit_ms": SQL_TIME_LIMIT_MS,
            "max_returned_rows": MAX_RETURNED_ROWS,
            "max_csv_mb": RESULT_BYTES // (1024 * 1024),
        },
        metadata={
            "title": f"lightstore: {view.root}",
            "description": "Experiment history of a lightstore store (read-only).",
            "databases": {
                DATABASE: {
                    "description": "The catalogue of the store (read-only). Start from the "
                    "views runs, history, build_history and build_log; every table is "
                    "described in lightstore's docs/schema.md.",
                    "tables": {
                        **{t: {"hidden": True} for t in HIDDEN_TABLES},
                        **{v: {"description": text} for v, text in VIEWS.items()},
                    },
                    "queries": QUERIES,
                }
            },
        },
    )
    ds.lightstore_store = view
    database = ds.databases[DATABASE]
    database.connect = functools.partial(_connect_read_only, database)
    return ds


def _connect_read_only(database: Any, write: bool = False) -> sqlite3.Connection:
    """Datasette's `Database.connect`, with the file name quoted (Datasette puts it into a
    ``file:`` URI as it is, where ``?``, ``#`` or ``%XX`` would name another file), and
    cursors that refuse a result of more than `RESULT_BYTES` (`lightstore.query.sqlbudget.BudgetCursor`)."""
    conn = sqlite3.connect(
        sqlite_uri(database.path, mode="ro"),
        uri=True,
        check_same_thread=False,
        factory=_BrowserConnection,
    )
    database._all_file_connections.append(conn)
    return conn


class _BrowserConnection(BudgetConnection):
    result_bytes = RESULT_BYTES


def loopback_literal(host: str) -> bool:
    """Whether `host` is ``localhost`` or an address, in any spelling, of the loopback network
    (``127.1``, ``127.0.0.2``, ``::1``, ``[::1]``, ``::ffff:127.0.0.1``). Names are not resolved."""
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name.lower().rstrip(".") == "localhost":
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(name)
    except ValueError:
        if not re.fullmatch(r"[0-9A-Fa-fXx.]+", name):  # inet_aton ignores trailing junk
            return False
        try:  # the short and old forms the C library accepts: 127.1, 0x7f.1, 2130706433
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except (OSError, UnicodeError, ValueError):
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def is_loopback(host: str) -> bool:
    """Whether serving on `host` is reachable only from this machine: it is a loopback
    address in any spelling, or a name every address of which is loopback."""
    if loopback_literal(host):
        return True
    name = host.strip().strip("[]")
    if not name:
        return False  # every interface
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = [str(info[4][0]).split("%")[0] for info in infos]
    return bool(addresses) and all(loopback_literal(a) for a in addresses)


def exposure_warning(host: str, root: str) -> str:
    """What binding to a non-loopback address exposes, for the user to read before it does."""
    return (
        f"warning: serving on {host}, not on 127.0.0.1: anyone who can reach this machine can "
        f"read, without logging in, the whole catalogue of {os.path.abspath(root)} (configs, "
        "contexts, metrics, host names, build errors and tracebacks), every artifact file of "
        "its realizations, and run read-only SQL on it. Use --host 127.0.0.1 (the default) to "
        "keep it local."
    )


class LoopbackHostsOnly:
    """ASGI wrapper: refuse requests whose Host header is not a loopback name.

    A server on 127.0.0.1 is still reachable from a web page the user visits,
    by DNS rebinding (a hostile name that resolves to 127.0.0.1); such
    requests carry the hostile name in Host, and get 421 here.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and not _loopback_host_header(scope):
            await send(
                {
                    "type": "http.response.start",
                    "status": 421,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send(
                {
                    "type": "http.response.body",
                    "body": b"refused: this server answers only to 127.0.0.1 / localhost\n",
                }
            )
            return
        await self.app(scope, receive, send)


def _loopback_host_header(scope: Any) -> bool:
    hosts = [v for k, v in scope.get("headers", []) if k == b"host"]
    if not hosts:
        return True  # HTTP/1.0 without Host: not a browser on a rebound name
    value = hosts[0].decode("latin-1").strip()
    name = value.rsplit(":", 1)[0] if not value.endswith("]") else value
    if value.startswith("["):
        name = value[1 : value.index("]")] if "]" in value else value
    # Never resolved: a rebound name resolves to 127.0.0.1 by design.
    return loopback_literal(name)


def bind_name(host: str) -> str:
    """The name or address to bind for `host`: without brackets, and without the trailing
    dot of a fully qualified name (``localhost.``), which the resolver may not take."""
    name = host.strip().strip("[]")
    if name.endswith(".") and not name.rstrip(".").replace(".", "").isdigit():
        name = name.rstrip(".")
    return name


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one.

    Raises LightstoreError if the address cannot be used.
    """
    name = bind_name(host)
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((name, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise LightstoreError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port or --host"
        ) from e
    return sock


def serve(
    root: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    open_browser: bool = False,
    say: Callable[[str], None] = print,
) -> None:
    """Serve the store at `root` until interrupted; print its URL first (and warn off loopback).

    Raises LightstoreError (Datasette missing, address in use), StoreNotFoundError.
    """
    ds = make_datasette(root)
    import uvicorn

    limit_process_heap(HEAP_BYTES)

    local = is_loopback(host)
    if not local:
        print(terminal_safe(exposure_warning(host, root)), file=sys.stderr, flush=True)
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    name = bind_name(host)
    shown = f"[{name}]" if ":" in name else name
    url = f"http://{shown}:{actual}/"
    # The root and the host are the user's, but may hold what a terminal acts on.
    say(terminal_safe(f"Serving {os.path.abspath(root)} read-only at {url}  (Ctrl-C to stop)"))
    sys.stdout.flush()
    if open_browser:
        threading.Timer(0.5, webbrowser.open, (url,)).start()
    app = ds.app()
    if local:
        app = LoopbackHostsOnly(app)
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
