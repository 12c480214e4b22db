"""Network filesystems are detected and get a journal mode that is safe on them."""

from __future__ import annotations

from lightstore.catalogue import filesystem_type, journal_mode_for

MOUNTINFO = [
    "22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n",
    "40 22 0:35 / /mnt/shared rw,relatime shared:20 - nfs4 server:/export rw,vers=4.2\n",
    "41 22 0:36 / /mnt/shared/local rw shared:21 - tmpfs tmpfs rw\n",
    "42 22 0:37 / /mnt/with\\040space rw shared:22 - cifs //srv/x rw\n",
]


def test_longest_mount_prefix_wins():
    assert filesystem_type("/home/user/store", MOUNTINFO) == "ext4"
    assert filesystem_type("/mnt/shared/store", MOUNTINFO) == "nfs4"
    assert filesystem_type("/mnt/shared/local/store", MOUNTINFO) == "tmpfs"
    assert filesystem_type("/mnt/sharedX/store", MOUNTINFO) == "ext4"
    assert filesystem_type("/mnt/with space/store", MOUNTINFO) == "cifs"


def test_network_filesystems_avoid_wal():
    assert journal_mode_for("ext4") == "WAL"
    assert journal_mode_for(None) == "WAL"
    for fs in ("nfs", "nfs4", "cifs", "fuse.sshfs"):
        assert journal_mode_for(fs) == "DELETE"


def test_this_machine_is_read(tmp_path):
    assert filesystem_type(str(tmp_path)) is not None


def test_rollback_journal_store_works(tmp_path):
    """A catalogue in rollback-journal mode (as on NFS) realizes and verifies like a WAL one."""
    import os

    from lightstore import (
        build_outpath,
        build_wrapper,
        instantiate,
        match_only,
        mkdrv,
        realize1,
        selfref,
    )
    from lightstore.facade import Store

    store = Store(str(tmp_path / "s"))
    store.catalogue.journal_mode = journal_mode_for("nfs")
    store._initialize(create=True)  # what Store.open does, on this instance
    Store._instances[(os.path.realpath(store.root), os.getpid())] = store

    def stage(r):
        def real(b):
            with open(os.path.join(build_outpath(b), "f"), "w") as f:
                f.write("x")

        return mkdrv({"name": "n", "out": [selfref, "f"]}, match_only(), build_wrapper(real), r)

    rref = realize1(instantiate(stage, S=store))
    assert store.catalogue.column("PRAGMA journal_mode") == ["delete"]
    assert realize1(instantiate(stage, S=store)) == rref
    assert store.verify(check_contents=True).ok
    Store.forget_instances()
