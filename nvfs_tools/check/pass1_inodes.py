"""Pass 1: every in-use inode, its block map and its blocks; then shared blocks (1B-1D).

Builds the checker's block-ownership bitmap (metadata areas pre-set) and the
table of in-use inodes the later passes work from.  A block claimed twice is
resolved like e2fsck's passes 1B-1D: every owner is listed with its path, the
first owner keeps the block and every other owner gets its own copy.
"""

from __future__ import annotations

from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.check import blockmap as bm
from nvfs_tools.check.dirtree import DirScan, scan_directory
from nvfs_tools.check.image import Image, kind_name
from nvfs_tools.check.inode_rules import symlink_reason, xattr_reason


class InodeInfo:
    """What later passes need about one in-use inode."""

    __slots__ = ("ino", "mode", "links", "size", "parent", "nblocks", "dirscan", "xattr")

    def __init__(self, ino: int, mode: int, links: int, size: int, parent: int) -> None:
        self.ino = ino
        self.mode = mode
        self.links = links
        self.size = size
        self.parent = parent
        self.nblocks = 0
        self.dirscan: DirScan | None = None
        self.xattr = 0

    @property
    def ftype(self) -> int:
        return self.mode & fmt.S_IFMT

    @property
    def is_dir(self) -> bool:
        return self.mode & fmt.S_IFMT == fmt.S_IFDIR


def build_metadata_map(geo: fmt.Geometry) -> bytearray:
    """Ownership bitmap with every block no file may own already set."""
    owned = bytearray((geo.blocks_count + 7) // 8)
    for g in range(geo.group_count):
        _set_range(owned, geo.group_start(g), geo.first_data_block(g))
    end = geo.group_end(geo.group_count - 1)
    _set_range(owned, end, geo.blocks_count)
    _set_range(owned, geo.backup_block, geo.blocks_count)
    return owned


def _set_range(bits: bytearray, start: int, end: int) -> None:
    block = start
    while block < end and block & 7:
        bits[block >> 3] |= 1 << (block & 7)
        block += 1
    whole = (end - block) >> 3
    if whole > 0:
        bits[block >> 3 : (block >> 3) + whole] = b"\xff" * whole
        block += whole * 8
    while block < end:
        bits[block >> 3] |= 1 << (block & 7)
        block += 1


class Pass1:
    def __init__(self, chk: Any) -> None:
        self.chk = chk
        self.img: Image = chk.image
        self.geo = self.img.geo
        self.owned = chk.owned
        self.dup_blocks: set[int] = set()
        self.extra_claims: dict[int, int] = {}  # claims of a block beyond its first (so a claim can be undone)
        self.deferred: list[tuple[Any, InodeInfo, list[int], set[int]]] = []
        self.dropped: set[int] = set()  # addresses of pointers rejected by the ownership rule (see finish_deferred)
        self.quota = bool(self.img.static.feature_ro_compat & fmt.FEATURE_RO_COMPAT_QUOTA)
        self.blocks_seen = 0
        self._zero_block = bytes(self.img.bs)
        self._namer: Any = None

    # -- ownership ------------------------------------------------------------------------------
    def claim(self, block: int) -> None:
        byte, bit = block >> 3, 1 << (block & 7)
        if self.owned[byte] & bit:
            self.dup_blocks.add(block)
            self.extra_claims[block] = self.extra_claims.get(block, 0) + 1
        else:
            self.owned[byte] |= bit
        self.blocks_seen += 1

    def unclaim(self, block: int) -> None:
        """Undo one :meth:`claim` of ``block``."""
        extra = self.extra_claims.get(block, 0)
        if extra > 1:
            self.extra_claims[block] = extra - 1
        elif extra == 1:
            del self.extra_claims[block]
            self.dup_blocks.discard(block)
        else:
            self.owned[block >> 3] &= ~(1 << (block & 7)) & 0xFF
        self.blocks_seen -= 1

    def is_owned(self, block: int) -> bool:
        return bool(self.owned[block >> 3] >> (block & 7) & 1)

    # -- the pass -------------------------------------------------------------------------------
    def run(self) -> None:
        chk, geo, img = self.chk, self.geo, self.img
        stats = chk.start_pass(1, geo.group_count)
        ipg = geo.inodes_per_group
        self.check_reserved_slots()
        for g in range(geo.group_count):
            start = geo.inode_table_block(g) * img.bs
            if img.is_hole(start, ipg * fmt.INODE_SIZE):  # never written: only free inodes
                chk.progress(1)
                continue
            table = img.dev.view[start : start + ipg * fmt.INODE_SIZE]
            modes = table.cast("H")[:: fmt.INODE_SIZE // 2]
            base = g * ipg + 1
            for index, mode in enumerate(modes):
                if mode:
                    ino = base + index
                    if ino in chk.orphans_cleared:
                        continue
                    self.check_inode(ino)
                    stats.inodes += 1
            chk.progress(1)
        self.finish_deferred()
        stats.blocks = self.blocks_seen
        chk.dropped_ptrs = self.dropped
        chk.shared_blocks = set(self.dup_blocks)
        if self.dup_blocks:
            self.resolve_dups()
        self.check_badblocks_size()
        stats.extra["shared_blocks"] = len(self.dup_blocks)
        chk.end_pass(stats)

    def check_inode(self, ino: int) -> None:
        chk, img = self.chk, self.img
        inode = img.inode(ino)
        ft = inode.ftype
        if ino < fmt.FIRST_INO and ino != fmt.ROOT_INO:
            quota_file = self.quota and ino in fmt.QUOTA_INODES.values()
            if not ((quota_file or ino == fmt.BADBLOCKS_INO) and ft == fmt.S_IFREG):
                if not inode.mode:
                    return  # a reserved inode with leftovers: see check_reserved_slots
                chk.fix("INODE_RESERVED", {"ino": ino, "mode": inode.mode}, lambda: img.clear_inode(ino))
                return
        if ino == fmt.ROOT_INO and ft != fmt.S_IFDIR:
            chk.fix(
                "ROOT_BAD",
                {"ino": ino, "reason": f"not a directory (mode {inode.mode:#o})"},
                lambda: img.clear_inode(ino),
            )
            return
        if ft not in fmt.VALID_FILE_TYPES:
            chk.fix("INODE_BAD_MODE", {"ino": ino, "mode": inode.mode}, lambda: img.clear_inode(ino))
            return
        self.check_flags(inode)
        self.check_fields(inode)
        if inode.next_orphan and not (ino in chk.orphans_listed and not chk.writable):
            chk.fix(
                "INODE_STALE_ORPHAN",
                {"ino": ino, "value": inode.next_orphan},
                lambda: img.set_inode(ino, next_orphan=0),
            )
        if ft == fmt.S_IFLNK and not self.check_symlink(inode):
            return
        info = InodeInfo(ino, inode.mode, inode.links_count, inode.size, inode.parent)
        count: int | None = 0
        if bm.maps_blocks(inode):
            count = self.walk_map(inode, info)
        elif ft == fmt.S_IFDIR:
            count = self.walk_dir(inode, info)
        elif ft != fmt.S_IFLNK:
            self.check_special(inode)
        if inode.xattr_block:
            why = xattr_reason(img, inode.xattr_block, ft == fmt.S_IFDIR)
            if why:
                chk.fix(
                    "INODE_BAD_XATTR",
                    {"ino": ino, "block": inode.xattr_block, "reason": why},
                    lambda: img.set_inode(ino, xattr_block=0),
                )
            else:
                self.claim(inode.xattr_block)
                info.xattr = inode.xattr_block
        chk.inodes[ino] = info
        if count is None:
            return  # the block map is judged once every inode has claimed its blocks (finish_deferred)
        self.check_count(inode, info, count + (1 if info.xattr else 0))

    def check_count(self, inode: Any, info: InodeInfo, count: int) -> None:
        info.nblocks = count
        if inode.blocks != count and not (info.dirscan is not None and info.dirscan.faults):
            ino, img = inode.ino, self.img
            self.chk.fix(
                "INODE_BLOCK_COUNT",
                {"ino": ino, "found": inode.blocks, "expected": count},
                lambda: img.set_inode(ino, blocks=count),
            )

    def check_badblocks_size(self) -> None:
        """The bad-blocks file's size is its data blocks times the block size (spec/checking.md 5.1)."""
        info = self.chk.inodes.get(fmt.BADBLOCKS_INO)
        if info is None:
            return
        from nvfs_tools.check.badinode import data_blocks

        expected = len(data_blocks(self.chk)) * self.img.bs
        if info.size != expected:
            img = self.img
            self.chk.fix(
                "INODE_BAD_SIZE",
                {"ino": info.ino, "found": info.size, "expected": expected, "reason": "bad blocks mapped"},
                lambda: (img.set_inode(fmt.BADBLOCKS_INO, size=expected), img.barrier()),
            )
            info.size = expected

    def check_reserved_slots(self) -> None:
        """Reserved inodes 1 and 6..10 (and 3..5 without QUOTA) are all zero when not in use (spec 5)."""
        img = self.img
        for ino in range(1, fmt.FIRST_INO):
            if ino == fmt.ROOT_INO or (self.quota and ino in fmt.QUOTA_INODES.values()):
                continue
            off = img.geo.inode_offset(ino)
            raw = img.dev.view[off : off + fmt.INODE_SIZE]
            if raw[0] == 0 and raw[1] == 0 and any(raw):
                self.chk.fix(
                    "RESERVED_NONZERO",
                    {"what": f"reserved inode {ino}", "block": off // img.bs},
                    lambda off=off: (img.write_bytes(off, bytes(fmt.INODE_SIZE)), img.barrier()),
                )

    def check_fields(self, inode: Any) -> None:
        """Fields with a fixed value per type (spec/checking.md 7.1-7.3): repaired in place."""
        ft = inode.ftype
        ino = inode.ino
        wrong: list[tuple[str, int, str, int]] = []
        if inode.reserved0:
            wrong.append(("reserved0", inode.reserved0, "must be zero", 0))
        if ino in fmt.QUOTA_INODES.values():  # spec/checking.md 5.3
            if inode.mode != fmt.S_IFREG | 0o600:
                wrong.append(("mode", inode.mode, "a quota file is S_IFREG | 0600", fmt.S_IFREG | 0o600))
            if inode.links_count != 1:
                wrong.append(("links_count", inode.links_count, "a quota file has one link", 1))
        if ino == fmt.BADBLOCKS_INO:  # spec/checking.md 5.1
            if inode.mode != fmt.S_IFREG:
                wrong.append(("mode", inode.mode, "the bad-blocks file is S_IFREG, permissions 0", fmt.S_IFREG))
            if inode.links_count != 1:
                wrong.append(("links_count", inode.links_count, "the bad-blocks file has one link", 1))
        for name in ("atime_nsec", "mtime_nsec", "ctime_nsec", "btime_nsec"):
            value = getattr(inode, name)
            if value >= 10**9:
                wrong.append((name, value, "nanoseconds must be below 10**9", 0))
        if ft != fmt.S_IFDIR:
            if inode.parent:
                wrong.append(("parent", inode.parent, "only directories have a parent pointer", 0))
            if inode.dir_bank:
                wrong.append(("dir_bank", inode.dir_bank, "only directories have a bank flag", 0))
        if ft in (fmt.S_IFCHR, fmt.S_IFBLK):
            major, minor = fmt.decode_rdev(inode.rdev)
            if major >= 1 << 12 or minor >= 1 << 20:
                wrong.append(("rdev", inode.rdev, "device number out of range", 0))
        elif inode.rdev:
            wrong.append(("rdev", inode.rdev, "only devices have a device number", 0))
        for name, value, reason, fixed in wrong:

            def store(name: str = name, fixed: int = fixed) -> None:
                self.img.set_inode(ino, **{name: fixed})
                self.img.barrier()

            self.chk.fix(
                "INODE_BAD_FIELD",
                {"ino": ino, "field": name, "value": value, "reason": reason, "fixed": fixed},
                store,
            )
        if ft == fmt.S_IFDIR:
            for i in range(2, fmt.N_BLOCK_POINTERS):
                if inode.block[i]:

                    def clear(i: int = i) -> None:
                        self.img.set_inode(ino, block=(i, 0))
                        self.img.barrier()

                    self.chk.fix(
                        "INODE_BAD_FIELD",
                        {
                            "ino": ino,
                            "field": f"block[{i}]",
                            "value": inode.block[i],
                            "reason": "a directory uses only block[0] and block[1]",
                            "fixed": 0,
                        },
                        clear,
                    )

    def check_flags(self, inode: Any) -> None:
        flags = inode.flags
        bad = flags & ~fmt.INODE_FLAGS_KNOWN
        reason = "unknown bits"
        if flags & fmt.INODE_FLAG_INLINE and inode.ftype != fmt.S_IFLNK:
            bad |= fmt.INODE_FLAG_INLINE
            reason = "inline flag on a file that is not a symbolic link" if bad == fmt.INODE_FLAG_INLINE else reason
        if bad:
            self.chk.fix(
                "INODE_BAD_FLAGS",
                {"ino": inode.ino, "flags": flags, "reason": reason},
                lambda: self.img.set_inode(inode.ino, flags=flags & ~bad),
            )
            inode.flags = flags & ~bad

    def check_symlink(self, inode: Any) -> bool:
        """Validate a symbolic link; False when it was cleared (or should be)."""
        reason = symlink_reason(self.img, inode)
        if reason is None:
            return True
        ino = inode.ino
        self.chk.fix("INODE_BAD_SYMLINK", {"ino": ino, "reason": reason}, lambda: self.img.clear_inode(ino))
        return False

    def check_special(self, inode: Any) -> None:
        reasons = []
        if any(inode.block):
            reasons.append("block pointers")
        if inode.size:
            reasons.append(f"size {inode.size}")
        if not reasons:
            return
        ino = inode.ino

        def clear() -> None:
            for i in range(fmt.N_BLOCK_POINTERS):
                if inode.block[i]:
                    self.img.set_inode(ino, block=(i, 0))
            self.img.set_inode(ino, size=0)
            self.img.barrier()

        self.chk.fix(
            "INODE_BAD_SPECIAL", {"ino": ino, "kind": kind_name(inode.mode), "reason": ", ".join(reasons)}, clear
        )

    # -- block maps -----------------------------------------------------------------------------
    def judge(self, inode: Any, v: bm.Visit, nblocks: int) -> tuple[str, dict] | None:
        """The problem with one pointer, or None when it is fine (no side effect)."""
        return judge_pointer(self.img, inode, v, nblocks)

    def walk_map(self, inode: Any, info: InodeInfo) -> int | None:
        """Claim the blocks of a block map; the number kept, or None when judging waits for ownership.

        A bad pointer in the inode is cleared at once.  A bad pointer inside an
        indirect block is not: the "indirect block" may really be another
        file's data (a corrupted pointer), and clearing words there would
        destroy that file.  Such a map is judged again by :meth:`finish_deferred`
        once every inode has claimed its blocks.
        """
        nblocks = map_blocks(inode, self.img.bs)
        count = 0
        img = self.img
        claimed: list[int] = []
        reported: set[int] = set()
        deferred = False

        def visit(v: bm.Visit) -> bool:
            nonlocal count, deferred
            problem = self.judge(inode, v, nblocks)
            if problem is None and self._zero_indirect(v):
                deferred = True  # reported with the file's path once every directory has been read
                return False
            if problem is not None:
                if v.parent:
                    deferred = True
                else:
                    code, details = problem
                    reported.add(v.addr)
                    self.chk.fix(code, details, lambda: (img.store(v.addr, 0), img.barrier()))
                return False
            self.claim(v.block)
            claimed.append(v.block)
            count += 1
            return True

        bm.walk_file(img, inode, visit)
        if not deferred:
            return count
        self.deferred.append((inode, info, claimed, reported))
        return None

    def finish_deferred(self) -> None:
        """Judge the block maps with bad pointers inside indirect blocks, now that ownership is known.

        An indirect block that another inode also claims, and below which (through
        blocks also claimed by others) a pointer is bad, is not this file's indirect
        block: the pointer to it is cleared (in the inode, or in an indirect block
        this file alone owns) and the block is left to its other owner.  Bad
        pointers in indirect blocks this file alone owns are cleared in place.
        """
        img = self.img
        ppb = fmt.pointers_per_block(img.bs)
        for inode, info, claimed, reported in self.deferred:
            for block in claimed:
                self.unclaim(block)
            nblocks = map_blocks(inode, img.bs)
            count = 0

            def visit(v: bm.Visit, inode: Any = inode, nblocks: int = nblocks, reported: set[int] = reported) -> bool:
                nonlocal count
                problem = self.judge(inode, v, nblocks)
                if problem is None and v.level and self._foreign(inode, v, nblocks, ppb):
                    where = f"level-{v.level} indirect block for {v.fblock}"
                    reason = "another file owns the block and it holds pointers that are not legal here"
                    problem = "INODE_BAD_BLOCK", {"ino": inode.ino, "block": v.block, "where": where, "reason": reason}
                if problem is None and self._zero_indirect(v):
                    problem = "INODE_ZERO_INDIRECT", self._zero_details(inode, v)
                if problem is not None:
                    if v.addr not in reported:
                        code, details = problem
                        self.chk.fix(code, details, lambda: (img.store(v.addr, 0), img.barrier()))
                    self.dropped.add(v.addr)
                    return False
                self.claim(v.block)
                count += 1
                return True

            def emptied(v: bm.Visit, inode: Any = inode) -> None:
                """Repairs below may have cleared the last pointer of ``v``: it goes too, in the same run."""
                nonlocal count
                if self._zero_indirect(v):
                    details = self._zero_details(inode, v)
                    self.chk.fix("INODE_ZERO_INDIRECT", details, lambda: (img.store(v.addr, 0), img.barrier()))
                    self.dropped.add(v.addr)
                    self.unclaim(v.block)
                    count -= 1

            bm.walk_file(img, inode, visit, emptied)
            self.check_count(inode, info, count + (1 if info.xattr else 0))
        self.deferred = []

    def _zero_details(self, inode: Any, v: bm.Visit) -> dict[str, Any]:
        """INODE_ZERO_INDIRECT's details; the path comes from the directories pass 1 has read by now."""
        if self._namer is None:
            from nvfs_tools.check.paths import PathNamer

            self._namer = PathNamer(self.chk)
        where = f"level-{v.level} indirect block for {v.fblock}"
        return {"ino": inode.ino, "path": self._namer.path(inode.ino), "block": v.block, "where": where}

    def _zero_indirect(self, v: bm.Visit) -> bool:
        """Indirect block ``v`` holds no pointer (spec/checking.md 7.6); bad media reads as zeros but is not."""
        if not v.level or (self.img.bad and v.block in self.img.bad):
            return False
        return self.img.block_view(v.block).tobytes() == self._zero_block

    def _foreign(self, inode: Any, v: bm.Visit, nblocks: int, ppb: int) -> bool:
        """Indirect block ``v`` is another inode's block that is no indirect block of this file."""
        return self.is_owned(v.block) and self._shared_rejects(inode, v, nblocks, ppb)

    def _shared_rejects(self, inode: Any, v: bm.Visit, nblocks: int, ppb: int) -> bool:
        """True when a pointer below ``v``, through blocks other inodes own, is bad."""
        for child in bm.children(self.img, v, ppb):
            if self.judge(inode, child, nblocks) is not None:
                return True
            if child.level and self.is_owned(child.block) and self._shared_rejects(inode, child, nblocks, ppb):
                return True
        return False

    def walk_dir(self, inode: Any, info: InodeInfo) -> int:
        img, chk = self.img, self.chk
        ino = inode.ino
        bank = inode.dir_bank
        if bank not in (0, 1):
            good = 0 if inode.block[0] or not inode.block[1] else 1
            chk.fix(
                "INODE_BAD_DIR_BANK",
                {"ino": ino, "value": bank, "bank": good},
                lambda: img.set_inode(ino, dir_bank=good),
            )
            bank = good
        scan = scan_directory(img, ino, inode.block[bank], lambda b: bm.bad_block_reason(self.geo, b))
        info.dirscan = scan
        if scan.faults:
            # a damaged tree may point anywhere (into other files' blocks): it owns nothing; pass 2
            # rebuilds the directory from the entries read, into blocks proven free
            return 0
        for block in scan.blocks:
            self.claim(block)
        expected = len(scan.blocks) * img.bs
        if inode.size != expected and not scan.faults:
            chk.fix(
                "INODE_BAD_SIZE",
                {"ino": ino, "found": inode.size, "expected": expected, "reason": "directory pages and nodes"},
                lambda: img.set_inode(ino, size=expected),
            )
        return len(scan.blocks)

    # -- passes 1B-1D: shared blocks --------------------------------------------------------------
    def resolve_dups(self) -> None:
        chk, img = self.chk, self.img
        owners: dict[int, list[tuple[int, int, str]]] = {b: [] for b in self.dup_blocks}
        order: list[tuple[int, int, int, str]] = []
        for ino, info in sorted(chk.inodes.items()):
            for block, addr, kind in self._claims(ino, info):
                if block in owners:
                    owners[block].append((ino, addr, kind))
                    order.append((block, ino, addr, kind))
        from nvfs_tools.check.paths import PathNamer

        namer = PathNamer(chk)
        keeper: dict[int, tuple[int, int]] = {}
        for block, lst in sorted(owners.items()):
            lst.sort(key=lambda o: o[2] != "dir")  # a directory keeps its block; files get copies
            if len(lst) < 2:
                continue
            keeper[block] = (lst[0][0], lst[0][1])
            names = ", ".join(f"{namer.path(o[0])} (inode {o[0]})" for o in lst)
            chk.fix("INODE_DUP_BLOCK", {"block": block, "count": len(lst), "owners": names, "ino": lst[0][0]})
            if chk.report.findings[-1].fixed:
                chk.pending_clones.append(block)
        if not chk.pending_clones:
            return
        clones = set(chk.pending_clones)
        moved: dict[tuple[int, int], int] = {}  # (ino, old block) -> its copy
        for block, ino, addr, kind in order:
            if block not in clones or keeper.get(block) == (ino, addr):
                continue
            if kind == "dir":
                chk.rebuild_dirs.add(ino)
                continue
            addr = self._translate(addr, ino, moved)
            chk.checkpoint()
            new = chk.allocator.allocate_block(block)
            img.write_bytes(new * img.bs, img.read_block(block))
            img.barrier()
            img.store(addr, new)
            img.barrier()
            moved[(ino, block)] = new

    def _translate(self, addr: int, ino: int, moved: dict[tuple[int, int], int]) -> int:
        """A pointer inside a block already copied for ``ino`` lives in the copy now."""
        block, off = divmod(addr, self.img.bs)
        new = moved.get((ino, block))
        return addr if new is None else new * self.img.bs + off

    def _claims(self, ino: int, info: InodeInfo) -> list[tuple[int, int, str]]:
        img = self.img
        out: list[tuple[int, int, str]] = []
        inode = img.inode(ino)
        if info.dirscan is not None:
            if not info.dirscan.faults:
                out.extend((b, 0, "dir") for b in info.dirscan.blocks)
        elif bm.maps_blocks(inode):
            nblocks = map_blocks(inode, img.bs)

            def visit(v: bm.Visit) -> bool:
                if v.addr in self.dropped or self.judge(inode, v, nblocks) is not None:
                    return False
                out.append((v.block, v.addr, "indirect" if v.level else "data"))
                return True

            bm.walk_file(img, inode, visit)
        if info.xattr:
            out.append((info.xattr, img.inode_field_addr(ino, "xattr_block"), "xattr"))
        return out


def map_blocks(inode: Any, bs: int) -> int:
    """File blocks a block map may map: a symlink's one block, a regular file's blocks up to EOF.

    The bad-blocks inode's ``size`` follows its map (5.1), never the other way: a wrong size is
    repaired, and never makes a bad block fall free.
    """
    if inode.ino == fmt.BADBLOCKS_INO:
        return fmt.max_file_blocks(bs)
    return 1 if inode.ftype == fmt.S_IFLNK else -(-inode.size // bs)


def judge_pointer(img: Any, inode: Any, v: bm.Visit, nblocks: int) -> tuple[str, dict] | None:
    """The problem with one block-map pointer, or None when it is fine (no side effect)."""
    ino = inode.ino
    if v.fblock >= nblocks and inode.ftype == fmt.S_IFREG:
        return "INODE_PAST_EOF", {"ino": ino, "block": v.block, "fblock": v.fblock, "size": inode.size}
    why = bm.bad_block_reason(img.geo, v.block)
    if why is None and v.level and bm.count_illegal(img, v.block) > bm.MAX_ILLEGAL_IN_INDIRECT:
        why = "indirect block full of illegal pointers"
    if why:
        where = f"file block {v.fblock}" if v.level == 0 else f"level-{v.level} indirect block for {v.fblock}"
        return "INODE_BAD_BLOCK", {"ino": ino, "block": v.block, "where": where, "reason": why}
    return None


def kept_blocks(chk: Any, ino: int) -> list[int]:
    """The blocks pass 1 let inode ``ino``'s block map keep (data and indirect), as it judged them."""
    img = chk.image
    inode = img.inode(ino)
    if not bm.maps_blocks(inode):
        return []
    nblocks = map_blocks(inode, img.bs)
    dropped = getattr(chk, "dropped_ptrs", set())
    out: list[int] = []

    def visit(v: bm.Visit) -> bool:
        if v.addr in dropped or judge_pointer(img, inode, v, nblocks) is not None:
            return False
        out.append(v.block)
        return True

    bm.walk_file(img, inode, visit)
    return out


def run(chk: Any) -> None:
    chk.owned = build_metadata_map(chk.image.geo)
    from nvfs_tools.check.image import CheckAllocator

    chk.allocator = CheckAllocator(chk.image, chk.owned)
    Pass1(chk).run()
