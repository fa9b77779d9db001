"""Bad media ranges: parsing lists, mapping them to what they hit, and a poisoned test device.

Persistent memory reports uncorrectable media errors as *bad blocks*: sysfs
``badblocks`` files list them as ``SECTOR COUNT`` lines (512-byte sectors).
Reading such a range through a DAX mapping raises a machine check (SIGBUS),
so the tools must never touch them, must say which files or metadata each one
hits, and must never "repair" by copying data through them.

``--badblocks FILE`` format (the same as sysfs, plus two conveniences):

* ``SECTOR COUNT`` -- ``COUNT`` 512-byte sectors from ``SECTOR`` (sysfs form);
* ``START-END`` -- the inclusive byte range ``START..END`` (decimal or 0x hex);
* blank lines and ``#`` comments are ignored; anything else is an error
  naming the line.

Integration into a tool is one call after opening the device::

    badblocks.apply(dev, badblocks.load(path))   # dev.read() now refuses bad ranges

and :func:`describe` lists, for every bad range, the metadata or files (by
inode and path) it hits, reading nothing that lies in a bad range.

:func:`poison` is the test device layer: it makes every page of the mapping
that holds a bad byte inaccessible (``mprotect(PROT_NONE)``), so any access,
through :meth:`Device.read`, the memoryview or the compiled scan kernels,
kills the process as real poisoned pmem would; with ``faulthandler`` enabled
the Python traceback shows who touched it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.errors import NvfsError

SECTOR = 512


class BadBlocksError(NvfsError):
    """A bad-block list that cannot be read or parsed."""


Range = tuple[int, int]  # (byte offset, length)


def parse(text: str, *, source: str = "bad-block list") -> list[Range]:
    """Byte ranges of a ``--badblocks`` file or a sysfs ``badblocks`` file (see module doc)."""
    out: list[Range] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"(0x[0-9a-fA-F]+|\d+)\s*-\s*(0x[0-9a-fA-F]+|\d+)", line)
        if m:
            start, end = int(m.group(1), 0), int(m.group(2), 0)
            if end < start:
                raise BadBlocksError(f"{source}: line {n}: range end {end} is before its start {start}")
            out.append((start, end - start + 1))
            continue
        m = re.fullmatch(r"(\d+)\s+(\d+)", line)
        if m:
            sector, count = int(m.group(1)), int(m.group(2))
            if count == 0:
                raise BadBlocksError(f"{source}: line {n}: a count of 0 sectors")
            out.append((sector * SECTOR, count * SECTOR))
            continue
        raise BadBlocksError(f"{source}: line {n}: expected 'SECTOR COUNT' or 'START-END', got {raw.strip()!r}")
    return merge(out)


def load(path: str) -> list[Range]:
    """Parse the bad-block list in file ``path``."""
    try:
        with open(path, encoding="utf-8", errors="strict") as fh:
            text = fh.read(1 << 24)
    except FileNotFoundError:
        raise BadBlocksError(f"{path}: no such bad-block list") from None
    except IsADirectoryError:
        raise BadBlocksError(f"{path}: is a directory, not a bad-block list") from None
    except UnicodeDecodeError:
        raise BadBlocksError(f"{path}: not a text bad-block list") from None
    except OSError as exc:
        raise BadBlocksError(f"{path}: cannot read: {exc.strerror}") from None
    return parse(text, source=path)


def merge(ranges: list[Range]) -> list[Range]:
    """Sorted, overlapping and touching ranges joined."""
    out: list[list[int]] = []
    for start, length in sorted(r for r in ranges if r[1] > 0):
        if out and start <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], start + length - out[-1][0])
        else:
            out.append([start, length])
    return [(s, n) for s, n in out]


def format_ranges(ranges: list[Range]) -> str:
    """The ``SECTOR COUNT`` form (ranges rounded out to whole sectors)."""
    lines = []
    for start, length in ranges:
        first = start // SECTOR
        last = (start + length - 1) // SECTOR
        lines.append(f"{first} {last - first + 1}")
    return "\n".join(lines) + ("\n" if lines else "")


def apply(dev: Any, ranges: list[Range]) -> None:
    """Add ``ranges`` to the device's bad list (clipped to the device): ``dev.read`` then refuses them."""
    size = dev.size
    clipped = [(s, min(s + n, size) - s) for s, n in ranges if s < size]
    dev.badblocks = merge(list(dev.badblocks) + clipped)


def bad_blocks(ranges: list[Range], block_size: int) -> set[int]:
    """Filesystem blocks that hold at least one bad byte."""
    out: set[int] = set()
    for start, length in ranges:
        out.update(range(start // block_size, (start + length - 1) // block_size + 1))
    return out


# ---------------------------------------------------------------------------------------------------
# What a bad range hits
# ---------------------------------------------------------------------------------------------------


@dataclass
class Hit:
    """One bad block and what lives there."""

    block: int
    what: str  # "superblock", "backup superblock", "group header", "block bitmap", "counters",
    #            "inode bitmap", "inode table", "journal", "file data", "indirect block",
    #            "directory page", "radix node", "xattr block", "free space", "tail"
    group: int = 0
    inodes: list[int] = field(default_factory=list)  # owners (files) or inodes stored there
    paths: list[bytes] = field(default_factory=list)

    @property
    def recorded(self) -> bool:
        """The block is one the bad-blocks inode (1) already holds: known, and never allocated."""
        return self.what == "file data" and self.inodes == [fmt.BADBLOCKS_INO]

    def describe(self) -> str:
        if self.recorded:
            return f"block {self.block}: recorded in the bad-blocks inode ({fmt.BADBLOCKS_INO})"
        s = f"block {self.block}: {self.what}"
        if self.what in ("block bitmap", "counters", "inode bitmap", "group header"):
            s += f" of group {self.group}"
        if self.what == "inode table" and self.inodes:
            s += f" (inodes {self.inodes[0]}..{self.inodes[-1]})"
        elif self.inodes:
            names = ", ".join(os.fsdecode(p) for p in self.paths[:3]) or "no name found"
            s += f" of inode {', '.join(map(str, self.inodes))} ({names})"
        return s


def metadata_kind(geo: fmt.Geometry, block: int) -> tuple[str, int] | None:
    """(kind, group) of a metadata block, or None for a data block."""
    if block == 0:
        return "superblock", 0
    if block == geo.backup_block:
        return "backup superblock", geo.group_count - 1
    g = block // geo.blocks_per_group
    if g >= geo.group_count or block >= geo.blocks_count:
        return "tail", g
    if block == geo.group_start(g):
        return "group header", g
    if block == geo.block_bitmap_block(g):
        return "block bitmap", g
    if block == geo.counters_block(g):
        return "counters", g
    ib = geo.inode_bitmap_block(g)
    if ib <= block < ib + geo.inode_bitmap_blocks:
        return "inode bitmap", g
    it = geo.inode_table_block(g)
    if it <= block < it + geo.inode_table_blocks:
        return "inode table", g
    if g == 0 and geo.journal_block <= block < geo.journal_block + geo.journal_blocks:
        return "journal", 0
    if block < geo.first_data_block(g):
        return "group metadata", g
    return None


class _Reader:
    """Raw, defensive reads of one image: geometry from the trusted static superblock, nothing else trusted.

    The library's Volume cannot be used here: opening one reads the group
    counters, which may be the bad block itself.
    """

    def __init__(self, dev: Any, static: Any, bad: set[int]) -> None:
        self.dev = dev
        self.geo = fmt.geometry_from_static(static)
        self.bs = self.geo.block_size
        self.bad = bad
        self.root = getattr(static, "root_ino", fmt.ROOT_INO)

    def readable(self, block: int) -> bool:
        return 0 <= block < self.geo.blocks_count and block not in self.bad

    def inode(self, ino: int) -> Any | None:
        from nvfs_tools.check.image import RawInode

        off = self.geo.inode_offset(ino)
        if not self.readable(off // self.bs):
            return None
        return RawInode(ino, self.dev.read(off, fmt.INODE_SIZE))

    def used_inodes(self) -> Iterator[Any]:
        """Every in-use inode (RawInode) in a readable inode-table block, in number order.

        Cost grows with what is used: tables that are holes of the image file (check/image.py
        file_holes) hold only free inodes and are not read, nor are all-zero blocks parsed; a 1 TiB
        device has 67 M inode slots.
        """
        from nvfs_tools.check.image import INODE_FIELDS, RawInode, file_holes

        geo, bs, size = self.geo, self.bs, fmt.INODE_SIZE
        per, mode = bs // size, INODE_FIELDS["mode"]
        table_bytes = geo.inode_table_blocks * bs
        starts = [geo.inode_table_block(g) * bs for g in range(geo.group_count)]
        empty = bytes(bs)
        for g, hole in enumerate(file_holes(self.dev, starts, table_bytes)):
            if hole:
                continue
            for k in range(geo.inode_table_blocks):
                block = geo.inode_table_block(g) + k
                if not self.readable(block):
                    continue
                raw = self.dev.read(block * bs, bs)
                if raw == empty:
                    continue
                for j in range(per):
                    at = j * size
                    if any(raw[at + mode.offset : at + mode.offset + mode.size]):
                        yield RawInode(g * geo.inodes_per_group + k * per + j + 1, raw[at : at + size])

    def u64(self, addr: int) -> int:
        return int.from_bytes(self.dev.read(addr, 8), "little")


def describe(vol: Any, ranges: list[Range]) -> list[Hit]:
    """:func:`describe_device` for an open :class:`~nvfs_tools.volume.Volume`."""
    return describe_device(vol.dev, ranges, vol.static)


def describe_device(dev: Any, ranges: list[Range] | None = None, static: Any = None) -> list[Hit]:
    """Every block in ``ranges`` with what it holds, found without reading any bad block.

    ``ranges`` default to the device's own list; ``static`` is the parsed
    static superblock the tool trusts (default: block 0's).  Inodes stored in
    a bad inode-table block cannot be read: the hit lists their numbers, and
    blocks only they own show as "free space" (nobody known owns them).
    Nothing is written; reads go through ``dev.read`` and never into a bad block.
    """
    if ranges is None:
        ranges = list(dev.badblocks)
    if not ranges:
        return []
    if static is None:
        from nvfs_tools.volume import Volume

        static = Volume._load_static(dev, False)
    geo = fmt.geometry_from_static(static)
    bs = geo.block_size
    bad = bad_blocks(ranges, bs)
    rd = _Reader(dev, static, bad)
    hits: dict[int, Hit] = {}
    for b in sorted(bad):
        kind = metadata_kind(geo, b)
        if kind is not None:
            h = Hit(b, kind[0], kind[1])
            if kind[0] == "inode table":
                per = bs // fmt.INODE_SIZE
                first = kind[1] * geo.inodes_per_group + (b - geo.inode_table_block(kind[1])) * per + 1
                h.inodes = list(range(first, first + per))
            hits[b] = h
    data_bad = {b for b in bad if b not in hits}
    if data_bad:
        owners = _owners(rd, data_bad)
        for b in sorted(data_bad):
            what, ino = owners.get(b, ("free space", 0))
            hits[b] = Hit(b, what, inodes=[ino] if ino else [])
        bad_dirs = {h.inodes[0] for h in hits.values() if h.what in ("directory page", "radix node") and h.inodes}
        _name_inodes(rd, [h for h in hits.values() if h.inodes and h.what != "inode table"], bad_dirs)
    return [hits[b] for b in sorted(hits)]


def report_lines(hits: list[Hit]) -> list[str]:
    """One line per bad block, for a tool's output ("bad block 123: file data of inode 14 (/docs/big.bin)")."""
    return [f"bad {h.describe()}" for h in hits]


def _owners(rd: _Reader, targets: set[int]) -> dict[int, tuple[str, int]]:
    """Owner of each target block: every readable in-use inode's map, never entering a bad block."""
    out: dict[int, tuple[str, int]] = {}
    for i in rd.used_inodes():
        ino = i.ino
        if i.xattr_block in targets:
            out[i.xattr_block] = ("xattr block", ino)
        kind = i.mode & fmt.S_IFMT
        if kind == fmt.S_IFDIR:
            for blk, what in _dir_blocks(rd, i.block[i.dir_bank & 1]):
                if blk in targets:
                    out[blk] = (what, ino)
        elif kind in (fmt.S_IFREG, fmt.S_IFLNK) and not i.flags & fmt.INODE_FLAG_INLINE:
            for blk, is_indirect in _map_blocks(rd, list(i.block)):
                if blk in targets:
                    out[blk] = ("indirect block" if is_indirect else "file data", ino)
        if len(out) == len(targets):
            break
    return out


def _map_blocks(rd: _Reader, ptrs: list[int]):
    """(block, is_indirect) of a block map; a bad indirect block is reported, not read."""
    per = rd.bs // 8
    for i, p in enumerate(ptrs):
        if not p:
            continue
        stack = [(p, 0 if i < fmt.N_DIRECT else i - fmt.N_DIRECT + 1)]
        while stack:
            blk, depth = stack.pop()
            if blk >= rd.geo.blocks_count:
                continue
            yield blk, depth > 0
            if depth == 0 or not rd.readable(blk):
                continue
            raw = rd.dev.read(blk * rd.bs, rd.bs)
            for k in range(per):
                q = int.from_bytes(raw[8 * k : 8 * k + 8], "little")
                if q:
                    stack.append((q, depth - 1))


_NEXT_OFF = fmt.field_offset(fmt.PLAIN["DirPageHeader"], "next")


def _dir_blocks(rd: _Reader, root: int):
    """(block, "directory page" | "radix node") of a directory's live tree, bad blocks not entered."""
    stack = [(root, 0)]
    seen: set[int] = set()
    while stack:
        word, level = stack.pop()
        blk = word & fmt.RADIX_BLOCK_MASK
        if not word or blk in seen or blk >= rd.geo.blocks_count or len(seen) > rd.geo.blocks_count:
            continue
        seen.add(blk)
        if word & fmt.RADIX_PAGE_BIT:
            yield blk, "directory page"
            if rd.readable(blk):
                nxt = rd.u64(blk * rd.bs + _NEXT_OFF)
                if nxt:
                    stack.append((nxt | fmt.RADIX_PAGE_BIT, level))
            continue
        yield blk, "radix node"
        if not rd.readable(blk) or level > 8:
            continue
        raw = rd.dev.read(blk * rd.bs, rd.bs)
        for k in range(rd.bs // 8):
            w = int.from_bytes(raw[8 * k : 8 * k + 8], "little")
            if w:
                stack.append((w, level + 1))


_ENTRY = fmt.field_layout(fmt.PLAIN["DirEntryHeader"])


def _entry_field(raw: bytes, off: int, name: str) -> int:
    info = _ENTRY[name]
    return int.from_bytes(raw[off + info.offset : off + info.offset + info.size], "little")


def _entries(rd: _Reader, page: int):
    """(name, ino, file_type) of the live records of one readable page."""
    raw = rd.dev.read(page * rd.bs, rd.bs)
    if raw[: len(fmt.DIR_PAGE_MAGIC)] != fmt.DIR_PAGE_MAGIC:
        return
    off = fmt.DIR_PAGE_HEADER_SIZE
    while off + fmt.DIR_ENTRY_HEADER_SIZE <= rd.bs:
        ino = _entry_field(raw, off, "ino")
        name_len, file_type = _entry_field(raw, off, "name_len"), _entry_field(raw, off, "file_type")
        rec_len = _entry_field(raw, off, "rec_len")
        if rec_len == 0 or rec_len % fmt.DIR_ENTRY_ALIGN or off + rec_len > rd.bs or name_len == 0:
            return
        if ino:
            name = off + fmt.DIR_ENTRY_HEADER_SIZE
            yield raw[name : name + name_len], ino, file_type
        off += rec_len


def _name_inodes(rd: _Reader, hits: list[Hit], bad_dirs: set[int]) -> None:
    """Paths of the inodes in ``hits``, from a walk that skips directories with a bad page or node."""
    wanted = {ino for h in hits for ino in h.inodes}
    names: dict[int, list[bytes]] = {}
    dt_dir = fmt.MODE_TO_DT[fmt.S_IFDIR]
    stack = [(b"", rd.root)]
    visited: set[int] = set()
    while stack and wanted - set(names):
        prefix, dino = stack.pop()
        if dino in visited or dino in bad_dirs or not 1 <= dino <= rd.geo.inodes_count:
            continue
        visited.add(dino)
        i = rd.inode(dino)
        if i is None or i.mode & fmt.S_IFMT != fmt.S_IFDIR:
            continue
        for blk, what in _dir_blocks(rd, i.block[i.dir_bank & 1]):
            if what != "directory page" or not rd.readable(blk):
                continue
            for name, ino, ftype in _entries(rd, blk):
                path = prefix + b"/" + name
                if ino in wanted:
                    names.setdefault(ino, []).append(path)
                if ftype == dt_dir:
                    stack.append((path, ino))
    for h in hits:
        h.paths = [p for ino in h.inodes for p in names.get(ino, [])]


# ---------------------------------------------------------------------------------------------------
# The poisoned test device
# ---------------------------------------------------------------------------------------------------

_PROT_NONE = 0


def _libc() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


class _PyBuffer(ctypes.Structure):
    """CPython's Py_buffer: read-only maps cannot give a ctypes object, but they export a buffer."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


def mapping_address(dev: Any) -> int:
    """Address of the device's mapping in this process."""
    view = _PyBuffer()
    if ctypes.pythonapi.PyObject_GetBuffer(ctypes.py_object(dev.map), ctypes.byref(view), 0) != 0:
        raise OSError("the device mapping exports no buffer")
    try:
        return int(view.buf)
    finally:
        ctypes.pythonapi.PyBuffer_Release(ctypes.byref(view))


def poison(dev: Any, ranges: list[Range]) -> list[tuple[int, int]]:
    """Make the mapped pages holding ``ranges`` inaccessible; returns the (offset, length) page spans.

    Also lists the ranges as bad on the device, so that :meth:`Device.read`
    raises :class:`~nvfs_tools.device.MediaError` instead of faulting.
    """
    apply(dev, ranges)
    base = mapping_address(dev)
    page = mmap.PAGESIZE
    libc = _libc()
    spans = []
    for start, length in merge(ranges):
        lo = start - start % page
        hi = min(start + length + (-(start + length)) % page, dev.size - dev.size % page or dev.size)
        if hi <= lo:
            continue
        if libc.mprotect(ctypes.c_void_p(base + lo), hi - lo, _PROT_NONE) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mprotect: {os.strerror(err)}")
        spans.append((lo, hi - lo))
    return spans
