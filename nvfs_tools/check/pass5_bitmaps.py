"""Pass 5: block and inode bitmaps, group counters and superblock totals.

The expected block bitmap is the checker's ownership map (metadata areas plus
every block some inode kept); bits past the end of a short last group are 1.
The expected inode bitmap is the set of in-use inodes plus the reserved ones;
bits past ``inodes_per_group`` are 1.  Counters follow from those.
"""

from __future__ import annotations

from typing import Any

from nvfs_tools import format as fmt

_GC = fmt.field_layout(fmt.GroupCounters)
_MAX_RANGES = 8


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
    ipg = geo.inodes_per_group
    per_group: dict[int, list[int]] = {}
    dirs_per_group: dict[int, int] = {}
    for ino, info in chk.inodes.items():
        g, index = divmod(ino - 1, ipg)
        per_group.setdefault(g, []).append(index)
        if info.is_dir:
            dirs_per_group[g] = dirs_per_group.get(g, 0) + 1
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
        free_blocks = _zeros(want, geo.blocks_per_group)
        free_inodes = _zeros(want_i, ipg)
        used_dirs = dirs_per_group.get(g, 0)
        total_free_blocks += free_blocks
        total_free_inodes += free_inodes
        _check_counters(chk, g, free_blocks, free_inodes, used_dirs)
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


def _check_counters(chk: Any, g: int, free_blocks: int, free_inodes: int, used_dirs: int) -> None:
    img = chk.image
    addr = img.geo.counters_block(g) * img.bs
    raw = img.dev.read(addr, img.bs)
    want = fmt.GroupCounters.build(
        {"group": g, "free_blocks": free_blocks, "free_inodes": free_inodes, "used_dirs": used_dirs}
    )
    want += bytes(img.bs - len(want))
    if raw == want:
        return
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
    if any(raw[fmt.GroupCounters.sizeof() :]):
        diffs.append("unused bytes not zero")
    chk.fix("GROUP_COUNTERS", {"group": g, "diffs": ", ".join(diffs)}, lambda: _write(img, addr, want))


def counters_consistent(img: Any) -> str | None:
    """For the clean-flag shortcut: counters agree with the bitmaps and the totals (None) or why not."""
    geo = img.geo
    bs = img.bs
    total_b = total_i = 0
    for g in range(geo.group_count):
        addr = geo.counters_block(g) * bs
        try:
            c = fmt.GroupCounters.parse(img.dev.read(addr, fmt.GroupCounters.sizeof()))
        except Exception:  # noqa: BLE001 - construct raises several types on bad magic
            return f"group {g}: counters block damaged"
        if c.group != g:
            return f"group {g}: counters block names group {c.group}"
        if any(img.dev.view[addr + fmt.GroupCounters.sizeof() : addr + bs]):
            return f"group {g}: counters block has stray bytes"
        baddr = geo.block_bitmap_block(g) * bs
        bmap = bytearray(img.dev.view[baddr : baddr + bs])
        valid = geo.group_end(g) - geo.group_start(g)
        if _zeros(bytes(bmap), geo.blocks_per_group) != _zeros(bytes(bmap), valid):
            return f"group {g}: block bitmap has free bits past the end of the group"
        free_b = _zeros(bytes(bmap), valid)
        iaddr = geo.inode_bitmap_block(g) * bs
        free_i = _zeros(img.dev.read(iaddr, geo.inode_bitmap_blocks * bs), geo.inodes_per_group)
        if c.free_blocks != free_b or c.free_inodes != free_i:
            return f"group {g}: counters disagree with the bitmaps"
        total_b += free_b
        total_i += free_i
    if img.dyn_field("free_blocks") != total_b or img.dyn_field("free_inodes") != total_i:
        return "superblock totals disagree with the group counters"
    return None
