"""Pure-Python reference of the fast-scan functions (same names and results).

This module defines what each scan means; ``_fastscan.pyx`` must return
exactly the same values (the hypothesis tests compare them).  It is slow but
simple, and it is what runs when the extension is not built or ``NVFS_PURE=1``.
All field offsets come from :func:`nvfs_tools.format.field_layout`.
"""

from __future__ import annotations

import errno
import mmap
import os
from array import array
from typing import Any

from nvfs_tools import format as F
from nvfs_tools.namehash import siphash24_pure as siphash24
from nvfs_tools.scan import CounterCheck, Mismatch, Problem

__all__ = [
    "siphash24",
    "siphash24_bulk",
    "popcount",
    "popcount_kernels",
    "find_free",
    "diff",
    "scan_inodes",
    "walk_blockmaps",
    "walk_directories",
    "link_counts",
    "verify_arrays",
    "check_inode_fields",
    "merge_bits",
    "pages_clean",
    "check_inode_groups",
    "tally_entries",
    "check_directories",
    "unsettled_links",
    "cpu_features",
    "flush_instruction",
    "flush_range",
    "sfence",
    "nt_zero",
]

_U64 = (1 << 64) - 1
_INODE = F.field_layout(F.Inode)
_PAGE = F.field_layout(F.DirPageHeader)
_ENTRY = F.field_layout(F.DirEntryHeader)
_BLOCK_PTR_SIZE = _INODE["block"].size // F.N_BLOCK_POINTERS


def _ld(buf: Any, offset: int, size: int) -> int:
    return int.from_bytes(buf[offset : offset + size], "little")


def _field(buf: Any, base: int, info: F.FieldInfo) -> int:
    return int.from_bytes(buf[base + info.offset : base + info.offset + info.size], "little")


def _zero_map(nbytes: int) -> mmap.mmap:
    """A zero-filled buffer whose pages cost memory only once written (private: see _fastscan)."""
    return mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE)


def _problems() -> dict[str, array]:
    return {"prob_ino": array("Q"), "prob_where": array("Q"), "prob_code": array("H")}


def _report(out: dict[str, array], ino: int, where: int, code: Problem) -> None:
    out["prob_ino"].append(ino)
    out["prob_where"].append(where)
    out["prob_code"].append(int(code))


# ---------------------------------------------------------------------------
# SipHash
# ---------------------------------------------------------------------------


def siphash24_bulk(key: bytes, buf: Any, offsets: Any, lengths: Any) -> array:
    """SipHash-2-4 of ``buf[offsets[i] : offsets[i] + lengths[i]]`` for every i."""
    if len(offsets) != len(lengths):
        raise ValueError("offsets and lengths differ in length")
    view = memoryview(buf).cast("B")
    out = array("Q")
    for off, length in zip(offsets, lengths, strict=True):
        if off < 0 or length < 0 or off + length > len(view):
            raise ValueError(f"name at {off} (+{length}) outside the buffer")
        out.append(siphash24(key, bytes(view[off : off + length])))
    return out


# ---------------------------------------------------------------------------
# Bitmaps (bit i of a bitmap is bit i % 8 of byte i // 8: LSB first)
# ---------------------------------------------------------------------------


def _check_range(buf: Any, offset: int, nbytes: int) -> memoryview:
    view = memoryview(buf).cast("B")
    if offset < 0 or nbytes < 0 or offset + nbytes > len(view):
        raise ValueError(f"range {offset}+{nbytes} outside a buffer of {len(view)} bytes")
    return view


def popcount_kernels() -> list[str]:
    return ["python"]


def popcount(buf: Any, offset: int, nbytes: int, kernel: str | None = None) -> int:
    """Number of set bits in ``nbytes`` bytes at ``offset``."""
    view = _check_range(buf, offset, nbytes)
    return int.from_bytes(view[offset : offset + nbytes], "little").bit_count()


def find_free(buf: Any, offset: int, nbits: int, start: int, count: int, align: int = 1) -> int:
    """First bit index >= start, multiple of ``align``, that begins ``count`` clear bits within nbits; else -1."""
    if count < 1 or align < 1:
        raise ValueError("count and align must be positive")
    view = _check_range(buf, offset, (nbits + 7) // 8)
    bits = int.from_bytes(view[offset : offset + (nbits + 7) // 8], "little")
    start = max(start, 0)
    cand = -(-start // align) * align
    while cand + count <= nbits:
        window = (bits >> cand) & ((1 << count) - 1)
        if window == 0:
            return cand
        first_set = cand + ((window & -window).bit_length() - 1)
        cand = -(-(first_set + 1) // align) * align
    return -1


def diff(buf_a: Any, off_a: int, buf_b: Any, off_b: int, nbits: int) -> array:
    """Indexes of the bits that differ between two bitmaps of ``nbits`` bits."""
    nbytes = (nbits + 7) // 8
    va = _check_range(buf_a, off_a, nbytes)
    vb = _check_range(buf_b, off_b, nbytes)
    x = int.from_bytes(va[off_a : off_a + nbytes], "little") ^ int.from_bytes(vb[off_b : off_b + nbytes], "little")
    x &= (1 << nbits) - 1
    out = array("Q")
    while x:
        low = x & -x
        out.append(low.bit_length() - 1)
        x ^= low
    return out


# ---------------------------------------------------------------------------
# Geometry helpers (the same rules as format.Geometry)
# ---------------------------------------------------------------------------


def _itable_offset(geo: F.Geometry, group: int) -> int:
    return geo.inode_table_block(group) * geo.block_size


def _max_file_bytes(block_size: int) -> int:
    return min(F.max_file_blocks(block_size) * block_size, _U64)


# ---------------------------------------------------------------------------
# Inode table scan
# ---------------------------------------------------------------------------


def _inode_problems(ino: int, addr: int, raw: bytes, geo: F.Geometry, max_size: int) -> list[Problem]:
    def f(name: str) -> int:
        info = _INODE[name]
        return int.from_bytes(raw[info.offset : info.offset + info.size], "little")

    mode, flags, size = f("mode"), f("flags"), f("size")
    fmt = mode & F.S_IFMT
    found = []
    if fmt not in F.VALID_FILE_TYPES:
        found.append(Problem.ILLEGAL_MODE)
    if flags & ~F.INODE_FLAGS_KNOWN:
        found.append(Problem.UNKNOWN_FLAGS)
    if flags & F.INODE_FLAG_INLINE:
        if fmt != F.S_IFLNK:
            found.append(Problem.INLINE_NOT_SYMLINK)
        elif size == 0 or size > F.INLINE_SYMLINK_MAX:
            found.append(Problem.INLINE_BAD_SIZE)
    if size > max_size:
        found.append(Problem.SIZE_TOO_LARGE)
    if f("reserved0"):
        found.append(Problem.RESERVED0_NONZERO)
    if f("links_count") == 0:
        found.append(Problem.LINKS_ZERO)
    if fmt == F.S_IFDIR:
        parent = f("parent")
        if parent == 0 or parent > geo.inodes_count or (ino == F.ROOT_INO and parent != ino):
            found.append(Problem.DIR_BAD_PARENT)
        if f("dir_bank") > 1:
            found.append(Problem.DIR_BAD_BANK)
    if fmt in (F.S_IFCHR, F.S_IFBLK, F.S_IFIFO, F.S_IFSOCK):
        info = _INODE["block"]
        if size or any(raw[info.offset : info.offset + info.size]):
            found.append(Problem.SPECIAL_HAS_DATA)
    return found


def scan_inodes(
    buf: Any, geo: F.Geometry, *, use_bitmap: bool = False, groups: tuple[int, int] | None = None, threads: int = 0
) -> dict[str, Any]:
    """Every in-use inode (mode != 0) of the inode tables, as compact arrays.

    Returns ``ino`` (Q), ``mode`` (H), ``flags`` (I), ``links`` (I), ``size``
    (Q), ``blocks`` (Q) for each in-use inode in inode order; ``dir_ino``,
    ``dir_parent``, ``dir_bank`` (Q) for directories; ``xattr_ino``,
    ``xattr_block`` (Q) for inodes with an xattr block; ``inuse``: a bitmap
    with bit ino-1 set for each in-use inode; and the problem arrays.  With
    ``use_bitmap`` only inodes whose on-media inode-bitmap bit is set are read
    (cost grows with what is used, but in-use inodes with a clear bit are
    missed).  ``groups=(first, end)`` scans only those groups (the buffer
    must then hold at least their bitmaps and tables at their device offsets,
    e.g. a sparse anonymous map filled by O_DIRECT reads); ``inuse`` still
    covers every inode.  Inodes whose bytes lie outside the mapping are skipped.
    """
    view = memoryview(buf).cast("B")
    size = len(view)
    out: dict[str, Any] = {
        "ino": array("Q"),
        "mode": array("H"),
        "flags": array("I"),
        "links": array("I"),
        "size": array("Q"),
        "blocks": array("Q"),
        "dir_ino": array("Q"),
        "dir_parent": array("Q"),
        "dir_bank": array("Q"),
        "xattr_ino": array("Q"),
        "xattr_block": array("Q"),
        "inuse": _zero_map((geo.inodes_count + 7) // 8),
    }
    out.update(_problems())
    inuse = out["inuse"]
    max_size = _max_file_bytes(geo.block_size)
    ipg = geo.inodes_per_group
    first, end = (0, geo.group_count) if groups is None else (max(0, groups[0]), min(groups[1], geo.group_count))
    for group in range(first, end):
        table = _itable_offset(geo, group)
        if table >= size:
            break  # later groups lie further out
        ibm = geo.inode_bitmap_block(group) * geo.block_size
        for index in range(ipg):
            addr = table + index * F.INODE_SIZE
            if addr + F.INODE_SIZE > size:
                break
            if use_bitmap and (ibm + index // 8 >= size or not view[ibm + index // 8] >> (index % 8) & 1):
                continue
            raw = bytes(view[addr : addr + F.INODE_SIZE])
            mode = _field(raw, 0, _INODE["mode"])
            if mode == 0:
                continue
            ino = group * ipg + index + 1
            inuse[(ino - 1) // 8] |= 1 << ((ino - 1) % 8)
            out["ino"].append(ino)
            out["mode"].append(mode)
            out["flags"].append(_field(raw, 0, _INODE["flags"]))
            out["links"].append(_field(raw, 0, _INODE["links_count"]))
            out["size"].append(_field(raw, 0, _INODE["size"]))
            out["blocks"].append(_field(raw, 0, _INODE["blocks"]))
            if mode & F.S_IFMT == F.S_IFDIR:
                out["dir_ino"].append(ino)
                out["dir_parent"].append(_field(raw, 0, _INODE["parent"]))
                out["dir_bank"].append(_field(raw, 0, _INODE["dir_bank"]))
            xattr = _field(raw, 0, _INODE["xattr_block"])
            if xattr:
                out["xattr_ino"].append(ino)
                out["xattr_block"].append(xattr)
            for code in _inode_problems(ino, addr, raw, geo, max_size):
                _report(out, ino, addr, code)
    return out


# ---------------------------------------------------------------------------
# Block-map walk
# ---------------------------------------------------------------------------


class _Claims:
    """The ownership bitmap plus the rules every pointer goes through."""

    def __init__(self, geo: F.Geometry, size: int, owned: Any) -> None:
        self.geo = geo
        self.size = size
        self.owned = owned

    def valid(self, block: int) -> Problem | None:
        geo = self.geo
        if block >= geo.blocks_count or (block + 1) * geo.block_size > self.size:
            return Problem.BLOCK_OUT_OF_RANGE
        if geo.is_metadata_block(block):
            return Problem.BLOCK_IN_METADATA
        return None

    def claim(self, block: int) -> bool:
        """Set the block's bit; False when it was already set."""
        byte, bit = divmod(block, 8)
        if self.owned[byte] >> bit & 1:
            return False
        self.owned[byte] |= 1 << bit
        return True


class _FileWalker:
    """Walks one inode's pointers; ``dup`` (pass B) marks blocks to report as shared."""

    def __init__(self, view: memoryview, claims: _Claims, dup_write: Any, dup_read: Any, out: dict) -> None:
        self.view = view
        self.claims = claims
        self.dup_write = dup_write
        self.dup_read = dup_read
        self.out = out
        self.ppb = claims.geo.block_size // _BLOCK_PTR_SIZE

    def _is_dup(self, block: int) -> bool:
        return self.dup_read is not None and bool(self.dup_read[block // 8] >> (block % 8) & 1)

    def pointer(self, ino: int, addr: int, block: int, codes: tuple[Problem, Problem, Problem]) -> bool:
        """Validate and claim one pointer; True when the caller should descend."""
        bad = self.claims.valid(block)
        if bad is not None:
            code = codes[0] if bad == Problem.BLOCK_OUT_OF_RANGE else codes[1]
            _report(self.out, ino, addr, code)
            return False
        self.count += 1
        if self._is_dup(block):
            _report(self.out, ino, addr, codes[2])
        if self.claims.claim(block):
            return True
        if self.dup_write is not None:
            self.dup_write[block // 8] |= 1 << (block % 8)
        return False

    def tree(self, ino: int, addr: int, level: int, base: int, needed: int) -> None:
        block = _ld(self.view, addr, _BLOCK_PTR_SIZE)
        if block == 0:
            return
        if base >= needed and self.claims.valid(block) is None:
            _report(self.out, ino, addr, Problem.BLOCK_PAST_EOF)
            return
        codes = (Problem.BLOCK_OUT_OF_RANGE, Problem.BLOCK_IN_METADATA, Problem.BLOCK_SHARED)
        if not self.pointer(ino, addr, block, codes) or level == 0:
            return
        span = self.ppb ** (level - 1)
        start = block * self.claims.geo.block_size
        if not any(self.view[start : start + self.claims.geo.block_size]):
            _report(self.out, ino, addr, Problem.INDIRECT_ALL_ZERO)
            return
        for i in range(self.ppb):
            self.tree(ino, start + i * _BLOCK_PTR_SIZE, level - 1, base + i * span, needed)

    def inode(self, ino: int) -> int:
        geo = self.claims.geo
        self.count = 0
        if not 1 <= ino <= geo.inodes_count:
            return 0
        base = geo.inode_offset(ino)
        if base + F.INODE_SIZE > len(self.view):
            return 0
        mode = _field(self.view, base, _INODE["mode"])
        flags = _field(self.view, base, _INODE["flags"])
        xattr = _field(self.view, base, _INODE["xattr_block"])
        if mode == 0:
            return 0
        if xattr:
            addr = base + _INODE["xattr_block"].offset
            self.pointer(
                ino, addr, xattr, (Problem.XATTR_OUT_OF_RANGE, Problem.XATTR_IN_METADATA, Problem.XATTR_SHARED)
            )
        fmt = mode & F.S_IFMT
        if fmt == F.S_IFREG or (fmt == F.S_IFLNK and not flags & F.INODE_FLAG_INLINE):
            size = _field(self.view, base, _INODE["size"])
            needed = -(-size // geo.block_size)
            ptr0 = base + _INODE["block"].offset
            for i in range(F.N_DIRECT):
                self.tree(ino, ptr0 + i * _BLOCK_PTR_SIZE, 0, i, needed)
            file_base = F.N_DIRECT
            for k in range(F.N_INDIRECT):
                self.tree(ino, ptr0 + (F.N_DIRECT + k) * _BLOCK_PTR_SIZE, k + 1, file_base, needed)
                file_base += self.ppb ** (k + 1)
        return self.count


def _block_bitmap_bytes(geo: F.Geometry) -> int:
    return geo.group_count * geo.block_size


def _mark_metadata(geo: F.Geometry, owned: Any) -> None:
    """Set the bits the on-media block bitmaps set for blocks no file owns."""

    def set_range(first: int, end: int) -> None:
        for b in range(first, end):
            owned[b // 8] |= 1 << (b % 8)

    for g in range(geo.group_count):
        set_range(geo.group_start(g), geo.first_data_block(g))
    last_end = geo.group_count * geo.blocks_per_group
    set_range(min(geo.blocks_count, last_end), last_end)
    if geo.backup_block < last_end:
        set_range(geo.backup_block, geo.backup_block + 1)


def _walk_pass(view, geo, inos, owned, dup_write, dup_read, report: bool) -> tuple[array, dict]:
    out = _problems()
    walker = _FileWalker(view, _Claims(geo, len(view), owned), dup_write, dup_read, out if report else _problems())
    counts = array("Q", (walker.inode(ino) for ino in inos))
    return counts, out


def walk_blockmaps(
    buf: Any, geo: F.Geometry, inos: Any, *, mark_metadata: bool = True, threads: int = 0
) -> dict[str, Any]:
    """Claim every block the given inodes own; report bad, shared and past-EOF pointers.

    Regular files and non-inline symlinks have their 16 pointers walked
    (trees 1..5 levels deep); every inode's xattr block is claimed.
    Directory ``block[]`` words are radix roots: see :func:`walk_directories`.
    A block already claimed is counted but not descended again, and every
    claimant of a shared block is reported.  A pointer whose whole subtree
    maps file blocks at or past ceil(size / block_size) is reported as
    BLOCK_PAST_EOF and neither claimed nor counted.

    Returns ``owned`` (bitmap, bit b = block b, laid out as the on-media group
    bitmaps one after another; with ``mark_metadata`` the metadata, backup
    and past-the-end bits are set as mkfs sets them), ``counts`` (Q, blocks
    owned by each inode of ``inos``, in order) and the problem arrays.
    """
    view = memoryview(buf).cast("B")
    nbytes = _block_bitmap_bytes(geo)
    owned = _zero_map(nbytes)
    scratch = _zero_map(nbytes)
    dups = _zero_map(nbytes)
    _walk_pass(view, geo, inos, scratch, dups, None, report=False)
    counts, out = _walk_pass(view, geo, inos, owned, None, dups, report=True)
    scratch.close()
    dups.close()
    if mark_metadata:
        _mark_metadata(geo, owned)
    return {"owned": owned, "counts": counts, **out}


# ---------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------


def _mask(depth: int) -> int:
    return 0 if depth == 0 else (_U64 << (64 - depth)) & _U64


def _slot_prefix(slot: int, level: int, bits: int) -> int:
    shift = 64 - (level * bits + bits)
    return (slot << shift) & _U64 if shift >= 0 else slot >> -shift


class _DirWalker:
    """Walks the live bank of one directory after another."""

    def __init__(self, view, geo, seed, owned, out) -> None:
        self.view = view
        self.geo = geo
        self.seed = bytes(seed)
        self.claims = _Claims(geo, len(view), owned)
        self.out = out
        self.bits = F.radix_bits(geo.block_size)
        self.ppb = F.pointers_per_block(geo.block_size)

    def _pointer(self, dir_ino: int, addr: int, block: int) -> bool:
        bad = self.claims.valid(block)
        if bad is not None:
            _report(self.out, dir_ino, addr, bad)
            return False
        self.count += 1
        if not self.claims.claim(block):
            _report(self.out, dir_ino, addr, Problem.BLOCK_SHARED)
            return False
        return True

    def directory(self, dir_ino: int) -> int:
        geo = self.geo
        self.count = 0
        self.entries: list[tuple] = []
        if not 1 <= dir_ino <= geo.inodes_count:
            return 0
        base = geo.inode_offset(dir_ino)
        if base + F.INODE_SIZE > len(self.view):
            return 0
        if _field(self.view, base, _INODE["mode"]) & F.S_IFMT != F.S_IFDIR:
            _report(self.out, dir_ino, base, Problem.NOT_A_DIRECTORY)
            return 0
        bank = _field(self.view, base, _INODE["dir_bank"]) & 1
        addr = base + _INODE["block"].offset + bank * _BLOCK_PTR_SIZE
        self._slot_word(dir_ino, addr, _ld(self.view, addr, 8), -1, 0, 0, 1)
        self._duplicates(dir_ino)
        return self.count

    def _slot_word(self, dir_ino, addr, word, level, prefix, slot, run) -> None:
        """Follow one root word (level -1) or a run of equal slots of a node at ``level``."""
        if word == 0:
            return
        block = word & F.RADIX_BLOCK_MASK
        if not word & F.RADIX_PAGE_BIT:
            if self._pointer(dir_ino, addr, block):
                self._node(
                    dir_ino, block, level + 1, prefix | (_slot_prefix(slot, level, self.bits) if level >= 0 else 0)
                )
            return
        if not self._pointer(dir_ino, addr, block):
            return
        page = block * self.geo.block_size
        if bytes(self.view[page : page + 4]) != F.DIR_PAGE_MAGIC:
            _report(self.out, dir_ino, page, Problem.PAGE_BAD_MAGIC)
            return
        depth = _field(self.view, page, _PAGE["depth"])
        if level < 0:
            expected, lo, hi = 0, 0, 0
        else:
            expected = prefix | _slot_prefix(slot, level, self.bits)
            lo, hi = level * self.bits, min(level * self.bits + self.bits, 64)
        if lo <= depth <= hi:
            eff = depth
            if level >= 0:
                span = 1 << (level * self.bits + self.bits - depth)
                if slot % span or run != span:
                    _report(self.out, dir_ino, page, Problem.PAGE_BAD_SLOTS)
        else:
            _report(self.out, dir_ino, page, Problem.PAGE_BAD_DEPTH)
            eff = lo
        expected &= _mask(eff)
        if _field(self.view, page, _PAGE["prefix"]) != expected:
            _report(self.out, dir_ino, page, Problem.PAGE_BAD_PREFIX)
        self._page(dir_ino, block, eff, expected)

    def _node(self, dir_ino, block, level, prefix) -> None:
        if level * self.bits >= 64:
            _report(self.out, dir_ino, block * self.geo.block_size, Problem.NODE_TOO_DEEP)
            return
        start = block * self.geo.block_size
        words = [_ld(self.view, start + 8 * i, 8) for i in range(self.ppb)]
        i = 0
        while i < self.ppb:
            run = 1
            if words[i] & F.RADIX_PAGE_BIT:
                while i + run < self.ppb and words[i + run] == words[i]:
                    run += 1
            self._slot_word(dir_ino, start + 8 * i, words[i], level, prefix, i, run)
            i += run

    def _page(self, dir_ino, block, depth, prefix) -> None:
        bs = self.geo.block_size
        while True:
            page = block * bs
            if _field(self.view, page, _PAGE["dir_ino"]) != dir_ino:
                _report(self.out, dir_ino, page, Problem.PAGE_BAD_DIR_INO)
            self._entries(dir_ino, page, depth, prefix)
            nxt_addr = page + _PAGE["next"].offset
            nxt = _field(self.view, page, _PAGE["next"])
            if nxt == 0:
                return
            if depth != 64:
                _report(self.out, dir_ino, page, Problem.PAGE_BAD_NEXT)
                return
            if not self._pointer(dir_ino, nxt_addr, nxt):
                return
            block = nxt
            page = block * bs
            if bytes(self.view[page : page + 4]) != F.DIR_PAGE_MAGIC:
                _report(self.out, dir_ino, page, Problem.PAGE_BAD_MAGIC)
                return
            if _field(self.view, page, _PAGE["depth"]) != 64:
                _report(self.out, dir_ino, page, Problem.PAGE_BAD_DEPTH)
            if _field(self.view, page, _PAGE["prefix"]) != prefix:
                _report(self.out, dir_ino, page, Problem.PAGE_BAD_PREFIX)

    def _entries(self, dir_ino, page, depth, prefix) -> None:
        bs = self.geo.block_size
        off = F.DIR_PAGE_HEADER_SIZE
        mask = _mask(depth)
        while off + F.DIR_ENTRY_HEADER_SIZE <= bs:
            rec = page + off
            rec_len = _field(self.view, rec, _ENTRY["rec_len"])
            if rec_len == 0:
                return
            name_len = _field(self.view, rec, _ENTRY["name_len"])
            if rec_len != F.dir_entry_rec_len(name_len) or off + rec_len > bs:
                _report(self.out, dir_ino, rec, Problem.ENTRY_BAD_REC_LEN)
                return
            off += rec_len
            child = _field(self.view, rec, _ENTRY["ino"])
            if child == 0:
                continue
            name_off = rec + F.DIR_ENTRY_HEADER_SIZE
            name = bytes(self.view[name_off : name_off + name_len])
            if name_len == 0 or b"/" in name or b"\0" in name:
                _report(self.out, dir_ino, rec, Problem.ENTRY_BAD_NAME)
            elif name in (b".", b".."):
                _report(self.out, dir_ino, rec, Problem.ENTRY_DOT_NAME)
            digest = siphash24(self.seed, name)
            if _field(self.view, rec, _ENTRY["hash"]) != digest:
                _report(self.out, dir_ino, rec, Problem.ENTRY_BAD_HASH)
            if digest & mask != prefix:
                _report(self.out, dir_ino, rec, Problem.ENTRY_WRONG_PAGE)
            if child > self.geo.inodes_count or child < F.ROOT_INO:
                _report(self.out, dir_ino, rec, Problem.ENTRY_BAD_INO)
                continue
            ftype = _field(self.view, rec, _ENTRY["file_type"])
            self.entries.append((dir_ino, child, ftype, digest, name_off, name_len, name))

    def _duplicates(self, dir_ino) -> None:
        seen: set[bytes] = set()
        for entry in self.entries:
            if entry[6] in seen:
                _report(self.out, dir_ino, entry[4] - F.DIR_ENTRY_HEADER_SIZE, Problem.ENTRY_DUPLICATE)
            seen.add(entry[6])


def walk_directories(
    buf: Any, geo: F.Geometry, seed: bytes, dir_inos: Any, owned: Any = None, *, threads: int = 0
) -> dict[str, Any]:
    """Parse the live bank of each directory: every live entry, page and node problems.

    ``owned`` is the bitmap from :func:`walk_blockmaps` (pages and nodes are
    claimed in it, so a block shared with a file or another directory is
    reported); a fresh one is used when None.  Returns ``entry_dir``,
    ``entry_ino``, ``entry_hash`` (SipHash of the name), ``name_off``
    (device byte address of the name) (Q), ``name_len`` (H), ``file_type`` (B)
    for every live entry (including ones with problems, except ENTRY_BAD_INO),
    in walk order; ``counts`` (Q, pages + nodes of each directory of
    ``dir_inos``) and the problem arrays.
    """
    view = memoryview(buf).cast("B")
    if owned is None:
        owned = _zero_map(_block_bitmap_bytes(geo))
    if len(seed) != 16:
        raise ValueError("SipHash key must be 16 bytes")
    if len(memoryview(owned).cast("B")) < (geo.blocks_count + 7) // 8:
        raise ValueError("owned bitmap shorter than the device")
    out: dict[str, Any] = {
        "entry_dir": array("Q"),
        "entry_ino": array("Q"),
        "entry_hash": array("Q"),
        "name_off": array("Q"),
        "name_len": array("H"),
        "file_type": array("B"),
        "counts": array("Q"),
    }
    out.update(_problems())
    walker = _DirWalker(view, geo, seed, owned, out)
    for dir_ino in dir_inos:
        out["counts"].append(walker.directory(dir_ino))
        for d, child, ftype, digest, name_off, name_len, _name in walker.entries:
            out["entry_dir"].append(d)
            out["entry_ino"].append(child)
            out["entry_hash"].append(digest)
            out["name_off"].append(name_off)
            out["name_len"].append(name_len)
            out["file_type"].append(ftype)
    return out


# ---------------------------------------------------------------------------
# Link counts
# ---------------------------------------------------------------------------


def link_counts(children: Any, n_inodes: int) -> memoryview:
    """counts[ino] = occurrences of ino in ``children`` (0 < ino <= n_inodes; others ignored)."""
    counts = _zero_map(4 * (n_inodes + 1)) if n_inodes >= 0 else _zero_map(4)
    view = memoryview(counts).cast("I")
    for child in children:
        if 0 < child <= n_inodes and view[child] < 0xFFFFFFFF:
            view[child] += 1
    return view


# ---------------------------------------------------------------------------
# CPU features and persistence (no-ops in Python: nothing to flush from here)
# ---------------------------------------------------------------------------


_NSEC_FIELDS = ("atime_nsec", "mtime_nsec", "ctime_nsec", "btime_nsec")
_NSEC_LIMIT = 10**9
_MAJOR_LIMIT = 1 << 12
_MINOR_LIMIT = 1 << 20


def _dt_of(mode: int) -> int:
    return F.MODE_TO_DT.get(mode & F.S_IFMT, 0)


def _fields_ok(view: Any, geo: F.Geometry, ino: int, mode: int) -> bool:
    """Per-type fixed fields of one in-use inode (spec/checking.md 6.3, 7.2, 7.3)."""
    base = geo.inode_offset(ino)
    if base + F.INODE_SIZE > len(view):
        return False
    if _field(view, base, _INODE["next_orphan"]):
        return False
    if any(_field(view, base, _INODE[name]) >= _NSEC_LIMIT for name in _NSEC_FIELDS):
        return False
    ftype = mode & F.S_IFMT
    if ftype != F.S_IFDIR and (_field(view, base, _INODE["parent"]) or _field(view, base, _INODE["dir_bank"])):
        return False
    rdev = _field(view, base, _INODE["rdev"])
    if ftype in (F.S_IFCHR, F.S_IFBLK):
        if rdev >> 32 >= _MAJOR_LIMIT or rdev & 0xFFFFFFFF >= _MINOR_LIMIT:
            return False
    elif rdev:
        return False
    if ftype == F.S_IFDIR:
        ptrs = base + _INODE["block"].offset
        if any(view[ptrs + 2 * _BLOCK_PTR_SIZE : ptrs + F.N_BLOCK_POINTERS * _BLOCK_PTR_SIZE]):
            return False
    return True


def _pages_clean(view: Any, bs: int, name_off: Any, name_len: Any) -> bool:
    """Pages holding live entries: header reserved bytes zero, nothing after the last live record.

    Conservative: dead records after the last live one count as residue (the detailed passes then
    look closer).  Entries come page by page; a page met in two runs only makes this stricter.
    """
    r0, r1 = _PAGE["reserved0"], _PAGE["reserved"]
    hdr = F.DIR_ENTRY_HEADER_SIZE
    align = F.DIR_ENTRY_ALIGN - 1
    k, n = 0, len(name_off)
    while k < n:
        if name_off[k] < hdr:
            return False
        page = (name_off[k] - hdr) // bs
        stop = 0
        while k < n and name_off[k] >= hdr and (name_off[k] - hdr) // bs == page:
            stop = max(stop, name_off[k] - hdr + ((hdr + name_len[k] + align) & ~align))
            k += 1
        base = page * bs
        if base + bs > len(view) or stop > base + bs:
            return False
        if any(view[base + r0.offset : base + r0.offset + r0.size]) or any(
            view[base + r1.offset : base + r1.offset + r1.size]
        ):
            return False
        if any(view[stop : base + bs]):
            return False
    return True


def check_inode_fields(buf: Any, geo: F.Geometry, inos: Any, modes: Any) -> int:
    """Index of the first inode of ``inos`` (with its mode from ``modes``) whose per-type fixed fields
    are wrong (next_orphan, nanoseconds, parent/dir_bank/rdev, device numbers, directory pointers
    past block[1]), or -1.  ``verify_arrays`` runs the same check as ``Mismatch.INODE_FIELDS``."""
    view = memoryview(buf).cast("B")
    for k, (i, m) in enumerate(zip(inos, modes, strict=True)):
        if not _fields_ok(view, geo, i, m):
            return k
    return -1


def pages_clean(buf: Any, geo: F.Geometry, name_off: Any, name_len: Any) -> bool:
    """True when every page holding the given live entries (``walk_directories`` columns) has zero
    header reserved bytes and nothing after its last live record (``Mismatch.PAGE_RESIDUE``)."""
    return _pages_clean(memoryview(buf).cast("B"), geo.block_size, name_off, name_len)


def merge_bits(dst: Any, src: Any, offset: int, nbytes: int) -> bool:
    """OR ``nbytes`` bytes of ``src`` at ``offset`` into ``dst`` at the same offset; True when some bit
    was already set in both (a block claimed by two windows of a windowed block-map walk)."""
    d = _check_range(dst, offset, nbytes)
    a = int.from_bytes(d[offset : offset + nbytes], "little")
    b = int.from_bytes(_check_range(src, offset, nbytes)[offset : offset + nbytes], "little")
    d[offset : offset + nbytes] = (a | b).to_bytes(nbytes, "little")
    return bool(a & b)


def verify_arrays(
    buf: Any, geo: F.Geometry, scan: Any, blockmap: Any, dirs: Any, *, fields: bool = True, pages: bool = True
) -> tuple[Mismatch, array]:
    """Cross-check the results of ``scan_inodes``, ``walk_blockmaps`` and ``walk_directories``.

    ``scan`` is the dict of ``scan_inodes`` over every group, ``blockmap`` that of
    ``walk_blockmaps(scan["ino"])`` and ``dirs`` that of ``walk_directories(scan["dir_ino"])``.
    Returns the first :class:`Mismatch` met, in the enum's order (``Mismatch.NONE`` when the
    arrays agree), and the number of directories per group (Q, filled only when they agree).
    ``fields=False`` skips ``Mismatch.INODE_FIELDS`` (the caller ran ``check_inode_fields`` on each
    window while its inode tables were still mapped), ``pages=False`` skips ``Mismatch.PAGE_RESIDUE``
    (the caller ran ``pages_clean`` on each window of directories).
    This is the array work of fsck's bulk fast path; what it does not cover (reserved
    inodes, symlinks, xattr blocks, bitmaps and counters) the caller checks.
    """
    view = memoryview(buf).cast("B")
    bs = geo.block_size
    n = geo.inodes_count
    ino, mode, links = scan["ino"], scan["mode"], scan["links"]
    dir_ino, dir_parent = scan["dir_ino"], scan["dir_parent"]
    bcounts, dcounts = blockmap["counts"], dirs["counts"]
    per_group = array("Q", bytes(8 * geo.group_count))
    if len(bcounts) != len(ino) or len(dcounts) != len(dir_ino) or len(dir_parent) != len(dir_ino):
        return Mismatch.DIR_LIST, per_group
    # positions of the directories among the in-use inodes (both sorted)
    dpos = []
    p = 0
    for d in dir_ino:
        while p < len(ino) and ino[p] < d:
            p += 1
        if p == len(ino) or ino[p] != d or mode[p] & F.S_IFMT != F.S_IFDIR:
            return Mismatch.DIR_LIST, per_group
        dpos.append(p)
        p += 1
    if len(dpos) != sum(1 for m in mode if m & F.S_IFMT == F.S_IFDIR):
        return Mismatch.DIR_LIST, per_group
    expected = array("Q", bcounts)
    for d, p in enumerate(dpos):
        expected[p] = (expected[p] + dcounts[d]) & _U64
    if expected != scan["blocks"]:
        return Mismatch.BLOCK_COUNT, per_group
    size = scan["size"]
    if any(size[p] != dcounts[d] * bs for d, p in enumerate(dpos)):
        return Mismatch.DIR_SIZE, per_group
    if fields and check_inode_fields(view, geo, ino, mode) >= 0:
        return Mismatch.INODE_FIELDS, per_group
    entry_ino, entry_dir, ftypes = dirs["entry_ino"], dirs["entry_dir"], dirs["file_type"]
    if any(not F.FIRST_INO <= e <= n for e in entry_ino):
        return Mismatch.ENTRY_INO, per_group
    dt_by_ino = bytearray(n + 1)
    for i, m in zip(ino, mode, strict=True):
        dt_by_ino[i] = _dt_of(m)
    if any(dt_by_ino[e] == 0 or dt_by_ino[e] != t for e, t in zip(entry_ino, ftypes, strict=True)):
        return Mismatch.ENTRY_TYPE, per_group
    if pages and not _pages_clean(view, bs, dirs["name_off"], dirs["name_len"]):
        return Mismatch.PAGE_RESIDUE, per_group
    index = {d: k for k, d in enumerate(dir_ino)}
    named = [0] * len(dir_ino)
    subdirs = [0] * len(dir_ino)
    for e, holder, t in zip(entry_ino, entry_dir, ftypes, strict=True):
        if t != F.DT_DIR:
            continue
        k = index[e]
        named[k] += 1
        if named[k] > 1 or dir_parent[k] != holder or holder not in index:
            return Mismatch.DIR_NAMES, per_group
        subdirs[index[holder]] += 1
    root = index.get(F.ROOT_INO)
    if root is None or dir_parent[root] != F.ROOT_INO or named[root] or sum(named) != len(dir_ino) - 1:
        return Mismatch.DIR_NAMES, per_group
    if not _all_reach_root(dir_parent, index, root):
        return Mismatch.UNREACHABLE, per_group
    refs = link_counts(entry_ino, n)
    k = 0
    for p, i in enumerate(ino):
        if k < len(dpos) and dpos[k] == p:
            want = 2 + subdirs[k]
            k += 1
        else:
            want = refs[i]
        if (i >= F.FIRST_INO or i == F.ROOT_INO) and links[p] != want:
            return Mismatch.LINKS, per_group
    for d in dir_ino:
        per_group[(d - 1) // geo.inodes_per_group] += 1
    return Mismatch.NONE, per_group


def _all_reach_root(parent: Any, index: dict[int, int], root: int) -> bool:
    """Every directory reaches the root by parent pointers (each is named once by its parent)."""
    state = bytearray(len(parent))  # 0 unknown, 1 on the current path, 2 reaches the root
    state[root] = 2
    for start in range(len(parent)):
        path = []
        k = start
        while state[k] != 2:
            if state[k] == 1:
                return False
            state[k] = 1
            path.append(k)
            k = index[parent[k]]
        for j in path:
            state[j] = 2
    return True


# ---------------------------------------------------------------------------
# fsck's bulk fast path: one pass per in-use inode, directory entries tallied into a table
# ---------------------------------------------------------------------------

_DIR_COLS = (
    ("dir_ino", "Q"),
    ("dir_parent", "Q"),
    ("dir_mode", "H"),
    ("dir_links", "I"),
    ("dir_size", "Q"),
    ("dir_blocks", "Q"),
    ("dir_bcount", "Q"),
)
_XATTR_COLS = (("xattr_ino", "Q"), ("xattr_block", "Q"))
_ODD_COLS = (("odd_ino", "Q"), ("odd_mode", "H"))
#: link-table value = names still expected << 4 | file type (DT_*); link counts at or above this: "not proven"
_LINK_LIMIT = 1 << 28


def _table(table: Any, n_inodes: int) -> memoryview:
    tab = memoryview(table).cast("B").cast("I")
    if len(tab) < n_inodes + 1:
        raise ValueError("link table shorter than inodes_count + 1 entries")
    return tab


def check_inode_groups(
    buf: Any,
    geo: F.Geometry,
    groups: tuple[int, int],
    owned: Any,
    inuse: Any,
    table: Any,
    *,
    tables: Any = None,
    threads: int = 0,
    release: bool = False,
) -> dict[str, Any] | None:
    """fsck's fast path over the in-use inodes of groups [first, end), each read once; None when not proven.

    It is ``scan_inodes(groups=...)``, ``check_inode_fields`` and ``walk_blockmaps(mark_metadata=False)``
    at once: any problem of those, a block claimed twice (within these groups or already set in
    ``owned``, a bitmap of ``blocks_count`` bits), or a non-directory whose ``blocks`` differs from
    the blocks it owns, or whose link count is 2**28 or more, gives None (then the contents of
    ``owned``, ``inuse`` and ``table`` are unspecified).  Otherwise the blocks are claimed in
    ``owned``, bit ino-1 of ``inuse`` is set for each in-use inode, and ``table`` (uint32 per inode
    number, inodes_count + 1 of them) gets ``links << 4 | DT`` for non-directories and ``DT_DIR`` for
    directories, which :func:`tally_entries` and :func:`unsettled_links` then consume.
    Returns ``used`` (in-use inodes), per directory (inode order) ``dir_ino``, ``dir_parent``,
    ``dir_mode`` (H), ``dir_links`` (I), ``dir_size``, ``dir_blocks`` and ``dir_bcount`` (blocks its
    walk owns: the xattr block), ``xattr_ino``/``xattr_block`` and ``odd_ino``/``odd_mode`` (H): the
    in-use inodes below FIRST_INO, symbolic links and special files, which the caller checks itself.

    ``tables``, when given, holds the inode tables of the groups, back to back (e.g. read with
    O_DIRECT into a reused buffer): the records are read from it, everything else from ``buf``.
    Every table of the range must lie wholly inside ``buf`` (else ValueError).

    ``release`` (compiled core only; ignored here): each thread drops the pages of its share of the
    tables from ``buf``, a shared mapping of the device, when it is done with them, and those around the
    indirect blocks it has read every few dozen of them.
    """
    view = memoryview(buf).cast("B")
    if tables is not None:
        view = _with_tables(view, geo, groups, tables)
    n = geo.inodes_count
    own, inu, tab = _rw_bytes(owned), _rw_bytes(inuse), _table(table, n)
    if len(own) < (geo.blocks_count + 7) // 8 or len(inu) < (n + 7) // 8:
        raise ValueError("owned or inuse bitmap shorter than the device")
    S = scan_inodes(view, geo, groups=groups)
    if len(S["prob_code"]) or check_inode_fields(view, geo, S["ino"], S["mode"]) >= 0:
        return None
    B = walk_blockmaps(view, geo, S["ino"], mark_metadata=False)
    if len(B["prob_code"]):
        return None
    nbytes = min(len(own), len(B["owned"]))
    if merge_bits(own, B["owned"], 0, nbytes) or any(B["owned"][nbytes:]):
        return None
    out: dict[str, Any] = {"used": len(S["ino"])}
    for name, code in _DIR_COLS + _XATTR_COLS + _ODD_COLS:
        out[name] = array(code)
    fields = (S["ino"], S["mode"], S["links"], S["size"], S["blocks"], B["counts"])
    parents = dict(zip(S["dir_ino"], S["dir_parent"], strict=True))
    for ino, mode, links, size, blocks, count in zip(*fields, strict=True):
        ftype = mode & F.S_IFMT
        if ftype == F.S_IFDIR:
            for (name, _), value in zip(_DIR_COLS, (ino, parents[ino], mode, links, size, blocks, count), strict=True):
                out[name].append(value)
            tab[ino] = F.DT_DIR
        elif blocks != count or links >= _LINK_LIMIT:
            return None
        else:
            tab[ino] = links << 4 | _dt_of(mode)
        if ino < F.FIRST_INO or ftype not in (F.S_IFREG, F.S_IFDIR):
            out["odd_ino"].append(ino)
            out["odd_mode"].append(mode)
        inu[(ino - 1) >> 3] |= 1 << ((ino - 1) & 7)
    out["xattr_ino"].extend(S["xattr_ino"])
    out["xattr_block"].extend(S["xattr_block"])
    return out


def _with_tables(view: memoryview, geo: F.Geometry, groups: tuple[int, int], tables: Any) -> memoryview:
    """A copy of ``view`` with the inode tables of ``groups`` taken from ``tables`` (the reference's way
    of reading records from the caller's copy)."""
    first, last = max(0, groups[0]), min(groups[1], geo.group_count)
    last = max(first, last)
    size = geo.inode_table_blocks * geo.block_size
    copies = memoryview(tables).cast("B")
    if geo.inodes_per_group * F.INODE_SIZE > size or len(copies) < (last - first) * size:
        raise ValueError("tables must hold the inode tables of every group of the range")
    if last > first and _itable_offset(geo, last - 1) + size > len(view):
        raise ValueError("an inode table of the range is not wholly inside the device")
    out = bytearray(view)
    for g in range(first, last):
        at = _itable_offset(geo, g)
        out[at : at + size] = copies[(g - first) * size : (g - first + 1) * size]
    return memoryview(out)


def _rw_bytes(buf: Any) -> memoryview:
    return memoryview(buf).cast("B")


def tally_entries(table: Any, entry_ino: Any, file_type: Any, n_inodes: int) -> int:
    """Count live directory entries against the link table of :func:`check_inode_groups`.

    For each entry in order: its inode must be in [FIRST_INO, n_inodes] and in use with the
    entry's file type; a non-directory's expected names (``table >> 4``) must not be used up, and
    one is consumed (directories are named-once checked by the caller).  Returns the index of the
    first entry that fails (the table then holds the entries before it), or -1.
    """
    tab = _table(table, n_inodes)
    if len(entry_ino) != len(file_type):
        raise ValueError("entry_ino and file_type differ in length")
    for k, (e, t) in enumerate(zip(entry_ino, file_type, strict=True)):
        if not F.FIRST_INO <= e <= n_inodes:
            return k
        v = tab[e]
        if v & 15 == 0 or v & 15 != t:
            return k
        if t != F.DT_DIR:
            if v >> 4 == 0:
                return k
            tab[e] = v - 16
    return -1


def check_directories(
    buf: Any,
    geo: F.Geometry,
    seed: bytes,
    dir_inos: Any,
    owned: Any,
    table: Any,
    *,
    threads: int = 1,
    release: bool = False,
) -> dict | None:
    """fsck's fast path over directories: ``walk_directories`` (claims in ``owned``), ``pages_clean``
    and ``tally_entries`` against the link table of :func:`check_inode_groups`; None when any of
    them finds something (then ``owned`` and ``table`` are unspecified).  ``release``: as in
    check_inode_groups (compiled core only).

    Returns ``counts`` (Q, blocks each directory's walk owns) and, of the entries only those that
    name directories (the caller checks that each is named once, by its parent): ``entry_dir``,
    ``entry_ino``, ``name_off`` (Q) and ``name_len`` (H); and ``span``, the device bytes from the
    first to the end of the last block the walk claimed ((0, 0) when none), which the caller may
    drop from its mapping.  The compiled core does it directory by directory and keeps no other
    entry: memory is one directory's worth.
    """
    before = bytes(memoryview(owned).cast("B"))
    found = walk_directories(buf, geo, seed, dir_inos, owned)
    if len(found["prob_code"]) or not pages_clean(buf, geo, found["name_off"], found["name_len"]):
        return None
    if tally_entries(table, found["entry_ino"], found["file_type"], geo.inodes_count) >= 0:
        return None
    keep = [k for k, t in enumerate(found["file_type"]) if t == F.DT_DIR]
    out: dict[str, Any] = {"counts": found["counts"]}
    for key, code in (("entry_dir", "Q"), ("entry_ino", "Q"), ("name_off", "Q"), ("name_len", "H")):
        out[key] = array(code, (found[key][k] for k in keep))
    claimed = diff(before, 0, owned, 0, min(8 * len(before), geo.blocks_count))
    bs = geo.block_size
    out["span"] = (claimed[0] * bs, (claimed[-1] + 1) * bs) if len(claimed) else (0, 0)
    return out


def unsettled_links(table: Any, inuse: Any, n_inodes: int) -> int:
    """First in-use inode >= FIRST_INO, not a directory, with names still expected in the table; 0 if none.

    After every directory's entries went through :func:`tally_entries`, this is the link-count
    check of non-directories: each is named exactly ``links_count`` times.
    """
    tab = _table(table, n_inodes)
    bm = memoryview(inuse).cast("B")
    if len(bm) < (n_inodes + 7) // 8:
        raise ValueError("inuse bitmap shorter than inodes_count bits")
    for ino in range(F.FIRST_INO, n_inodes + 1):
        if bm[(ino - 1) >> 3] >> ((ino - 1) & 7) & 1:
            v = tab[ino]
            if v & 15 != F.DT_DIR and v >> 4:
                return ino
    return 0


def cpu_features() -> dict[str, bool]:
    """What the CPU offers (from /proc/cpuinfo); the compiled core reads CPUID."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    names = {
        "popcnt": "popcnt",
        "avx2": "avx2",
        "avx512f": "avx512f",
        "avx512vpopcntdq": "avx512_vpopcntdq",
        "clflush": "clflush",
        "clflushopt": "clflushopt",
        "clwb": "clwb",
        "sse2": "sse2",
    }
    return {key: flag in flags for key, flag in names.items()}


def flush_instruction() -> str:
    """The cache write-back instruction flush_range uses: none from pure Python."""
    return "none"


def flush_range(buf: Any, offset: int, length: int) -> None:
    """Write back the cache lines of a range (pure Python cannot: bounds check only)."""
    _check_range(buf, offset, length)


def sfence() -> None:
    """Store fence (a no-op in pure Python)."""


def nt_zero(buf: Any, offset: int, length: int) -> None:
    """Zero a range (the compiled core uses non-temporal stores)."""
    view = _check_range(buf, offset, length)
    view[offset : offset + length] = bytes(length)


# ---------------------------------------------------------------------------
# mkfs -d: file contents copied into the image
# ---------------------------------------------------------------------------

#: How copy_files opens a source file (with O_NOATIME where the kernel allows it: populate.open_noatime).
COPY_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
#: What failed, third item of copy_files' answer.
COPY_OPEN, COPY_READ, COPY_WRITE = 0, 1, 2


def copy_files(
    out_fd: int, paths: list[bytes], starts: Any, sizes: Any, offsets: Any, block_size: int
) -> tuple[int, int, int]:
    """Copy pieces of files into the image file ``out_fd``: piece ``i`` (``sizes[i]`` bytes of
    ``paths[i]`` from byte ``starts[i]``) goes to byte ``offsets[i]``, zero-padded to a whole number
    of blocks.

    A file that ends early is padded with zeros as well.  Returns
    ``(-1, 0, 0)``, or at the first failure ``(i, errno, what)`` with ``what``
    one of :data:`COPY_OPEN`, :data:`COPY_READ`, :data:`COPY_WRITE`; files
    before ``i`` may or may not have been written then.  (mkfs -d runs it on a
    thread while the metadata is written: the compiled core releases the GIL.
    It writes with ``sendfile``, which moves the file position of ``out_fd``:
    give it a descriptor of its own.)
    """
    from nvfs_tools.populate import open_noatime  # mkfs -d's module (loaded already when this runs)

    for i, path in enumerate(paths):
        start, size, offset = starts[i], sizes[i], offsets[i]
        try:
            fd = open_noatime(path, COPY_OPEN_FLAGS)
        except OSError as exc:
            return i, exc.errno or 0, COPY_OPEN
        data = bytearray()
        try:
            while len(data) < size:
                chunk = os.pread(fd, size - len(data), start + len(data))
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            return i, exc.errno or 0, COPY_READ
        finally:
            os.close(fd)
        data += bytes(-(-size // block_size) * block_size - len(data))
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                written = os.pwrite(out_fd, view[done:], offset + done)
                if written <= 0:
                    return i, errno.ENOSPC, COPY_WRITE
                done += written
        except OSError as exc:
            return i, exc.errno or 0, COPY_WRITE
    return -1, 0, 0


# ---------------------------------------------------------------------------
# Group headers (fsck pass 0's static copies, pass 5's bitmaps and counters)
# ---------------------------------------------------------------------------


def _read_span(view: memoryview, fd: int, offset: int, length: int) -> bytes | None:
    """``length`` bytes at ``offset``: pread from ``fd`` when it is >= 0 (nothing of the mapping is faulted
    in and kept resident), else from ``view``; None when they cannot all be read."""
    if fd < 0:
        if offset + length > len(view):
            return None
        return bytes(view[offset : offset + length])
    data = b""
    try:
        while len(data) < length:
            more = os.pread(fd, length - len(data), offset + len(data))
            if not more:
                return None
            data += more
    except OSError:
        return None
    return data


def differing_spans(buf: Any, offsets: Any, expected: Any, *, fd: int = -1, threads: int = 1) -> array:
    """Indexes ``i`` (array Q) whose ``len(expected)`` bytes at ``offsets[i]`` differ from ``expected``; a
    span that cannot be read (past the end) differs.  Read with pread from ``fd`` when >= 0, else from
    ``buf``: fsck compares a static superblock copy in each of 8192 groups of a 1 TiB device.
    ``threads``: the compiled core splits the offsets between threads (0: one per CPU)."""
    view = memoryview(buf).cast("B")
    want = bytes(expected)
    return array("Q", (i for i, off in enumerate(offsets) if _read_span(view, fd, off, len(want)) != want))


def _group_areas(geo: F.Geometry) -> tuple[int, int, int, int, int, int] | None:
    """Where group 0's block bitmap, counters and inode bitmap lie: (start of the span covering the
    three, their offsets in it, the span's length, the distance from one group to the next), or None
    when they are not at the same place in every group."""
    bs, step, last = geo.block_size, geo.blocks_per_group * geo.block_size, geo.group_count - 1
    areas = [geo.block_bitmap_block, geo.counters_block, geo.inode_bitmap_block]
    first = [area(0) * bs for area in areas]
    if any(area(last) * bs != at + last * step for area, at in zip(areas, first, strict=True)):
        return None
    lo = min(first)
    hi = max(first[0] + bs, first[1] + bs, first[2] + geo.inode_bitmap_blocks * bs)
    return lo, first[0] - lo, first[1] - lo, first[2] - lo, hi - lo, step


def _bits_range(first: int, end: int) -> int:
    return ((1 << end) - 1) & ~((1 << first) - 1) if end > first else 0


def group_summaries_match(
    buf: Any,
    geo: F.Geometry,
    owned: Any,
    inuse: Any,
    dirs_per_group: Any,
    counters: Any,
    *,
    fd: int = -1,
    threads: int = 1,
) -> tuple[int, int] | None:
    """fsck's bulk pass 5: (free blocks, free inodes) summed over the groups when every group's block
    bitmap, inode bitmap and counters block are exactly what the checker found, else None.

    ``owned``: one bit per block (``group_count * block_size`` bytes), set for the blocks files claimed;
    each group's metadata blocks (format.Geometry.metadata_blocks), the backup copy's block and the
    bits past the end of a short last group are added here (set whoever owns what), so the caller's
    map is never written where no file is.  ``inuse``: one bit per inode (``inodes_per_group / 8``
    bytes a group); inodes 1 .. FIRST_INO-1 are added in group 0 and the bits past
    ``inodes_per_group`` are 1.  ``dirs_per_group``: in-use directories of each group.
    ``counters``: a whole counters block with its constant fields set and the counters zero; the
    ``group``, ``free_blocks``, ``free_inodes`` and ``used_dirs`` fields are stored into it at their
    format.py offsets (a value too wide for its field is a difference).  Each group's three areas are
    read as one span, with pread from ``fd`` when >= 0, else from ``buf``; one that cannot be read is a
    difference.  None too for what the layout never has (bits per group other than 8 * block size,
    inodes per group not a multiple of 8, short inputs).  ``threads``: the compiled core splits the
    groups between threads (0: one per CPU); the answer does not depend on it.
    """
    bs, ipg, bpg, groups = geo.block_size, geo.inodes_per_group, geo.blocks_per_group, geo.group_count
    ibytes, ibm_bytes = ipg // 8, geo.inode_bitmap_blocks * geo.block_size
    view = memoryview(buf).cast("B")
    owned_v, inuse_v, template = memoryview(owned).cast("B"), memoryview(inuse).cast("B"), bytes(counters)
    areas = _group_areas(geo) if groups >= 1 else None
    if areas is None or ipg % 8 or bpg != 8 * bs or ibm_bytes < ibytes or len(template) != bs:
        return None
    if owned_v.nbytes < groups * bs or inuse_v.nbytes < groups * ibytes or len(dirs_per_group) < groups:
        return None
    lo, bb_at, c_at, ib_at, span, step = areas
    fields = F.field_layout(F.PLAIN["GroupCounters"])
    pad = b"\xff" * (ibm_bytes - ibytes)
    total_b = total_i = 0
    for g in range(groups):
        got = _read_span(view, fd, lo + g * step, span)
        if got is None:
            return None
        start = g * bpg
        mask = _bits_range(0, min(geo.metadata_blocks(g), bpg))
        mask |= _bits_range(max(0, min(geo.blocks_count - start, bpg)), bpg)
        if start <= geo.blocks_count - 1 < start + bpg:
            mask |= 1 << (geo.blocks_count - 1 - start)
        blocks = int.from_bytes(owned_v[g * bs : (g + 1) * bs], "little") | mask
        if got[bb_at : bb_at + bs] != blocks.to_bytes(bs, "little"):
            return None
        inodes = int.from_bytes(inuse_v[g * ibytes : (g + 1) * ibytes], "little")
        if g == 0:
            inodes |= _bits_range(0, min(F.FIRST_INO - 1, ipg))
        if got[ib_at : ib_at + ibm_bytes] != inodes.to_bytes(ibytes, "little") + pad:
            return None
        free_b, free_i = bpg - blocks.bit_count(), ipg - inodes.bit_count()
        block = bytearray(template)
        values = {"group": g, "free_blocks": free_b, "free_inodes": free_i, "used_dirs": dirs_per_group[g]}
        for name, value in values.items():
            info = fields[name]
            if value >> (8 * info.size):
                return None
            block[info.offset : info.offset + info.size] = value.to_bytes(info.size, "little")
        if got[c_at : c_at + bs] != block:
            return None
        total_b += free_b
        total_i += free_i
    return total_b, total_i


def seek_holes(fd: int, starts: Any, length: int, *, threads: int = 1) -> array:
    """For each of ``starts`` (increasing) 1 when ``[start, start+length)`` of the file ``fd`` holds no
    data (SEEK_DATA finds none before its end), else 0 (array B); all 0 when the file system cannot
    tell (SEEK_DATA unsupported).  One SEEK_DATA per range, none for a range that ends before the
    data found for an earlier one: the inode tables of a 1 TiB image's 8192 groups.  ``threads``:
    the compiled core splits the ranges between threads (0: one per CPU)."""
    out = array("B", bytes(len(starts)))
    data = -1  # first data offset at or after the last range asked, or 1 << 63 when there is none
    for i, start in enumerate(starts):
        if data < start:
            try:
                data = os.lseek(fd, start, os.SEEK_DATA)
            except OSError as exc:  # ENXIO: no data at or after start; EINVAL: not supported
                if exc.errno != errno.ENXIO:
                    return array("B", bytes(len(starts)))
                data = 1 << 63
        out[i] = data >= start + length
    return out


def _zero_bits(data: bytes, nbits: int) -> int:
    return nbits - (int.from_bytes(data, "little") & ((1 << nbits) - 1)).bit_count()


def group_counters_agree(
    buf: Any, geo: F.Geometry, counters: Any, *, fd: int = -1, threads: int = 1
) -> tuple[int, int, int, int, int] | None:
    """fsck's clean-flag shortcut: every group's counters block agrees with its bitmaps.

    Returns (reason, group, value, free blocks, free inodes), reason a scan.CounterCheck: AGREE and
    the free counts summed over the groups, else the first group (in group order) that does not
    agree and why: DAMAGED (its ``magic`` differs from ``counters``, a whole counters block as mkfs
    writes it), OTHER_GROUP (``value``: the group it names), STRAY (bytes past the structure not
    zero), PAST_END (a short last group's bitmap has free bits past its end), DISAGREE (free blocks
    or inodes differ from the bitmaps' clear bits).  Each group's three areas are read as one span,
    with pread from ``fd`` when >= 0, else from ``buf`` (a span that cannot be read is DAMAGED).
    None for layouts this reading does not know (bits per group other than 8 * block size, areas
    not at one place in every group).  ``threads``: the compiled core splits the groups between
    threads (0: one per CPU).
    """
    bs, ipg, bpg, groups = geo.block_size, geo.inodes_per_group, geo.blocks_per_group, geo.group_count
    ibm_bytes = geo.inode_bitmap_blocks * bs
    areas = _group_areas(geo) if groups >= 1 else None
    template = bytes(counters)
    if areas is None or bpg != 8 * bs or ibm_bytes * 8 < ipg or len(template) != bs:
        return None
    lo, bb_at, c_at, ib_at, span, step = areas
    try:
        view = memoryview(buf).cast("B")
    except TypeError:
        view = buf  # a view that is no buffer (check/media.py's SafeView): sliced as it is
    fields = F.field_layout(F.PLAIN["GroupCounters"])
    used = F.PLAIN["GroupCounters"].sizeof()
    magic = fields["magic"]

    def field(block: bytes, name: str) -> int:
        info = fields[name]
        return int.from_bytes(block[info.offset : info.offset + info.size], "little")

    total_b = total_i = 0
    for g in range(groups):
        got = _read_span(view, fd, lo + g * step, span)
        if got is None:
            return CounterCheck.DAMAGED, g, 0, 0, 0
        block = got[c_at : c_at + bs]
        if block[magic.offset : magic.offset + magic.size] != template[magic.offset : magic.offset + magic.size]:
            return CounterCheck.DAMAGED, g, 0, 0, 0
        if field(block, "group") != g:
            return CounterCheck.OTHER_GROUP, g, field(block, "group"), 0, 0
        if any(block[used:]):
            return CounterCheck.STRAY, g, 0, 0, 0
        bitmap = got[bb_at : bb_at + bs]
        valid = max(0, min(geo.blocks_count - g * bpg, bpg))
        free_b = _zero_bits(bitmap, valid)
        if _zero_bits(bitmap, bpg) != free_b:
            return CounterCheck.PAST_END, g, 0, 0, 0
        free_i = _zero_bits(got[ib_at : ib_at + ibm_bytes], ipg)
        if field(block, "free_blocks") != free_b or field(block, "free_inodes") != free_i:
            return CounterCheck.DISAGREE, g, 0, 0, 0
        total_b += free_b
        total_i += free_i
    return CounterCheck.AGREE, 0, 0, total_b, total_i
