"""Pass 2: directory structure and entries.

Works from the directory scans of pass 1.  A damaged radix tree or page, or an
entry that its hash does not lead to, makes the directory be rebuilt from the
entries that can still be read: the new tree is written into free blocks and
switched in with the directory's bank flag (one store), so a crash during the
rebuild leaves the old directory live.  Single bad entries are removed with
one store (their ``ino`` word), like an unlink.
"""

from __future__ import annotations

from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.check.paths import PathNamer, show


def _entry_problem(chk: Any, child: int) -> str | None:
    if not 1 <= child <= chk.image.geo.inodes_count:
        return "out-of-range"
    if child < fmt.FIRST_INO and child != fmt.ROOT_INO:
        return "reserved"
    if child not in chk.inodes:
        return "unused"
    return None


def run(chk: Any) -> None:
    img = chk.image
    dirs = sorted(ino for ino, info in chk.inodes.items() if info.dirscan is not None)
    stats = chk.start_pass(2, len(dirs))
    namer = PathNamer(chk)
    chk.children = {}
    for ino in dirs:
        info = chk.inodes[ino]
        scan = info.dirscan
        rebuild = ino in chk.rebuild_dirs
        if scan.faults:
            block, reason = scan.faults[0]
            if len(scan.faults) > 1:
                reason += f"; {len(scan.faults) - 1} more faults"
            rebuild = chk.fix("DIR_BAD_TREE", {"ino": ino, "block": block, "reason": reason}) or rebuild
        for addr, length, what in [] if scan.faults else scan.residue:

            def zero(addr: int = addr, length: int = length) -> None:
                img.write_bytes(addr, bytes(length))
                img.barrier()

            chk.fix("RESERVED_NONZERO", {"what": f"directory {ino}: {what}", "block": addr // img.bs}, zero)
        live: list[Any] = []
        names: set[bytes] = set()
        for e in scan.entries:
            path = _LazyPath(namer, ino, e.name)
            name_ok = 1 <= len(e.name) <= fmt.MAX_NAME_LEN and b"/" not in e.name and b"\0" not in e.name
            if not name_ok or e.name in (b".", b".."):
                reason = f"illegal name {show(e.name)!r}"
                chk.fix(
                    "DIR_BAD_ENTRY",
                    {"ino": ino, "block": e.block, "offset": e.offset, "reason": reason},
                    _remover(img, e),
                )
                continue
            why = _entry_problem(chk, e.ino)
            if why:
                chk.fix(
                    "DIR_ENTRY_BAD_INO",
                    {"path": str(path), "reason": why, "child": e.ino, "ino": ino},
                    _remover(img, e),
                )
                continue
            if e.name in names:
                chk.fix(
                    "DIR_DUP_NAME",
                    {"path": namer.path(ino), "name": show(e.name), "child": e.ino, "ino": ino},
                    _remover(img, e),
                )
                continue
            names.add(e.name)
            expected = fmt.MODE_TO_DT[chk.inodes[e.ino].ftype]
            if e.file_type != expected:
                addr = e.block * img.bs + e.offset + fmt.field_offset(fmt.DirEntryHeader, "file_type")

                def set_type(addr: int = addr, expected: int = expected) -> None:
                    img.write_bytes(addr, bytes([expected]))
                    img.barrier()

                chk.fix(
                    "DIR_FILE_TYPE",
                    {"path": str(path), "found": e.file_type, "expected": expected, "ino": ino, "child": e.ino},
                    set_type,
                )
                e.file_type = expected
            if e.misplaced and not rebuild:
                rebuild = chk.fix(
                    "DIR_MISPLACED", {"path": str(path), "child": e.ino, "reason": e.misplaced, "ino": ino}
                )
            live.append(e)
        if rebuild and chk.writable:
            chk.checkpoint()
            rebuild_directory(chk, ino, [(e.name, e.ino, e.file_type) for e in live])
        chk.children[ino] = [(e.name, e.ino, e.ino_addr(img.bs)) for e in live]
        stats.inodes += 1
        stats.blocks += len(scan.blocks)
        chk.progress(1)
    stats.extra["entries"] = sum(len(c) for c in chk.children.values())
    chk.end_pass(stats)


class _LazyPath:
    """An entry's path, computed only when a message needs it (most entries never do)."""

    __slots__ = ("namer", "dino", "name")

    def __init__(self, namer: Any, dino: int, name: bytes) -> None:
        self.namer, self.dino, self.name = namer, dino, name

    def __str__(self) -> str:
        return self.namer.child(self.dino, self.name)


def _remover(img: Any, e: Any) -> Any:
    def remove() -> None:
        img.store(e.ino_addr(img.bs), 0)
        img.barrier()

    return remove


def rebuild_directory(chk: Any, ino: int, entries: list[tuple[bytes, int, int]]) -> None:
    """Write a fresh tree for ``entries`` and switch directory ``ino`` to it with its bank flag."""
    from nvfs_tools.check.repairvol import RepairVolume
    from nvfs_tools.directory import write_tree

    img = chk.image
    info = chk.inodes[ino]
    vol = RepairVolume(img, chk.allocator)
    root, _written = write_tree(vol, ino, entries)
    img.barrier()
    bank = img.inode(ino).dir_bank
    bank = bank if bank in (0, 1) else 0
    inactive = 1 - bank
    img.store(img.inode_field_addr(ino, "block", inactive), root)
    img.barrier()
    img.store(img.inode_field_addr(ino, "dir_bank"), inactive)
    img.barrier()
    new_blocks = list(vol.allocated)
    nblocks = len(new_blocks) + (1 if info.xattr else 0)
    img.set_inode(ino, size=len(new_blocks) * img.bs, blocks=nblocks)
    img.barrier()
    if not info.dirscan.faults:  # a damaged tree's blocks were never claimed: pass 5 frees them
        for block in info.dirscan.blocks:
            if block not in chk.shared_blocks and block not in new_blocks:
                chk.allocator.free_block(block)
    info.dirscan.nodes = []
    info.dirscan.pages = new_blocks
    info.dirscan.faults = []
    info.nblocks = nblocks
    info.size = len(new_blocks) * img.bs


def add_entry(chk: Any, dir_ino: int, name: bytes, child: int, file_type: int) -> None:
    """Add one entry through the library's directory code (blocks from the checker)."""
    from nvfs_tools.check.repairvol import RepairVolume
    from nvfs_tools.directory import Directory

    img = chk.image
    vol = RepairVolume(img, chk.allocator)
    entry = Directory(vol, dir_ino).add(name, child, file_type)
    img.barrier()
    info = chk.inodes[dir_ino]
    inode = img.inode(dir_ino)
    info.nblocks = inode.blocks
    info.size = inode.size
    chk.children.setdefault(dir_ino, []).append((name, child, entry.ino_addr))
