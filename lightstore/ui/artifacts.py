"""Which file an artifact URL may serve: one inside a recorded realization, never outside the store.

A request names a realization and a relative path in it. Refused: a
malformed or unknown RRef; an empty, absolute or backslashed path, ``..`` or
``.`` components, NUL bytes; anything whose real path (symlinks followed)
leaves the store's objects folder; anything that is not a regular file.
"""

from __future__ import annotations

import os
import stat

from lightstore.facade import Store
from lightstore.foundation.errors import (
    InvalidReferenceError,
    LightstoreError,
    UnknownReferenceError,
)
from lightstore.foundation.refs import parse_rref


class ArtifactRefused(LightstoreError):
    """An artifact request that would leave the store or names nothing servable."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def artifact_file(store: Store, rref_text: str, relative: str) -> str:
    """The real path of the file `relative` inside realization `rref_text`.

    Raises ArtifactRefused with status 400 (malformed), 403 (escapes the
    store) or 404 (no such realization or file).
    """
    try:
        rref = parse_rref(rref_text)
    except InvalidReferenceError as e:
        raise ArtifactRefused(str(e), 400) from None
    if (
        not relative
        or "\0" in relative
        or "\\" in relative
        or relative.startswith("/")
        or os.path.isabs(relative)
    ):
        raise ArtifactRefused(
            f"refused: {relative!r} is not a relative path in the realization", 400
        )
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ArtifactRefused(f"refused: {relative!r} has empty, '.' or '..' components", 400)
    try:
        known = store.catalogue.known_rrefs([rref])
    except UnknownReferenceError:
        known = set()
    if not known:
        raise ArtifactRefused(f"{rref} is not in this store", 404)
    objects = os.path.realpath(store.objects_dir) + os.sep
    folder = store.rref_path(rref)
    real = os.path.realpath(os.path.join(folder, *parts))
    if not real.startswith(objects):
        raise ArtifactRefused(f"refused: {relative!r} leads outside the store", 403)
    try:
        st = os.stat(real)
    except OSError:
        raise ArtifactRefused(f"no file {relative!r} in {rref}", 404) from None
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactRefused(f"{relative!r} in {rref} is not a file", 404)
    return real
