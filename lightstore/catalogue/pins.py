"""The catalogue's pins and registered symlinks (links), which garbage collection keeps.

Each change is its own transaction, or joins the caller's (`Database.write`),
so that the file a pin or link also needs is made under the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from lightstore.catalogue.connection import Database
from lightstore.foundation.refs import isrref


def _column_of(ref: str) -> str:
    return "rref" if isrref(ref) else "dref"


class PinTables(Database):
    """The tables `pins` and `links`."""

    # -- pins --------------------------------------------------------------

    def set_pin(self, name: str, ref: str) -> None:
        """Pin `ref` (a DRef or RRef) as `name`, replacing an older pin of that name.

        Raises IntegrityError if the catalogue does not hold `ref`.
        """
        with self.write(f"pinning {ref} as {name!r}") as conn:
            conn.execute("DELETE FROM pins WHERE name = ?", (name,))
            conn.execute(
                f"INSERT INTO pins (name, {_column_of(ref)}, created) VALUES (?, ?, ?)",
                (name, ref, time.time()),
            )

    def remove_pin(self, name: str) -> bool:
        """Remove the pin `name`; return whether there was one."""
        with self.write(f"removing the pin {name!r}") as conn:
            return conn.execute("DELETE FROM pins WHERE name = ?", (name,)).rowcount > 0

    def pins(self) -> dict[str, str]:
        """Every pin: name -> reference, by name."""
        rows = self.query("SELECT name, coalesce(rref, dref) FROM pins ORDER BY name")
        return {n: r for n, r in rows}

    # -- links -------------------------------------------------------------

    def replace_link(self, path: str, ref: str) -> None:
        """Register the symlink at `path` to `ref` (a DRef or RRef), replacing what was there.

        Raises IntegrityError if the catalogue does not hold `ref`.
        """
        with self.write(f"linking {ref}") as conn:
            conn.execute("DELETE FROM links WHERE path = ?", (path,))
            conn.execute(
                f"INSERT INTO links (path, {_column_of(ref)}, created) VALUES (?, ?, ?)",
                (path, ref, time.time()),
            )

    def forget_links(self, paths: Iterable[str]) -> None:
        """Unregister the symlinks at `paths` (stale ones: the links themselves are not touched)."""
        with self.write("forgetting stale links") as conn:
            conn.executemany("DELETE FROM links WHERE path = ?", [(p,) for p in paths])

    def links(self) -> list[tuple[str, str]]:
        """Every registered symlink: (path, reference), by path."""
        rows = self.query("SELECT path, coalesce(rref, dref) FROM links ORDER BY path")
        return [(p, r) for p, r in rows]
