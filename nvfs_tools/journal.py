"""The microjournal: small groups of 8-byte stores made failure-atomic.

A slot (:data:`format.JournalSlot`, 512 bytes) lives at
``journal_block * block_size + slot * 512``.  A transaction writes its entries
(device byte address of an aligned word, value), the CRC-32 of the used entry
bytes, barriers, then stores the commit word ``journal_commit_word(seq,
count)``; from that store on the transaction is decided.  The stores are then
applied, barriered, and the commit word cleared.  Replay (at open for write and
in fsck) applies every slot whose commit word is set and whose checksum
matches (applying twice is harmless), and discards the others.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from nvfs_tools import format as fmt
from nvfs_tools.errors import InvalidArgumentError
from nvfs_tools.record import Fields

if TYPE_CHECKING:
    from nvfs_tools.device import Device
    from nvfs_tools.volume import Volume

_HDR = fmt.field_layout(fmt.PLAIN["JournalSlotHeader"])
COMMIT_OFF = _HDR["commit"].offset
CHECKSUM_OFF = _HDR["checksum"].offset
ENTRIES_OFF = fmt.JOURNAL_SLOT_HEADER_SIZE
ENTRY_SIZE = fmt.PLAIN["JournalEntry"].sizeof()
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_ENTRY = struct.Struct("<QQ")
_DYN_SEQ = fmt.SB_DYNAMIC_OFFSET + fmt.field_offset(fmt.PLAIN["SuperblockDynamic"], "journal_seq")


def slot_offset(journal_block: int, block_size: int, slot: int) -> int:
    return journal_block * block_size + slot * fmt.JOURNAL_SLOT_SIZE


def entries_checksum(raw: bytes) -> int:
    return zlib.crc32(raw) & 0xFFFFFFFF


class SlotState(Fields):
    """What one slot holds, for replay, fsck and debugfs ``logdump``."""

    _fields = ("slot", "commit", "sequence", "count", "checksum_ok", "entries")

    def __init__(
        self, slot: int, commit: int, sequence: int, count: int, checksum_ok: bool, entries: list[tuple[int, int]]
    ) -> None:
        self.slot, self.commit, self.sequence, self.count = slot, commit, sequence, count
        self.checksum_ok, self.entries = checksum_ok, entries


def read_slots(dev: Device, journal_block: int, block_size: int, slots: int) -> list[SlotState]:
    """Decode every journal slot (including empty ones)."""
    out = []
    for s in range(slots):
        base = slot_offset(journal_block, block_size, s)
        commit = _U64.unpack_from(dev.view, base + COMMIT_OFF)[0]
        count = commit & 0xFF
        ok = False
        entries: list[tuple[int, int]] = []
        if commit and 1 <= count <= fmt.JOURNAL_ENTRIES:
            raw = bytes(dev.view[base + ENTRIES_OFF : base + ENTRIES_OFF + count * ENTRY_SIZE])
            ok = entries_checksum(raw) == _U32.unpack_from(dev.view, base + CHECKSUM_OFF)[0]
            entries = [_ENTRY.unpack_from(raw, i * ENTRY_SIZE) for i in range(count)]
        out.append(SlotState(s, commit, commit >> 8, count, ok, entries))
    return out


def replay(dev: Device, journal_block: int, block_size: int, slots: int) -> tuple[int, int]:
    """Apply committed slots, discard broken ones; returns ``(applied, discarded)``.

    Entries whose address is not an aligned word inside the device make the
    whole slot count as broken: applying part of a transaction is worse than
    dropping it.
    """
    applied = discarded = 0
    states = read_slots(dev, journal_block, block_size, slots)
    for st in sorted((s for s in states if s.commit), key=lambda s: s.sequence):
        good = st.checksum_ok and all(a % 8 == 0 and 0 <= a <= dev.size - 8 for a, _ in st.entries)
        if good:
            for addr, value in st.entries:
                dev.write(addr, _U64.pack(value))
            dev.barrier()
            applied += 1
        else:
            discarded += 1
        dev.write(slot_offset(journal_block, block_size, st.slot) + COMMIT_OFF, _U64.pack(0))
        dev.barrier()
        if good and st.sequence > _U64.unpack_from(dev.view, _DYN_SEQ)[0]:
            dev.write(_DYN_SEQ, _U64.pack(st.sequence))  # later transactions keep counting up
    return applied, discarded


class Transaction:
    """Collects up to 16 word stores; committed when the ``with`` block ends."""

    def __init__(self) -> None:
        self.stores: list[tuple[int, int]] = []

    def store(self, addr: int, value: int) -> None:
        if addr % 8:
            raise InvalidArgumentError(f"journal store at unaligned address {addr}")
        for i, (a, _) in enumerate(self.stores):
            if a == addr:  # a later store to the same word replaces the earlier one
                self.stores[i] = (addr, value)
                return
        if len(self.stores) >= fmt.JOURNAL_ENTRIES:
            raise InvalidArgumentError("a journal transaction holds at most 16 stores")
        self.stores.append((addr, value))


class Journal:
    """The journal of one writable volume."""

    def __init__(self, vol: Volume) -> None:
        self.vol = vol
        self.block = vol.geo.journal_block
        self.slots = vol.geo.journal_slots
        self.seq = _U64.unpack_from(vol.dev.view, _DYN_SEQ)[0]

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        tx = Transaction()
        yield tx
        if tx.stores:
            self.commit(tx.stores)

    def commit(self, stores: list[tuple[int, int]]) -> None:
        """Run one transaction through the log (see the module docstring for the order)."""
        dev = self.vol.dev
        self.seq += 1
        base = slot_offset(self.block, self.vol.block_size, self.seq % self.slots)
        raw = b"".join(_ENTRY.pack(a, v) for a, v in stores)
        dev.write(base + ENTRIES_OFF, raw)
        dev.write(base + CHECKSUM_OFF, _U32.pack(entries_checksum(raw)))
        dev.barrier()
        dev.write(base + COMMIT_OFF, _U64.pack(fmt.journal_commit_word(self.seq, len(stores))))
        dev.barrier()
        for addr, value in stores:
            dev.write(addr, _U64.pack(value))
        dev.barrier()
        dev.write(base + COMMIT_OFF, _U64.pack(0))
        dev.write(_DYN_SEQ, _U64.pack(self.seq))
        dev.barrier()
