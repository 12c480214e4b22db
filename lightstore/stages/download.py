"""Downloading with a program the user chose (Pylightnix's `WGET`/`CURL` convention).

lightstore downloads with the standard library; a user who replaced
Pylightnix's `WGET` or `CURL` (or set ``$PYLIGHTNIX_WGET``/``$PYLIGHTNIX_CURL``)
gets that program run instead, with Pylightnix's arguments. It runs in a
build area of its own (so nothing it leaves behind reaches the output) and
its file is moved to the target only when it exited with 0; the caller then
checks the checksum as for any download.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from lightstore.foundation.errors import BuildError
from lightstore.foundation.files import remove_tree
from lightstore.store import LocalStore

#: ``command(url, part)``: the argument list of a program that downloads `url` into `part`.
DownloadCommand = Callable[[str, str], list[str]]


def wget_command(program: str) -> DownloadCommand:
    """Pylightnix's call of wget: ``wget --continue --output-document PART URL``."""
    return lambda url, part: [program, "--continue", "--output-document", part, url]


def curl_command(program: str) -> DownloadCommand:
    """Pylightnix's call of curl: ``curl --continue-at - --output PART URL``."""
    return lambda url, part: [program, "--continue-at", "-", "--output", part, url]


def download_with(
    store: LocalStore, command: DownloadCommand, url: str, target: str, dref: str
) -> None:
    """Run ``command(url, part)`` in a fresh build area and move `part` to `target`.

    Raises BuildError if the program cannot be started, exits with another
    status than 0, or leaves no file, and for a `url` starting with ``-``, which the
    program would take for an option. The checksum is the caller's to check.
    """
    if url.startswith("-"):  # the callers' scheme checks refuse it; this does not rely on them
        raise BuildError(f"cannot download {url!r}: a URL may not start with '-'", dref)
    folder = store.new_build_area("download")
    try:
        part = os.path.join(folder, os.path.basename(target) + ".tmp")
        argv = command(url, part)
        try:
            done = subprocess.run(argv, cwd=folder, stdin=subprocess.DEVNULL, check=False)
        except OSError as e:
            raise BuildError(f"cannot run the download program {argv[0]!r}: {e}", dref, e) from e
        if done.returncode != 0:
            raise BuildError(
                f"cannot download {url}: {argv[0]} exited with status {done.returncode}", dref
            )
        if not os.path.isfile(part) or os.path.islink(part):
            raise BuildError(
                f"cannot download {url}: {argv[0]} exited with 0 but wrote no file {part}", dref
            )
        try:
            os.replace(part, target)
        except OSError as e:
            raise BuildError(f"cannot store the download of {url}: {e}", dref, e) from e
    finally:
        remove_tree(folder)
