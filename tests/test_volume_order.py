"""Store and barrier order of the namespace operations, recorded at the device (spec/ ordering)."""

from __future__ import annotations

import struct

import pytest
from fsfactory import make_image, scratch
from test_journal import RecordingDevice

from nvfs_tools import format as fmt
from nvfs_tools.volume import Volume


@pytest.fixture
def shm_tmp(tmp_path):
    yield from scratch(tmp_path)


ROOT = fmt.ROOT_INO


@pytest.fixture
def rec(shm_tmp):
    path = make_image(shm_tmp / "fs.img", 16 << 20)
    dev = RecordingDevice(path, writable=True)
    vol = Volume.from_device(dev)
    yield vol, dev
    vol.close()


def index_of(log, pred, start=0):
    for i in range(start, len(log)):
        if pred(log[i]):
            return i
    raise AssertionError("store not found")


def barrier_between(log, i, j):
    return any(op[0] == "b" for op in log[i + 1 : j])


def covers(op, addr, size=8):
    return op[0] == "w" and op[1] <= addr and addr + size <= op[1] + len(op[2])


def test_create_order(rec):
    vol, dev = rec
    dev.log.clear()
    ino = vol.create(ROOT, "f", 0o644, data=b"x" * 5000)
    log = dev.log
    entry = vol._dir(ROOT).lookup(b"f")
    geo = vol.geo
    g, idx = divmod(ino - 1, geo.inodes_per_group)
    bitmap_byte = geo.inode_bitmap_block(g) * vol.block_size + idx // 8
    data_blk = dict(vol.file_blocks(ino))[0]
    i_data = index_of(log, lambda op: covers(op, data_blk * vol.block_size))
    i_inode = index_of(log, lambda op: covers(op, vol.inode_offset(ino), fmt.INODE_SIZE))
    i_bit = index_of(log, lambda op: covers(op, bitmap_byte, 1))
    i_commit = index_of(
        log, lambda op: covers(op, entry.ino_addr) and struct.unpack_from("<Q", op[2], entry.ino_addr - op[1])[0] == ino
    )
    assert i_data < i_inode < i_bit < i_commit
    assert barrier_between(log, i_bit, i_commit)
    assert log[-1][0] == "b"


def test_unlink_order(rec):
    vol, dev = rec
    ino = vol.create(ROOT, "f", 0o644, data=b"x" * 5000)
    entry = vol._dir(ROOT).lookup(b"f")
    blk = dict(vol.file_blocks(ino))[0]
    g = vol.geo.group_of_block(blk)
    bitmap_byte = vol.geo.block_bitmap_block(g) * vol.block_size + (blk - vol.geo.group_start(g)) // 8
    head = fmt.SB_DYNAMIC_OFFSET + fmt.field_offset(fmt.SuperblockDynamic, "orphan_head")
    dev.log.clear()
    vol.unlink(ROOT, "f")
    log = dev.log
    i_next = index_of(log, lambda op: covers(op, vol.inode_field_addr(ino, "next_orphan")))
    i_push = index_of(log, lambda op: covers(op, head) and op[2] == struct.pack("<Q", ino))
    i_clear = index_of(log, lambda op: covers(op, entry.ino_addr) and op[2] == bytes(8))
    i_free = index_of(log, lambda op: covers(op, bitmap_byte, 1))
    i_mode = index_of(log, lambda op: covers(op, vol.inode_offset(ino), 2) and op[2][:2] == b"\0\0")
    i_pop = index_of(log, lambda op: covers(op, head) and op[2] == bytes(8), i_push + 1)
    assert i_next < i_push < i_clear < i_free < i_pop and i_clear < i_mode < i_pop
    assert barrier_between(log, i_next, i_push) and barrier_between(log, i_push, i_clear)
    assert barrier_between(log, i_clear, i_free) and barrier_between(log, i_mode, i_pop)
    assert vol.dyn.orphan_head == 0


def test_write_and_truncate_order(rec):
    vol, dev = rec
    ino = vol.create(ROOT, "f", 0o644)
    dev.log.clear()
    vol.write(ino, 0, b"y" * 100)
    log = dev.log
    blk = dict(vol.file_blocks(ino))[0]
    i_data = index_of(log, lambda op: covers(op, blk * vol.block_size, 100))
    i_ptr = index_of(log, lambda op: covers(op, vol.inode_field_addr(ino, "block", 0)))
    i_size = index_of(log, lambda op: covers(op, vol.inode_field_addr(ino, "size")))
    assert i_data < i_ptr < i_size and barrier_between(log, i_data, i_ptr)
    dev.log.clear()
    vol.truncate(ino, 0)
    log = dev.log
    i_size = index_of(log, lambda op: covers(op, vol.inode_field_addr(ino, "size")))
    i_ptr = index_of(log, lambda op: covers(op, vol.inode_field_addr(ino, "block", 0)))
    g = vol.geo.group_of_block(blk)
    bitmap_byte = vol.geo.block_bitmap_block(g) * vol.block_size + (blk - vol.geo.group_start(g)) // 8
    i_free = index_of(log, lambda op: covers(op, bitmap_byte, 1))
    assert i_size < i_ptr < i_free
    assert barrier_between(log, i_size, i_ptr) and barrier_between(log, i_ptr, i_free)
