"""Content addressing: config, context, tree and realization hashes."""

from __future__ import annotations

import os
import random

import pytest
from blake3 import blake3
from helpers import write
from hypothesis import given
from hypothesis import strategies as st

from lightstore.foundation.errors import BuildError
from lightstore.foundation.hashing import (
    canonical_context,
    config_hash,
    context_hash,
    file_digest,
    realization_hash,
    tree_digest,
)
from lightstore.foundation.refs import mkdref, mkrref
from lightstore.store.layout import CONTEXT_FILE, realization_digest

DA = mkdref("1" * 32, "one")
DB = mkdref("2" * 32, "two")
RA1 = mkrref("a" * 32, "1" * 32, "one")
RA2 = mkrref("b" * 32, "1" * 32, "one")
RB1 = mkrref("c" * 32, "2" * 32, "two")

# -- pinned vectors ----------------------------------------------------------------------
#
# These hex strings were computed once from the implementation and are hard-coded on
# purpose: DRefs and RRefs must stay the same in every process, on every machine and
# across versions. If one of these tests fails, the hash encoding changed, and every
# existing store would see new references. Do not update the constants unless that
# change is intended (and then bump the `v1` tags in lightstore/hashing.py).

PINNED_CONFIG = {
    "name": "pinned",
    "lr": 0.001,
    "layers": [64, 32],
    "opts": {"b": True, "a": None},
    "text": "h\u00e9llo",
}
PINNED_CONFIG_HASH = "206b079d7592af40c8410d477b1e4f88"
PINNED_EMPTY_CONFIG_HASH = "dd71e49f06893fcc64120cd923a5256b"
PINNED_CONTEXT = {DA: [RA2, RA1], DB: [RB1]}
PINNED_CONTEXT_HASH = "a82fb40b315e7b2aa3cfd703c9211f35"
PINNED_EMPTY_CONTEXT_HASH = "0dcca86e17d2fa7b192258966023637a"
PINNED_TREE_DIGEST = "231d437c88a0b586fd0ae245af2474dda037021481e2ba7b998fd3a1246c365a"
PINNED_REALIZATION_HASH = "ee8c7b815bb5b55d501411d4d7003812"


def make_pinned_tree(root) -> str:
    """A small tree with a file, a binary file, an executable, a symlink and an empty folder."""
    root = str(root)
    os.makedirs(os.path.join(root, "sub", "empty"))
    with open(os.path.join(root, "a.txt"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(root, "sub", "b.bin"), "wb") as f:
        f.write(b"\x00\x01\x02")
    with open(os.path.join(root, "run.sh"), "w") as f:
        f.write("#!/bin/sh\necho hi\n")
    os.chmod(os.path.join(root, "run.sh"), 0o755)
    os.chmod(os.path.join(root, "a.txt"), 0o644)
    os.chmod(os.path.join(root, "sub", "b.bin"), 0o644)
    os.symlink("sub/b.bin", os.path.join(root, "link"))
    with open(os.path.join(root, CONTEXT_FILE), "w") as f:
        f.write("ignored")
    return root


def test_pinned_config_hash():
    assert config_hash(PINNED_CONFIG) == PINNED_CONFIG_HASH
    assert config_hash({}) == PINNED_EMPTY_CONFIG_HASH


def test_pinned_context_hash():
    assert context_hash(PINNED_CONTEXT) == PINNED_CONTEXT_HASH
    assert context_hash({}) == PINNED_EMPTY_CONTEXT_HASH


def test_pinned_tree_digest(tmp_path):
    t = realization_digest(make_pinned_tree(tmp_path / "t"))
    assert t.digest == PINNED_TREE_DIGEST
    assert t.size == len("hello\n") + 3 + len("#!/bin/sh\necho hi\n")
    assert t.files == 4  # three files and one symlink; folders and context.json not counted


def test_pinned_realization_hash():
    assert realization_hash(PINNED_EMPTY_CONTEXT_HASH, PINNED_TREE_DIGEST) == (
        PINNED_REALIZATION_HASH
    )


def test_type_tags_separate_kinds():
    # The canonical JSON of {} is the same for a config and a context; the tags differ.
    assert config_hash({}) != context_hash({})


# -- config hash --------------------------------------------------------------------------


def test_config_hash_key_order():
    assert config_hash({"a": 1, "b": {"x": 1, "y": 2}}) == config_hash(
        {"b": {"y": 2, "x": 1}, "a": 1}
    )


def test_config_hash_list_order_matters():
    assert config_hash({"a": [1, 2]}) != config_hash({"a": [2, 1]})


# -- context hash -------------------------------------------------------------------------


def test_context_hash_ignores_key_order():
    assert context_hash({DA: [RA1], DB: [RB1]}) == context_hash({DB: [RB1], DA: [RA1]})


def test_context_hash_ignores_rref_order_and_duplicates():
    h = context_hash({DA: [RA1, RA2]})
    assert context_hash({DA: [RA2, RA1]}) == h
    assert context_hash({DA: [RA1, RA2, RA1, RA2]}) == h
    assert context_hash({DA: (RA2, RA1)}) == h


def test_context_hash_distinguishes_contexts():
    hashes = {
        context_hash({}),
        context_hash({DA: []}),
        context_hash({DA: [RA1]}),
        context_hash({DA: [RA2]}),
        context_hash({DA: [RA1, RA2]}),
        context_hash({DA: [RA1], DB: [RB1]}),
        context_hash({DB: [RB1]}),
    }
    assert len(hashes) == 7


def test_context_hash_accepts_plain_strings():
    assert context_hash({str(DA): [str(RA1)]}) == context_hash({DA: [RA1]})


def test_canonical_context():
    assert canonical_context({DB: [RB1], DA: [RA2, RA1, RA2]}) == {DA: [RA1, RA2], DB: [RB1]}
    assert list(canonical_context({DB: [], DA: []})) == [DA, DB]


hexes = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)


@given(
    st.dictionaries(
        hexes.map(lambda h: mkdref(h, "d")), st.lists(hexes, max_size=4), min_size=0, max_size=4
    ),
    st.randoms(use_true_random=False),
)
def test_context_hash_order_free_property(raw, rnd):
    context = {d: [mkrref(r, d[5:37], "d") for r in rs] for d, rs in raw.items()}
    keys = list(context)
    rnd.shuffle(keys)
    scrambled = {}
    for k in keys:
        rrefs = context[k] + context[k][: rnd.randint(0, len(context[k]))]  # some duplicates
        rnd.shuffle(rrefs)
        scrambled[k] = rrefs
    assert context_hash(scrambled) == context_hash(context)


# -- realization hash ---------------------------------------------------------------------


def test_realization_hash_depends_on_both_parts():
    t1, t2 = "0" * 64, "1" * 64
    c1, c2 = context_hash({}), context_hash({DA: [RA1]})
    hashes = {
        realization_hash(c1, t1),
        realization_hash(c1, t2),
        realization_hash(c2, t1),
        realization_hash(c2, t2),
    }
    assert len(hashes) == 4
    for h in hashes:
        assert len(h) == 32
        assert set(h) <= set("0123456789abcdef")


# -- tree digest ----------------------------------------------------------------------------


def digest(root) -> str:
    return tree_digest(str(root)).digest


def test_tree_digest_is_deterministic_across_creation_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    names = [f"f{i:02d}" for i in range(30)] + ["Z", "_", "é", "sub/x", "sub/deeper/y"]
    order = list(names)
    random.Random(1).shuffle(order)
    for root, seq in ((a, names), (b, order)):
        os.makedirs(root)
        for n in seq:
            write(os.path.join(root, n), n)
    assert digest(a) == digest(b)
    assert tree_digest(str(a)) == tree_digest(str(b))


def test_tree_digest_is_repeatable(tmp_path):
    root = make_pinned_tree(tmp_path / "t")
    assert digest(root) == digest(root)


def test_empty_tree(tmp_path):
    os.makedirs(tmp_path / "e")
    t = tree_digest(str(tmp_path / "e"))
    assert (t.size, t.files) == (0, 0)
    os.makedirs(tmp_path / "e" / "d")
    assert digest(tmp_path / "e") != t.digest  # an empty folder is recorded


def mutations():
    """(label, function changing a pinned tree) pairs: each must change the digest."""

    def content(root):
        write(os.path.join(root, "a.txt"), "hellO\n")

    def append(root):
        write(os.path.join(root, "a.txt"), "hello\n\n")

    def rename(root):
        os.rename(os.path.join(root, "a.txt"), os.path.join(root, "b.txt"))

    def move(root):
        os.rename(os.path.join(root, "a.txt"), os.path.join(root, "sub", "a.txt"))

    def exec_on(root):
        os.chmod(os.path.join(root, "a.txt"), 0o755)

    def exec_off(root):
        os.chmod(os.path.join(root, "run.sh"), 0o644)

    def link_target(root):
        os.unlink(os.path.join(root, "link"))
        os.symlink("sub/b.bix", os.path.join(root, "link"))

    def link_to_file(root):
        # Same bytes as the link's target text, but a regular file: the type differs.
        os.unlink(os.path.join(root, "link"))
        write(os.path.join(root, "link"), "sub/b.bin")

    def link_to_copy(root):
        # Same bytes as the file the link points to.
        os.unlink(os.path.join(root, "link"))
        write(os.path.join(root, "link"), b"\x00\x01\x02")

    def empty_dir_removed(root):
        os.rmdir(os.path.join(root, "sub", "empty"))

    def empty_dir_to_file(root):
        os.rmdir(os.path.join(root, "sub", "empty"))
        write(os.path.join(root, "sub", "empty"), "")

    def new_empty_file(root):
        write(os.path.join(root, "new"), "")

    def nested_context(root):
        write(os.path.join(root, "sub", CONTEXT_FILE), "{}")

    return [
        content,
        append,
        rename,
        move,
        exec_on,
        exec_off,
        link_target,
        link_to_file,
        link_to_copy,
        empty_dir_removed,
        empty_dir_to_file,
        new_empty_file,
        nested_context,
    ]


@pytest.mark.parametrize("mutate", mutations(), ids=lambda f: f.__name__)
def test_tree_digest_changes(tmp_path, mutate):
    root = make_pinned_tree(tmp_path / "t")
    before = digest(root)
    mutate(root)
    assert digest(root) != before


def test_tree_digest_ignores_non_exec_permissions_and_times(tmp_path):
    root = make_pinned_tree(tmp_path / "t")
    before = digest(root)
    os.chmod(os.path.join(root, "a.txt"), 0o400)
    os.chmod(os.path.join(root, "sub"), 0o700)
    os.utime(os.path.join(root, "sub", "b.bin"), (1, 1))
    assert digest(root) == before


def test_top_level_context_file_is_skipped(tmp_path):
    root = make_pinned_tree(tmp_path / "t")
    before = realization_digest(root)
    write(os.path.join(root, CONTEXT_FILE), '{"other": "context"}')
    assert realization_digest(root) == before
    os.unlink(os.path.join(root, CONTEXT_FILE))
    assert realization_digest(root) == before
    assert tree_digest(root) == before
    write(os.path.join(root, CONTEXT_FILE), "{}")
    with_context = tree_digest(root)
    assert with_context.digest != before.digest


def test_symlink_is_not_followed(tmp_path):
    root = tmp_path / "t"
    write(str(root / "f"), "x")
    outside = tmp_path / "outside"
    write(str(outside / "big"), "y" * 1000)
    os.symlink(str(outside), str(root / "dirlink"))
    t = tree_digest(str(root))
    assert (t.files, t.size) == (2, 1)
    write(str(outside / "big"), "z" * 1000)
    assert tree_digest(str(root)) == t


def test_dangling_symlink_is_hashed(tmp_path):
    root = tmp_path / "t"
    os.makedirs(root)
    os.symlink("does/not/exist", str(root / "l"))
    assert tree_digest(str(root)).files == 1


def test_fifo_is_refused(tmp_path):
    root = tmp_path / "t"
    write(str(root / "ok"), "x")
    os.mkfifo(str(root / "sub-fifo"))
    with pytest.raises(BuildError, match="sub-fifo"):
        tree_digest(str(root))


def test_nested_fifo_is_refused(tmp_path):
    root = tmp_path / "t"
    os.makedirs(root / "a" / "b")
    os.mkfifo(str(root / "a" / "b" / "pipe"))
    with pytest.raises(BuildError, match="pipe"):
        tree_digest(str(root))


def test_non_utf8_file_name(tmp_path):
    root = tmp_path / "t"
    os.makedirs(root)
    with open(os.path.join(os.fsencode(root), b"bad\xffname"), "wb") as f:
        f.write(b"x")
    t = tree_digest(str(root))
    assert t.files == 1
    assert tree_digest(str(root)) == t


def test_size_and_count(tmp_path):
    root = tmp_path / "t"
    write(str(root / "a"), "12345")
    write(str(root / "d" / "b"), "123")
    write(str(root / "d" / "e" / "c"), "")
    t = tree_digest(str(root))
    assert (t.size, t.files) == (8, 3)


# -- large files (streamed) --------------------------------------------------------------

BIG = 8 * 1024 * 1024 + 12345  # over the 8 MiB chunk: several reads, multithreaded hashing


@pytest.fixture(scope="module")
def big_bytes() -> bytes:
    return random.Random(7).randbytes(BIG)


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024, 1024 * 1024 + 1, 5 * 1024 * 1024, BIG])
def test_file_digest_is_blake3_of_bytes(tmp_path, big_bytes, size):
    data = big_bytes[:size]
    p = tmp_path / "f"
    p.write_bytes(data)
    assert file_digest(str(p)) == blake3(data).digest()


def test_big_file_tree_digest(tmp_path, big_bytes):
    a = tmp_path / "a"
    write(str(a / "big"), big_bytes)
    write(str(a / "small"), "x")
    t = tree_digest(str(a))
    assert t.size == BIG + 1
    assert tree_digest(str(a)) == t
    # One changed byte near the end (past the first chunk) changes the digest.
    changed = bytearray(big_bytes)
    changed[-3] ^= 0xFF
    write(str(a / "big"), bytes(changed))
    assert tree_digest(str(a)).digest != t.digest
