"""Microjournal: transactions, replay of committed slots at open, discard of broken ones."""

from __future__ import annotations

import struct

import pytest
from checker import assert_clean
from fsfactory import make_image, scratch

from nvfs_tools import format as fmt
from nvfs_tools import journal as jr
from nvfs_tools.device import Device
from nvfs_tools.errors import InvalidArgumentError
from nvfs_tools.volume import Volume


@pytest.fixture
def shm_tmp(tmp_path):
    yield from scratch(tmp_path)


ROOT = fmt.ROOT_INO


@pytest.fixture
def image(shm_tmp):
    return make_image(shm_tmp / "fs.img", 16 << 20)


class RecordingDevice(Device):
    """Logs stores and barriers in order, as the crash campaign will."""

    def __init__(self, *a, **kw) -> None:
        self.log: list[tuple] = []
        super().__init__(*a, **kw)

    def write(self, offset, data):
        self.log.append(("w", offset, bytes(data)))
        super().write(offset, data)

    def barrier(self):
        self.log.append(("b",))
        super().barrier()


def write_slot(path, slot, stores, seq=7, corrupt=False):
    """Leave a committed (or corrupt) transaction in ``slot``, as a crash after its commit would."""
    with Volume.open(path) as vol:
        base = jr.slot_offset(vol.geo.journal_block, vol.block_size, slot)
    raw = b"".join(struct.pack("<QQ", a, v) for a, v in stores)
    crc = jr.entries_checksum(raw) ^ (1 if corrupt else 0)
    with open(path, "r+b") as f:
        f.seek(base + jr.ENTRIES_OFF)
        f.write(raw)
        f.seek(base + jr.CHECKSUM_OFF)
        f.write(struct.pack("<I", crc))
        f.seek(base + jr.COMMIT_OFF)
        f.write(struct.pack("<Q", fmt.journal_commit_word(seq, len(stores))))


def test_committed_slot_applied_at_open(image):
    with Volume.open(image, writable=True) as vol:
        f = vol.create(ROOT, "f", 0o644, uid=1)
        uid_addr = vol.inode_field_addr(f, "uid")  # word holding uid and gid
        size_addr = vol.inode_field_addr(f, "size")
    write_slot(image, 3, [(uid_addr, 55 | 66 << 32), (size_addr, 0)])
    with Volume.open(image) as vol:  # read-only: nothing is replayed
        assert vol.read_inode(f).uid == 1
        states = jr.read_slots(vol.dev, vol.geo.journal_block, vol.block_size, vol.geo.journal_slots)
        st = states[3]
        assert st.checksum_ok and st.count == 2 and st.sequence == 7
        assert st.entries == [(uid_addr, 55 | 66 << 32), (size_addr, 0)]
    with Volume.open(image, writable=True) as vol:
        node = vol.read_inode(f)
        assert (node.uid, node.gid) == (55, 66)
        assert vol.dyn.journal_seq == 7  # the sequence continues after the replayed transaction
    assert_clean(image)  # the slot was cleared


def test_bad_checksum_discarded(image):
    with Volume.open(image, writable=True) as vol:
        f = vol.create(ROOT, "f", 0o644, uid=1)
        uid_addr = vol.inode_field_addr(f, "uid")
    write_slot(image, 0, [(uid_addr, 99)], corrupt=True)
    with Volume.open(image, writable=True) as vol:
        assert vol.read_inode(f).uid == 1
    assert_clean(image)


def test_out_of_device_entry_discards_slot(image):
    with Volume.open(image, writable=True) as vol:
        f = vol.create(ROOT, "f", 0o644, uid=1)
        uid_addr = vol.inode_field_addr(f, "uid")
        size = vol.dev.size
    write_slot(image, 1, [(uid_addr, 42), (size, 1)])
    with Volume.open(image, writable=True) as vol:
        assert vol.read_inode(f).uid == 1
    assert_clean(image)


def test_replay_order_by_sequence(image):
    with Volume.open(image, writable=True) as vol:
        f = vol.create(ROOT, "f", 0o644)
        addr = vol.inode_field_addr(f, "size")
    write_slot(image, 0, [(addr, 200)], seq=9)
    write_slot(image, 1, [(addr, 100)], seq=8)
    with Volume.open(image, writable=True) as vol:
        assert vol.read_inode(f).size == 200


def test_transaction_store_order(image):
    dev = RecordingDevice(image, writable=True)
    vol = Volume.from_device(dev)
    f = vol.create(ROOT, "f", 0o644)
    addr = vol.inode_field_addr(f, "size")
    dev.log.clear()
    with vol.transaction() as tx:
        tx.store(addr, 4096)
        tx.store(addr + 8, 1)
    ops = [op[0] for op in dev.log]
    # entries+checksum, barrier, commit, barrier, apply, barrier, clear, barrier
    assert ops == ["w", "w", "b", "w", "b", "w", "w", "b", "w", "w", "b"]
    commit_store = dev.log[3]
    assert struct.unpack("<Q", commit_store[2])[0] & 0xFF == 2
    assert dev.log[8][2] == b"\0" * 8
    vol.close()


def test_transaction_limits(image):
    with Volume.open(image, writable=True) as vol:
        with pytest.raises(InvalidArgumentError):
            with vol.transaction() as tx:
                tx.store(3, 1)
        with pytest.raises(InvalidArgumentError):
            with vol.transaction() as tx:
                for i in range(17):
                    tx.store(8 * i + 4096 * 50, 0)
    assert_clean(image)


def test_rename_goes_through_journal(image):
    dev = RecordingDevice(image, writable=True)
    vol = Volume.from_device(dev)
    d = vol.mkdir(ROOT, "d")
    vol.create(ROOT, "f", 0o644)
    dev.log.clear()
    vol.rename(ROOT, "f", d, "g")
    jstart = vol.geo.journal_block * vol.block_size
    jend = jstart + vol.geo.journal_blocks * vol.block_size
    commits = [op for op in dev.log if op[0] == "w" and jstart <= op[1] < jend and len(op[2]) == 8]
    assert len(commits) >= 2  # commit word set, then cleared
    vol.close()
    assert_clean(image)
