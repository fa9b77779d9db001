"""The bulk verification of passes 1-5 over the fast-scan core (no per-inode Python).

Almost every filesystem fsck sees is consistent.  This module proves that
with the scan backend (compiled ``_fastscan`` or the pure reference):
``check_inode_groups`` reads each in-use inode once, window by window of
inode tables (fields, block maps claimed in one ownership bitmap, block
counts, link counts into a table); ``check_directories`` then walks the
directories window by window of pages, checking their slack and counting every
name against the link table at once, which ``unsettled_links`` closes;
``verify_arrays`` cross-checks the directories
alone (sizes, block counts, named once by their parent, no cycles, link
counts); bitmaps and counters are compared per group.  Only directories and a
few odd inodes are kept as records: memory grows with them, not with files.

It only ever answers "consistent" or "not proven": on the first doubt it
returns None and the checker runs the detailed passes, which find, explain
and repair.  So it must check at least everything the detailed passes check;
``tests/test_fsck_cases.py`` runs it on every damaged f_* image and requires
"not proven" each time.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from nvfs_tools import format as fmt
from nvfs_tools.check.image import views_device_map


class FastResult(NamedTuple):
    """What the detailed passes would have reported for a consistent filesystem."""

    files_used: int
    blocks_used: int
    stats: dict[int, dict[str, Any]]


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
    windows = _inode_windows(img, core)
    if windows is None:
        return None
    owned, inuse, table, found = windows
    dir_ino = found["dir_ino"]
    if not _reserved_ok(found["odd_ino"], found["odd_mode"], quota) or not len(dir_ino) or dir_ino[0] != fmt.ROOT_INO:
        return None
    if not _reserved_slots_ok(img, quota) or not _specials_and_links_ok(img, found["odd_ino"], found["odd_mode"]):
        return None
    stats[1] = {"seconds": time.perf_counter() - t0, "inodes": found["used"]}

    t0 = time.perf_counter()
    D = _walk_directory_windows(img, core, found, owned, table)
    if D is None or core.unsettled_links(table, inuse, n):
        return None
    # directories: block counts, sizes, named once by their parent, no cycles, link counts
    scan = {"ino": dir_ino, "mode": found["dir_mode"], "links": found["dir_links"], "blocks": found["dir_blocks"]}
    scan.update(size=found["dir_size"], dir_ino=dir_ino, dir_parent=found["dir_parent"])
    owned_by_walk = {"counts": found["dir_bcount"]}
    verdict, dirs_per_group = core.verify_arrays(view, geo, scan, owned_by_walk, D, fields=False, pages=False)
    if verdict != Mismatch.NONE or not _xattrs_ok(img, found):
        return None
    stats[2] = {"seconds": time.perf_counter() - t0, "inodes": len(dir_ino), "blocks": sum(D["counts"])}
    stats[3] = {"seconds": 0.0, "inodes": len(dir_ino)}
    stats[4] = {"seconds": 0.0, "inodes": found["used"]}

    # bitmaps and counters
    t0 = time.perf_counter()
    result = _bitmaps_ok(img, core, owned, inuse, dirs_per_group)
    if result is None:
        return None
    stats[5] = {"seconds": time.perf_counter() - t0, "blocks": geo.blocks_count}
    free_blocks, free_inodes = result
    return FastResult(n - free_inodes, geo.blocks_count - free_blocks, stats)


#: Inode-table or directory-page bytes read (then dropped from the mapping) at a time: bounds the
#: resident set (mapped pages of a tmpfs or DAX image count in it).
WINDOW_BYTES = 8 << 20
#: Threads per core call (0: one per CPU).  Each window's inode slots, and each run's directories,
#: are split between them; a thread costs ~0.1 ms to start, a window several ms of work.
THREADS = 0


def _inode_windows(img: Any, core: Any) -> tuple[Any, Any, Any, dict[str, Any]] | None:
    """The core's ``check_inode_groups`` window by window of inode-table groups: (owned, inuse, link
    table, records) or None.

    Each in-use inode is read once: its fields checked, its blocks claimed in ``owned`` (a block
    claimed twice, in one window or across windows, means "not proven") and its link count put in
    the table that the directory walk then counts names against.  Groups whose inode table is a hole
    of the image file (SEEK_DATA) hold only free inodes and are not read at all: cost grows with
    what is used, and a sparse image in tmpfs is not filled with zero pages by reading its holes.
    After each window its tables are dropped from the mapping (MADV_DONTNEED) so the resident set
    stays near one window.  Only directories, xattr blocks and the few "odd" inodes (reserved
    numbers, symbolic links, special files) are kept as records.
    """
    import mmap
    from array import array

    geo = img.geo
    view = img.dev.view
    n = geo.inodes_count
    owned = core.walk_blockmaps(view, geo, array("Q"), mark_metadata=False)["owned"]  # metadata: groups_match
    inuse = mmap.mmap(-1, (n + 7) // 8, flags=mmap.MAP_PRIVATE)
    table = mmap.mmap(-1, 4 * (n + 1), flags=mmap.MAP_PRIVATE)  # pages cost memory only where inodes are in use
    records: dict[str, Any] = {"used": 0}
    reader = _TableReader.open(img, core)
    release = views_device_map(img.dev)  # the core's threads then drop their shares of the tables themselves
    try:
        for g0, g1 in _windows(img):
            tables = reader.read(g0, g1) if reader is not None else None
            found = core.check_inode_groups(
                view, geo, (g0, g1), owned, inuse, table, tables=tables, threads=THREADS, release=release
            )
            if found is None:
                return None
            if tables is None:  # what is left: table pages shared by two threads' shares
                _drop(img, geo.inode_table_block(g0) * img.bs, (g1 - g0) * geo.blocks_per_group * img.bs)
            _collect(records, found)
    finally:
        if reader is not None:
            reader.close()
    if not records["used"]:
        return None
    return owned, inuse, table, records


def _collect(records: dict[str, Any], found: dict[str, Any]) -> None:
    from array import array

    records["used"] += found.pop("used")
    for key, values in found.items():
        records.setdefault(key, array(values.typecode)).extend(values)


#: How inode tables are read: "map" (the device mapping, pages dropped after each window), "pread"
#: (buffered reads into one reused buffer), "direct" (O_DIRECT reads into it: block devices only) or
#: "auto" (see _TableReader.open).
TABLE_READ = "auto"


class _TableReader:
    """Reads the inode tables of a window of groups into one reused, page-aligned buffer."""

    def __init__(self, img: Any, fd: int, own_fd: bool) -> None:
        import mmap

        geo = img.geo
        self.img = img
        self.fd = fd
        self.own_fd = own_fd
        self.table_bytes = geo.inode_table_blocks * img.bs
        per = max(1, WINDOW_BYTES // max(self.table_bytes, 1))
        self.buffer = mmap.mmap(-1, per * self.table_bytes)

    @classmethod
    def open(cls, img: Any, core: Any) -> _TableReader | None:
        """A reader, or None to read through the mapping: the pure backend (which would copy the whole
        device per window), devdax (no page cache to bypass), an unknown mode, or no way to open."""
        import os

        dev = img.dev
        kind, fd = getattr(dev, "kind", None), getattr(dev, "fd", -1)
        if not views_device_map(img.dev) or not isinstance(fd, int) or fd < 0:
            return None  # a shadow or overlay view (check/media.py, check/overlay.py): only it is the truth
        mode = TABLE_READ
        if mode == "auto":
            mode = "direct" if kind == "block" else "map"
        if mode == "map" or not core.__name__.endswith("_fastscan") or kind == "dax":
            return None
        if mode == "pread":
            return cls(img, dev.fd, False)
        if mode != "direct" or kind != "block":
            return None
        try:
            fd = os.open(dev.path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return None
        return cls(img, fd, True)

    def read(self, g0: int, g1: int) -> memoryview | None:
        """The tables of groups [g0, g1) back to back, or None (a short read: use the mapping)."""
        import os

        geo = self.img.geo
        size = self.table_bytes
        if (g1 - g0) * size > len(self.buffer):
            return None
        whole = memoryview(self.buffer)
        for g in range(g0, g1):
            at = geo.inode_table_block(g) * self.img.bs
            if at + size > self.img.dev.size:
                return None
            part = whole[(g - g0) * size : (g - g0 + 1) * size]
            done = 0
            while done < size:
                try:
                    got = os.preadv(self.fd, [part[done:]], at + done)
                except OSError:
                    return None
                if got <= 0:
                    return None
                done += got
        return whole[: (g1 - g0) * size]

    def close(self) -> None:
        import os

        if self.own_fd:
            os.close(self.fd)
        try:
            self.buffer.close()
        except BufferError:
            pass


def _walk_directory_windows(
    img: Any, core: Any, found: dict[str, Any], owned: Any, table: Any
) -> dict[str, Any] | None:
    """The core's ``check_directories`` (walk, page slack, names counted in the link table) over runs
    of directories of about WINDOW_BYTES of pages each, the mapping dropped after each run; pages
    shared across runs are caught through ``owned``.  Returns the directories' page counts and the
    entries that name directories, as verify_arrays takes them (every other entry is only counted)."""
    from array import array

    geo = img.geo
    view = img.dev.view
    dir_ino, sizes = found["dir_ino"], found["dir_size"]
    _advise(img, DIR_ADVICE)
    out: dict[str, Any] = {key: array("Q") for key in ("counts", "entry_ino", "entry_dir", "name_off")}
    out["name_len"] = array("H")
    release = views_device_map(img.dev)
    start = 0
    while start < len(dir_ino):
        end, total = start, 0
        while end < len(dir_ino) and (end == start or total + sizes[end] <= WINDOW_BYTES):
            total += sizes[end]
            end += 1
        D = core.check_directories(
            view, geo, img.hash_seed, dir_ino[start:end], owned, table, threads=THREADS, release=release
        )
        if D is None or (start == 0 and not _lost_found_ok(img, D)):
            return None
        span_start, span_end = D.pop("span")
        _drop(img, span_start, span_end - span_start)  # the pages and nodes this run claimed, not the device
        for key, values in D.items():
            out[key].extend(values)
        start = end
    out["file_type"] = array("B", bytes([fmt.DT_DIR]) * len(out["entry_ino"]))
    return out


#: madvise advice for the mapping while directories are walked ("random": no readahead).
DIR_ADVICE = "random"


def _advise(img: Any, advice: str) -> None:
    """On a block device, page faults read ahead (128 KiB by default): directory pages are scattered
    4 KiB blocks, so the walk would read many times their size through the block layer."""
    import mmap

    dev_map = getattr(img.dev, "map", None)
    if getattr(img.dev, "kind", None) != "block" or dev_map is None or advice != "random":
        return
    try:
        dev_map.madvise(mmap.MADV_RANDOM)
    except (OSError, ValueError):
        pass


def table_holes_question(geo: fmt.Geometry) -> tuple[range, int]:
    """(byte offsets of every group's inode table, bytes of one table): what _windows asks
    Image.holes, and what the runner has answered on a thread ahead of time (image.prefetch_holes)."""
    return geo.group_byte_offsets(geo.inode_table_block), geo.inode_table_blocks * geo.block_size


def _windows(img: Any) -> list[tuple[int, int]]:
    """Runs of groups whose inode tables hold data, each at most WINDOW_BYTES of table."""
    starts, table = table_holes_question(img.geo)
    per = max(1, WINDOW_BYTES // max(table, 1))
    out: list[tuple[int, int]] = []
    for g, hole in enumerate(img.holes(starts, table)):
        if hole:
            continue
        if out and out[-1][1] == g and g - out[-1][0] < per:
            out[-1] = (out[-1][0], g + 1)
        else:
            out.append((g, g + 1))
    return out


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


def _specials_and_links_ok(img: Any, odd_ino: Any, odd_mode: Any) -> bool:
    """Symbolic links and special files (the "odd" records of check_inode_groups: few in most trees,
    3,917 symbolic links in /usr/share)."""
    symlink_reason = None
    for number, mode in zip(odd_ino, odd_mode, strict=True):
        if mode & fmt.S_IFMT in (fmt.S_IFREG, fmt.S_IFDIR):
            continue
        if symlink_reason is None:
            from nvfs_tools.check.inode_rules import symlink_reason  # loaded only when there is one
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
    """Each xattr block as pass 1 judges it (inode_rules is loaded only when there is one)."""
    if not len(S["xattr_ino"]):
        return True
    from nvfs_tools.check.inode_rules import xattr_reason

    for number, block in zip(S["xattr_ino"], S["xattr_block"], strict=True):
        is_dir = img.inode(number).ftype == fmt.S_IFDIR
        if xattr_reason(img, block, is_dir) is not None:
            return False
    return True


def _lost_found_ok(img: Any, D: Any) -> bool:
    """The root names a directory lost+found (D: check_directories' entries naming directories; the
    root's come first: it is dir_ino[0])."""
    view = img.dev.view
    for holder, off, length in zip(D["entry_dir"], D["name_off"], D["name_len"], strict=True):
        if holder != fmt.ROOT_INO:
            break
        if bytes(view[off : off + length]) == fmt.LOST_FOUND_NAME:
            return True
    return False


def _bitmaps_ok(img: Any, core: Any, owned: Any, inuse: Any, dirs_per_group: Any) -> tuple[int, int] | None:
    """Every group's bitmaps and counters (pass5_bitmaps.groups_match), then the superblock totals;
    (free blocks, free inodes) or None."""
    from nvfs_tools.check.pass5_bitmaps import groups_match

    result = groups_match(img, core, owned, inuse, dirs_per_group)
    if result is None or (img.dyn_field("free_blocks"), img.dyn_field("free_inodes")) != result:
        return None
    return result
