"""Block and inode allocators: counters exact, huge-page alignment, group choice, cursor."""

from __future__ import annotations

import struct

import pytest
from checker import assert_clean
from fsfactory import make_image, scratch

from nvfs_tools import format as fmt
from nvfs_tools import scan_pure
from nvfs_tools.alloc import GC_FREE_BLOCKS, GC_FREE_INODES
from nvfs_tools.errors import CorruptError, NoSpaceError
from nvfs_tools.volume import Volume


@pytest.fixture
def shm_tmp(tmp_path):
    yield from scratch(tmp_path)


ROOT = fmt.ROOT_INO


@pytest.fixture
def image(shm_tmp):
    # 4 groups of 128 MiB (sparse: costs nothing until written)
    return make_image(shm_tmp / "big.img", 512 << 20)


def counters_match_bitmaps(vol: Volume) -> None:
    geo, bs, view = vol.geo, vol.block_size, vol.dev.view
    total_b = total_i = 0
    for g in range(geo.group_count):
        n = geo.group_end(g) - geo.group_start(g)
        bits = int.from_bytes(view[geo.block_bitmap_block(g) * bs : geo.block_bitmap_block(g) * bs + bs], "little")
        free_b = n - (bits & ((1 << n) - 1)).bit_count()
        ipg = geo.inodes_per_group
        ibits = int.from_bytes(view[geo.inode_bitmap_block(g) * bs : geo.inode_bitmap_block(g) * bs + bs], "little")
        free_i = ipg - (ibits & ((1 << ipg) - 1)).bit_count()
        cb = geo.counters_block(g) * bs
        assert struct.unpack_from("<Q", view, cb + GC_FREE_BLOCKS)[0] == free_b
        assert struct.unpack_from("<Q", view, cb + GC_FREE_INODES)[0] == free_i
        assert vol.alloc.free_blocks[g] == free_b
        total_b += free_b
        total_i += free_i
    assert vol.dyn.free_blocks == total_b
    assert vol.dyn.free_inodes == total_i


def test_allocate_free_keeps_counters_exact(image):
    with Volume.open(image, writable=True) as vol:
        assert vol.geo.group_count == 4
        a = vol.allocate_blocks(100)
        b = vol.allocate_blocks(5000, goal=vol.geo.first_data_block(2))
        assert len(set(a) | set(b)) == 5100
        assert all(not vol.geo.is_metadata_block(x) for x in a + b)
        assert b == list(range(b[0], b[0] + 5000)) and vol.geo.group_of_block(b[0]) == 2
        counters_match_bitmaps(vol)
        vol.free_blocks(a[::2] + b[1000:3000])
        counters_match_bitmaps(vol)
        c = vol.allocate_blocks(40000)  # spans groups
        assert len(set(c)) == 40000 and not set(c) & (set(a[1::2]) | set(b[:1000]) | set(b[3000:]))
        counters_match_bitmaps(vol)
    with Volume.open(image) as vol:
        counters_match_bitmaps(vol)


def test_double_free_and_metadata_free_refused(image):
    with Volume.open(image, writable=True) as vol:
        (blk,) = vol.allocate_blocks(1)
        vol.free_block(blk)
        with pytest.raises(CorruptError):
            vol.free_block(blk)
        with pytest.raises(CorruptError):
            vol.free_block(vol.geo.block_bitmap_block(1))
        counters_match_bitmaps(vol)


def test_huge_aligned_runs(image):
    with Volume.open(image, writable=True) as vol:
        vol.allocate_blocks(3)  # disturb the alignment of the cursor
        huge = vol.allocate_blocks(3 * 512 + 7, huge_align=True)
        assert huge[0] % 512 == 0
        assert huge == list(range(huge[0], huge[0] + len(huge)))
        plain = vol.allocate_blocks(600)
        counters_match_bitmaps(vol)
        assert len(set(plain) | set(huge)) == len(plain) + len(huge)


def test_huge_alignment_through_fast_scan_interface(image):
    with Volume.open(image, writable=True) as vol:
        vol.scan_backend = scan_pure  # exercise the find_free path with the reference implementation
        vol.allocate_blocks(5)
        huge = vol.allocate_blocks(1024, huge_align=True)
        assert huge[0] % 512 == 0 and huge == list(range(huge[0], huge[0] + 1024))
        counters_match_bitmaps(vol)


def test_large_file_gets_aligned_blocks(image):
    with Volume.open(image, writable=True) as vol:
        vol.create(ROOT, "small", 0o644, data=b"s" * 5000)
        ino = vol.create(ROOT, "big", 0o644, data=b"B" * (5 << 20))
        fb0 = dict(vol.file_blocks(ino))[0]
        assert fb0 % 512 == 0
    assert_clean(image)


def test_directories_spread_files_follow_parent(image):
    with Volume.open(image, writable=True) as vol:
        # group 0 holds the reserved inodes and lost+found: the others have more free inodes
        dirs = [vol.mkdir(ROOT, f"d{i}") for i in range(3)]
        groups = {vol.geo.group_of_inode(d) for d in dirs}
        assert groups == {1, 2, 3}
        for d in dirs:
            f = vol.create(d, "f", 0o644, data=b"x")
            assert vol.geo.group_of_inode(f) == vol.geo.group_of_inode(d)
            blk = dict(vol.file_blocks(f))[0]
            assert vol.geo.group_of_block(blk) == vol.geo.group_of_inode(d)
        counters_match_bitmaps(vol)
    assert_clean(image)


def test_lost_found_is_first_inode(image):
    with Volume.open(image) as vol:
        assert vol.lookup("/lost+found") == fmt.FIRST_INO


def test_cursor_continues(image):
    with Volume.open(image, writable=True) as vol:
        firsts = []
        for i in range(50):
            f = vol.create(ROOT, f"f{i}", 0o644, data=b"y" * 100)
            firsts.append(dict(vol.file_blocks(f))[0])
        assert firsts == sorted(firsts) and len(set(firsts)) == 50


def test_no_space_leaves_counters(shm_tmp):
    path = make_image(shm_tmp / "s.img", 1 << 20)
    with Volume.open(path, writable=True) as vol:
        free = vol.dyn.free_blocks
        with pytest.raises(NoSpaceError):
            vol.allocate_blocks(free + 1)
        got = vol.allocate_blocks(free)
        assert len(set(got)) == free and vol.dyn.free_blocks == 0
        counters_match_bitmaps(vol)
        with pytest.raises(NoSpaceError):
            vol.allocate_block()
        vol.free_blocks(got)
        counters_match_bitmaps(vol)


def test_appends_past_2mib_land_in_aligned_runs(image):
    chunk = b"a" * (1 << 20)
    with Volume.open(image, writable=True) as vol:
        vol.create(ROOT, "small", 0o644, data=b"s" * 5000)  # the cursor is now unaligned
        ino = vol.create(ROOT, "log", 0o644)
        for i in range(8):
            vol.write(ino, i * len(chunk), chunk)
        mapped = dict(vol.file_blocks(ino))
        for first in (512, 1024, 1536):  # every whole 2 MiB of the file after the first
            assert mapped[first] % 512 == 0
            assert [mapped[first + k] for k in range(512)] == list(range(mapped[first], mapped[first] + 512))
        assert vol.read(ino) == chunk * 8
    assert_clean(image)


@pytest.mark.parametrize("take_bits", ["pure", "compiled"])
def test_take_inodes_gives_what_allocate_inode_gives(shm_tmp, take_bits):
    """The bulk take (mkfs -d) gives the numbers, bitmaps and counters of one allocate_inode per inode, across
    a group boundary, with the last ones counted as directories."""
    from nvfs_tools import populate

    if take_bits == "compiled":
        core = pytest.importorskip("nvfs_tools._fastscan")
        kernel = core.populate_take_bits
    else:
        kernel = populate._take_bits_pure
    images = [make_image(shm_tmp / f"{k}.img", 512 << 20, inode_count=4 * 1024) for k in range(2)]
    numbers, states = [], []
    for k, img in enumerate(images):
        with Volume.open(img, writable=True) as vol:
            ipg = vol.geo.inodes_per_group
            got = []
            for count, dirs in ((ipg - 40, 0), (100, 7), (9, 9)):  # the second take crosses into group 1
                if k == 0:
                    got += [vol.alloc.allocate_inode(i >= count - dirs, 0) for i in range(count)]
                else:
                    got += vol.alloc.take_inodes(count, 0, dirs, kernel)
            numbers.append(got)
            counters_match_bitmaps(vol)
            alloc, geo, bs, view = vol.alloc, vol.geo, vol.block_size, vol.dev.view
            headers = [  # bitmaps, counters and inode bitmap of the groups taken from
                bytes(view[geo.block_bitmap_block(g) * bs : geo.inode_table_block(g) * bs]) for g in range(2)
            ]
            states.append((alloc.free_inodes, alloc.used_dirs, alloc.sb_free_inodes, headers))
    assert numbers[0] == numbers[1]
    assert states[0] == states[1]
