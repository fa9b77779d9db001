"""Pass 0: the superblock (both halves, the backup and the group copies), the
microjournal and the orphan list.

The static part is trusted only when its magic, checksum, version, features
and geometry all hold and the device is big enough.  When the primary fails
and a copy (the backup in the last block, else a group copy) passes, the copy
is used, the user is told, and the primary is rewritten when repairing.
"""

from __future__ import annotations

import zlib
from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.check.image import Image, kind_name, pread_fd, span_reader
from nvfs_tools.errors import NotNvfsError, UnsupportedFeatureError

_STATIC = fmt.field_layout(fmt.PLAIN["SuperblockStatic"])
_RESERVED_SIZE = fmt.SB_STATIC_SIZE - 4 - sum(sub.sizeof() for sub in fmt.PLAIN["SuperblockStatic"].subcons[:-2])


class BadStatic(Exception):
    """A static superblock copy fails validation (the message says why)."""


def _u32(raw: bytes, name: str) -> int:
    info = _STATIC[name]
    return int.from_bytes(raw[info.offset : info.offset + info.size], "little")


def validate_static(raw: bytes, device_size: int) -> Any:
    """Parse and validate one static superblock copy; raise BadStatic with the reason."""
    if len(raw) < fmt.SB_STATIC_SIZE or raw[:8] != fmt.MAGIC:
        raise BadStatic("bad magic")
    stored = _u32(raw, "checksum")
    if stored != fmt.sb_static_checksum(raw):
        raise BadStatic("checksum mismatch")
    static = fmt.PLAIN["SuperblockStatic"].parse(raw)
    pad_start = fmt.PLAIN["SuperblockStatic"].sizeof() - 4 - _RESERVED_SIZE
    if any(raw[pad_start : fmt.SB_STATIC_SIZE - 4]):
        raise BadStatic("reserved bytes are not zero")
    if static.version != fmt.FORMAT_VERSION:
        raise BadStatic(f"unsupported format version {static.version}")
    unknown = static.feature_incompat & ~fmt.FEATURE_INCOMPAT_KNOWN
    if unknown:
        raise UnsupportedFeatureError(
            f"filesystem has unsupported incompatible features {unknown:#x}; refusing to check"
        )
    if not 12 <= static.log_block_size <= 20:
        raise BadStatic(f"bad block size 2^{static.log_block_size}")
    _check_geometry(static)
    if static.blocks_count * (1 << static.log_block_size) > device_size:
        raise NotNvfsError(
            f"the filesystem has {static.blocks_count} blocks but the device holds only "
            f"{device_size >> static.log_block_size}: wrong device or truncated image"
        )
    return static


def _check_geometry(static: Any) -> None:
    bs = 1 << static.log_block_size
    ipb = bs // fmt.INODE_SIZE
    checks = [
        (static.inode_size == fmt.INODE_SIZE, "inode size"),
        (static.blocks_per_group == bs * 8, "blocks per group"),
        (static.inodes_per_group > 0 and static.inodes_per_group % ipb == 0, "inodes per group"),
        (static.group_count >= 1, "group count"),
        (static.inodes_count == static.inodes_per_group * static.group_count, "inode count"),
        (static.inode_table_blocks * ipb == static.inodes_per_group, "inode table size"),
        (static.inode_bitmap_blocks == -(-static.inodes_per_group // (bs * 8)), "inode bitmap size"),
        (1 <= static.journal_slots <= 1024, "journal slots"),
        (static.journal_entries == fmt.JOURNAL_ENTRIES, "journal entries"),
        (static.journal_blocks == -(-static.journal_slots * fmt.JOURNAL_SLOT_SIZE // bs), "journal size"),
        (static.root_ino == fmt.ROOT_INO, "root inode"),
        (static.first_ino == fmt.FIRST_INO, "first inode"),
        (static.lost_found_ino == fmt.FIRST_INO, "lost+found inode"),
        (static.mkfs_time_nsec < 10**9, "mkfs time nanoseconds"),
        (static.hash_version == fmt.HASH_SIPHASH24, "hash version"),
        ((static.group_count - 1) * static.blocks_per_group < static.blocks_count, "group count vs size"),
    ]
    for ok, what in checks:
        if not ok:
            raise BadStatic(f"inconsistent geometry: {what}")
    geo = fmt.geometry_from_static(static)
    if static.journal_block != geo.journal_block:
        raise BadStatic("inconsistent geometry: journal block")
    try:
        made = fmt.compute_geometry(
            static.blocks_count * bs, bs, inode_count=static.inodes_count, journal_slots=static.journal_slots
        )
    except fmt.GeometryError:
        made = None
    if made != geo:
        raise BadStatic("geometry is not the one mkfs computes for this size")
    label = bytes(static.label)
    if b"\0" in label and any(label[label.index(b"\0") :]):
        raise BadStatic("label has bytes after its NUL")
    for g in range(static.group_count):
        if geo.first_data_block(g) >= geo.group_end(g):
            raise BadStatic(f"inconsistent geometry: group {g} has no room for data")
        if g == 64:  # a sample is enough to reject garbage; the rest follows from the formulas
            break


def backup_candidates(device_size: int, primary_raw: bytes) -> list[int]:
    """Byte offsets where a static copy may live, most likely first."""
    offsets: list[int] = []
    try:
        log = _u32(primary_raw, "log_block_size")
        count = int.from_bytes(primary_raw[_STATIC["blocks_count"].offset :][:8], "little")
        if 12 <= log <= 20 and 0 < count << log <= device_size:
            offsets.append((count - 1) << log)
    except (ValueError, IndexError):
        pass
    for log in range(12, 21):
        bs = 1 << log
        blocks = device_size // bs
        if blocks >= 2:
            offsets.append((blocks - 1) * bs)
    for log in range(12, 21):
        bs = 1 << log
        if bs * 8 * bs < device_size:
            offsets.append(bs * 8 * bs)  # first block of group 1
    seen: set[int] = set()
    return [o for o in offsets if not (o in seen or seen.add(o)) and o + fmt.SB_STATIC_SIZE <= device_size]


def find_backup(dev: Any, primary_raw: bytes) -> tuple[Any, bytes, int] | None:
    """The first valid static copy away from block 0: (parsed, raw, byte offset)."""
    for offset in backup_candidates(dev.size, primary_raw):
        raw = dev.read(offset, fmt.SB_STATIC_SIZE)
        try:
            static = validate_static(raw, dev.size)
        except BadStatic:
            continue
        except NotNvfsError:
            continue
        return static, raw, offset
    return None


def copy_offsets(geo: fmt.Geometry) -> list[int]:
    """Byte offsets of the static copies: the backup, then the header block of every group g >= 1."""
    return [geo.backup_block * geo.block_size, *geo.group_byte_offsets(geo.group_start, 1)]


def differing(dev: Any, offsets: list[int], expected: bytes) -> list[int]:
    """The offsets whose ``len(expected)`` bytes differ from ``expected``.

    Thousands of copies on a large device (8192 on 1 TiB): the scan core's differing_spans compares
    them all in one call (one thread per CPU), reading through image.pread_fd (pread: no page of the mapping is faulted
    in and kept resident).  A view that is no buffer (check/media.py's SafeView) is read span by
    span.
    """
    fd = pread_fd(dev)
    if fd < 0 and not isinstance(dev.view, memoryview):
        read = span_reader(dev)
        return [off for off in offsets if read(off, len(expected)) != expected]
    from nvfs_tools import scan

    return [offsets[i] for i in scan.backend().differing_spans(dev.view, offsets, expected, fd=fd, threads=0)]


#: load_superblock's comparison of every static copy block with the primary's, kept for pass 0 proper,
#: which asks the same question next (8192 preads on a 1 TiB device): (id of the device, id of its
#: view, the block compared with, the offsets that differ).  Set only by _copies_overrule, cleared by
#: every load_superblock and taken (once) by _differing_copies; nothing is written in between.
_copy_scan: tuple[int, int, bytes, list[int]] | None = None


def _copies_overrule(dev: Any, static: Any, primary_raw: bytes) -> tuple[Any, bytes, str, int] | None:
    """Two valid copies identical to each other but not to a valid primary win (spec/checking.md 1.7)."""
    global _copy_scan
    geo = fmt.geometry_from_static(static)
    copy_block = primary_raw + bytes(geo.block_size - fmt.SB_STATIC_SIZE)
    differ = differing(dev, copy_offsets(geo), copy_block)  # whole blocks: what pass 0 proper compares
    _copy_scan = (id(dev), id(dev.view), copy_block, differ)
    seen: dict[bytes, int] = {}
    for off in differ:
        raw = dev.read(off, fmt.SB_STATIC_SIZE)
        if raw == primary_raw:
            continue  # only its zero tail differs: pass 0 proper reports that
        try:
            copy = validate_static(raw, dev.size)
        except (BadStatic, NotNvfsError):
            continue
        if raw in seen:
            return copy, raw, "two identical copies disagree with it", seen[raw]
        seen[raw] = off
    return None


def _differing_copies(dev: Any, geo: fmt.Geometry, copy_block: bytes) -> list[int]:
    """differing(dev, copy_offsets(geo), copy_block), reusing load_superblock's answer when it is the
    same question about the same view."""
    global _copy_scan
    scan, _copy_scan = _copy_scan, None
    if scan is not None and scan[:3] == (id(dev), id(dev.view), copy_block):
        return scan[3]
    return differing(dev, copy_offsets(geo), copy_block)


def load_superblock(dev: Any, use_backup: bool) -> tuple[Any, bytes, str | None, int]:
    """Choose the static superblock to trust.

    Returns (parsed, raw, reason the primary was rejected or None, byte offset used).
    Raises NotNvfsError when nothing usable is found.
    """
    global _copy_scan
    _copy_scan = None
    primary_raw = dev.read(0, min(fmt.SB_STATIC_SIZE, dev.size))
    if use_backup:
        found = find_backup(dev, primary_raw)
        if found is None:
            raise NotNvfsError(f"{dev.path}: no valid backup superblock found")
        return found[0], found[1], "-b given", found[2]
    too_big: NotNvfsError | None = None
    try:
        static = validate_static(primary_raw, dev.size)
    except BadStatic as exc:
        reason = str(exc)
    except NotNvfsError as exc:  # geometry larger than the device: a copy may fit (spec/checking.md 1.5)
        reason, too_big = "the filesystem is larger than the device", exc
    else:
        overruled = _copies_overrule(dev, static, primary_raw)
        if overruled is None:
            return static, primary_raw, None, 0
        return overruled
    found = find_backup(dev, primary_raw)
    if found is None:
        if too_big is not None:
            raise too_big
        if primary_raw[:8] != fmt.MAGIC:
            raise NotNvfsError(f"{dev.path}: not an NVFS filesystem (bad magic, and no valid backup superblock)")
        raise NotNvfsError(f"{dev.path}: superblock is damaged ({reason}) and no valid backup superblock was found")
    return found[0], found[1], reason, found[2]


def run(chk: Any, primary_reason: str | None, source_offset: int, state: int) -> None:
    """Pass 0 proper (the image is open and a static superblock chosen)."""
    img: Image = chk.image
    geo = img.geo
    stats = chk.start_pass(0, 3)
    _static_copies(chk, img, primary_reason, source_offset)
    chk.progress(1)
    _dynamic(chk, img, state)
    _journal(chk, img)
    chk.progress(1)
    _orphans(chk, img)
    chk.progress(1)
    stats.blocks = 1 + geo.group_count + geo.journal_blocks
    chk.end_pass(stats)


def _static_copies(chk: Any, img: Image, primary_reason: str | None, source_offset: int) -> None:
    geo = img.geo
    raw = img.static_raw
    bs = img.bs
    if primary_reason is not None:
        chk.report.used_backup = True
        if primary_reason == "-b given":
            chk.note(f"Using the backup superblock at block {source_offset // bs} (-b).")
            if img.dev.read(0, fmt.SB_STATIC_SIZE) != raw:
                chk.fix(
                    "SB_PRIMARY_BAD",
                    {"reason": "differs from the backup", "block": source_offset // bs},
                    lambda: _write_static(img, 0),
                )
        else:
            chk.fix(
                "SB_PRIMARY_BAD",
                {"reason": primary_reason, "block": source_offset // bs},
                lambda: _write_static(img, 0),
            )
    backup_off = geo.backup_block * bs
    copy_block = raw + bytes(bs - fmt.SB_STATIC_SIZE)
    for off in _differing_copies(img.dev, geo, copy_block):
        if off == backup_off:
            reason = "bad magic" if img.dev.read(off, 8) != fmt.MAGIC else "contents differ"
            chk.fix(
                "SB_BACKUP_BAD", {"block": geo.backup_block, "reason": reason}, lambda: _write_static(img, backup_off)
            )
        else:
            block = off // bs
            chk.fix(
                "SB_GROUP_COPY_BAD",
                {"group": geo.group_of_block(block), "block": block},
                lambda off=off: _write_static(img, off),
            )
    if bs > 4096 and differing(img.dev, [4096], bytes(bs - 4096)):
        chk.fix(
            "RESERVED_NONZERO",
            {"what": "block 0 past its first 4096 bytes", "block": 0},
            lambda: (img.write_bytes(4096, bytes(bs - 4096)), img.barrier()),
        )


def _write_static(img: Image, offset: int) -> None:
    """A static copy: the 2048 bytes, and zeros for the rest of a copy block (not block 0's dynamic half)."""
    data = img.static_raw if offset == 0 else img.static_raw + bytes(img.bs - fmt.SB_STATIC_SIZE)
    img.write_bytes(offset, data)
    img.barrier()


def _dynamic(chk: Any, img: Image, state: int) -> None:
    """``state`` is the word as found, before this run's own CHECKING mark."""
    unknown = state & ~fmt.STATE_KNOWN
    if unknown:
        chk.fix(
            "SB_DYN_STATE",
            {"value": unknown},
            lambda: (img.set_dyn("state", img.dyn_field("state") & fmt.STATE_KNOWN), img.barrier()),
        )
        state &= fmt.STATE_KNOWN
    if state & fmt.STATE_CHECKING:
        chk.fix("SB_STATE_FLAGGED", {"what": "a repair was interrupted (CHECKING)"})
    elif state & fmt.STATE_ERRORS:
        both = " and also CLEAN" if state & fmt.STATE_CLEAN else ""
        chk.fix("SB_STATE_FLAGGED", {"what": f"errors were found and not repaired (ERRORS{both})"})
    info = fmt.field_layout(fmt.PLAIN["SuperblockDynamic"])["reserved"]
    off = fmt.SB_DYNAMIC_OFFSET + info.offset
    if any(img.dev.view[off : off + info.size]):
        chk.fix(
            "RESERVED_NONZERO",
            {"what": "dynamic superblock", "block": 0},
            lambda: (img.write_bytes(off, bytes(info.size)), img.barrier()),
        )


def _journal(chk: Any, img: Image) -> None:
    geo = img.geo
    base = geo.journal_block * img.bs
    limit = geo.blocks_count * img.bs
    entry = fmt.PLAIN["JournalEntry"].sizeof()
    hdr_reserved = fmt.field_layout(fmt.PLAIN["JournalSlotHeader"])["reserved"]
    slot_reserved = fmt.JOURNAL_SLOT_HEADER_SIZE + entry * fmt.JOURNAL_ENTRIES
    pending: list[tuple[int, int, int, int, list[tuple[int, int]]]] = []
    for slot in range(geo.journal_slots):
        off = base + slot * fmt.JOURNAL_SLOT_SIZE
        # reserved bytes are judged in every slot, pending or free: a slot this run discards or
        # replays becomes free, and must then pass the next run without a second repair
        hdr = img.dev.view[off + hdr_reserved.offset : off + hdr_reserved.offset + hdr_reserved.size]
        tail = img.dev.view[off + slot_reserved : off + fmt.JOURNAL_SLOT_SIZE]
        if any(hdr) or any(tail):

            def zero(off: int = off) -> None:
                img.write_bytes(off + hdr_reserved.offset, bytes(hdr_reserved.size))
                img.write_bytes(off + slot_reserved, bytes(fmt.JOURNAL_SLOT_SIZE - slot_reserved))
                img.barrier()

            chk.fix("RESERVED_NONZERO", {"what": f"microjournal slot {slot}", "block": off // img.bs}, zero)
        commit = img.u64(off)
        if commit == 0:
            continue
        count, seq = commit & 0xFF, commit >> 8
        hdr = fmt.PLAIN["JournalSlotHeader"].parse(img.dev.read(off, fmt.JOURNAL_SLOT_HEADER_SIZE))
        entries_off = off + fmt.JOURNAL_SLOT_HEADER_SIZE
        reason = None
        stores: list[tuple[int, int]] = []
        if not 1 <= count <= fmt.JOURNAL_ENTRIES:
            reason = f"entry count {count}"
        else:
            body = img.dev.read(entries_off, count * entry)
            if zlib.crc32(body) & 0xFFFFFFFF != hdr.checksum:
                reason = "checksum mismatch (uncommitted or torn)"
            else:
                for i in range(count):
                    addr = int.from_bytes(body[i * entry : i * entry + 8], "little")
                    value = int.from_bytes(body[i * entry + 8 : i * entry + 16], "little")
                    if addr % 8 or addr + 8 > limit or addr < fmt.SB_DYNAMIC_OFFSET:
                        reason = f"entry {i} stores to bad address {addr:#x}"
                        break
                    stores.append((addr, value))
        if reason is None:
            pending.append((seq, slot, off, count, stores))
        else:

            def discard(off: int = off) -> None:
                img.store(off, 0)
                img.barrier()

            chk.fix("JOURNAL_DISCARD", {"slot": slot, "reason": reason}, discard)
    for seq, slot, off, count, stores in sorted(pending):  # replayed in transaction order

        def replay(off: int = off, stores: list[tuple[int, int]] = stores) -> None:
            for addr, value in stores:
                img.store(addr, value)
            img.barrier()
            img.store(off, 0)
            img.barrier()

        chk.fix("JOURNAL_REPLAY", {"slot": slot, "seq": seq, "count": count}, replay)
    if pending and not chk.writable:
        _replay_in_memory(chk, img, sorted(pending))
    end = base + geo.journal_slots * fmt.JOURNAL_SLOT_SIZE
    stop = (geo.journal_block + geo.journal_blocks) * img.bs
    if end < stop and any(img.dev.view[end:stop]):
        chk.fix(
            "RESERVED_NONZERO",
            {"what": "microjournal space past the last slot", "block": end // img.bs},
            lambda: (img.write_bytes(end, bytes(stop - end)), img.barrier()),
        )


def _replay_in_memory(chk: Any, img: Image, pending: list[tuple[int, int, int, int, list[tuple[int, int]]]]) -> None:
    """``fsck -n``: the later passes judge the filesystem as the replay leaves it, the device untouched (3.2).

    The pending transactions are applied, in order, to a private copy of the pages they store to
    (check/overlay.py), their commit words cleared there too; the JOURNAL_REPLAY problems stay unfixed
    (exit 4).
    """
    from nvfs_tools.check.overlay import ReplayOverlay

    words = [off for _, _, off, _, _ in pending] + [addr for *_, stores in pending for addr, _ in stores]
    overlay = ReplayOverlay.over(img.dev, words)
    if overlay is None:
        chk.note("the pending journal transactions could not be applied in memory: judging the device as it is")
        return
    for _, _, off, _, stores in pending:
        for addr, value in stores:
            overlay.store(addr, value)
        overlay.store(off, 0)
    img.dev = overlay
    chk.note("the later passes judge the filesystem as replaying the journal leaves it (in memory only, -n)")


def _named_inodes(img: Image) -> set[int]:
    """Every inode some live directory entry names (only needed when the orphan list is not empty)."""
    from nvfs_tools.check.blockmap import bad_block_reason
    from nvfs_tools.check.dirtree import scan_directory

    geo = img.geo
    named: set[int] = set()
    ipg = geo.inodes_per_group
    for g in range(geo.group_count):
        start = geo.inode_table_block(g) * img.bs
        if img.is_hole(start, ipg * fmt.INODE_SIZE):  # never written: only free inodes
            continue
        modes = img.dev.view[start : start + ipg * fmt.INODE_SIZE].cast("H")[:: fmt.INODE_SIZE // 2]
        for index, mode in enumerate(modes):
            if mode & fmt.S_IFMT == fmt.S_IFDIR:
                inode = img.inode(g * ipg + index + 1)
                bank = inode.dir_bank if inode.dir_bank in (0, 1) else 0
                scan = scan_directory(img, inode.ino, inode.block[bank], lambda b: bad_block_reason(geo, b))
                named.update(e.ino for e in scan.entries)
    return named


def _orphans(chk: Any, img: Image) -> None:
    """The orphan list (spec/checking.md 6): complete interrupted deletes, keep inodes still named."""
    geo = img.geo
    ino = img.dyn_field("orphan_head")
    if not ino:
        return
    from nvfs_tools.check.blockmap import owned_blocks_simple  # only with orphans (import cost)

    named = _named_inodes(img)
    prev: int | None = None
    seen: set[int] = set()
    while ino:
        if not fmt.FIRST_INO <= ino <= geo.inodes_count or ino in seen:
            reason = "loop" if ino in seen else "inode number out of range"

            def cut(prev: int | None = prev) -> None:
                if prev is None:
                    img.set_dyn("orphan_head", 0)
                else:
                    img.set_inode(prev, next_orphan=0)
                img.barrier()

            chk.fix("SB_ORPHAN_HEAD", {"reason": reason, "ino": ino}, cut)
            return
        seen.add(ino)
        inode = img.inode(ino)
        nxt = inode.next_orphan
        kind = kind_name(inode.mode) if inode.mode else "already freed"
        details = {"ino": ino, "kind": kind, "size": inode.size}
        if inode.mode and ino in named:

            def keep(ino: int = ino, nxt: int = nxt) -> None:
                img.set_inode(ino, next_orphan=0)
                img.barrier()
                img.set_dyn("orphan_head", nxt)
                img.barrier()

            done = chk.fix("ORPHAN_NAMED", details, keep)
        else:

            def complete(ino: int = ino, inode: Any = inode, nxt: int = nxt) -> None:
                if inode.mode:
                    for block in owned_blocks_simple(img, inode):
                        if img.set_block_bit(block, False):
                            img.add_counter(geo.group_of_block(block), "free_blocks", 1)
                            img.add_dyn("free_blocks", 1)
                    if inode.ftype == fmt.S_IFDIR:
                        img.add_counter(geo.group_of_inode(ino), "used_dirs", -1)
                    img.barrier()
                    img.clear_inode(ino)
                    if img.set_inode_bit(ino, False):
                        img.add_counter(geo.group_of_inode(ino), "free_inodes", 1)
                        img.add_dyn("free_inodes", 1)
                else:
                    img.set_inode(ino, next_orphan=0)
                img.barrier()
                img.set_dyn("orphan_head", nxt)
                img.barrier()

            done = chk.fix("ORPHAN_DELETE", details, complete)
            if done or not chk.writable:
                chk.orphans_cleared.add(ino)
        chk.orphans_listed.add(ino)
        prev = None if done else ino
        ino = nxt
