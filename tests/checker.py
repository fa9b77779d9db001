"""Test helper: walk ALL metadata of an NVFS image and list every broken format rule.

``check_image(path)`` returns a list of problems (empty when the image is
clean); ``assert_clean(path)`` fails a test with that list.  It checks what the
library must keep exact after every operation: superblock copies, journal and
orphan list empty, inode bitmaps vs. inodes in use, every block owned once,
block bitmaps and all counters against what inodes own, ``blocks`` and sizes
against block maps, directory entries, reachability, parent pointers, link
counts, xattr blocks and quota usage.  fsck.nvfs takes these rules over later.
"""

from __future__ import annotations

import struct
from collections import Counter, defaultdict

from nvfs_tools import format as fmt
from nvfs_tools import journal as jr
from nvfs_tools import namehash
from nvfs_tools import xattr as xa
from nvfs_tools.alloc import GC_FREE_BLOCKS, GC_FREE_INODES, GC_USED_DIRS
from nvfs_tools.errors import NvfsError
from nvfs_tools.volume import Volume, is_dir

_U64 = struct.Struct("<Q")


def _bits(view, offset: int, nbits: int) -> int:
    nbytes = (nbits + 7) // 8
    return int.from_bytes(view[offset : offset + nbytes], "little") & ((1 << nbits) - 1)


class _Checker:
    def __init__(self, vol: Volume) -> None:
        self.vol = vol
        self.geo = vol.geo
        self.bs = vol.block_size
        self.view = vol.dev.view
        self.problems: list[str] = []
        self.owner: dict[int, int] = {}
        self.used: list[int] = []

    def bad(self, msg: str) -> None:
        self.problems.append(msg)

    def run(self) -> list[str]:
        self.superblocks()
        self.journal()
        self.inodes()
        self.blocks()
        self.tree()
        self.quota()
        return self.problems

    # ------------------------------------------------------------------
    def superblocks(self) -> None:
        geo, view, bs = self.geo, self.view, self.bs
        static = bytes(view[0 : fmt.SB_STATIC_SIZE])
        if bytes(view[geo.backup_block * bs : geo.backup_block * bs + fmt.SB_STATIC_SIZE]) != static:
            self.bad("backup static superblock differs from block 0")
        for g in range(1, geo.group_count):
            off = geo.group_start(g) * bs
            if bytes(view[off : off + fmt.SB_STATIC_SIZE]) != static:
                self.bad(f"group {g}: static superblock copy differs")
        if self.vol.dyn.orphan_head:
            self.bad(f"orphan list not empty (head {self.vol.dyn.orphan_head})")

    def journal(self) -> None:
        geo = self.geo
        for st in jr.read_slots(self.vol.dev, geo.journal_block, self.bs, geo.journal_slots):
            if st.commit:
                self.bad(f"journal slot {st.slot} still committed")

    def inodes(self) -> None:
        geo, vol = self.geo, self.vol
        ipg = geo.inodes_per_group
        self.dirs_per_group = [0] * geo.group_count
        quota = bool(vol.static.feature_ro_compat & fmt.FEATURE_RO_COMPAT_QUOTA)
        total_free = 0
        for g in range(geo.group_count):
            base = geo.inode_bitmap_block(g) * self.bs
            nbits = geo.inode_bitmap_blocks * self.bs * 8
            bits = _bits(self.view, base, nbits)
            if bits >> ipg != (1 << (nbits - ipg)) - 1:
                self.bad(f"group {g}: inode bitmap bits past inodes_per_group not all set")
            used_here = 0
            for index in range(ipg):
                ino = g * ipg + index + 1
                bit = bits >> index & 1
                mode = vol.inode_mode(ino)
                used_here += bit
                if ino < fmt.FIRST_INO:
                    if not bit:
                        self.bad(f"reserved inode {ino}: bitmap bit clear")
                    if ino == fmt.ROOT_INO and not is_dir(mode):
                        self.bad("root inode is not a directory")
                    if ino in fmt.QUOTA_INODES.values() and quota and mode & fmt.S_IFMT != fmt.S_IFREG:
                        self.bad(f"quota inode {ino} is not a regular file")
                    if ino == fmt.ROOT_INO or (quota and ino in fmt.QUOTA_INODES.values()):
                        self.used.append(ino)
                    continue
                if bool(mode) != bool(bit):
                    self.bad(f"inode {ino}: mode 0o{mode:o} but bitmap bit {bit}")
                if mode:
                    self.used.append(ino)
                    if mode & fmt.S_IFMT not in fmt.VALID_FILE_TYPES:
                        self.bad(f"inode {ino}: invalid file type in mode 0o{mode:o}")
                    if is_dir(mode):
                        self.dirs_per_group[g] += 1
            if is_dir(vol.inode_mode(fmt.ROOT_INO)) and g == 0:
                self.dirs_per_group[0] += 1
            free = ipg - used_here
            total_free += free
            cbase = geo.counters_block(g) * self.bs
            if _U64.unpack_from(self.view, cbase + GC_FREE_INODES)[0] != free:
                self.bad(
                    f"group {g}: free_inodes counter {_U64.unpack_from(self.view, cbase + GC_FREE_INODES)[0]} != {free}"
                )
            if _U64.unpack_from(self.view, cbase + GC_USED_DIRS)[0] != self.dirs_per_group[g]:
                self.bad(f"group {g}: used_dirs counter != {self.dirs_per_group[g]}")
        if vol.dyn.free_inodes != total_free:
            self.bad(f"superblock free_inodes {vol.dyn.free_inodes} != {total_free}")
        for ino in self.used:
            self.inode(ino)

    def inode(self, ino: int) -> None:
        vol, bs = self.vol, self.bs
        node = vol.read_inode(ino)
        mode = node.mode
        try:
            owned = vol.owned_blocks(ino)
        except NvfsError as exc:
            self.bad(f"inode {ino}: {exc}")
            return
        for b in owned:
            if self.geo.is_metadata_block(b):
                self.bad(f"inode {ino}: owns metadata block {b}")
            if b in self.owner:
                self.bad(f"block {b} owned by inode {self.owner[b]} and inode {ino}")
            self.owner[b] = ino
        if node.blocks != len(owned):
            self.bad(f"inode {ino}: blocks {node.blocks} but owns {len(owned)}")
        if node.xattr_block:
            raw = vol.dev.view[node.xattr_block * bs : node.xattr_block * bs + bs]
            try:
                attrs = xa.parse_block(raw, node.xattr_block)
                if not attrs:
                    self.bad(f"inode {ino}: empty xattr block kept")
                used = struct.unpack_from("<I", raw, 12)[0]
                if any(raw[used:]):
                    self.bad(f"inode {ino}: xattr block not zero past its used area")
                for name, value in attrs.items():
                    try:
                        xa.check_value(name, value, is_dir=is_dir(mode))
                    except NvfsError as exc:
                        self.bad(f"inode {ino}: attribute {name!r}: {exc}")
            except NvfsError as exc:
                self.bad(f"inode {ino}: {exc}")
        ftype = mode & fmt.S_IFMT
        if is_dir(mode):
            dir_blocks = len(owned) - (1 if node.xattr_block else 0)
            if node.size != dir_blocks * bs:
                self.bad(f"directory {ino}: size {node.size} != {dir_blocks} blocks")
            if node.dir_bank > 1:
                self.bad(f"directory {ino}: dir_bank {node.dir_bank}")
        elif node.flags & fmt.INODE_FLAG_INLINE:
            if ftype != fmt.S_IFLNK or node.size > fmt.INLINE_SYMLINK_MAX or node.size == 0:
                self.bad(f"inode {ino}: bad inline symlink (size {node.size})")
        elif ftype in (fmt.S_IFREG, fmt.S_IFLNK):
            limit = -(-node.size // bs)
            for fb, _db in vol.file_blocks(ino):
                if fb >= limit:
                    self.bad(f"inode {ino}: block {fb} mapped past EOF (size {node.size})")
            if ftype == fmt.S_IFLNK and node.size == 0:
                self.bad(f"symlink {ino}: empty target")
        else:
            if any(node.block) or node.size:
                self.bad(f"special inode {ino}: has block pointers or size")
            if ftype in (fmt.S_IFIFO, fmt.S_IFSOCK) and node.rdev:
                self.bad(f"inode {ino}: rdev set on fifo/socket")

    def blocks(self) -> None:
        geo, bs = self.geo, self.bs
        total_free = 0
        for g in range(geo.group_count):
            start, end = geo.group_start(g), geo.group_end(g)
            bits = _bits(self.view, geo.block_bitmap_block(g) * bs, geo.blocks_per_group)
            expected = (1 << geo.metadata_blocks(g)) - 1
            expected |= ((1 << geo.blocks_per_group) - 1) ^ ((1 << (end - start)) - 1)  # past the group's end
            if start <= geo.backup_block < end:
                expected |= 1 << (geo.backup_block - start)
            for b, _ino in self.owner.items():
                if start <= b < end:
                    expected |= 1 << (b - start)
            for diff, what in ((expected & ~bits, "in use but marked free"), (bits & ~expected, "leaked")):
                if diff:
                    examples = [start + i for i in range(geo.blocks_per_group) if diff >> i & 1][:8]
                    self.bad(f"group {g}: block bitmap: blocks {what}: {examples}")
            free = (end - start) - (bits & ((1 << (end - start)) - 1)).bit_count()
            total_free += free
            counter = _U64.unpack_from(self.view, geo.counters_block(g) * bs + GC_FREE_BLOCKS)[0]
            if counter != free:
                self.bad(f"group {g}: free_blocks counter {counter} != {free}")
        if self.vol.dyn.free_blocks != total_free:
            self.bad(f"superblock free_blocks {self.vol.dyn.free_blocks} != {total_free}")

    def tree(self) -> None:
        vol = self.vol
        refs: Counter[int] = Counter()
        subdirs: Counter[int] = Counter()
        seen_dirs = {fmt.ROOT_INO}
        todo = [fmt.ROOT_INO]
        if vol.read_inode(fmt.ROOT_INO).parent != fmt.ROOT_INO:
            self.bad("root parent pointer is not the root")
        while todo:
            d = todo.pop()
            names = set()
            try:
                entries = list(vol.listdir(d))
            except NvfsError as exc:
                self.bad(f"directory {d}: {exc}")
                continue
            for e in entries:
                if e.name in names:
                    self.bad(f"directory {d}: duplicate name {e.name!r}")
                names.add(e.name)
                if e.hash != namehash.name_hash(vol.hash_seed, e.name):
                    self.bad(f"directory {d}: entry {e.name!r} has a wrong hash")
                if not 1 <= e.ino <= self.geo.inodes_count or (e.ino < fmt.FIRST_INO and e.ino != fmt.ROOT_INO):
                    self.bad(f"directory {d}: entry {e.name!r} -> invalid inode {e.ino}")
                    continue
                mode = vol.inode_mode(e.ino)
                if mode == 0:
                    self.bad(f"directory {d}: entry {e.name!r} -> unused inode {e.ino}")
                    continue
                if fmt.MODE_TO_DT.get(mode & fmt.S_IFMT) != e.file_type:
                    self.bad(f"directory {d}: entry {e.name!r} file_type {e.file_type} vs mode 0o{mode:o}")
                refs[e.ino] += 1
                if is_dir(mode):
                    subdirs[d] += 1
                    if e.ino in seen_dirs:
                        self.bad(f"directory {e.ino} reached twice")
                        continue
                    seen_dirs.add(e.ino)
                    if vol.read_inode(e.ino).parent != d:
                        self.bad(f"directory {e.ino}: parent {vol.read_inode(e.ino).parent} != {d}")
                    todo.append(e.ino)
        for ino in self.used:
            if ino < fmt.FIRST_INO and ino != fmt.ROOT_INO:
                continue
            node = vol.read_inode(ino)
            if is_dir(node.mode):
                if ino not in seen_dirs:
                    self.bad(f"directory {ino} not reachable from the root")
                if node.links_count != 2 + subdirs[ino]:
                    self.bad(f"directory {ino}: links {node.links_count} != 2 + {subdirs[ino]}")
            else:
                if refs[ino] == 0:
                    self.bad(f"inode {ino} not reachable from the root")
                if node.links_count != refs[ino]:
                    self.bad(f"inode {ino}: links {node.links_count} != {refs[ino]} entries")

    def quota(self) -> None:
        vol = self.vol
        if not vol.static.feature_ro_compat & fmt.FEATURE_RO_COMPAT_QUOTA:
            return
        from nvfs_tools.quota import quota_counted, read_usage

        usage: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
        for ino in self.used:
            if not quota_counted(ino):
                continue
            node = vol.read_inode(ino)
            for qino, qid in ((fmt.USR_QUOTA_INO, node.uid), (fmt.GRP_QUOTA_INO, node.gid), (fmt.PRJ_QUOTA_INO, 0)):
                usage[qino, qid][0] += node.blocks * self.bs
                usage[qino, qid][1] += 1
        for qino in fmt.QUOTA_INODES.values():
            size = vol.read_inode(qino).size
            ids = set(range(size // fmt.QUOTA_RECORD_SIZE)) | {qid for q, qid in usage if q == qino}
            for qid in ids:
                got = read_usage(vol, qino, qid)
                want = tuple(usage.get((qino, qid), (0, 0)))
                if got != want:
                    self.bad(f"quota file {qino} id {qid}: usage {got} != {want}")


def check_image(path: str) -> list[str]:
    """Every format rule the image breaks (empty list: clean)."""
    with Volume.open(path) as vol:
        return _Checker(vol).run()


def assert_clean(path: str) -> None:
    problems = check_image(path)
    assert not problems, "image breaks format rules:\n  " + "\n  ".join(problems[:50])
