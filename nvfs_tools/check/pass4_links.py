"""Pass 4: link counts against the references found; unattached inodes.

A file no entry names is either an interrupted create (zero length, nothing
owned: cleared) or real data (reconnected to /lost+found as ``#INO``).  A
directory's count is 2 plus its subdirectories.
"""

from __future__ import annotations

from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.check.image import kind_name
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


def _unattached(chk: Any, ino: int, info: Any) -> bool:
    """Handle a file nothing names; True when it stays (reconnected), False when cleared."""
    img = chk.image
    if info.size == 0 and info.nblocks == 0 and info.ftype == fmt.S_IFREG:

        def clear() -> None:
            img.clear_inode(ino)
            if img.set_inode_bit(ino, False):
                group = img.geo.group_of_inode(ino)
                img.add_counter(group, "free_inodes", 1)
                img.add_dyn("free_inodes", 1)
            img.barrier()

        chk.fix("INODE_UNATTACHED_EMPTY", {"ino": ino, "kind": kind_name(info.mode)}, clear)
        del chk.inodes[ino]
        return False
    from nvfs_tools.check.pass3_connect import ensure_lost_found, reconnect

    if chk.fix("INODE_UNATTACHED", {"ino": ino, "kind": kind_name(info.mode), "size": info.size}) and chk.writable:
        lf = ensure_lost_found(chk)
        if lf:
            reconnect(chk, ino, lf)
    return True
