"""Block mapping over direct pointers and 1..5-level indirect trees, with holes and truncation."""

from __future__ import annotations

import pytest
from checker import assert_clean
from fsfactory import make_image, scratch

from nvfs_tools import filemap
from nvfs_tools import format as fmt
from nvfs_tools.errors import InvalidArgumentError
from nvfs_tools.volume import Volume

ROOT = fmt.ROOT_INO
BS = 4096
P = BS // 8
#: first file block reached through pointer 11 + k (a tree of k + 1 levels)
FIRST_OF_LEVEL = [11 + sum(P**j for j in range(1, k + 1)) for k in range(5)]


@pytest.fixture
def image(shm_tmp):
    return make_image(shm_tmp / "fs.img", 64 << 20)


def pattern(n: int, seed: int = 0) -> bytes:
    s = seed % 251
    return (bytes(range(251)) * (n // 251 + 2))[s : s + n]


@pytest.fixture
def shm_tmp(tmp_path):
    yield from scratch(tmp_path)


@pytest.mark.parametrize(
    "nblocks",
    [0, 1, 10, 11, 12, 11 + P - 1, 11 + P, 11 + P + 1, 11 + P + P + 1],
)
@pytest.mark.parametrize("extra", [0, 1, BS - 1])
def test_sizes_at_pointer_boundaries(image, nblocks, extra):
    size = max(nblocks * BS - (BS - extra if extra else 0), 0)
    data = pattern(size, nblocks)
    with Volume.open(image, writable=True) as vol:
        a = vol.create(ROOT, "a", 0o644, data=data)
        b = vol.create(ROOT, "b", 0o644)
        vol.write(b, 0, data)
    with Volume.open(image) as vol:
        assert vol.read(a) == vol.read(b) == data
        n = -(-size // BS)
        expect = n + filemap.indirect_blocks_needed(n, BS)
        assert vol.read_inode(a).blocks == vol.read_inode(b).blocks == expect
        assert [fb for fb, _ in vol.file_blocks(a)] == list(range(n))
    assert_clean(image)


def test_indirect_count_formula():
    assert filemap.indirect_blocks_needed(11, BS) == 0
    assert filemap.indirect_blocks_needed(12, BS) == 1
    assert filemap.indirect_blocks_needed(11 + P, BS) == 1
    assert filemap.indirect_blocks_needed(11 + P + 1, BS) == 3  # level-1 node + level-2 root and one child
    assert filemap.indirect_blocks_needed(11 + P + P + 1, BS) == 4


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_deep_trees_sparse(image, level):
    fb = FIRST_OF_LEVEL[level - 1] + 3
    offset = fb * BS + 100
    with Volume.open(image, writable=True) as vol:
        free = vol.dyn.free_blocks
        ino = vol.create(ROOT, "deep", 0o644)
        vol.write(ino, offset, b"deep!")
        vol.write(ino, 0, b"head")
        assert vol.read_inode(ino).blocks == 2 + level
        assert vol.dyn.free_blocks == free - 2 - level
    with Volume.open(image) as vol:
        assert vol.read(ino, offset - 2, 10) == b"\0\0deep!"
        assert vol.read(ino, 0, 6) == b"head\0\0"
        assert vol.read_inode(ino).size == offset + 5
        mapped = dict(vol.file_blocks(ino))
        assert sorted(mapped) == [0, fb]
        assert fmt.block_path(fb, BS)[0] == 10 + level
    assert_clean(image)
    with Volume.open(image, writable=True) as vol:
        vol.truncate(ino, 4)  # frees the whole deep tree
        assert vol.read_inode(ino).blocks == 1
        assert vol.dyn.free_blocks == free - 1
    assert_clean(image)


def test_truncate_inside_indirect_trees(image):
    n = 11 + P + 40
    data = pattern(n * BS)
    with Volume.open(image, writable=True) as vol:
        ino = vol.create(ROOT, "f", 0o644, data=data)
    for keep_blocks in (11 + P + 20, 11 + P + 1, 11 + P, 11 + 5, 3, 0):
        size = keep_blocks * BS - (100 if keep_blocks else 0)
        with Volume.open(image, writable=True) as vol:
            vol.truncate(ino, size)
        with Volume.open(image) as vol:
            assert vol.read(ino) == data[:size]
            kb = -(-size // BS)
            assert vol.read_inode(ino).blocks == kb + filemap.indirect_blocks_needed(kb, BS)
        assert_clean(image)


def test_write_extends_into_existing_tree_and_holes(image):
    with Volume.open(image, writable=True) as vol:
        ino = vol.create(ROOT, "f", 0o644)
        vol.write(ino, 20 * BS, b"a" * BS)  # creates the indirect block
        vol.write(ino, 30 * BS + 5, b"b" * 10)  # links into the existing indirect block
        vol.write(ino, 25 * BS - 3, b"c" * 6)  # straddles two new blocks
        vol.write(ino, 20 * BS + 10, b"d")  # in place
    with Volume.open(image) as vol:
        got = vol.read(ino)
        want = bytearray(30 * BS + 15)
        want[20 * BS : 21 * BS] = b"a" * BS
        want[20 * BS + 10] = ord("d")
        want[30 * BS + 5 : 30 * BS + 15] = b"b" * 10
        want[25 * BS - 3 : 25 * BS + 3] = b"c" * 6
        assert got == bytes(want)
        assert sorted(fb for fb, _ in vol.file_blocks(ino)) == [20, 24, 25, 30]
    assert_clean(image)


def test_truncate_then_rewrite_reads_zeros(image):
    with Volume.open(image, writable=True) as vol:
        ino = vol.create(ROOT, "f", 0o644, data=b"\xff" * (3 * BS))
        vol.truncate(ino, BS + 10)
        vol.write(ino, 2 * BS, b"x")
        got = vol.read(ino)
        assert got == b"\xff" * (BS + 10) + b"\0" * (BS - 10) + b"x"
    assert_clean(image)


def test_too_large_refused(image):
    with Volume.open(image, writable=True) as vol:
        ino = vol.create(ROOT, "f", 0o644)
        with pytest.raises(InvalidArgumentError):
            vol.write(ino, fmt.max_file_blocks(BS) * BS, b"x")
        with pytest.raises(InvalidArgumentError):
            vol.truncate(ino, -1)
        with pytest.raises(InvalidArgumentError):
            vol.truncate(vol.symlink(ROOT, "s", "t"), 0)
        with pytest.raises(InvalidArgumentError):
            vol.write(vol.symlink(ROOT, "s2", "t"), 0, b"x")


@pytest.mark.parametrize("block_size", [8192, 65536])
def test_other_block_sizes(shm_tmp, block_size):
    path = make_image(shm_tmp / "bs.img", 128 << 20, block_size=block_size)
    p = block_size // 8
    deep = (11 + p + 2) * block_size + 7  # inside the 2-level tree
    big = pattern(3 << 20, 5)
    with Volume.open(path, writable=True) as vol:
        f = vol.create(ROOT, "big", 0o644, data=big)
        g = vol.create(ROOT, "sparse", 0o644)
        vol.write(g, deep, b"deep")
        vol.write(g, 3, b"head")
        vol.truncate(f, 1 << 20)
    with Volume.open(path) as vol:
        assert vol.read(f) == big[: 1 << 20]
        assert vol.read(g, deep, 4) == b"deep" and vol.read(g, 0, 8) == b"\0\0\0head\0"
        assert vol.read_inode(g).blocks == 2 + 2
    assert_clean(path)


def test_truncate_unlinks_indirect_blocks_left_empty(image):
    with Volume.open(image, writable=True) as vol:
        ino = vol.create(ROOT, "sparse", 0o644)
        vol.write(ino, 0, b"a")
        vol.write(ino, 300 * BS, b"b")  # level-1 tree: block 300 only
        deep = (FIRST_OF_LEVEL[1] + 2 * P + 7) * BS
        vol.write(ino, deep, b"c")  # level-2 tree: root + one child
        assert vol.read_inode(ino).blocks == 3 + 1 + 2
        vol.truncate(ino, (FIRST_OF_LEVEL[1] + 5) * BS)  # inside the level-2 range, below its only data
        # the level-2 root and child hold nothing below EOF any more: unlinked and freed
        node = vol.read_inode(ino)
        assert node.block[12] == 0 and node.blocks == 2 + 1
        vol.truncate(ino, 100 * BS)  # inside the level-1 range, below block 300
        node = vol.read_inode(ino)
        assert node.block[11] == 0 and node.blocks == 1
        assert vol.read(ino, 0, 2) == b"a\0"
    assert_clean(image)
