"""Pass 5: block and inode bitmaps, group counters and superblock totals.

The expected block bitmap is the checker's ownership map (metadata areas plus
every block some inode kept); bits past the end of a short last group are 1.
The expected inode bitmap is the set of in-use inodes plus the reserved ones;
bits past ``inodes_per_group`` are 1.  Counters follow from those.
"""

from __future__ import annotations

import struct
from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.check.image import pread_fd

_GC = fmt.field_layout(fmt.PLAIN["GroupCounters"])
_MAX_RANGES = 8
_COUNTER_NAMES = ("group", "free_blocks", "free_inodes", "used_dirs")


def _counters_struct() -> tuple[struct.Struct, int]:
    """A Struct for the counter fields (group .. used_dirs) at once, and its offset in the block.

    Derived from the format's layout; gaps between fields (none today) are packed as zeros.
    """
    infos = sorted((_GC[name] for name in _COUNTER_NAMES), key=lambda info: info.offset)
    codes, pos = ["<"], infos[0].offset
    for info in infos:
        codes.append(f"{info.offset - pos}x" if info.offset > pos else "")
        codes.append({1: "B", 2: "H", 4: "I", 8: "Q"}[info.size])
        pos = info.offset + info.size
    if [info.name for info in infos] != list(_COUNTER_NAMES):
        raise AssertionError("group counters reordered: _COUNTER_NAMES must follow the layout")
    return struct.Struct("".join(codes)), infos[0].offset


_COUNTERS, _COUNTERS_AT = _counters_struct()


def expected_block_bitmap(chk: Any, group: int) -> bytes:
    geo = chk.image.geo
    bs = geo.block_size
    start = geo.group_start(group)
    chunk = bytearray(chk.owned[start >> 3 : (start >> 3) + bs])
    chunk.extend(b"\xff" * (bs - len(chunk)))
    valid = geo.group_end(group) - start
    _fill_from(chunk, valid)
    return bytes(chunk)


def _fill_from(bits: bytearray, first: int) -> None:
    """Set every bit from ``first`` to the end."""
    byte = first >> 3
    if byte >= len(bits):
        return
    if first & 7:
        bits[byte] |= (0xFF << (first & 7)) & 0xFF
        byte += 1
    bits[byte:] = b"\xff" * (len(bits) - byte)


def expected_inode_bitmap(chk: Any, group: int, in_use: list[int]) -> bytes:
    geo = chk.image.geo
    bits = bytearray(geo.inode_bitmap_blocks * geo.block_size)
    for index in in_use:
        bits[index >> 3] |= 1 << (index & 7)
    if group == 0:
        for ino in range(1, fmt.FIRST_INO):
            bits[(ino - 1) >> 3] |= 1 << ((ino - 1) & 7)
    _fill_from(bits, geo.inodes_per_group)
    return bytes(bits)


def diff_ranges(found: bytes, expected: bytes, base: int) -> str:
    """e2fsck-style difference list: ``+N`` should be in use, ``-(A--B)`` should be free."""
    parts: list[str] = []
    total = 0
    a = int.from_bytes(found, "little")
    b = int.from_bytes(expected, "little")
    x = a ^ b
    while x:
        low = (x & -x).bit_length() - 1
        should_be_used = b >> low & 1
        run = (x & (b if should_be_used else ~b)) >> low
        length = ((~run) & (run + 1)).bit_length() - 1  # trailing ones: the run's length
        first, last = base + low, base + low + length - 1
        sign = "+" if should_be_used else "-"
        if len(parts) < _MAX_RANGES:
            parts.append(f"{sign}{first}" if first == last else f"{sign}({first}--{last})")
        total += 1
        x &= ~(((1 << length) - 1) << low)
    if total > _MAX_RANGES:
        parts.append(f"... ({total - _MAX_RANGES} more ranges)")
    return " ".join(parts)


def _zeros(data: bytes, nbits: int) -> int:
    value = int.from_bytes(data, "little") & ((1 << nbits) - 1)
    return nbits - value.bit_count()


def run(chk: Any) -> None:
    img = chk.image
    geo = img.geo
    bs = img.bs
    stats = chk.start_pass(5, geo.group_count)
    from nvfs_tools.check.badinode import record_free_bad_blocks

    record_free_bad_blocks(chk)  # before the bitmaps are judged: they must show the blocks as used
    ipg = geo.inodes_per_group
    per_group: dict[int, list[int]] = {}
    dirs_per_group: dict[int, int] = {}
    for ino, info in chk.inodes.items():
        g, index = divmod(ino - 1, ipg)
        per_group.setdefault(g, []).append(index)
        if info.is_dir:
            dirs_per_group[g] = dirs_per_group.get(g, 0) + 1
    from nvfs_tools import scan

    popcount = scan.backend().popcount
    counters = _counters_template(bs)
    total_free_blocks = 0
    total_free_inodes = 0
    for g in range(geo.group_count):
        chk.checkpoint()
        want = expected_block_bitmap(chk, g)
        addr = geo.block_bitmap_block(g) * bs
        have = bytes(img.dev.view[addr : addr + bs])
        if have != want:
            diffs = diff_ranges(have, want, geo.group_start(g))
            chk.fix("BLOCK_BITMAP", {"group": g, "diffs": diffs}, lambda a=addr, w=want: _write(img, a, w))
        want_i = expected_inode_bitmap(chk, g, per_group.get(g, []))
        addr_i = geo.inode_bitmap_block(g) * bs
        have_i = bytes(img.dev.view[addr_i : addr_i + len(want_i)])
        if have_i != want_i:
            diffs = diff_ranges(have_i, want_i, g * ipg + 1)
            chk.fix("INODE_BITMAP", {"group": g, "diffs": diffs}, lambda a=addr_i, w=want_i: _write(img, a, w))
        free_blocks = _free_bits(want, geo.blocks_per_group, popcount)
        free_inodes = _free_bits(want_i, ipg, popcount)
        used_dirs = dirs_per_group.get(g, 0)
        total_free_blocks += free_blocks
        total_free_inodes += free_inodes
        _check_counters(chk, g, (free_blocks, free_inodes, used_dirs), counters)
        stats.blocks += geo.group_end(g) - geo.group_start(g)
        chk.progress(1)
    diffs = []
    found_b, found_i = img.dyn_field("free_blocks"), img.dyn_field("free_inodes")
    if found_b != total_free_blocks:
        diffs.append(f"free blocks {found_b}, counted {total_free_blocks}")
    if found_i != total_free_inodes:
        diffs.append(f"free inodes {found_i}, counted {total_free_inodes}")
    if diffs:

        def set_totals() -> None:
            img.set_dyn("free_blocks", total_free_blocks)
            img.set_dyn("free_inodes", total_free_inodes)
            img.barrier()

        chk.fix("SB_FREE_COUNTS", {"diffs": "; ".join(diffs)}, set_totals)
    stats.inodes = len(chk.inodes)
    chk.report.files_total = geo.inodes_count
    chk.report.files_used = geo.inodes_count - total_free_inodes
    chk.report.blocks_total = geo.blocks_count
    chk.report.blocks_used = geo.blocks_count - total_free_blocks
    chk.end_pass(stats)


def _write(img: Any, addr: int, data: bytes) -> None:
    img.write_bytes(addr, data)
    img.barrier()


def _free_bits(bits: bytes, nbits: int, popcount: Any) -> int:
    """Clear bits among the first ``nbits`` (the scan core's popcount: thousands of groups)."""
    return nbits - popcount(bits, 0, nbits // 8) if nbits % 8 == 0 else _zeros(bits, nbits)


def _check_counters(chk: Any, g: int, counted: tuple[int, int, int], template: bytearray) -> None:
    """Group ``g``'s counters block against (free blocks, free inodes, used dirs) as counted.

    ``template`` is a whole counters block (_counters_template) the values are packed into: no
    construct build per group.
    """
    img = chk.image
    addr = img.geo.counters_block(g) * img.bs
    raw = img.dev.read(addr, img.bs)
    _COUNTERS.pack_into(template, _COUNTERS_AT, g, *counted)
    if raw == template:
        return
    want = bytes(template)
    diffs = []
    for name in ("magic", "group", "free_blocks", "free_inodes", "used_dirs"):
        info = _GC[name]
        a = raw[info.offset : info.offset + info.size]
        b = want[info.offset : info.offset + info.size]
        if a != b:
            if name == "magic":
                diffs.append("bad magic")
            else:
                diffs.append(f"{name} {int.from_bytes(a, 'little')}, counted {int.from_bytes(b, 'little')}")
    if any(raw[fmt.PLAIN["GroupCounters"].sizeof() :]):
        diffs.append("unused bytes not zero")
    chk.fix("GROUP_COUNTERS", {"group": g, "diffs": ", ".join(diffs)}, lambda: _write(img, addr, want))


def _counters_template(bs: int) -> bytearray:
    """A whole counters block with the magic and zeros; the counter fields are packed in per group."""
    head = fmt.PLAIN["GroupCounters"].build(dict.fromkeys(_COUNTER_NAMES, 0))
    return bytearray(head + bytes(bs - len(head)))


#: Threads group_summaries_match splits the groups between (0: one per CPU).  Groups are independent,
#: and on a 1 TiB image each costs ~5 us, mostly in pread of its three header blocks.
THREADS = 0


def groups_match(img: Any, core: Any, owned: Any, inuse: Any, dirs_per_group: Any) -> tuple[int, int] | None:
    """Every group's bitmaps and counters are exactly what the ownership map and in-use set imply.

    ``owned`` holds one bit per block (``group_count * bs`` bytes) for the blocks files claimed (the
    scan core adds each group's metadata, backup and tail bits itself, so the map's pages of groups
    no file uses are never written), ``inuse`` one bit per inode, ``dirs_per_group`` the in-use
    directories of each group, ``core`` the scan backend.  Returns (free blocks, free inodes) summed
    over the groups, or None at the first difference (the detailed pass 5 then finds and explains
    it).  The core's group_summaries_match does the whole loop; each group's headers are read
    through image.pread_fd (pread: on a 1 TiB image the mapping would keep 8192 groups' header
    pages resident, 128 MiB).
    """
    dev = img.dev
    template = _counters_template(img.bs)
    view, geo, fd = dev.view, img.geo, pread_fd(dev)
    return core.group_summaries_match(view, geo, owned, inuse, dirs_per_group, template, fd=fd, threads=THREADS)


def counters_consistent(img: Any) -> str | None:
    """For the clean-flag shortcut: counters agree with the bitmaps and the totals (None) or why not.

    The scan core's group_counters_agree reads each group's bitmaps and counters (adjacent blocks)
    through image.pread_fd (pread: no page of the mapping kept) in one nogil loop, one thread per
    CPU: an empty 1 TiB device has 8192 groups.  A view that is no buffer (check/media.py's
    SafeView) goes through the pure reference, which slices it.
    """
    from nvfs_tools import scan

    dev, geo = img.dev, img.geo
    fd = pread_fd(dev)
    if fd >= 0 or isinstance(dev.view, memoryview):
        core = scan.backend()
    else:
        from nvfs_tools import scan_pure as core  # slices the view (its import costs ~50 ms: only then)
    found = core.group_counters_agree(dev.view, geo, _counters_template(img.bs), fd=fd, threads=THREADS)
    if found is None:
        return "group metadata is not where this check reads it"
    reason, g, value, total_b, total_i = found
    if reason != scan.CounterCheck.AGREE:
        why = {
            scan.CounterCheck.DAMAGED: "counters block damaged",
            scan.CounterCheck.OTHER_GROUP: f"counters block names group {value}",
            scan.CounterCheck.STRAY: "counters block has stray bytes",
            scan.CounterCheck.PAST_END: "block bitmap has free bits past the end of the group",
        }
        return f"group {g}: {why.get(reason, 'counters disagree with the bitmaps')}"
    if img.dyn_field("free_blocks") != total_b or img.dyn_field("free_inodes") != total_i:
        return "superblock totals disagree with the group counters"
    return None
