"""The collector's trash area, as recovery sees it.

A collection moves doomed folders into ``tmp/<host>.<pid>.<r>.gc/objects/``
before it moves their rows out of the live tables. If it dies in between,
the next open of the store (`Store.recover`) finds the trash of a dead
process and calls `restore_trash`: what the catalogue still lists goes back
home, the rest is deleted with the area. This lives below `store` (not in
`maintenance.gc`) so that opening a store never depends on the collector's
module.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from lightstore.layout import CONFIG_FILE
from lightstore.refs import DRef, RRef

if TYPE_CHECKING:
    from lightstore.store import Store


def restore_trash(store: Store, area: str) -> None:
    """Finish or undo a gc that died or failed: put back what the catalogue still lists.

    Whatever is already back in place (an identical realization rebuilt
    meanwhile) is left as it is; the trash is deleted by the caller.
    """
    objects = os.path.join(area, "objects")
    if not os.path.isdir(objects):
        return
    for dname in sorted(os.listdir(objects)):
        dhash, _, name = dname.partition("-")
        dref = DRef(f"dref:{dhash}-{name}")
        if not store.catalogue.known_drefs([dref]):
            continue
        trashed = os.path.join(objects, dname)
        home = store.dref_path(dref)
        os.makedirs(home, exist_ok=True)
        for entry in sorted(os.listdir(trashed)):
            source, target = os.path.join(trashed, entry), os.path.join(home, entry)
            if entry == CONFIG_FILE:
                if not os.path.exists(target):
                    os.rename(source, target)
                continue
            rref = RRef(f"rref:{entry}-{dhash}-{name}")
            if store.catalogue.known_rrefs([rref]) and not os.path.lexists(target):
                os.rename(source, target)
