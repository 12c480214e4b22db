"""Failpoints: named places where a test can make this process die with SIGKILL.

Set ``LIGHTSTORE_FAILPOINT=<name>`` in a child process's environment to kill
it at that exact point (a real ``kill -9``, not an exception), so crash tests
can hit the narrow windows (between rename and catalogue commit, during gc)
as well as random instants. Unset, a failpoint costs one dict lookup.

Fault points are the same for errors the system can cause but a test cannot
easily provoke (a leftover even root cannot delete): with
``LIGHTSTORE_FAULT=<name>``, `fault` raises OSError (EIO) there.
"""

from __future__ import annotations

import errno
import os
import signal

VARIABLE = "LIGHTSTORE_FAILPOINT"
FAULT_VARIABLE = "LIGHTSTORE_FAULT"


def failpoint(name: str) -> None:
    """Die here with SIGKILL if the environment asks for it."""
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def fault(name: str) -> None:
    """Raise OSError (EIO) here if the environment asks for it."""
    if os.environ.get(FAULT_VARIABLE) == name:
        raise OSError(errno.EIO, f"fault injected at {name} (${FAULT_VARIABLE})")
