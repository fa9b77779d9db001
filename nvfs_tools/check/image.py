"""Raw, defensive access to an image for the checker.

fsck cannot use :class:`nvfs_tools.volume.Volume` to *read*: the volume trusts
what it opens (superblock, bitmaps, counters), and fsck must look at damaged
structures without tripping over them.  This module reads fields straight from
the device mapping with offsets derived from format.py, and writes repairs as
single field stores through :class:`~nvfs_tools.device.Device`, the same choke
point (write + barrier) every tool uses.

It also provides :class:`CheckAllocator`: repairs that need new blocks (clone
of a shared block, a directory rebuild, /lost+found) take them from what the
checker has *proven* free (its own ownership map), never from a bitmap that
may be wrong, and keep the on-media bitmap and counters in step like the
library allocator does.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.device import Device


def struct_format(schema: Any) -> tuple[struct.Struct, list[tuple[str, int]]]:
    """A ``struct.Struct`` and (field name, element count) pairs for a fixed plain ``schema``
    (``format.PLAIN[...]``: reading it does not import construct, ~45 ms of fsck's start-up).

    Integer arrays become ``name`` holding a tuple; byte strings, constants and padding are skipped;
    fields are derived from the schema so nothing is restated by hand.
    """
    codes = ["<"]
    names: list[tuple[str, int]] = []
    for sub in schema.subcons:
        if sub.kind == "array":
            codes.append(sub.code)
            names.append((sub.name, sub.count))
        elif sub.kind == "int":
            codes.append(sub.code)
            names.append((sub.name, 0))
        else:
            codes.append(f"{sub.size}x")
    return struct.Struct("".join(codes)), names


_INODE_STRUCT, _INODE_NAMES = struct_format(fmt.PLAIN["Inode"])
INODE_FIELDS = fmt.field_layout(fmt.PLAIN["Inode"])
DYN_FIELDS = fmt.field_layout(fmt.PLAIN["SuperblockDynamic"])
GC_FIELDS = fmt.field_layout(fmt.PLAIN["GroupCounters"])
DPH_FIELDS = fmt.field_layout(fmt.PLAIN["DirPageHeader"])
DE_FIELDS = fmt.field_layout(fmt.PLAIN["DirEntryHeader"])
_SIZE_CODE = {1: "B", 2: "H", 4: "I", 8: "Q"}


class RawInode:
    """A parsed inode (attribute access like a construct Container)."""

    __slots__ = ("ino", *(name for name, _ in _INODE_NAMES))

    def __init__(self, ino: int, raw: bytes | memoryview) -> None:
        self.ino = ino
        _fill_inode(self, _INODE_STRUCT.unpack(raw))

    @property
    def ftype(self) -> int:
        return self.mode & fmt.S_IFMT


def _make_filler() -> Any:
    """Generated ``obj.field = values[i]`` assignments (no per-field loop in the hot path)."""
    lines = ["def fill(obj, v):"]
    pos = 0
    for name, count in _INODE_NAMES:
        if count:
            lines.append(f"    obj.{name} = v[{pos}:{pos + count}]")
            pos += count
        else:
            lines.append(f"    obj.{name} = v[{pos}]")
            pos += 1
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)  # noqa: S102 - code built from the format's own field names
    return namespace["fill"]


_fill_inode = _make_filler()


def views_device_map(dev: Any) -> bool:
    """True when ``dev`` is read through its own (shared) mapping, not a shadow, safe or overlay view
    (check/media.py, check/overlay.py): only then is the file what the view shows, so that pages may
    be dropped from the mapping, or the file read past it, without losing anything."""
    dev_map = getattr(dev, "map", None)
    return dev_map is not None and getattr(dev.view, "obj", None) is dev_map


def pread_fd(dev: Any) -> int:
    """The descriptor through which checks that visit a few blocks in each of thousands of groups
    (static copies, bitmaps, counters: 8192 groups on 1 TiB) read the device, or -1: read the view.

    Read through the mapping, each group's header costs a page fault and a page-table page (~6 us)
    and stays resident: ~128 MiB of a 1 TiB image, and ~10 ms more to unmap at exit.  ``pread`` on
    the image's descriptor copies the same bytes from the same page cache without mapping them.
    Only when the view is the device's own mapping (a bad-media shadow, safe view or replay overlay
    differs from the file: read through it; a device with bad media is never read around its view)
    and the device is a file or block device (devdax has no read(2)).
    """
    fd = getattr(dev, "fd", -1)
    view = dev.view
    own_map = isinstance(view, memoryview) and views_device_map(dev)
    if not own_map or hasattr(dev, "bad_blocks") or not isinstance(fd, int) or fd < 0:
        return -1
    return fd if getattr(dev, "kind", None) in ("file", "block") else -1


def span_reader(dev: Any) -> Any:
    """A ``read(offset, length) -> bytes`` of the device as its view shows it, through pread_fd when there
    is one (short at the end of the device, as a slice of the view would be)."""
    fd = pread_fd(dev)
    if fd < 0:
        view = dev.view
        return lambda offset, length: bytes(view[offset : offset + length])
    pread = os.pread

    def read(offset: int, length: int) -> bytes:
        data = pread(fd, length, offset)
        while len(data) < length:
            more = pread(fd, length - len(data), offset + len(data))
            if not more:
                break
            data += more
        return data

    return read


KIND_NAMES = {
    fmt.S_IFREG: "regular file",
    fmt.S_IFDIR: "directory",
    fmt.S_IFLNK: "symbolic link",
    fmt.S_IFCHR: "character device",
    fmt.S_IFBLK: "block device",
    fmt.S_IFIFO: "FIFO",
    fmt.S_IFSOCK: "socket",
}


def kind_name(mode: int) -> str:
    return KIND_NAMES.get(mode & fmt.S_IFMT, f"mode {mode:#o}")


def file_holes(dev: Any, starts: Sequence[int], length: int) -> list[bool]:
    """For each of ``starts`` (increasing): True only when bytes [start, start+length) of ``dev`` are
    certainly a hole of the image file (all zero, never written): the scan core's seek_holes (one
    SEEK_DATA per range at most: the inode tables of a 1 TiB image's 8192 groups, ~14 ms; one
    thread: tmpfs takes the inode lock for each SEEK_DATA, a second thread only waited for it).
    Trusted as Image.is_hole says; all False when the device has no file to ask."""
    fd, private_over = _hole_source(dev)
    if fd < 0:
        return [False] * len(starts)
    from nvfs_tools import scan

    holes = scan.backend().seek_holes(fd, starts, length, threads=1)
    if private_over is None:
        return list(map(bool, holes))
    return [bool(hole) and not private_over(start, length) for start, hole in zip(starts, holes, strict=True)]


class HoleScan:
    """file_holes(dev, starts, length) on a thread of its own, started before the Image exists (see
    prefetch_holes); the Image it is handed to (``Image.prefetched``) takes its answers once.

    On a 1 TiB image the SEEK_DATA calls (one per inode table, 8192) take ~13 ms on one CPU and cannot
    be shared between threads (tmpfs takes the file's lock for each); pass 0 meanwhile compares the
    static copies with pread on every CPU, which takes no such lock.  Run side by side, the two cost
    about what the comparison alone did.
    """

    def __init__(self, dev: Any, starts: Sequence[int], length: int) -> None:
        import threading

        self.dev, self.starts, self.length = dev, starts, length
        self.out: list[bool] | None = None
        self.thread = threading.Thread(target=self._run, name="nvfs-hole-scan", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.out = file_holes(self.dev, self.starts, self.length)
        except Exception:  # noqa: BLE001 - the Image asks again itself, and gets the error there
            self.out = None

    def answers(self, dev: Any, length: int) -> list[bool] | None:
        """file_holes(dev, self.starts, length) when that is the question it answered (the device object
        it was started on, the same length), else None; waits for the thread."""
        self.thread.join()
        if dev is not self.dev or length != self.length:
            return None
        return self.out


def prefetch_holes(dev: Any, starts: Sequence[int], length: int) -> HoleScan | None:
    """A running HoleScan for the Image made next on ``dev``, or None.

    Only for a device nothing writes to (opened read-only): an answer computed before a repair could
    be stale after it.  The caller joins the thread (``scan.thread``) before closing the device.
    """
    if getattr(dev, "writable", True) or _hole_source(dev)[0] < 0:
        return None
    return HoleScan(dev, starts, length)


def _hole_source(dev: Any) -> tuple[int, Any]:
    """(the image file's descriptor, the device's ``private_over`` or None), or (-1, None) when the
    view's zeros cannot be told from the file's holes (see Image.is_hole)."""
    fd = getattr(dev, "fd", -1)
    if not isinstance(fd, int) or fd < 0:
        return -1, None
    if getattr(dev.view, "obj", None) is getattr(dev, "map", None):
        return fd, None
    if getattr(type(dev), "private_over", None) is None:  # the class's own, not one __getattr__ forwards
        return -1, None
    return fd, dev.private_over


class Image:
    """The device plus the geometry fsck decided to trust, with field-level access."""

    def __init__(self, dev: Device, static: Any, static_raw: bytes) -> None:
        self.dev = dev
        self.static = static
        self.static_raw = static_raw
        self.geo = fmt.geometry_from_static(static)
        self.bs = self.geo.block_size
        self.hash_seed = bytes(static.hash_seed)
        self.writes = 0
        # is_hole answers, valid for one device object and one value of ``writes``
        self._holes: dict[int, dict[int, bool]] = {}  # length -> start -> answer
        self._holes_for: tuple[Any, int] = (None, 0)
        #: a HoleScan started before this Image (check/runner.py), taken by the first holes() question
        self.prefetched: HoleScan | None = None
        # bad blocks (check/media.py): None when the device has no bad media, else the set the runner fills
        self.bad: set[int] | None = set() if hasattr(dev, "bad_blocks") else None

    # -- reading --------------------------------------------------------------------------------
    def u64(self, addr: int) -> int:
        return int.from_bytes(self.dev.view[addr : addr + 8], "little")

    def read_block(self, block: int) -> bytes:
        return self.dev.read(block * self.bs, self.bs)

    def block_view(self, block: int) -> memoryview:
        return self.dev.view[block * self.bs : (block + 1) * self.bs]

    def is_hole(self, start: int, length: int) -> bool:
        """True only when bytes [start, start+length) are certainly a hole of the image file (all zero).

        Lets a check skip what was never written (a sparse 1 TiB image's inode tables: reading them
        through a tmpfs mapping would also fill them with zero pages).  Trusted when the view is the
        device's own mapping, or when the device's class says where its view may differ from the file
        (``private_over``: check/media.py's shadow mapping never there, check/overlay.py's replay
        overlay over its private pages); never for another wrapper.  Answers are remembered until
        the next write through this Image: the fast path asks about every table twice.
        """
        self._forget_stale_holes()
        known = self._holes.get(length, {}).get(start)
        if known is None:
            known = self.holes([start], length)[0]
        return known

    def _forget_stale_holes(self) -> None:
        """Drop remembered hole answers once the device or the write count has changed."""
        if self._holes_for != (self.dev, self.writes):
            self._holes.clear()
            self._holes_for = (self.dev, self.writes)

    def holes(self, starts: Sequence[int], length: int) -> list[bool]:
        """:meth:`is_hole` of ``[start, start+length)`` for each of ``starts`` (increasing): file_holes,
        remembered."""
        self._forget_stale_holes()
        known = self._holes.setdefault(length, {})
        scan, self.prefetched = self.prefetched, None
        answered = scan.answers(self.dev, length) if scan is not None and not self.writes else None
        if answered is not None:
            known.update(zip(scan.starts, answered, strict=True))
            if starts == scan.starts:
                return answered
        if all(start in known for start in starts):
            return [known[start] for start in starts]
        out = file_holes(self.dev, starts, length)
        known.update(zip(starts, out, strict=True))
        return out

    def inode(self, ino: int) -> RawInode:
        off = self.geo.inode_offset(ino)
        return RawInode(ino, self.dev.view[off : off + fmt.INODE_SIZE])

    def dyn(self) -> Any:
        return fmt.PLAIN["SuperblockDynamic"].parse(self.dev.read(fmt.SB_DYNAMIC_OFFSET, fmt.SB_DYNAMIC_SIZE))

    def dyn_field(self, name: str) -> int:
        info = DYN_FIELDS[name]
        off = fmt.SB_DYNAMIC_OFFSET + info.offset
        return int.from_bytes(self.dev.view[off : off + info.size], "little", signed=name.endswith("_time"))

    def inode_field_addr(self, ino: int, field: str, index: int = 0) -> int:
        info = INODE_FIELDS[field]
        step = 8 if field == "block" else 0
        return self.geo.inode_offset(ino) + info.offset + index * step

    # -- writing (every write is a field store; callers barrier where order matters) --------------
    def store(self, addr: int, value: int, size: int = 8, *, signed: bool = False) -> None:
        self.dev.write(addr, value.to_bytes(size, "little", signed=signed))
        self.writes += 1

    def write_bytes(self, addr: int, data: bytes) -> None:
        self.dev.write(addr, data)
        self.writes += 1

    def barrier(self) -> None:
        self.dev.barrier()

    def set_dyn(self, name: str, value: int) -> None:
        info = DYN_FIELDS[name]
        self.store(fmt.SB_DYNAMIC_OFFSET + info.offset, value, info.size, signed=name.endswith("_time"))

    def set_inode(self, ino: int, **fields: int) -> None:
        """Store inode fields one by one (``block=(index, value)`` for a pointer)."""
        for name, value in fields.items():
            info = INODE_FIELDS[name]
            if name == "block":
                index, value = value
                self.store(self.inode_field_addr(ino, "block", index), value)
            else:
                signed = name.endswith("time")
                self.store(self.geo.inode_offset(ino) + info.offset, value, info.size, signed=signed)

    def clear_inode(self, ino: int) -> None:
        """Free an inode's slot: mode 0 first (that is what "free" means), then the rest."""
        off = self.geo.inode_offset(ino)
        self.store(off + INODE_FIELDS["mode"].offset, 0, 2)
        self.barrier()
        self.write_bytes(off, bytes(fmt.INODE_SIZE))

    # -- bitmaps ----------------------------------------------------------------------------------
    def block_bit(self, block: int) -> bool:
        g, i = divmod(block, self.geo.blocks_per_group)
        addr = self.geo.block_bitmap_block(g) * self.bs + i // 8
        return bool(self.dev.view[addr] >> (i % 8) & 1)

    def set_block_bit(self, block: int, used: bool) -> bool:
        """Set one block bitmap bit; True when it changed."""
        g, i = divmod(block, self.geo.blocks_per_group)
        addr = self.geo.block_bitmap_block(g) * self.bs + i // 8
        return self._set_bit(addr, i % 8, used)

    def set_inode_bit(self, ino: int, used: bool) -> bool:
        g, i = divmod(ino - 1, self.geo.inodes_per_group)
        addr = self.geo.inode_bitmap_block(g) * self.bs + i // 8
        return self._set_bit(addr, i % 8, used)

    def _set_bit(self, addr: int, bit: int, used: bool) -> bool:
        old = self.dev.view[addr]
        new = old | (1 << bit) if used else old & ~(1 << bit)
        if new == old:
            return False
        self.write_bytes(addr, bytes([new]))
        return True

    def counter_addr(self, group: int, field: str) -> int:
        return self.geo.counters_block(group) * self.bs + GC_FIELDS[field].offset

    def add_counter(self, group: int, field: str, delta: int) -> None:
        addr = self.counter_addr(group, field)
        self.store(addr, max(0, self.u64(addr) + delta))

    def add_dyn(self, name: str, delta: int) -> None:
        self.set_dyn(name, max(0, self.dyn_field(name) + delta))


class CheckAllocator:
    """Allocation for repairs, from blocks the checker has proven unowned.

    ``owned`` is the checker's block-ownership bitmap (bit set = metadata or
    owned by some inode).  A block handed out is marked there, in the on-media
    bitmap and in the counters, exactly as the library allocator would.
    """

    def __init__(self, image: Image, owned: bytearray) -> None:
        self.image = image
        self.owned = owned
        self.cursor = image.geo.first_data_block(0)

    def is_owned(self, block: int) -> bool:
        return bool(self.owned[block >> 3] >> (block & 7) & 1)

    def mark(self, block: int, used: bool) -> None:
        if used:
            self.owned[block >> 3] |= 1 << (block & 7)
        else:
            self.owned[block >> 3] &= ~(1 << (block & 7)) & 0xFF

    def allocate_block(self, goal: int | None = None) -> int:
        geo = self.image.geo
        total = geo.blocks_count
        start = goal if goal is not None and 0 < goal < total else self.cursor
        block = self._find_free(start, total)
        if block is None:
            block = self._find_free(geo.first_data_block(0), start)
        if block is None:
            from nvfs_tools.errors import NoSpaceError

            raise NoSpaceError("no free block left for the repair")
        self.cursor = block + 1
        self.mark(block, True)
        img = self.image
        if img.set_block_bit(block, True):
            img.add_counter(geo.group_of_block(block), "free_blocks", -1)
            img.add_dyn("free_blocks", -1)
        return block

    def _find_free(self, start: int, end: int) -> int | None:
        owned = self.owned
        geo = self.image.geo
        byte = start >> 3
        last = (end + 7) >> 3
        while byte < last:
            if owned[byte] != 0xFF:
                for bit in range(8):
                    block = byte * 8 + bit
                    if start <= block < end and not owned[byte] >> bit & 1 and not geo.is_metadata_block(block):
                        if self.image.bad and block in self.image.bad:
                            continue  # bad media is never handed out
                        return block
            byte += 1
        return None

    def take(self, block: int) -> None:
        """Mark one chosen block used (a bad block going into the bad-blocks inode), like allocate_block."""
        self.mark(block, True)
        img = self.image
        if img.set_block_bit(block, True):
            img.add_counter(img.geo.group_of_block(block), "free_blocks", -1)
            img.add_dyn("free_blocks", -1)

    def free_block(self, block: int) -> None:
        self.mark(block, False)
        img = self.image
        if img.set_block_bit(block, False):
            img.add_counter(img.geo.group_of_block(block), "free_blocks", 1)
            img.add_dyn("free_blocks", 1)
