"""Pass 4: link counts against the references found; unattached inodes.

A file no entry names is either an interrupted create (zero length, nothing
owned: cleared) or real data (reconnected to /lost+found as ``#INO``).  A
directory's count is 2 plus its subdirectories.
"""

from __future__ import annotations

from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.check.image import kind_name
from nvfs_tools.check.pass1_inodes import kept_blocks
from nvfs_tools.check.paths import PathNamer


def run(chk: Any) -> None:
    img = chk.image
    stats = chk.start_pass(4, 1)
    refs: dict[int, int] = {}
    subdirs: dict[int, int] = {}
    for d, entries in chk.children.items():
        for entry in entries:
            child = entry[1]
            refs[child] = refs.get(child, 0) + 1
            info = chk.inodes.get(child)
            if info is not None and info.is_dir:
                subdirs[d] = subdirs.get(d, 0) + 1
    namer = None
    for ino in sorted(chk.inodes):
        info = chk.inodes.get(ino)
        if info is None or (ino < fmt.FIRST_INO and ino != fmt.ROOT_INO):
            continue
        stats.inodes += 1
        if info.is_dir:
            expected = 2 + subdirs.get(ino, 0)
        else:
            expected = refs.get(ino, 0)
            if expected == 0:
                if not _unattached(chk, ino, info):
                    continue
                expected = 1
        if info.links != expected:
            namer = namer or PathNamer(chk)

            def set_links(ino: int = ino, expected: int = expected) -> None:
                img.set_inode(ino, links_count=expected)
                img.barrier()

            chk.fix(
                "LINK_COUNT",
                {"ino": ino, "path": namer.path(ino), "found": info.links, "expected": expected},
                set_links,
            )
            info.links = expected
    chk.end_pass(stats)


def freeable(info: Any) -> bool:
    """operations.md rule 7: an unreferenced inode is freed when its link count is 0 or it is
    zero-length (size 0, no data block, no xattr block: the residue of a create that never committed)."""
    return info.links == 0 or (info.size == 0 and info.nblocks == 0)


def free_unattached(chk: Any, ino: int, info: Any) -> None:
    """Report and free an unreferenced inode that rule 7 says to free (its blocks fall free in pass 5)."""
    img = chk.image
    # what pass 1 let it own goes back to the free pool (pass 5 builds the bitmaps from that pool);
    # listed before the inode is cleared, while its block map can still be read
    kept = [] if info.is_dir else kept_blocks(chk, ino)

    def clear() -> None:
        img.clear_inode(ino)
        group = img.geo.group_of_inode(ino)
        if img.set_inode_bit(ino, False):
            img.add_counter(group, "free_inodes", 1)
            img.add_dyn("free_inodes", 1)
        if info.is_dir:
            img.add_counter(group, "used_dirs", -1)
        img.barrier()
        claimed = info.dirscan is not None and not info.dirscan.faults
        blocks = list(info.dirscan.blocks) if claimed else kept
        for block in blocks + ([info.xattr] if info.xattr else []):
            if block not in chk.shared_blocks:
                chk.allocator.mark(block, False)

    why = "link count 0" if info.links == 0 else "zero-length"
    chk.fix("INODE_UNATTACHED_EMPTY", {"ino": ino, "kind": kind_name(info.mode), "why": why}, clear)
    del chk.inodes[ino]
    chk.children.pop(ino, None)


def _unattached(chk: Any, ino: int, info: Any) -> bool:
    """Handle a file nothing names; True when it stays (reconnected), False when freed."""
    if freeable(info):
        free_unattached(chk, ino, info)
        return False
    from nvfs_tools.check.pass3_connect import ensure_lost_found, reconnect

    if chk.fix("INODE_UNATTACHED", {"ino": ino, "kind": kind_name(info.mode), "size": info.size}) and chk.writable:
        lf = ensure_lost_found(chk)
        if lf:
            reconnect(chk, ino, lf)
    return True
