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

    def describe(self) -> str:
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


def describe(vol: Any, ranges: list[Range]) -> list[Hit]:
    """Every block in ``ranges`` with what it holds, found without reading any bad block.

    ``vol`` is an open :class:`~nvfs_tools.volume.Volume` (read-only is enough)
    whose device already lists the bad ranges (:func:`apply`).  Inodes stored
    in a bad inode-table block cannot be read: their files are reported as
    lost metadata, and their blocks as owned by nobody known.
    """
    geo, bs = vol.geo, vol.block_size
    bad = bad_blocks(ranges, bs)
    hits: dict[int, Hit] = {}
    for b in sorted(bad):
        kind = metadata_kind(geo, b)
        if kind is not None:
            h = Hit(b, kind[0], kind[1])
            if kind[0] == "inode table":
                first = kind[1] * geo.inodes_per_group + (b - geo.inode_table_block(kind[1])) * (bs // 256) + 1
                h.inodes = list(range(first, first + bs // fmt.INODE_SIZE))
            hits[b] = h
    data_bad = {b for b in bad if b not in hits}
    if data_bad:
        owners = _owners(vol, data_bad, bad)
        for b in sorted(data_bad):
            what, ino = owners.get(b, ("free space", 0))
            hits[b] = Hit(b, what, inodes=[ino] if ino else [])
        _name_inodes(vol, [h for h in hits.values() if h.inodes and h.what != "inode table"], bad)
    return [hits[b] for b in sorted(hits)]


def _readable_inode(vol: Any, ino: int, bad: set[int]) -> bool:
    return vol.inode_offset(ino) // vol.block_size not in bad


def _owners(vol: Any, targets: set[int], bad: set[int]) -> dict[int, tuple[str, int]]:
    """Owner of each target block: walk every readable in-use inode's map, never entering a bad block."""
    geo = vol.geo
    out: dict[int, tuple[str, int]] = {}
    for ino in range(1, geo.inodes_count + 1):
        if not _readable_inode(vol, ino, bad):
            continue
        mode = vol.inode_mode(ino)
        if mode == 0:
            continue
        i = vol.read_inode(ino)
        if i.xattr_block in targets:
            out[i.xattr_block] = ("xattr block", ino)
        kind = mode & fmt.S_IFMT
        if kind == fmt.S_IFDIR:
            _dir_owners(vol, ino, i, targets, bad, out)
        elif kind in (fmt.S_IFREG, fmt.S_IFLNK) and not i.flags & fmt.INODE_FLAG_INLINE:
            for blk, is_indirect in _map_blocks(vol, list(i.block), bad):
                if blk in targets:
                    out[blk] = ("indirect block" if is_indirect else "file data", ino)
        if len(out) == len(targets):
            break
    return out


def _map_blocks(vol: Any, ptrs: list[int], bad: set[int]):
    """(block, is_indirect) of a block map; indirect blocks in ``bad`` are reported, not read."""
    bs = vol.block_size
    per = bs // 8
    for i, p in enumerate(ptrs):
        if not p:
            continue
        depth = 0 if i < fmt.N_DIRECT else i - fmt.N_DIRECT + 1
        stack = [(p, depth)]
        while stack:
            blk, d = stack.pop()
            if blk >= vol.geo.blocks_count:
                continue
            yield blk, d > 0
            if d == 0 or blk in bad:
                continue
            raw = vol.dev.read(blk * bs, bs)
            for k in range(per):
                q = int.from_bytes(raw[8 * k : 8 * k + 8], "little")
                if q:
                    stack.append((q, d - 1))


def _dir_owners(vol: Any, ino: int, inode: Any, targets: set[int], bad: set[int], out: dict) -> None:
    bs = vol.block_size
    root = inode.block[inode.dir_bank & 1]
    stack = [(root, 0)]
    seen: set[int] = set()
    while stack:
        word, level = stack.pop()
        if not word:
            continue
        blk = word & fmt.RADIX_BLOCK_MASK
        if blk in seen or blk >= vol.geo.blocks_count:
            continue
        seen.add(blk)
        if word & fmt.RADIX_PAGE_BIT:
            if blk in targets:
                out[blk] = ("directory page", ino)
            if blk not in bad:  # overflow chain
                nxt = int.from_bytes(vol.dev.read(blk * bs + fmt.field_offset(fmt.DirPageHeader, "next"), 8), "little")
                if nxt:
                    stack.append((nxt | fmt.RADIX_PAGE_BIT, level))
            continue
        if blk in targets:
            out[blk] = ("radix node", ino)
        if blk in bad or level > 8:
            continue
        raw = vol.dev.read(blk * bs, bs)
        for k in range(bs // 8):
            w = int.from_bytes(raw[8 * k : 8 * k + 8], "little")
            if w:
                stack.append((w, level + 1))


def _name_inodes(vol: Any, hits: list[Hit], bad: set[int]) -> None:
    """Paths of the inodes in ``hits``, from a walk of the directories that skips bad pages."""
    wanted = {ino for h in hits for ino in h.inodes}
    names: dict[int, list[bytes]] = {}
    from nvfs_tools.directory import Directory

    stack = [(b"", fmt.ROOT_INO)]
    visited: set[int] = set()
    while stack and wanted - set(names):
        prefix, dino = stack.pop()
        if dino in visited or not _readable_inode(vol, dino, bad):
            continue
        visited.add(dino)
        try:
            entries = list(Directory(vol, dino))
        except NvfsError:  # a bad page on the way: its names stay unknown
            continue
        for e in entries:
            path = prefix + b"/" + e.name
            if e.ino in wanted:
                names.setdefault(e.ino, []).append(path)
            if e.file_type == fmt.MODE_TO_DT[fmt.S_IFDIR]:
                stack.append((path, e.ino))
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


def mapping_address(dev: Any) -> int:
    """Address of the device's mapping in this process."""
    import numpy as np

    arr = np.frombuffer(dev.map, dtype=np.uint8, count=1)
    addr = int(arr.__array_interface__["data"][0])
    del arr
    return addr


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
