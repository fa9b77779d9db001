"""The bad-blocks inode (inode 1, spec/checking.md 5.1 and format.md 5.1).

Inode 1 is either all zero or a regular file (mode ``S_IFREG``, permissions 0,
one link, named by no entry) whose data blocks are the device's bad blocks,
mapped one after another from file block 0 (``size`` = data blocks * bs).  Its
blocks are owned like any file's, so their bitmap bits stay set and no
allocator, the library's or fsck's, ever hands them out.

When bad media is known (``--badblocks`` or the kernel's sysfs list), a bad
data block that nothing owns would be handed out by the next allocation; fsck
records it in inode 1 (as ``e2fsck -c`` adds to the bad block inode) just
before pass 5 compares the bitmaps, when every repair that frees blocks is done.

Store order (operations.md 2, content before pointer): the block's bitmap bit
and counters first, then any new indirect block written whole before the
pointer to it, then the pointer, ``blocks`` and ``size``; a new inode 1 gets
every field before its ``mode`` (the commit).  A crash in between leaves
leaked bits or an inode 1 with mode 0 and non-zero bytes, both of which the
next run repairs.
"""

from __future__ import annotations

import time
from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.check import blockmap as bm

BAD_INO = fmt.BADBLOCKS_INO
BAD_MODE = fmt.S_IFREG  # permissions 0


def data_blocks(chk: Any) -> list[tuple[int, int]]:
    """(file block, block) of inode 1's data blocks as pass 1 kept them, in file-block order."""
    img = chk.image
    inode = img.inode(BAD_INO)
    if inode.ftype != fmt.S_IFREG:
        return []
    from nvfs_tools.check.pass1_inodes import judge_pointer, map_blocks

    nblocks = map_blocks(inode, img.bs)
    dropped = getattr(chk, "dropped_ptrs", set())
    out: list[tuple[int, int]] = []

    def visit(v: bm.Visit) -> bool:
        if v.addr in dropped or judge_pointer(img, inode, v, nblocks) is not None:
            return False
        if v.level == 0:
            out.append((v.fblock, v.block))
        return True

    bm.walk_file(img, inode, visit)
    return sorted(out)


def free_bad_blocks(chk: Any) -> list[int]:
    """Bad blocks of the data area that nothing owns (``chk.owned`` has metadata, backup and tail set)."""
    img = chk.image
    if not img.bad:
        return []
    owned = chk.owned
    total = img.geo.blocks_count
    return sorted(b for b in img.bad if b < total and not owned[b >> 3] >> (b & 7) & 1)


def record_free_bad_blocks(chk: Any) -> None:
    """Report the free bad blocks; when allowed, map them into inode 1 (creating it when it is free)."""
    blocks = free_bad_blocks(chk)
    if not blocks:
        return
    shown = ", ".join(map(str, blocks[:8])) + (", ..." if len(blocks) > 8 else "")
    chk.fix(
        "MEDIA_BAD_FREE",
        {"count": len(blocks), "blocks": shown, "ino": BAD_INO},
        lambda: _append(chk, blocks),
    )


def _append(chk: Any, blocks: list[int]) -> None:
    img = chk.image
    alloc = chk.allocator
    inode = img.inode(BAD_INO)
    fresh = inode.mode == 0
    if fresh:
        img.write_bytes(img.geo.inode_offset(BAD_INO), bytes(fmt.INODE_SIZE))
        img.barrier()
        nfile = ndata = count = 0
    else:
        mapped = data_blocks(chk)
        nfile = mapped[-1][0] + 1 if mapped else 0  # the next file block (the map has no holes when fsck made it)
        ndata, count = len(mapped), inode.blocks
    for block in blocks:  # each block complete (bit, pointer, counts) before the next: a cut leaves no half
        alloc.take(block)
        img.barrier()
        count += 1 + _map(img, alloc, nfile, block)
        img.barrier()
        nfile += 1
        ndata += 1
        img.set_inode(BAD_INO, blocks=count, size=ndata * img.bs)
        img.barrier()
    if fresh:
        now = int(time.time())
        img.set_inode(BAD_INO, links_count=1, atime=now, mtime=now, ctime=now, btime=now)
        img.barrier()
        img.set_inode(BAD_INO, mode=BAD_MODE)
        img.barrier()
    info = chk.inodes.get(BAD_INO)
    if info is not None:
        info.nblocks, info.size = count, ndata * img.bs
    else:
        from nvfs_tools.check.pass1_inodes import InodeInfo

        info = chk.inodes[BAD_INO] = InodeInfo(BAD_INO, BAD_MODE, 1, ndata * img.bs, 0)
        info.nblocks = count


def _map(img: Any, alloc: Any, fblock: int, block: int) -> int:
    """Store ``block`` at file block ``fblock`` of inode 1; the number of indirect blocks it took."""
    if fblock < fmt.N_DIRECT:
        img.store(img.inode_field_addr(BAD_INO, "block", fblock), block)
        return 0
    ppb = fmt.pointers_per_block(img.bs)
    rest = fblock - fmt.N_DIRECT
    level = 1
    while rest >= ppb**level:
        rest -= ppb**level
        level += 1
    path = [(rest // ppb ** (level - 1 - d)) % ppb for d in range(level)]
    addr = img.inode_field_addr(BAD_INO, "block", fmt.N_DIRECT + level - 1)
    for depth, slot in enumerate(path):
        node = img.u64(addr)
        if node == 0:
            return _new_chain(img, alloc, addr, path[depth:], block)
        addr = node * img.bs + slot * 8
    img.store(addr, block)
    return 0


def _new_chain(img: Any, alloc: Any, addr: int, slots: list[int], block: int) -> int:
    """Indirect blocks for the rest of a path, written bottom-up, then linked at ``addr`` (one store)."""
    chain = [alloc.allocate_block() for _ in slots]
    child = block
    for node, slot in zip(reversed(chain), reversed(slots), strict=True):
        content = bytearray(img.bs)
        content[slot * 8 : slot * 8 + 8] = child.to_bytes(8, "little")
        img.write_bytes(node * img.bs, bytes(content))
        child = node
    img.barrier()
    img.store(addr, chain[0])
    return len(chain)
