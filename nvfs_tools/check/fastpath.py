"""The bulk verification of passes 1-5 over the fast-scan core (no per-inode Python).

Almost every filesystem fsck sees is consistent.  This module proves that
with whole-filesystem array operations: the scan backend's ``scan_inodes``,
``walk_blockmaps``, ``walk_directories`` and ``link_counts`` (compiled
``_fastscan`` or the pure reference), then the core's ``verify_arrays``
cross-checks of the arrays they return (block counts, directory sizes,
per-type fields, file types, pages, names, link counts) and bitmap and
counter comparisons per group.

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
    from nvfs_tools import scan

    try:
        return _verify(img, quota, scan.backend())
    except (ValueError, IndexError, KeyError, OverflowError, MemoryError):
        return None  # garbage the bulk path cannot express: let the detailed passes explain it


def _verify(img: Any, quota: bool, core: Any) -> FastResult | None:
    import time

    from nvfs_tools.scan import Mismatch

    geo = img.geo
    view = img.dev.view
    n = geo.inodes_count
    stats: dict[int, dict[str, Any]] = {}
    t0 = time.perf_counter()
    windows = _scan_windows(img, core)
    if windows is None:
        return None
    S, B = windows
    dir_ino = S["dir_ino"]
    if not _reserved_ok(S["ino"], S["mode"], quota) or not len(dir_ino) or dir_ino[0] != fmt.ROOT_INO:
        return None
    if not _reserved_slots_ok(img, quota) or not _specials_and_links_ok(img, S):
        return None
    stats[1] = {"seconds": time.perf_counter() - t0, "inodes": len(S["ino"])}

    t0 = time.perf_counter()
    D = _walk_directory_windows(img, core, S, B["owned"])
    if D is None:
        return None
    # block counts, directory sizes, per-type fields, entries, pages, names, cycles, link counts
    verdict, dirs_per_group = core.verify_arrays(view, geo, S, B, D, fields=False, pages=False)
    if verdict != Mismatch.NONE or not _xattrs_ok(img, S) or not _lost_found_ok(img, D):
        return None
    stats[2] = {"seconds": time.perf_counter() - t0, "inodes": len(dir_ino), "blocks": sum(D["counts"])}
    stats[3] = {"seconds": 0.0, "inodes": len(dir_ino)}
    stats[4] = {"seconds": 0.0, "inodes": len(S["ino"])}

    # bitmaps and counters
    t0 = time.perf_counter()
    result = _bitmaps_ok(img, core, B["owned"], S["inuse"], dirs_per_group)
    if result is None:
        return None
    stats[5] = {"seconds": time.perf_counter() - t0, "blocks": geo.blocks_count}
    free_blocks, free_inodes = result
    return FastResult(n - free_inodes, geo.blocks_count - free_blocks, stats)


#: Inode-table or directory-page bytes read (then dropped from the mapping) at a time: bounds the
#: resident set.  Inode windows are at least as large as the block bitmap, which each window's
#: block-map walk builds and merges whole (so a 1 TiB device is not walked in 8 MiB steps).
WINDOW_BYTES = 8 << 20
#: Columns of scan_inodes the fast path keeps (flags, dir_bank and the problem arrays are only tested).
_KEEP = ("ino", "mode", "links", "size", "blocks", "dir_ino", "dir_parent", "xattr_ino", "xattr_block")


def _scan_windows(img: Any, core: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """scan_inodes + per-type field checks + walk_blockmaps, window by window of inode-table groups.

    Groups whose inode table is a hole of the image file (SEEK_DATA) hold only free inodes and are
    not read at all: cost grows with what is used, and a sparse image in tmpfs is not filled with
    zero pages by reading its holes.  After each window its tables are dropped from the mapping
    (MADV_DONTNEED) so the resident set stays near one window.  A block claimed in two windows,
    like any scan problem, means "not proven".
    """
    from array import array

    geo = img.geo
    view = img.dev.view
    owned = core.walk_blockmaps(view, geo, array("Q"), mark_metadata=True)["owned"]
    inuse = None
    cols: dict[str, Any] = {}
    counts = array("Q")
    for g0, g1 in _windows(img):
        S = core.scan_inodes(view, geo, groups=(g0, g1))
        if len(S["prob_code"]) or core.check_inode_fields(view, geo, S["ino"], S["mode"]) >= 0:
            return None
        B = core.walk_blockmaps(view, geo, S["ino"], mark_metadata=False)
        if len(B["prob_code"]) or core.merge_bits(owned, B["owned"], 0, len(owned)):
            return None
        _drop(img, geo.inode_table_block(g0) * img.bs, (g1 - g0) * geo.blocks_per_group * img.bs)
        if inuse is None:
            inuse = S["inuse"]
        else:
            core.merge_bits(inuse, S["inuse"], 0, len(inuse))
        for key in _KEEP:
            cols.setdefault(key, array(S[key].typecode)).extend(S[key])
        counts.extend(B["counts"])
    if inuse is None:
        return None
    cols["inuse"] = inuse
    return cols, {"owned": owned, "counts": counts}


#: Columns of walk_directories the fast path keeps (entry_hash is only tested).
_KEEP_ENTRIES = ("entry_dir", "entry_ino", "name_off", "name_len", "file_type", "counts")


def _walk_directory_windows(img: Any, core: Any, S: dict[str, Any], owned: Any) -> dict[str, Any] | None:
    """walk_directories + pages_clean over runs of directories of about WINDOW_BYTES of pages each,
    the mapping dropped after each run; pages shared across runs are caught through ``owned``."""
    from array import array

    geo = img.geo
    view = img.dev.view
    dir_ino = S["dir_ino"]
    sizes = _dir_sizes(S)
    out: dict[str, Any] = {key: None for key in _KEEP_ENTRIES}
    start = 0
    while start < len(dir_ino) or start == 0:
        end, total = start, 0
        while end < len(dir_ino) and (end == start or total + sizes[end] <= WINDOW_BYTES):
            total += sizes[end]
            end += 1
        D = core.walk_directories(view, geo, img.hash_seed, dir_ino[start:end], owned)
        if len(D["prob_code"]) or not core.pages_clean(view, geo, D["name_off"], D["name_len"]):
            return None
        _drop(img, 0, len(view))
        for key in _KEEP_ENTRIES:
            if out[key] is None:
                out[key] = D[key]
            else:
                out[key].extend(D[key])
        start = end
        if end >= len(dir_ino):
            break
    return {key: value if value is not None else array("Q") for key, value in out.items()}


def _dir_sizes(S: dict[str, Any]) -> list[int]:
    """Byte size of each directory of S["dir_ino"] (a window bound only: the checks come later)."""
    from bisect import bisect_left

    ino, size = S["ino"], S["size"]
    out = []
    for d in S["dir_ino"]:
        p = bisect_left(ino, d)
        out.append(size[p] if p < len(ino) and ino[p] == d else 0)
    return out


def _windows(img: Any) -> list[tuple[int, int]]:
    """Runs of groups whose inode tables hold data, each at most WINDOW_BYTES of table."""
    geo = img.geo
    table = geo.inode_table_blocks * img.bs
    per = max(1, max(WINDOW_BYTES, geo.group_count * img.bs) // max(table, 1))
    out: list[tuple[int, int]] = []
    for g in range(geo.group_count):
        if not _has_data(img, geo.inode_table_block(g) * img.bs, table):
            continue
        if out and out[-1][1] == g and g - out[-1][0] < per:
            out[-1] = (out[-1][0], g + 1)
        else:
            out.append((g, g + 1))
    return out


def _has_data(img: Any, start: int, length: int) -> bool:
    """False only when [start, start+length) is certainly a hole of the image file (reads as zeros)."""
    import os

    fd = getattr(img.dev, "fd", -1)
    if not isinstance(fd, int) or fd < 0:
        return True
    try:
        return os.lseek(fd, start, os.SEEK_DATA) < start + length
    except OSError as exc:  # ENXIO: no data at or after start; EINVAL: not supported
        import errno

        return exc.errno != errno.ENXIO


def _drop(img: Any, start: int, length: int) -> None:
    """Release mapped pages of [start, start+length) from this process (the file keeps them)."""
    import mmap

    dev_map = getattr(img.dev, "map", None)
    if dev_map is None or not hasattr(dev_map, "madvise"):
        return
    page = mmap.PAGESIZE
    lo = start - start % page
    hi = min(len(dev_map), start + length)
    if hi > lo:
        try:
            dev_map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (OSError, ValueError):
            pass


def _reserved_ok(ino: Any, mode: Any, quota: bool) -> bool:
    """In-use reserved inodes: the root (a directory) and, with quota, the quota files."""
    for i, m in zip(ino, mode, strict=False):
        if i >= fmt.FIRST_INO:
            break
        if i == fmt.ROOT_INO:
            if m & fmt.S_IFMT != fmt.S_IFDIR:
                return False
        elif not (quota and i in fmt.QUOTA_INODES.values() and m & fmt.S_IFMT == fmt.S_IFREG):
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


def _specials_and_links_ok(img: Any, S: Any) -> bool:
    """Symbolic links and special files, found by their mode's type nibble (few of them)."""
    from nvfs_tools.check.pass1_inodes import symlink_reason

    high = S["mode"].tobytes()[1::2]
    for match in _SPECIAL_OR_LINK.finditer(high):
        pos = match.start()
        number = S["ino"][pos]
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


def _lost_found_ok(img: Any, D: Any) -> bool:
    """The root names a directory lost+found (the root's entries come first: it is dir_ino[0])."""
    view = img.dev.view
    entry_dir, file_type, name_off, name_len = D["entry_dir"], D["file_type"], D["name_off"], D["name_len"]
    for k in range(len(entry_dir)):
        if entry_dir[k] != fmt.ROOT_INO:
            break
        off, length = name_off[k], name_len[k]
        if file_type[k] == fmt.DT_DIR and bytes(view[off : off + length]) == fmt.LOST_FOUND_NAME:
            return True
    return False


def _bitmaps_ok(img: Any, core: Any, owned: Any, inuse: Any, dirs_per_group: Any) -> tuple[int, int] | None:
    """Every group's bitmaps and counters (pass5_bitmaps.groups_match), then the superblock totals;
    (free blocks, free inodes) or None."""
    from nvfs_tools.check.pass5_bitmaps import groups_match

    result = groups_match(img, core.popcount, owned, inuse, dirs_per_group)
    if result is None or (img.dyn_field("free_blocks"), img.dyn_field("free_inodes")) != result:
        return None
    return result
