"""Block and inode allocators over the group bitmaps.

The allocators keep three things exact on every change, because fsck and the
kernel trust them: the bitmap bits, the group's :data:`GroupCounters` and the
superblock totals.  Free counts per group are cached in memory (read once at
open) so that choosing a group never reads the counters blocks again, and a
rotating cursor makes a long run of small allocations (populate of a million
files) continue where the previous one stopped instead of rescanning bitmaps
from the start.

Bitmap scans use :mod:`re` directly on the device mapping (no copies): a search
for ``[^\\xff]`` finds the first byte with a free bit, ``\\x00{k}`` finds a run of
``8*k`` free blocks.  When the fast-scan backend offers ``bitmap_find_free`` it
is used for aligned runs, and its answer is verified before use.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from nvfs_tools import format as fmt
from nvfs_tools.errors import CorruptError, NoSpaceError

#: (bitmap copy, valid bits, start byte, count, number of bit 0) -> (numbers taken, first, end byte changed)
TakeBits = Callable[[bytearray, int, int, int, int], tuple[list[int], int, int]]

if TYPE_CHECKING:
    from nvfs_tools.volume import Volume

_NOT_FULL = re.compile(rb"[^\xff]")
_NOT_ZERO = re.compile(rb"[^\x00]")
_ZERO_RUNS: dict[int, re.Pattern[bytes]] = {}
_U64 = struct.Struct("<Q")

_GC = fmt.field_layout(fmt.PLAIN["GroupCounters"])
GC_FREE_BLOCKS = _GC["free_blocks"].offset
GC_FREE_INODES = _GC["free_inodes"].offset
GC_USED_DIRS = _GC["used_dirs"].offset
_DYN = fmt.field_layout(fmt.PLAIN["SuperblockDynamic"])
DYN_FREE_BLOCKS = fmt.SB_DYNAMIC_OFFSET + _DYN["free_blocks"].offset
DYN_FREE_INODES = fmt.SB_DYNAMIC_OFFSET + _DYN["free_inodes"].offset

#: Files larger than this get 2 MiB-aligned runs (DAX huge pages).
HUGE_BYTES = 2 << 20


def _zero_run(nbytes: int) -> re.Pattern[bytes]:
    pat = _ZERO_RUNS.get(nbytes)
    if pat is None:
        pat = _ZERO_RUNS[nbytes] = re.compile(rb"\x00{%d}" % nbytes)
    return pat


def _lowest_zero_bit(byte: int) -> int:
    return ((~byte) & (byte + 1)).bit_length() - 1


def _bad_blocks(dev: object, block_size: int) -> frozenset[int]:
    """Blocks touching the device's listed bad media (sysfs, or ``badblocks.apply``); usually none."""
    ranges = getattr(dev, "badblocks", ())
    return frozenset(
        b for start, length in ranges for b in range(start // block_size, -(-(start + length) // block_size))
    )


class Allocator:
    """Allocates and frees blocks and inodes of one open :class:`Volume`."""

    def __init__(self, vol: Volume) -> None:
        self.vol = vol
        self.geo = geo = vol.geo
        self.bs = geo.block_size
        self.map = vol.dev.view
        self.free_blocks: list[int] = []
        self.free_inodes: list[int] = []
        self.used_dirs: list[int] = []
        for g in range(geo.group_count):
            base = geo.counters_block(g) * self.bs
            self.free_blocks.append(_U64.unpack_from(self.map, base + GC_FREE_BLOCKS)[0])
            self.free_inodes.append(_U64.unpack_from(self.map, base + GC_FREE_INODES)[0])
            self.used_dirs.append(_U64.unpack_from(self.map, base + GC_USED_DIRS)[0])
        self.sb_free_blocks = _U64.unpack_from(self.map, DYN_FREE_BLOCKS)[0]
        self.sb_free_inodes = _U64.unpack_from(self.map, DYN_FREE_INODES)[0]
        self.block_cursor = geo.first_data_block(0)
        self.inode_cursor = [0] * geo.group_count
        self.huge_blocks = max(1, HUGE_BYTES // self.bs)
        self.bad_blocks = _bad_blocks(vol.dev, self.bs)

    # ------------------------------------------------------------------ stores
    def _store_group(self, g: int, offset: int, value: int) -> None:
        self.vol.dev.write(self.geo.counters_block(g) * self.bs + offset, _U64.pack(value))

    def _bitmap_base(self, g: int) -> int:
        return self.geo.block_bitmap_block(g) * self.bs

    def _group_bits(self, g: int) -> int:
        return self.geo.group_end(g) - self.geo.group_start(g)

    # ------------------------------------------------------------------ blocks
    def allocate_blocks(self, count: int, goal: int | None = None, huge_align: bool = False) -> list[int]:
        """``count`` free blocks, marked used; as contiguous as free space allows.

        ``goal`` is the preferred first block.  With ``huge_align`` whole 2 MiB
        chunks come from 2 MiB-aligned free runs first.
        """
        if count <= 0:
            return []
        if count > self.sb_free_blocks:
            raise NoSpaceError(
                f"no space left: {count} blocks needed, {self.sb_free_blocks} free "
                f"({count * self.bs} bytes needed, {self.sb_free_blocks * self.bs} free)"
            )
        got: list[int] = []
        if huge_align and self.huge_blocks >= 8 and count >= self.huge_blocks:
            got = self._take_aligned(count // self.huge_blocks, goal)
            if got:
                goal = got[-1] + 1
        if len(got) < count:
            got.extend(self._take_any(count - len(got), goal))
        if len(got) < count:  # counters said yes, bitmaps said no: they disagree
            self.free_block_list(got)
            raise CorruptError("block bitmaps hold fewer free blocks than the counters say; run fsck.nvfs")
        self.sb_free_blocks -= count
        self.vol.dev.write(DYN_FREE_BLOCKS, _U64.pack(self.sb_free_blocks))
        self.block_cursor = got[-1] + 1
        if self.bad_blocks:
            got = self._skip_bad(got)
        return got

    def _skip_bad(self, got: list[int]) -> list[int]:
        """Never hand out a block on media the device lists as bad (spec/checking.md 5.1).

        Such a block stays marked used, owned by nobody: fsck, given the same list, maps it into the
        bad-blocks inode (without it, frees it again).  Other blocks replace it.
        """
        bad = [b for b in got if b in self.bad_blocks]
        if not bad:
            return got
        good = [b for b in got if b not in self.bad_blocks]
        try:
            good.extend(self.allocate_blocks(len(bad), good[-1] + 1 if good else None))
        except (NoSpaceError, CorruptError):
            self.free_block_list(good)
            raise
        return good

    def _groups_from(self, block: int) -> Iterator[int]:
        """Groups in rotating order starting with ``block``'s (lazily: devices may have 10^5 groups)."""
        n = self.geo.group_count
        first = min(self.geo.group_of_block(block), n - 1) if block < self.geo.blocks_count else 0
        for i in range(n):
            yield (first + i) % n

    def _take_any(self, count: int, goal: int | None) -> list[int]:
        start = self.block_cursor if goal is None else goal
        if not 0 <= start < self.geo.blocks_count:
            start = 0
        bpg = self.geo.blocks_per_group
        g0 = start // bpg
        if g0 < self.geo.group_count and self.free_blocks[g0]:  # the common case: room at the cursor
            got = self._take_in_group(g0, start - g0 * bpg, count)
            if len(got) == count:
                return got
        else:
            got = []
        for g in self._groups_from(start):
            if g == g0 or self.free_blocks[g] == 0:
                continue
            got.extend(self._take_in_group(g, 0, count - len(got)))
            if len(got) == count:
                return got
        if start % bpg and g0 < self.geo.group_count and self.free_blocks[g0]:
            # the goal group was searched from its middle: search its beginning too
            got.extend(self._take_in_group(g0, 0, count - len(got)))
        return got

    def _take_in_group(self, g: int, first_bit: int, count: int) -> list[int]:
        """Take up to ``count`` free blocks of group ``g`` at or after ``first_bit``.

        Whole free bytes are taken eight blocks at a time; partly used bytes
        bit by bit.  The bitmap is searched by :mod:`re` on the mapping.
        """
        base = (g * self.geo.blocks_per_group + 1) * self.bs  # block_bitmap_block(g)
        gstart = g * self.geo.blocks_per_group
        nbits = min(self.geo.blocks_per_group, self.geo.blocks_count - gstart)
        end = base + (nbits + 7) // 8
        first_pos = base + first_bit // 8
        skip = first_bit % 8
        pos = first_pos
        view = self.map
        write = self.vol.dev.write
        got: list[int] = []
        while len(got) < count:
            m = _NOT_FULL.search(view, pos, end)
            if m is None:
                break
            pos = m.start()
            lo = skip if pos == first_pos else 0
            want = count - len(got)
            byte = view[pos]
            if byte == 0 and lo == 0 and want >= 8:
                limit = min(end, pos + want // 8)
                z = _NOT_ZERO.search(view, pos, limit)
                stop = z.start() if z else limit
                first = gstart + (pos - base) * 8
                got.extend(range(first, first + (stop - pos) * 8))
                write(pos, b"\xff" * (stop - pos))
                pos = stop
                continue
            new = byte
            idx = (pos - base) * 8
            for bit in range(lo, 8):
                if not new >> bit & 1:
                    if idx + bit >= nbits:
                        break
                    new |= 1 << bit
                    got.append(gstart + idx + bit)
                    if len(got) == count:
                        break
            if new != byte:
                write(pos, bytes((new,)))
            pos += 1
        if got:
            self.free_blocks[g] -= len(got)
            self._store_group(g, GC_FREE_BLOCKS, self.free_blocks[g])
        return got

    def _find_aligned(self, g: int, start_bit: int) -> int:
        """First bit >= start_bit of group g where a free aligned 2 MiB run starts, or -1."""
        nbits = self._group_bits(g)
        align = self.huge_blocks
        backend = self.vol.scan_backend
        finder = getattr(backend, "bitmap_find_free", None) or getattr(backend, "find_free", None)
        base = self._bitmap_base(g)
        if finder is not None:
            try:
                bit = finder(self.map, base, nbits, start_bit, align, align)
            except Exception:  # an unexpected signature: use the pure path
                bit = None
            if bit is not None:
                if bit < 0:
                    return -1
                nb = align // 8
                if (
                    bit % align == 0
                    and bit + align <= nbits
                    and not any(self.map[base + bit // 8 : base + bit // 8 + nb])
                ):
                    return bit
        nb = align // 8
        pat = _zero_run(nb)
        pos = base + (start_bit + align - 1) // align * nb
        end = base + nbits // 8
        while pos + nb <= end:
            m = pat.search(self.map, pos, end)
            if m is None:
                return -1
            rel = m.start() - base
            if rel % nb == 0:
                return rel * 8
            pos = base + (rel // nb + 1) * nb
        return -1

    def aligned_goal(self, goal: int | None) -> int | None:
        """First block of a free 2 MiB-aligned run at or after ``goal`` (any group), or None."""
        if self.huge_blocks < 8:
            return None
        start = self.block_cursor if goal is None else goal
        if not 0 <= start < self.geo.blocks_count:
            start = 0
        bpg = self.geo.blocks_per_group
        g0 = start // bpg
        for g in self._groups_from(start):
            if self.free_blocks[g] < self.huge_blocks:
                continue
            bit = self._find_aligned(g, start - g * bpg if g == g0 else 0)
            if bit >= 0:
                return g * bpg + bit
        return None

    def _take_aligned(self, chunks: int, goal: int | None) -> list[int]:
        got: list[int] = []
        align = self.huge_blocks
        start = self.block_cursor if goal is None else goal
        for g in self._groups_from(start if 0 <= start < self.geo.blocks_count else 0):
            if self.free_blocks[g] < align:
                continue
            bit = 0
            base = self._bitmap_base(g)
            while len(got) < chunks * align:
                bit = self._find_aligned(g, bit)
                if bit < 0:
                    break
                # extend over following aligned free chunks in one write
                n = 1
                while len(got) + (n + 1) * align <= chunks * align and bit + (n + 1) * align <= self._group_bits(g):
                    lo = base + (bit + n * align) // 8
                    if any(self.map[lo : lo + align // 8]):
                        break
                    n += 1
                self.vol.dev.write(base + bit // 8, b"\xff" * (n * align // 8))
                gstart = self.geo.group_start(g)
                got.extend(range(gstart + bit, gstart + bit + n * align))
                self.free_blocks[g] -= n * align
                bit += n * align
                self._store_group(g, GC_FREE_BLOCKS, self.free_blocks[g])
            if len(got) >= chunks * align:
                break
        return got

    def free_block_list(self, blocks: Iterable[int]) -> None:
        """Return blocks to the free pool (bitmap, group counters, superblock)."""
        blocks = sorted(blocks)
        if not blocks:
            return
        geo = self.geo
        for b in blocks:
            if geo.is_metadata_block(b) or b >= geo.blocks_count:
                raise CorruptError(f"attempt to free metadata or out-of-range block {b}")
        i = 0
        total = 0
        while i < len(blocks):
            g = geo.group_of_block(blocks[i])
            gstart = geo.group_start(g)
            j = i
            while j < len(blocks) and geo.group_of_block(blocks[j]) == g:
                j += 1
            bits = [b - gstart for b in blocks[i:j]]
            base = self._bitmap_base(g)
            lo, hi = bits[0] // 8, bits[-1] // 8 + 1
            chunk = bytearray(self.map[base + lo : base + hi])
            for bit in bits:
                k = bit // 8 - lo
                mask = 1 << (bit % 8)
                if not chunk[k] & mask:
                    raise CorruptError(f"block {gstart + bit} freed twice (its bitmap bit is clear)")
                chunk[k] &= ~mask
            self.vol.dev.write(base + lo, chunk)
            self.free_blocks[g] += len(bits)
            self._store_group(g, GC_FREE_BLOCKS, self.free_blocks[g])
            total += len(bits)
            i = j
        self.sb_free_blocks += total
        self.vol.dev.write(DYN_FREE_BLOCKS, _U64.pack(self.sb_free_blocks))

    # ------------------------------------------------------------------ inodes
    def _inode_bitmap_base(self, g: int) -> int:
        return self.geo.inode_bitmap_block(g) * self.bs

    def pick_group(self, is_dir: bool, goal_group: int | None) -> Iterator[int]:
        """Groups to try, best first (lazily).

        Directories spread out (Orlov-lite: most free inodes, fewest
        directories) unless a ``goal_group`` is given; other inodes stay near
        ``goal_group`` (the parent's).
        """
        n = self.geo.group_count
        free = self.free_inodes
        if is_dir and n > 1 and goal_group is None:
            best = max(range(n), key=lambda g: (free[g], -self.used_dirs[g], -g))
            if free[best]:
                yield best
            yield from (g for g in sorted(range(n), key=lambda g: (-free[g], self.used_dirs[g], g)) if free[g])
            return
        first = goal_group if goal_group is not None and 0 <= goal_group < n else 0
        for i in range(n):
            g = (first + i) % n
            if free[g]:
                yield g

    def allocate_inode(
        self, is_dir: bool, goal_group: int | None = None, before_mark: Callable[[int], None] | None = None
    ) -> int:
        """A free inode number, marked used in the bitmap and counters.

        ``before_mark(ino)`` runs before the bitmap bit is set: creation writes
        the inode first, as the spec's store order asks.
        """
        if self.sb_free_inodes == 0:
            raise NoSpaceError("no free inodes left")
        ipg = self.geo.inodes_per_group
        view = self.map
        for g in self.pick_group(is_dir, goal_group):
            base = self._inode_bitmap_base(g)
            end = base + (ipg + 7) // 8
            for start in (self.inode_cursor[g], 0):
                pos = base + start // 8
                m = _NOT_FULL.search(view, pos, end)
                if m is None:
                    continue
                pos = m.start()
                byte = view[pos]
                bit = _lowest_zero_bit(byte)
                index = (pos - base) * 8 + bit
                if index >= ipg:
                    continue
                if before_mark is not None:
                    before_mark(g * ipg + index + 1)
                self.vol.dev.write(pos, bytes((byte | 1 << bit,)))
                self.inode_cursor[g] = index
                self.free_inodes[g] -= 1
                self._store_group(g, GC_FREE_INODES, self.free_inodes[g])
                if is_dir:
                    self.used_dirs[g] += 1
                    self._store_group(g, GC_USED_DIRS, self.used_dirs[g])
                self.sb_free_inodes -= 1
                self.vol.dev.write(DYN_FREE_INODES, _U64.pack(self.sb_free_inodes))
                return g * ipg + index + 1
        raise CorruptError("inode bitmaps hold fewer free inodes than the counters say; run fsck.nvfs")

    def take_inodes(self, count: int, goal_group: int | None, dirs: int, take_bits: TakeBits) -> list[int]:
        """``count`` free inodes near ``goal_group`` at once, the last ``dirs`` of them for directories: the
        numbers ``allocate_inode`` would give one at a time, with one bitmap store and one store per counter
        per group instead of four stores each (mkfs -d takes a directory's new children this way).
        ``take_bits`` marks the bits in a copy of a group's bitmap (populate's compiled or pure kernel)."""
        if count == 0:
            return []
        if count > self.sb_free_inodes:
            raise NoSpaceError(f"no free inodes left ({count} needed, {self.sb_free_inodes} free)")
        got: list[int] = []
        for g in self.pick_group(False, goal_group):
            got.extend(self._take_inodes_in_group(g, count - len(got), take_bits))
            if len(got) == count:
                break
        if len(got) < count:
            raise NoSpaceError(f"inode bitmaps hold fewer free inodes than the counters say ({len(got)} of {count})")
        self.sb_free_inodes -= count
        self.vol.dev.write(DYN_FREE_INODES, _U64.pack(self.sb_free_inodes))
        per_group: dict[int, int] = {}
        for ino in got[count - dirs :]:
            g = (ino - 1) // self.geo.inodes_per_group
            per_group[g] = per_group.get(g, 0) + 1
        for g, n in per_group.items():
            self.used_dirs[g] += n
            self._store_group(g, GC_USED_DIRS, self.used_dirs[g])
        return got

    def _take_inodes_in_group(self, g: int, count: int, take_bits: TakeBits) -> list[int]:
        """Up to ``count`` free inodes of group ``g`` (from its cursor, then from its start)."""
        ipg = self.geo.inodes_per_group
        base = self._inode_bitmap_base(g)
        bm = bytearray(self.map[base : base + (ipg + 7) // 8])
        first_ino = g * ipg + 1
        got, lo, hi = take_bits(bm, ipg, self.inode_cursor[g] // 8, count, first_ino)
        if got:
            self.vol.dev.write(base + lo, bm[lo:hi])
            self.free_inodes[g] -= len(got)
            self._store_group(g, GC_FREE_INODES, self.free_inodes[g])
            self.inode_cursor[g] = got[-1] - first_ino
        return got

    def free_inode(self, ino: int, was_dir: bool) -> None:
        """Clear the inode's bitmap bit and give it back to the counters."""
        ipg = self.geo.inodes_per_group
        g, index = divmod(ino - 1, ipg)
        pos = self._inode_bitmap_base(g) + index // 8
        byte = self.map[pos]
        mask = 1 << (index % 8)
        if not byte & mask:
            raise CorruptError(f"inode {ino} freed twice (its bitmap bit is clear)")
        self.vol.dev.write(pos, bytes((byte & ~mask,)))
        self.free_inodes[g] += 1
        self._store_group(g, GC_FREE_INODES, self.free_inodes[g])
        if was_dir and self.used_dirs[g]:
            self.used_dirs[g] -= 1
            self._store_group(g, GC_USED_DIRS, self.used_dirs[g])
        self.inode_cursor[g] = min(self.inode_cursor[g], index)
        self.sb_free_inodes += 1
        self.vol.dev.write(DYN_FREE_INODES, _U64.pack(self.sb_free_inodes))
