"""Failpoints: named places where a test can make this process die with SIGKILL.

Set ``LIGHTSTORE_FAILPOINT=<name>`` in a child process's environment to kill
it at that exact point (a real ``kill -9``, not an exception), so crash tests
can hit the narrow windows (between rename and catalogue commit, during gc)
as well as random instants. Unset, a failpoint costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "LIGHTSTORE_FAILPOINT"


def failpoint(name: str) -> None:
    """Die here with SIGKILL if the environment asks for it."""
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
