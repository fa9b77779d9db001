"""Write a fresh, empty NVFS filesystem onto a device (the library half of mkfs).

:func:`make_filesystem` lays down everything ``spec/`` requires of a new
filesystem except lost+found (which is an ordinary directory, created
afterwards through the library so that only one piece of code ever writes
directory pages): the superblock (static + dynamic), the static copy at the
start of every group and the backup in the last block of the device, every
group's block bitmap, counters and inode bitmap, zeroed inode tables and
microjournal, the root directory inode, and the quota inodes when asked for.

With ``lost_found=True`` it also writes lost+found (inode 11, an empty
directory named by the root's one page) exactly as ``Volume.mkdir`` would on
the fresh filesystem, so a plain mkfs needs none of the library's volume
machinery; mkfs asks for it only when no quota files and no bad media make
the library's choices differ (``tests/test_mkfs.py`` checks the bytes
against ``Volume.mkdir``).

It is written for speed on huge sparse devices: one ``pwrite`` per group for
the group's leading metadata blocks (built from a template, not from
construct), holes instead of written zeros, and no mapping of the device's
bulk.  All positions come from :class:`nvfs_tools.format.Geometry`; all field
offsets from the schemas (their plain ``struct`` form, :data:`nvfs_tools.format.PLAIN`, so that
a plain mkfs never loads construct).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

from nvfs_tools import format as fmt
from nvfs_tools.device import Device
from nvfs_tools.errors import DeviceError


def source_date_epoch() -> int | None:
    """``SOURCE_DATE_EPOCH`` (reproducible builds): seconds since 1970, or None when unset or empty.

    Raises ValueError for anything but an integer: a reproducible build must not quietly become one
    that is not.
    """
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"invalid SOURCE_DATE_EPOCH '{value}' (expected an integer)") from None


#: Inodes 1..RESERVED_INODES are reserved and marked used by mkfs.
RESERVED_INODES = fmt.FIRST_INO - 1

ROOT_MODE = fmt.S_IFDIR | 0o755
LOST_FOUND_MODE = fmt.S_IFDIR | 0o700
QUOTA_MODE = fmt.S_IFREG | 0o600


class Features(NamedTuple):
    """The three feature words of the static superblock."""

    compat: int = fmt.FEATURE_COMPAT_XATTR
    incompat: int = 0
    ro_compat: int = 0

    @property
    def quota(self) -> bool:
        return bool(self.ro_compat & fmt.FEATURE_RO_COMPAT_QUOTA)


#: What mkfs enables unless told otherwise: xattrs.
DEFAULT_FEATURES = Features()


class LayoutResult:
    """What was written, for the mkfs summary and for tests.

    ``zeroing`` says how inode tables were cleared: "sparse", "punch",
    "zeroout", "discard" or "written".  ``lost_found`` is true when the layout
    made lost+found (else the caller makes it through the library).  A plain
    class, not a dataclass: creating dataclasses costs several milliseconds of
    mkfs's start-up.
    """

    __slots__ = ("geometry", "free_blocks", "free_inodes", "zeroing", "wiped", "lost_found")

    def __init__(
        self,
        geometry: fmt.Geometry,
        free_blocks: int,
        free_inodes: int,
        zeroing: str,
        wiped: list[str] | None = None,
        lost_found: bool = False,
    ) -> None:
        self.geometry, self.free_blocks, self.free_inodes = geometry, free_blocks, free_inodes
        self.zeroing, self.wiped, self.lost_found = zeroing, wiped if wiped is not None else [], lost_found

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"LayoutResult({fields})"


def set_bit_range(buf: bytearray, start: int, end: int) -> None:
    """Set bits ``[start, end)`` of ``buf`` (bit i = byte i//8, LSB first)."""
    if end <= start:
        return
    first_full = -(-start // 8)
    last_full = end // 8
    if first_full > last_full:  # inside one byte
        buf[start // 8] |= ((1 << (end - start)) - 1) << (start % 8)
        return
    if start % 8:
        buf[start // 8] |= (0xFF << (start % 8)) & 0xFF
    buf[first_full:last_full] = b"\xff" * (last_full - first_full)
    if end % 8:
        buf[last_full] |= (1 << (end % 8)) - 1


def static_fields(
    geo: fmt.Geometry,
    *,
    uuid: bytes,
    label: bytes,
    hash_seed: bytes,
    mkfs_time: tuple[int, int],
    features: Features,
) -> dict:
    """The values of every static superblock field for ``geo``."""
    if len(uuid) != 16 or len(hash_seed) != 16:
        raise ValueError("uuid and hash_seed must be 16 bytes")
    if len(label) > 64:
        raise ValueError("label longer than 64 bytes")
    return {
        "version": fmt.FORMAT_VERSION,
        "feature_compat": features.compat,
        "feature_incompat": features.incompat,
        "feature_ro_compat": features.ro_compat,
        "log_block_size": geo.block_size.bit_length() - 1,
        "inode_size": fmt.INODE_SIZE,
        "blocks_count": geo.blocks_count,
        "blocks_per_group": geo.blocks_per_group,
        "inodes_per_group": geo.inodes_per_group,
        "group_count": geo.group_count,
        "inodes_count": geo.inodes_count,
        "root_ino": fmt.ROOT_INO,
        "lost_found_ino": fmt.FIRST_INO,
        "first_ino": fmt.FIRST_INO,
        "journal_block": geo.journal_block,
        "journal_slots": geo.journal_slots,
        "journal_entries": fmt.JOURNAL_ENTRIES,
        "mkfs_time": mkfs_time[0],
        "mkfs_time_nsec": mkfs_time[1],
        "hash_version": fmt.HASH_SIPHASH24,
        "hash_seed": hash_seed,
        "uuid": uuid,
        "label": label.ljust(64, b"\0"),
        "inode_bitmap_blocks": geo.inode_bitmap_blocks,
        "inode_table_blocks": geo.inode_table_blocks,
        "journal_blocks": geo.journal_blocks,
    }


def group_free_blocks(geo: fmt.Geometry, group: int) -> int:
    """Free blocks of ``group`` right after mkfs."""
    free = geo.group_end(group) - geo.first_data_block(group)
    if geo.group_start(group) <= geo.backup_block < geo.group_end(group):
        free -= 1
    return free


def total_free_blocks(geo: fmt.Geometry) -> int:
    """Free blocks of the whole filesystem right after mkfs, in O(1) (the sum of :func:`group_free_blocks`).

    Every group loses the same metadata blocks, group 0 also the journal, and
    the backup block is lost only when it lies inside the last group.
    """
    n = geo.group_count
    end = geo.group_end(n - 1)
    meta = 3 + geo.inode_bitmap_blocks + geo.inode_table_blocks
    return end - n * meta - geo.journal_blocks - (1 if geo.backup_block < end else 0)


def block_bitmap(geo: fmt.Geometry, group: int, lost_found: int = 0) -> bytearray:
    """The block bitmap of ``group`` right after mkfs: metadata, backup and past-the-end bits set.

    ``lost_found`` (0 or 1): group 0's first data block holds the root's page naming lost+found.
    """
    bpg = geo.blocks_per_group
    buf = bytearray(geo.block_size)
    set_bit_range(buf, 0, geo.metadata_blocks(group) + (lost_found if group == 0 else 0))
    length = geo.group_end(group) - geo.group_start(group)
    set_bit_range(buf, length, bpg)
    backup = geo.backup_block - geo.group_start(group)
    if 0 <= backup < length:
        set_bit_range(buf, backup, backup + 1)
    return buf


def inode_bitmap(geo: fmt.Geometry, group: int, lost_found: int = 0) -> bytearray:
    """The inode bitmap blocks of ``group``: reserved inodes (group 0; and lost+found's) and bits past ipg set."""
    buf = bytearray(geo.inode_bitmap_blocks * geo.block_size)
    set_bit_range(buf, geo.inodes_per_group, len(buf) * 8)
    if group == 0:
        set_bit_range(buf, 0, RESERVED_INODES + lost_found)
    return buf


def group_counters(geo: fmt.Geometry, group: int, lost_found: int = 0) -> bytes:
    """The counters block of ``group``; ``lost_found`` (0 or 1): group 0 also holds lost+found and its page."""
    free_inodes = geo.inodes_per_group - (RESERVED_INODES + lost_found if group == 0 else 0)
    return fmt.PLAIN["GroupCounters"].build(
        {
            "group": group,
            "free_blocks": group_free_blocks(geo, group) - (lost_found if group == 0 else 0),
            "free_inodes": free_inodes,
            "used_dirs": 1 + lost_found if group == 0 else 0,
        }
    )


def dynamic_superblock(geo: fmt.Geometry, mkfs_time: tuple[int, int], lost_found: int = 0) -> bytes:
    return fmt.PLAIN["SuperblockDynamic"].build(
        {
            "state": fmt.STATE_CLEAN,
            "free_blocks": total_free_blocks(geo) - lost_found,
            "free_inodes": geo.inodes_count - RESERVED_INODES - lost_found,
            "mount_count": 0,
            "max_mount_count": 0,
            "check_count": 0,
            "error_count": 0,
            "last_mount_time": 0,
            "last_write_time": mkfs_time[0],
            "last_check_time": mkfs_time[0],
            "orphan_head": 0,
            "journal_seq": 0,
            "repair_generation": 0,
        }
    )


def new_inode(
    mode: int,
    links: int,
    mkfs_time: tuple[int, int],
    *,
    uid: int = 0,
    gid: int = 0,
    parent: int = 0,
    generation: int = 0,
    page: tuple[int, int] | None = None,
) -> bytes:
    """A fresh inode image with all four times set (root, quota files, fsck's re-created directories).

    ``page``: ``(block, block_size)`` of a directory's one page, reached from
    bank 1 (where ``Directory.add`` puts the first page of an empty directory).
    """
    sec, nsec = mkfs_time
    pointers = [0] * fmt.N_BLOCK_POINTERS
    if page is not None:
        pointers[1] = page[0] | fmt.RADIX_PAGE_BIT
    return fmt.PLAIN["Inode"].build(
        {
            "mode": mode,
            "reserved0": 0,
            "flags": 0,
            "uid": uid,
            "gid": gid,
            "links_count": links,
            "generation": generation,
            "size": page[1] if page else 0,
            "blocks": 1 if page else 0,
            "atime": sec,
            "mtime": sec,
            "ctime": sec,
            "btime": sec,
            "atime_nsec": nsec,
            "mtime_nsec": nsec,
            "ctime_nsec": nsec,
            "btime_nsec": nsec,
            "parent": parent,
            "xattr_block": 0,
            "next_orphan": 0,
            "rdev": 0,
            "dir_bank": 1 if page else 0,
            "block": pointers,
        }
    )


def _zero_areas(dev: Device, geo: fmt.Geometry, progress: Callable[[int], None] | None) -> None:
    """Zero every inode table (and the journal) on a device that may hold old data."""
    bs = geo.block_size
    for g in range(geo.group_count):
        start = geo.inode_table_block(g)
        dev.zero_range(start * bs, (geo.first_data_block(g) - start) * bs)
        if progress and g % 256 == 255:
            progress(256)
    if progress:
        progress(geo.group_count % 256)


def make_filesystem(
    dev: Device,
    geo: fmt.Geometry,
    *,
    uuid: bytes,
    label: bytes = b"",
    hash_seed: bytes,
    mkfs_time: tuple[int, int],
    features: Features = DEFAULT_FEATURES,
    root_uid: int = 0,
    root_gid: int = 0,
    fresh: bool = False,
    discard: bool = False,
    lost_found: bool = False,
    progress: Callable[[int], None] | None = None,
) -> LayoutResult:
    """Write a new, empty NVFS filesystem of geometry ``geo`` onto ``dev``.

    ``fresh``: the device is known to read as zeros (a sparse image mkfs just
    created), so nothing needs zeroing.  ``discard``: discard the whole device
    first (a hole punch on image files, BLKDISCARD on block devices).
    ``progress(n)`` is called as groups are done (2 * group_count in total: a
    zeroing pass and a writing pass).  The root directory is written with an
    empty radix tree and 2 links; lost+found is added by the caller through the
    library, unless ``lost_found`` asks for it here (not with quota: the
    library charges it to the quota files).  Nothing is flushed here: the
    caller closes the device, which flushes (see ``Device(unordered=True)``).
    """
    if lost_found and features.quota:
        raise ValueError("lost+found with quota is made through the library (it charges the quota files)")
    bs = geo.block_size
    if geo.blocks_count * bs > dev.size:
        raise DeviceError(f"{dev.path}: filesystem of {geo.blocks_count} blocks does not fit in {dev.size} bytes")
    static = fmt.build_static_superblock(
        static_fields(geo, uuid=uuid, label=label, hash_seed=hash_seed, mkfs_time=mkfs_time, features=features)
    )
    zeroing = "sparse"
    if not fresh:
        discarded = discard and dev.discard()
        if discarded and dev.kind == "file":
            zeroing = "discard"
            if progress:
                progress(geo.group_count)
        else:
            zeroing = {"file": "punch", "block": "zeroout"}.get(dev.kind, "written")
            _zero_areas(dev, geo, progress)
    elif progress:
        progress(geo.group_count)

    # Kill any old identity first: block 0 and the backup block.
    dev.pwrite(0, bytes(bs))
    dev.pwrite(geo.backup_block * bs, bytes(bs))
    _write_groups(dev, geo, static, progress)

    # Root directory (and quota files) in group 0's inode table.
    used = 1 if lost_found else 0  # lost+found's inode and its name's page
    if lost_found:
        page = geo.first_data_block(0)
        dev.pwrite(page * bs, lost_found_page(geo, hash_seed))
        root = new_inode(ROOT_MODE, 3, mkfs_time, uid=root_uid, gid=root_gid, parent=fmt.ROOT_INO, page=(page, bs))
        lf = new_inode(LOST_FOUND_MODE, 2, mkfs_time, parent=fmt.ROOT_INO)
        dev.pwrite(geo.inode_offset(fmt.ROOT_INO), root)
        dev.pwrite(geo.inode_offset(fmt.FIRST_INO), lf)
    else:
        root = new_inode(ROOT_MODE, 2, mkfs_time, uid=root_uid, gid=root_gid, parent=fmt.ROOT_INO)
        dev.pwrite(geo.inode_offset(fmt.ROOT_INO), root)
    if features.quota:
        quota = new_inode(QUOTA_MODE, 1, mkfs_time)
        for ino in fmt.QUOTA_INODES.values():
            dev.pwrite(geo.inode_offset(ino), quota)

    # Backup copy, then the superblock itself last.
    dev.pwrite(geo.backup_block * bs, static)
    dev.pwrite(0, _group_head(geo, 0, static, dynamic_superblock(geo, mkfs_time, used), lost_found=used))
    return LayoutResult(
        geometry=geo,
        free_blocks=total_free_blocks(geo) - used,
        free_inodes=geo.inodes_count - RESERVED_INODES - used,
        zeroing=zeroing,
        lost_found=lost_found,
    )


def lost_found_page(geo: fmt.Geometry, hash_seed: bytes) -> bytearray:
    """The root's only directory page when it holds just lost+found, as ``Directory.add`` writes it.

    The pure SipHash is used: one name does not justify loading the compiled
    core, and both give the same hash by contract.
    """
    from nvfs_tools.namehash import siphash24_pure

    name = fmt.LOST_FOUND_NAME
    buf = bytearray(geo.block_size)
    header = fmt.PLAIN["DirPageHeader"].build(
        {"depth": 0, "reserved0": 0, "prefix": 0, "dir_ino": fmt.ROOT_INO, "next": 0}
    )
    buf[: len(header)] = header
    entry = fmt.PLAIN["DirEntryHeader"].build(
        {
            "ino": fmt.FIRST_INO,
            "hash": siphash24_pure(hash_seed, name),
            "name_len": len(name),
            "file_type": fmt.DT_DIR,
            "rec_len": fmt.dir_entry_rec_len(len(name)),
        }
    )
    at = fmt.DIR_PAGE_HEADER_SIZE
    buf[at : at + len(entry)] = entry
    buf[at + len(entry) : at + len(entry) + len(name)] = name
    return buf


def _group_head(geo: fmt.Geometry, group: int, static: bytes, dynamic: bytes = b"", lost_found: int = 0) -> bytearray:
    """Header block, block bitmap, counters and inode bitmap of ``group``, as one contiguous buffer."""
    bs = geo.block_size
    buf = bytearray((3 + geo.inode_bitmap_blocks) * bs)
    buf[0 : len(static)] = static
    if group == 0:
        buf[fmt.SB_DYNAMIC_OFFSET : fmt.SB_DYNAMIC_OFFSET + len(dynamic)] = dynamic
    buf[bs : 2 * bs] = block_bitmap(geo, group, lost_found)
    counters = group_counters(geo, group, lost_found)
    buf[2 * bs : 2 * bs + len(counters)] = counters
    buf[3 * bs :] = inode_bitmap(geo, group, lost_found)
    return buf


def _write_groups(dev: Device, geo: fmt.Geometry, static: bytes, progress: Callable[[int], None] | None) -> None:
    """Groups 1..n-1: one write each of the group's leading blocks, from a template whose group number is patched in.

    Every group but the last is identical apart from its number in the
    counters block, so the buffer is built once.  What remains is one
    ``pwrite`` per group (8192 for 1 TiB), nearly all of it kernel time
    allocating pages.  (A second writing thread does not help: writes to one
    file are serialised by the kernel.)
    """
    last = geo.group_count - 1
    if last >= 1:
        dev.pwrite(geo.group_start(last) * geo.block_size, _group_head(geo, last, static))
    _write_identical_groups(dev, geo, static, range(1, max(last, 1)), progress)
    if progress:
        progress(1 + (1 if last >= 1 else 0))  # + group 0, written last by the caller, and the last group


def _write_identical_groups(
    dev: Device, geo: fmt.Geometry, static: bytes, groups: range, progress: Callable[[int], None] | None = None
) -> None:
    """The leading blocks of ``groups`` (none of them the last group) from one template buffer."""
    if not groups:
        return
    bs = geo.block_size
    group_field = 2 * bs + fmt.field_offset(fmt.PLAIN["GroupCounters"], "group")
    template = _group_head(geo, groups.start, static)
    length = len(template)
    bpg_bytes = geo.blocks_per_group * bs
    pwrite, fd = os.pwrite, dev.fd
    direct = not dev.dax and dev.writable
    step = 0
    for g in groups:
        template[group_field : group_field + 8] = g.to_bytes(8, "little")
        offset = g * bpg_bytes
        if not direct or pwrite(fd, template, offset) != length:  # devdax, or a short write: the device's way
            dev.pwrite(offset, template)
        step += 1
        if progress and step == 256:
            progress(step)
            step = 0
    if progress and step:
        progress(step)


def wipe_foreign_signatures(dev: Device, geo: fmt.Geometry, signatures: list) -> list[str]:
    """Zero the magic bytes of old signatures that lie in blocks mkfs did not overwrite.

    Metadata blocks were written whole, so a magic there is already gone;
    a signature left in a data block (btrfs at 64 KiB on a tiny filesystem,
    an md superblock near the end) would make blkid and mount mistake the
    device for its old self.
    """
    wiped = []
    bs = geo.block_size
    for sig in signatures:
        if sig.is_nvfs or sig.length == 0:
            continue
        first, last = sig.offset // bs, (sig.offset + sig.length - 1) // bs
        if any(_written_by_mkfs(geo, b) for b in range(first, last + 1)):
            continue
        dev.pwrite(sig.offset, bytes(min(sig.length, dev.size - sig.offset)))
        wiped.append(str(sig))
    return wiped


def _written_by_mkfs(geo: fmt.Geometry, block: int) -> bool:
    """True for blocks mkfs writes whole: group metadata, journal and the backup block."""
    if block == geo.backup_block:
        return True
    group = geo.group_of_block(block)
    return group < geo.group_count and block < geo.first_data_block(group)
