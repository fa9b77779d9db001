"""The bulk verification of passes 1-5 over the fast-scan core (no per-inode Python).

Almost every filesystem fsck sees is consistent.  This module proves that
with whole-filesystem array operations: the scan backend's ``scan_inodes``,
``walk_blockmaps``, ``walk_directories`` and ``link_counts`` (compiled
``_fastscan`` or the pure reference), then numpy comparisons of the arrays
they return (block counts, link counts, file types, bitmaps, counters).

It only ever answers "consistent" or "not proven": on the first doubt it
returns None and the checker runs the detailed passes, which find, explain
and repair.  So it must check at least everything the detailed passes check;
``tests/test_fsck_cases.py`` runs it on every damaged f_* image and requires
"not proven" each time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from nvfs_tools import format as fmt

_INODE = fmt.field_layout(fmt.Inode)
_XH = fmt.field_layout(fmt.XattrHeader)
_PAGE_FIELDS = fmt.field_layout(fmt.DirPageHeader)
_GC = fmt.field_layout(fmt.GroupCounters)
#: mode >> 12 -> directory entry file type (0 for invalid types).
_DT_BY_TYPE = bytes(fmt.MODE_TO_DT.get(t << 12, 0) for t in range(16))
# high byte of the little-endian mode: (mode >> 8); file type = high >> 4
_SPECIAL_OR_LINK = re.compile(rb"[\x10-\x2f\x60-\x6f\xa0-\xaf\xc0-\xcf]")


@dataclass
class FastResult:
    """What the detailed passes would have reported for a consistent filesystem."""

    files_used: int
    blocks_used: int
    stats: dict[int, dict[str, Any]] = field(default_factory=dict)


def verify(img: Any, quota: bool) -> FastResult | None:
    """Prove the filesystem consistent in bulk, or return None (then run the detailed passes)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is optional: the detailed passes still work
        return None
    from nvfs_tools import scan

    try:
        return _verify(img, quota, np, scan.backend())
    except (ValueError, IndexError, OverflowError, MemoryError):
        return None  # garbage the bulk path cannot express: let the detailed passes explain it


def _verify(img: Any, quota: bool, np: Any, core: Any) -> FastResult | None:
    import time

    geo = img.geo
    view = img.dev.view
    bs = img.bs
    n = geo.inodes_count
    stats: dict[int, dict[str, Any]] = {}
    t0 = time.perf_counter()
    S = core.scan_inodes(view, geo)
    if len(S["prob_code"]):
        return None
    ino = np.frombuffer(S["ino"], dtype=np.uint64)
    mode = np.frombuffer(S["mode"], dtype=np.uint16)
    links = np.frombuffer(S["links"], dtype=np.uint32)
    blocks = np.frombuffer(S["blocks"], dtype=np.uint64)
    size = np.frombuffer(S["size"], dtype=np.uint64)
    dir_ino = np.frombuffer(S["dir_ino"], dtype=np.uint64)
    dir_parent = np.frombuffer(S["dir_parent"], dtype=np.uint64)
    if not _reserved_ok(ino, mode, quota, np) or not len(dir_ino) or dir_ino[0] != fmt.ROOT_INO:
        return None
    if not _inode_columns_ok(img, ino, mode, np) or not _reserved_slots_ok(img, quota):
        return None
    if not _specials_and_links_ok(img, S, ino, mode):
        return None
    stats[1] = {"seconds": time.perf_counter() - t0, "inodes": len(ino)}

    t0 = time.perf_counter()
    B = core.walk_blockmaps(view, geo, S["ino"])
    if len(B["prob_code"]):
        return None
    D = core.walk_directories(view, geo, img.hash_seed, S["dir_ino"], B["owned"])
    if len(D["prob_code"]):
        return None
    # block counts: files and xattr blocks from the block-map walk, pages + nodes for directories
    expected = np.frombuffer(B["counts"], dtype=np.uint64).copy()
    dpos = np.searchsorted(ino, dir_ino)
    dcounts = np.frombuffer(D["counts"], dtype=np.uint64)
    expected[dpos] += dcounts
    if not np.array_equal(expected, blocks):
        return None
    if not np.array_equal(size[dpos], dcounts * np.uint64(bs)):
        return None
    if not _xattrs_ok(img, S):
        return None
    # entries: targets in use, file types right
    entry_ino = np.frombuffer(D["entry_ino"], dtype=np.uint64)
    dt_by_ino = np.zeros(n + 1, dtype=np.uint8)  # 0: not in use
    dt_by_ino[ino] = np.frombuffer(_DT_BY_TYPE, dtype=np.uint8)[mode >> 12]
    if len(entry_ino) and (int(entry_ino.max()) > n or int(entry_ino.min()) < 1):
        return None
    target_dt = dt_by_ino[entry_ino]
    if not np.array_equal(target_dt, np.frombuffer(D["file_type"], dtype=np.uint8)) or (target_dt == 0).any():
        return None
    if not _pages_clean(img, D, np):
        return None
    if (entry_ino < np.uint64(fmt.FIRST_INO)).any():  # reserved inodes and the root are never named
        return None
    stats[2] = {"seconds": time.perf_counter() - t0, "inodes": len(dir_ino), "blocks": int(dcounts.sum())}

    # connectivity: each directory but the root named once, by the directory its parent pointer names
    t0 = time.perf_counter()
    entry_dir = np.frombuffer(D["entry_dir"], dtype=np.uint64)
    is_dir_entry = target_dt == fmt.DT_DIR
    child_dirs = entry_ino[is_dir_entry].astype(np.int64)
    holders = entry_dir[is_dir_entry].astype(np.int64)
    if len(child_dirs) != len(dir_ino) - 1 or len(np.unique(child_dirs)) != len(child_dirs):
        return None
    parent_of = dict(zip(dir_ino.tolist(), dir_parent.tolist(), strict=True))
    if parent_of[fmt.ROOT_INO] != fmt.ROOT_INO:
        return None
    for child, holder in zip(child_dirs.tolist(), holders.tolist(), strict=True):
        if parent_of.get(child) != holder:
            return None
    if not _all_reach_root(parent_of):
        return None
    if not _lost_found_ok(img, D, entry_dir, entry_ino, is_dir_entry, dt_by_ino, np):
        return None
    stats[3] = {"seconds": time.perf_counter() - t0, "inodes": len(dir_ino)}

    # link counts: files = entries naming them, directories = 2 + subdirectories
    t0 = time.perf_counter()
    refs = np.frombuffer(core.link_counts(D["entry_ino"], n), dtype=np.uint32)
    want = refs[ino].astype(np.int64)
    subdirs = np.bincount(holders, minlength=n + 1) if len(holders) else np.zeros(n + 1, dtype=np.int64)
    want[dpos] = 2 + subdirs[dir_ino]
    check = (ino >= np.uint64(fmt.FIRST_INO)) | (ino == np.uint64(fmt.ROOT_INO))
    if not np.array_equal(want[check], links[check].astype(np.int64)):
        return None
    stats[4] = {"seconds": time.perf_counter() - t0, "inodes": len(ino)}

    # bitmaps and counters
    t0 = time.perf_counter()
    result = _bitmaps_ok(img, B["owned"], S["inuse"], dir_ino, np)
    if result is None:
        return None
    stats[5] = {"seconds": time.perf_counter() - t0, "blocks": geo.blocks_count}
    free_blocks, free_inodes = result
    return FastResult(n - free_inodes, geo.blocks_count - free_blocks, stats)


def _pages_clean(img: Any, D: Any, np: Any) -> bool:
    """Pages holding live entries: header reserved bytes zero, nothing after the last record.

    Conservative: dead records after the last live one count as residue here (the detailed
    passes then look closer).  Pages without any live entry are not examined.
    """
    if not len(D["name_off"]):
        return True
    bs = img.bs
    rec = np.frombuffer(D["name_off"], dtype=np.uint64) - np.uint64(fmt.DIR_ENTRY_HEADER_SIZE)
    nlen = np.frombuffer(D["name_len"], dtype=np.uint16).astype(np.uint64)
    align = np.uint64(fmt.DIR_ENTRY_ALIGN - 1)
    end = rec + ((np.uint64(fmt.DIR_ENTRY_HEADER_SIZE) + nlen + align) & ~align)
    page = rec // np.uint64(bs)
    # entries come page by page in walk order; a page met in two runs only makes this stricter
    starts = np.concatenate(([0], np.flatnonzero(page[1:] != page[:-1]) + 1))
    last_end = np.maximum.reduceat(end, starts)
    view = img.dev.view
    r0, r1 = (_PAGE_FIELDS["reserved0"], _PAGE_FIELDS["reserved"])
    zero0, zero1 = bytes(r0.size), bytes(r1.size)
    zeros = bytes(bs)
    for block, stop in zip(page[starts].tolist(), last_end.tolist(), strict=True):
        base = block * bs
        if view[base + r0.offset : base + r0.offset + r0.size] != zero0:
            return False
        if view[base + r1.offset : base + r1.offset + r1.size] != zero1:
            return False
        if view[stop : base + bs] != zeros[: base + bs - stop]:
            return False
    return True


def _reserved_ok(ino: Any, mode: Any, quota: bool, np: Any) -> bool:
    low = ino < np.uint64(fmt.FIRST_INO)
    for i, m in zip(ino[low].tolist(), mode[low].tolist(), strict=True):
        if i == fmt.ROOT_INO:
            if m & fmt.S_IFMT != fmt.S_IFDIR:
                return False
        elif not (quota and i in fmt.QUOTA_INODES.values() and m & fmt.S_IFMT == fmt.S_IFREG):
            return False
    return True


def _inode_columns_ok(img: Any, ino: Any, mode: Any, np: Any) -> bool:
    """Per-type fixed fields of every in-use inode, gathered as columns (spec/checking.md 6.3, 7.2, 7.3).

    ``next_orphan`` is 0 (the list is empty after pass 0); nanoseconds below 10**9; ``parent``,
    ``dir_bank`` and ``rdev`` 0 where the type has none; device numbers in range; directories
    use only ``block[0..1]``.
    """
    geo = img.geo
    ipg = geo.inodes_per_group
    words = fmt.INODE_SIZE // 8
    first = _INODE["atime_nsec"].offset // 8
    last = _INODE["dir_bank"].offset // 8 + 1
    col = {name: _INODE[name].offset // 8 - first for name in ("parent", "next_orphan", "rdev", "dir_bank")}
    blk = _INODE["block"].offset // 8
    bounds = np.searchsorted(ino, np.arange(geo.group_count + 1, dtype=np.uint64) * np.uint64(ipg) + np.uint64(1))
    ftype = mode >> np.uint16(12)
    for g in range(geo.group_count):
        lo, hi = int(bounds[g]), int(bounds[g + 1])
        if lo == hi:
            continue
        start = geo.inode_table_block(g) * img.bs
        table = np.frombuffer(img.dev.view, dtype=np.uint64, count=ipg * words, offset=start).reshape(ipg, words)
        rows = ino[lo:hi] - np.uint64(g * ipg + 1)
        cols = table[rows, first:last]
        t = ftype[lo:hi]
        is_dir = t == fmt.S_IFDIR >> 12
        is_dev = (t == fmt.S_IFCHR >> 12) | (t == fmt.S_IFBLK >> 12)
        if cols[:, col["next_orphan"]].any():
            return False
        if (cols[:, : col["parent"]].view(np.uint32) >= np.uint32(10**9)).any():
            return False
        if cols[~is_dir, col["parent"]].any() or cols[~is_dir, col["dir_bank"]].any():
            return False
        rdev = cols[:, col["rdev"]]
        if rdev[~is_dev].any():
            return False
        if ((rdev[is_dev] >> np.uint64(32)) >= np.uint64(1 << 12)).any():
            return False
        if ((rdev[is_dev] & np.uint64(0xFFFFFFFF)) >= np.uint64(1 << 20)).any():
            return False
        if is_dir.any() and table[rows[is_dir], blk + 2 : blk + fmt.N_BLOCK_POINTERS].any():
            return False
    return True


def _reserved_slots_ok(img: Any, quota: bool) -> bool:
    """Reserved inodes not in use are all zero (spec/checking.md 5)."""
    for number in range(1, fmt.FIRST_INO):
        if number == fmt.ROOT_INO or (quota and number in fmt.QUOTA_INODES.values()):
            continue
        off = img.geo.inode_offset(number)
        raw = img.dev.view[off : off + fmt.INODE_SIZE]
        if raw[0] == 0 and raw[1] == 0 and any(raw):
            return False
    return True


def _specials_and_links_ok(img: Any, S: Any, ino: Any, mode: Any) -> bool:
    """Symbolic links and special files, found by their mode's type nibble (few of them)."""
    from nvfs_tools.check.pass1_inodes import symlink_reason

    high = S["mode"].tobytes()[1::2]
    for match in _SPECIAL_OR_LINK.finditer(high):
        pos = match.start()
        number = int(ino[pos])
        inode = img.inode(number)
        ft = inode.ftype
        if ft == fmt.S_IFLNK:
            if symlink_reason(img, inode) is not None:
                return False
        else:
            if any(inode.block) or inode.size or inode.dir_bank:
                return False
            if ft in (fmt.S_IFIFO, fmt.S_IFSOCK) and inode.rdev:
                return False
    return True


def _xattrs_ok(img: Any, S: Any) -> bool:
    from nvfs_tools.check.pass1_inodes import xattr_reason

    for number, block in zip(S["xattr_ino"], S["xattr_block"], strict=True):
        is_dir = img.inode(number).ftype == fmt.S_IFDIR
        if xattr_reason(img, block, is_dir) is not None:
            return False
    return True


def _all_reach_root(parent_of: dict[int, int]) -> bool:
    good = {fmt.ROOT_INO}
    for start in parent_of:
        path = []
        cur = start
        while cur not in good:
            if cur in path or cur not in parent_of or len(path) > len(parent_of):
                return False
            path.append(cur)
            cur = parent_of[cur]
        good.update(path)
    return True


def _lost_found_ok(img: Any, D: Any, entry_dir: Any, entry_ino: Any, is_dir: Any, dt_by_ino: Any, np: Any) -> bool:
    root_dirs = np.nonzero(is_dir & (entry_dir == fmt.ROOT_INO))[0]
    name_off = D["name_off"]
    name_len = D["name_len"]
    view = img.dev.view
    for pos in root_dirs.tolist():
        off, length = name_off[pos], name_len[pos]
        if bytes(view[off : off + length]) == fmt.LOST_FOUND_NAME:
            return True
    return False


def _bitmaps_ok(img: Any, owned: Any, inuse: Any, dir_ino: Any, np: Any) -> tuple[int, int] | None:
    """Compare every group's bitmaps and counters, then the totals; (free blocks, free inodes) or None."""
    from nvfs_tools.check.pass5_bitmaps import _fill_from, _zeros

    geo = img.geo
    bs = img.bs
    ipg = geo.inodes_per_group
    owned_mv = memoryview(owned)
    inuse_mv = memoryview(inuse)
    dirs_per_group = np.bincount(
        ((dir_ino - np.uint64(1)) // np.uint64(ipg)).astype(np.int64), minlength=geo.group_count
    )
    total_b = total_i = 0
    ibm_bytes = geo.inode_bitmap_blocks * bs
    for g in range(geo.group_count):
        want = owned_mv[g * bs : (g + 1) * bs]
        baddr = geo.block_bitmap_block(g) * bs
        if img.dev.view[baddr : baddr + bs] != want:
            return None
        iwant = bytearray(inuse_mv[g * ipg // 8 : (g + 1) * ipg // 8])
        if g == 0:
            for i in range(1, fmt.FIRST_INO):
                iwant[(i - 1) >> 3] |= 1 << ((i - 1) & 7)
        iwant.extend(bytes(ibm_bytes - len(iwant)))
        _fill_from(iwant, ipg)
        iaddr = geo.inode_bitmap_block(g) * bs
        if img.dev.view[iaddr : iaddr + ibm_bytes] != iwant:
            return None
        free_b = _zeros(bytes(want), geo.blocks_per_group)
        free_i = _zeros(bytes(iwant), ipg)
        caddr = geo.counters_block(g) * bs
        counters = fmt.GroupCounters.build(
            {"group": g, "free_blocks": free_b, "free_inodes": free_i, "used_dirs": int(dirs_per_group[g])}
        )
        if img.dev.view[caddr : caddr + len(counters)] != counters or any(
            img.dev.view[caddr + len(counters) : caddr + bs]
        ):
            return None
        total_b += free_b
        total_i += free_i
    if img.dyn_field("free_blocks") != total_b or img.dyn_field("free_inodes") != total_i:
        return None
    return total_b, total_i
