"""Defensive reading of one directory: the radix tree of its live bank, its pages
and entries, with every structural fault recorded instead of raised.

The result (:class:`DirScan`) is what passes 1 and 2 need: the blocks the
directory owns (for ownership and counts), the entries that could be read
(with where they sit, to remove or re-add them), and the faults that make a
rebuild necessary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.check.image import DE_FIELDS, DPH_FIELDS

_DE_INO = DE_FIELDS["ino"].offset
_DE_HASH = DE_FIELDS["hash"].offset
_DE_NLEN = DE_FIELDS["name_len"].offset
_DE_FTYPE = DE_FIELDS["file_type"].offset
_DE_RLEN = DE_FIELDS["rec_len"].offset
_PH_DEPTH = DPH_FIELDS["depth"].offset
_PH_PREFIX = DPH_FIELDS["prefix"].offset
_PH_DIR = DPH_FIELDS["dir_ino"].offset
_PH_NEXT = DPH_FIELDS["next"].offset
_PH_RESERVED = [(DPH_FIELDS[n].offset, DPH_FIELDS[n].size) for n in ("reserved0", "reserved")]
_MASK64 = (1 << 64) - 1


@dataclass
class Entry:
    """One live directory entry as found on the media."""

    name: bytes
    ino: int
    file_type: int
    hash: int
    block: int
    offset: int
    misplaced: str | None = None  # why the entry is not reachable through its hash

    def ino_addr(self, bs: int) -> int:
        return self.block * bs + self.offset + _DE_INO


@dataclass
class DirScan:
    ino: int
    nodes: list[int] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    faults: list[tuple[int, str]] = field(default_factory=list)  # (block, reason)
    #: (device address, length, what): bytes that must be zero and are not (page header reserved
    #: fields, residue after a page's used area); repaired by zeroing them
    residue: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def blocks(self) -> list[int]:
        return self.nodes + self.pages


def _prefix_bits(value: int, bits: int) -> int:
    """The top ``bits`` bits of a 64-bit value (0 when bits == 0)."""
    if bits <= 0:
        return 0
    return value >> (64 - min(bits, 64))


def scan_directory(img: Any, ino: int, root: int, bad_block: Any) -> DirScan:
    """Read directory ``ino`` whose live root word is ``root``.

    ``bad_block(block)`` returns a reason string when a block number may not
    be used by a file (out of range, metadata), else None.
    """
    scan = DirScan(ino)
    if root == 0:
        return scan
    walker = _Walker(img, ino, scan, bad_block)
    if root & fmt.RADIX_PAGE_BIT:
        walker.page(root & fmt.RADIX_BLOCK_MASK, 0, 0, 0)
    else:
        walker.node(root, 0, 0)
    return scan


class _Walker:
    def __init__(self, img: Any, ino: int, scan: DirScan, bad_block: Any) -> None:
        self.img = img
        self.ino = ino
        self.scan = scan
        self.bad_block = bad_block
        self.bs = img.bs
        self.b = fmt.radix_bits(self.bs)
        self.ppb = fmt.pointers_per_block(self.bs)
        self.seen_nodes: set[int] = set()
        self.seen_pages: set[int] = set()
        self.max_level = -(-64 // self.b)

    def fault(self, block: int, reason: str) -> None:
        self.scan.faults.append((block, reason))

    def node(self, block: int, level: int, path: int) -> None:
        """Walk the radix node at ``block``; ``path`` holds the level*b hash bits above it."""
        why = self.bad_block(block)
        if why:
            self.fault(block, f"radix node pointer: {why}")
            return
        if block in self.seen_nodes or block in self.seen_pages:
            self.fault(block, "radix node referenced twice")
            return
        if level >= self.max_level:
            self.fault(block, "radix tree too deep")
            return
        self.seen_nodes.add(block)
        self.scan.nodes.append(block)
        data = self.img.block_view(block).cast("Q")
        b = self.b
        nbits = level * b + b
        slot = 0
        while slot < self.ppb:
            value = data[slot]
            if value == 0:
                slot += 1
                continue
            child_path = (path << b) | slot
            if value & fmt.RADIX_PAGE_BIT:
                page = value & fmt.RADIX_BLOCK_MASK
                run = 1
                while slot + run < self.ppb and data[slot + run] == value:
                    run += 1
                self._page_run(page, level, nbits, child_path, slot, run)
                slot += run
            else:
                self.node(value, level + 1, child_path)
                slot += 1

    def _page_run(self, page: int, level: int, nbits: int, child_path: int, slot: int, run: int) -> None:
        """A page filling ``run`` consecutive slots starting at ``slot`` of a node at ``level``."""
        if page in self.seen_pages:
            self.fault(page, "directory page referenced from two places")
            return
        if run & (run - 1) or slot % run:
            self.fault(page, f"page fills {run} slots at slot {slot}, not an aligned power of two")
            return
        depth_expected = nbits - (run.bit_length() - 1)
        if nbits > 64:
            # the last level holds fewer than b real bits: shift the path down.
            aligned = child_path >> (nbits - 64)
        else:
            aligned = child_path << (64 - nbits)
        self.page(page, max(0, min(depth_expected, 64)), aligned & _MASK64, level * self.b)

    def page(self, block: int, depth: int, prefix: int, min_depth: int) -> None:
        """A page (and its overflow chain) that should have ``depth`` and ``prefix``."""
        if block == 0:
            self.fault(0, "page pointer to block 0")
            return
        chain = 0
        while block:
            why = self.bad_block(block)
            if why:
                self.fault(block, f"page pointer: {why}")
                return
            if block in self.seen_pages or block in self.seen_nodes:
                self.fault(block, "directory page referenced from two places")
                return
            self.seen_pages.add(block)
            self.scan.pages.append(block)
            view = self.img.block_view(block)
            if bytes(view[:4]) != fmt.DIR_PAGE_MAGIC:
                self.fault(block, "bad page magic")
                return
            p_depth = int.from_bytes(view[_PH_DEPTH : _PH_DEPTH + 2], "little")
            p_prefix = int.from_bytes(view[_PH_PREFIX : _PH_PREFIX + 8], "little")
            p_dir = int.from_bytes(view[_PH_DIR : _PH_DIR + 8], "little")
            nxt = int.from_bytes(view[_PH_NEXT : _PH_NEXT + 8], "little")
            if p_dir != self.ino:
                self.fault(block, f"page belongs to directory {p_dir}")
                return
            if p_depth != depth:
                self.fault(block, f"page depth {p_depth}, its place in the tree says {depth}")
                return
            if _prefix_bits(p_prefix, depth) != _prefix_bits(prefix, depth) or (
                depth < 64 and p_prefix & (_MASK64 >> depth)
            ):
                self.fault(block, f"page prefix {p_prefix:#x} does not match its place in the tree")
                return
            if nxt and depth != 64:
                self.fault(block, "overflow chain on a page that can still split")
                return
            for off, size in _PH_RESERVED:
                if any(view[off : off + size]):
                    self.scan.residue.append((block * self.bs + off, size, "page header reserved bytes"))
            if not self._entries(block, view, depth, p_prefix):
                return
            block = nxt
            chain += 1
            if chain > 1 << 20:
                self.fault(block, "overflow chain loops")
                return

    def _entries(self, block: int, view: memoryview, depth: int, prefix: int) -> bool:
        bs = self.bs
        off = fmt.DIR_PAGE_HEADER_SIZE
        want = _prefix_bits(prefix, depth)
        from nvfs_tools.namehash import name_hash

        seed = self.img.hash_seed
        while off + fmt.DIR_ENTRY_HEADER_SIZE <= bs:
            rec_len = int.from_bytes(view[off + _DE_RLEN : off + _DE_RLEN + 2], "little")
            if rec_len == 0:
                self._residue(block, view, off)
                return True
            name_len = view[off + _DE_NLEN]
            if name_len == 0 or rec_len != fmt.dir_entry_rec_len(name_len) or off + rec_len > bs:
                self.fault(block, f"bad record length {rec_len} at offset {off}")
                return False
            ino = int.from_bytes(view[off + _DE_INO : off + _DE_INO + 8], "little")
            if ino:
                name_start = off + fmt.DIR_ENTRY_HEADER_SIZE
                name = bytes(view[name_start : name_start + name_len])
                ehash = int.from_bytes(view[off + _DE_HASH : off + _DE_HASH + 8], "little")
                entry = Entry(name, ino, view[off + _DE_FTYPE], ehash, block, off)
                if name_len and b"/" not in name and b"\0" not in name and name not in (b".", b".."):
                    real = name_hash(seed, name)
                    if real != ehash:
                        entry.misplaced = "stored hash does not match the name"
                    elif _prefix_bits(real, depth) != want:
                        entry.misplaced = "hash does not lead to this page"
                self.scan.entries.append(entry)
            off += rec_len
        self._residue(block, view, off)
        return True

    def _residue(self, block: int, view: memoryview, end: int) -> None:
        """Bytes after the used area must be zero (operations.md 4.1: crash residue otherwise)."""
        if end < self.bs and any(view[end:]):
            self.scan.residue.append((block * self.bs + end, self.bs - end, "bytes after the used area"))


def owned_dir_blocks(img: Any, ino: int, root: int, bad_block: Any) -> list[int]:
    """Blocks of a directory's live tree, best effort (used to complete deletes)."""
    return scan_directory(img, ino, root, bad_block).blocks
