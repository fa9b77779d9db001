"""Pass 3: the root, /lost+found, and that every directory is reachable exactly once.

A breadth-first walk from the root over the entries pass 2 kept.  A directory
met a second time is a forbidden directory hard link: the extra entry goes.
Directories never met are reconnected to /lost+found as ``#INO`` (the top of
each unreachable chain, found by following parent pointers with loop
detection, so a whole detached subtree comes back in one piece).  Parent
pointers are then set to the directory that really holds each entry.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.check.pass1_inodes import InodeInfo
from nvfs_tools.check.paths import PathNamer
from nvfs_tools.layout import new_inode


def run(chk: Any) -> None:
    img = chk.image
    dirs = {ino for ino, info in chk.inodes.items() if info.is_dir}
    stats = chk.start_pass(3, len(dirs) + 2)
    _check_root(chk)
    chk.progress(1)
    _drop_extra_links(chk)
    reached: dict[int, int] = {fmt.ROOT_INO: fmt.ROOT_INO} if fmt.ROOT_INO in chk.inodes else {}
    if reached:
        _walk(chk, fmt.ROOT_INO, reached)
    lf = _lost_found(chk)
    chk.lost_found = lf
    if lf and lf not in reached:
        reached[lf] = fmt.ROOT_INO
    chk.progress(1)
    from nvfs_tools.check.pass4_links import free_unattached, freeable

    for ino in sorted(dirs):
        while ino not in reached and ino in chk.inodes:
            top = _top_of_chain(chk, ino, reached)
            info = chk.inodes[top]
            if freeable(info):  # an interrupted mkdir (operations.md 3.2): free it, look again
                free_unattached(chk, top, info)
                continue
            if chk.fix("DIR_UNCONNECTED", {"ino": top, "parent": info.parent}) and chk.writable:
                target = ensure_lost_found(chk)
                reconnect(chk, top, target)
                reached[top] = target
            else:
                reached[top] = info.parent
            _walk(chk, top, reached)
        chk.progress(1)
    namer = PathNamer(chk)
    for ino in sorted(reached):
        info = chk.inodes.get(ino)
        if info is None:
            continue
        expected = reached[ino]
        if info.parent != expected:
            chk.fix(
                "DIR_BAD_PARENT",
                {"path": namer.path(ino), "ino": ino, "found": info.parent, "expected": expected},
                lambda ino=ino, expected=expected: (img.set_inode(ino, parent=expected), img.barrier()),
            )
            info.parent = expected
    stats.inodes = len(reached)
    chk.end_pass(stats)


def _drop_extra_links(chk: Any) -> None:
    """Keep one entry per directory (the one its parent pointer names); remove the others."""
    img = chk.image
    refs: dict[int, list[tuple[int, Any]]] = {}
    for d in sorted(chk.children):
        for entry in chk.children[d]:
            info = chk.inodes.get(entry[1])
            if info is not None and info.is_dir:
                refs.setdefault(entry[1], []).append((d, entry))
    namer = None
    for child, lst in sorted(refs.items()):
        if child == fmt.ROOT_INO:
            keep = None
        elif len(lst) < 2:
            continue
        else:
            parent = chk.inodes[child].parent
            keep = next((r for r in lst if r[0] == parent), lst[0])
        namer = namer or PathNamer(chk)
        keep_path = "/" if keep is None else namer.child(keep[0], keep[1][0])
        for d, entry in lst:
            if keep is not None and entry is keep[1]:
                continue
            addr = entry[2] if len(entry) > 2 else None

            def remove(addr: int | None = addr) -> None:
                if addr is not None:
                    img.store(addr, 0)
                    img.barrier()

            chk.fix(
                "DIR_MULTI_LINK",
                {"child": child, "path": namer.child(d, entry[0]), "keep": keep_path, "ino": d},
                remove,
            )
            # with -n the entry is ignored too: the answer to give is known
            chk.children[d] = [e for e in chk.children[d] if e is not entry]


def _walk(chk: Any, start: int, reached: dict[int, int]) -> None:
    """Mark every directory under ``start`` with the directory that holds its entry."""
    queue = deque([start])
    while queue:
        d = queue.popleft()
        for entry in chk.children.get(d, []):
            child = entry[1]
            info = chk.inodes.get(child)
            if info is None or not info.is_dir or child in reached:
                continue
            reached[child] = d
            queue.append(child)


def _top_of_chain(chk: Any, ino: int, reached: dict[int, int]) -> int:
    seen = {ino}
    cur = ino
    while True:
        parent = chk.inodes[cur].parent
        info = chk.inodes.get(parent)
        if info is None or not info.is_dir or parent in reached or parent in seen:
            return cur
        # the parent must really list us, else the chain is broken here
        if not any(e[1] == cur for e in chk.children.get(parent, [])):
            return cur
        seen.add(parent)
        cur = parent


def _check_root(chk: Any) -> None:
    info = chk.inodes.get(fmt.ROOT_INO)
    if info is not None and info.is_dir:
        return
    reason = "missing (not in use)" if info is None else "not a directory"
    img = chk.image

    def recreate() -> None:
        if info is not None:
            img.clear_inode(fmt.ROOT_INO)
            chk.inodes.pop(fmt.ROOT_INO, None)
        make_directory(chk, fmt.ROOT_INO, fmt.ROOT_INO, 0o755)

    chk.fix("ROOT_BAD", {"ino": fmt.ROOT_INO, "reason": reason}, recreate)


def _lost_found(chk: Any) -> int:
    """The inode of /lost+found, creating it (or asking to) when missing or unusable."""
    if fmt.ROOT_INO not in chk.inodes:
        return 0
    for entry in chk.children.get(fmt.ROOT_INO, []):
        if entry[0] == fmt.LOST_FOUND_NAME:
            info = chk.inodes.get(entry[1])
            if info is not None and info.is_dir:
                return entry[1]
            return ensure_lost_found(chk, reason="is not a directory")
    return ensure_lost_found(chk)


def ensure_lost_found(chk: Any, reason: str = "not found") -> int:
    lf = getattr(chk, "lost_found", 0)
    if lf:
        return lf
    img = chk.image
    made: list[int] = []

    def create() -> None:
        kept = []
        for entry in chk.children.get(fmt.ROOT_INO, []):
            if entry[0] == fmt.LOST_FOUND_NAME:
                if len(entry) > 2 and entry[2] is not None:
                    img.store(entry[2], 0)
                    img.barrier()
                continue
            kept.append(entry)
        chk.children[fmt.ROOT_INO] = kept
        ino = allocate_inode(chk, fmt.FIRST_INO)
        make_directory(chk, ino, fmt.ROOT_INO, 0o700)
        from nvfs_tools.check.pass2_dirs import add_entry

        add_entry(chk, fmt.ROOT_INO, fmt.LOST_FOUND_NAME, ino, fmt.DT_DIR)
        _bump_links(chk, fmt.ROOT_INO, 1)
        made.append(ino)

    if chk.fix("LOST_FOUND_MISSING", {"reason": reason}, create) and made:
        chk.lost_found = made[0]
        return made[0]
    return 0


def allocate_inode(chk: Any, goal: int) -> int:
    img = chk.image
    for ino in range(max(goal, fmt.FIRST_INO), img.geo.inodes_count + 1):
        if ino not in chk.inodes and img.inode(ino).mode == 0:
            return ino
    from nvfs_tools.errors import NoSpaceError

    raise NoSpaceError("no free inode left for the repair")


def make_directory(chk: Any, ino: int, parent: int, perm: int) -> None:
    """Write an empty directory inode (then its bitmap bit and counters), like the library's create."""
    img = chk.image
    geo = img.geo
    now = time.time_ns()
    sec, nsec = divmod(now, 10**9)
    generation = int.from_bytes(os.urandom(4), "little")
    raw = new_inode(fmt.S_IFDIR | perm, 2, (sec, nsec), parent=parent, generation=generation)
    img.write_bytes(geo.inode_offset(ino), raw)
    img.barrier()
    group = geo.group_of_inode(ino)
    if img.set_inode_bit(ino, True):
        img.add_counter(group, "free_inodes", -1)
        img.add_dyn("free_inodes", -1)
    img.add_counter(group, "used_dirs", 1)
    img.barrier()
    info = InodeInfo(ino, fmt.S_IFDIR | perm, 2, 0, parent)
    from nvfs_tools.check.dirtree import DirScan

    info.dirscan = DirScan(ino)
    chk.inodes[ino] = info
    chk.children[ino] = []


def _bump_links(chk: Any, ino: int, delta: int) -> None:
    img = chk.image
    info = chk.inodes[ino]
    info.links = img.inode(ino).links_count + delta
    img.set_inode(ino, links_count=info.links)
    img.barrier()


def reconnect(chk: Any, ino: int, lf: int) -> None:
    """Give ``ino`` the entry ``#INO`` in /lost+found (and fix a directory's parent pointer)."""
    from nvfs_tools.check.pass2_dirs import add_entry

    img = chk.image
    info = chk.inodes[ino]
    name = b"#%d" % ino
    add_entry(chk, lf, name, ino, fmt.MODE_TO_DT[info.ftype])
    if info.is_dir:
        img.set_inode(ino, parent=lf)
        img.barrier()
        info.parent = lf
        _bump_links(chk, lf, 1)
