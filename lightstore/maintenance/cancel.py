"""Cancelling a running build (`lightstore cancel`): SIGTERM to the process of this host the
catalogue records as building it, then the usual cleanup of a dead process's build.

The process that runs a build is the one recorded (a serial realize's own
process, or a worker of `jobs=`); it is stopped as a whole. Once it is gone,
the build is recorded as interrupted and what it left (its build area, an
unfinished install) is removed by recovery, as after any process that died.
A build on another host is refused: its process cannot be signalled from here.
A process that started after the build is not its process but a later one given
the same pid: it is left alone, and the build is recorded as interrupted.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from lightstore.catalogue.records import HOST
from lightstore.foundation.errors import UnknownReferenceError, UsageError
from lightstore.foundation.files import pid_alive
from lightstore.store import LocalStore

#: How long `cancel_build` waits for the process to stop by default.
DEFAULT_CANCEL_TIMEOUT_S = 10.0
#: Slack between a process's age (clock ticks since boot) and its build's (the wall clock).
_AGE_SLACK_S = 2.0
#: The error recorded for a cancelled build.
CANCELLED = "cancelled (its process was stopped with SIGTERM by `lightstore cancel`)"


@dataclass(frozen=True)
class CancelReport:
    """What `cancel_build` did: the build, its process, and whether the process stopped
    (then the build is recorded as interrupted and its leftovers are removed)."""

    build_id: int
    dref: str
    pid: int
    stopped: bool


def cancel_build(
    store: LocalStore, build_id: int, timeout: float = DEFAULT_CANCEL_TIMEOUT_S
) -> CancelReport:
    """Stop the process of this host running build #`build_id` (SIGTERM), wait up to
    `timeout` seconds for it to end, then record the build as interrupted and clean up.

    Raises UnknownReferenceError (no such build), UsageError (the build is not
    running, runs on another host, or its process may not be signalled).
    """
    rows = []
    if 0 < build_id < 2**63:  # SQLite's integers; beyond them, no build has that id
        rows = store.catalogue.query(
            "SELECT dref, status, host, pid, started FROM builds WHERE id = ?", (build_id,)
        )
    if not rows:
        raise UnknownReferenceError(f"no build #{build_id} in {store.root}", str(build_id))
    dref, status, host, pid, started = rows[0]
    if status != "running":
        raise UsageError(f"build #{build_id} of {dref} is not running: it {status}")
    if host != HOST:
        raise UsageError(
            f"build #{build_id} of {dref} runs on host {host!r}, not on this one ({HOST!r}): "
            "cancel it there"
        )
    if not isinstance(pid, int) or pid <= 0:  # 0 and -1 would signal a group or everyone
        raise UsageError(f"build #{build_id} of {dref} records no process to stop (pid {pid!r})")
    if _is_the_builder(pid, started):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # ended meanwhile
        except PermissionError as e:
            raise UsageError(
                f"build #{build_id} of {dref} runs in process {pid}, which this user may not "
                f"stop: {e}"
            ) from e
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    stopped = not _is_the_builder(pid, started)
    if stopped:
        store.catalogue.interrupt_builds([build_id], CANCELLED)
        store.recover()  # the build area and any install the process left
    return CancelReport(build_id, dref, pid, stopped)


def _is_the_builder(pid: int, started: float) -> bool:
    """True if process `pid` is alive and may be the one that started the build at `started`:
    one younger than the build only reuses its pid. Where /proc tells no age, alive is enough.
    """
    if not pid_alive(pid):
        return False
    age = _process_age(pid)
    return age is None or age >= time.time() - started - _AGE_SLACK_S


def _process_age(pid: int) -> float | None:
    """Seconds since process `pid` started, from /proc (Linux), or None if unknown.

    Measured on the boot clock, so a change of the wall clock since boot does not count."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        # The fields after the command name (which may hold spaces and parentheses);
        # the 22nd, its start time in clock ticks since boot, is the 20th of them.
        ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
