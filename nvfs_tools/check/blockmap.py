"""Walking an inode's block map (direct pointers and indirect trees of every level).

:func:`walk_file` visits every pointer with its file block, its level and the
device address of the pointer word itself, so that a repair can clear exactly
one 8-byte word.  It never follows a pointer it has not validated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from nvfs_tools import format as fmt

#: An indirect block with more illegal pointers than this is itself garbage.
MAX_ILLEGAL_IN_INDIRECT = 4


def bad_block_reason(geo: Any, block: int) -> str | None:
    """Why ``block`` cannot belong to a file, or None."""
    if block >= geo.blocks_count:
        return "beyond the end of the filesystem"
    if geo.is_metadata_block(block):
        return "in a metadata area"
    return None


def tree_first_fblock(k: int, ppb: int) -> int:
    """First file block mapped by pointer ``N_DIRECT + k``."""
    return fmt.N_DIRECT + sum(ppb**level for level in range(1, k + 1))


def is_inline_symlink(inode: Any) -> bool:
    return inode.ftype == fmt.S_IFLNK and bool(inode.flags & fmt.INODE_FLAG_INLINE)


def maps_blocks(inode: Any) -> bool:
    """True when ``block[]`` holds a file block map (regular files and non-inline symlinks)."""
    return inode.ftype == fmt.S_IFREG or (inode.ftype == fmt.S_IFLNK and not inode.flags & fmt.INODE_FLAG_INLINE)


class Visit:
    """One pointer met by :func:`walk_file`."""

    __slots__ = ("block", "fblock", "level", "addr", "parent")

    def __init__(self, block: int, fblock: int, level: int, addr: int, parent: int = 0) -> None:
        self.block = block
        self.fblock = fblock  # first file block the pointer covers
        self.level = level  # 0 = data block, n = indirect block with n levels below
        self.addr = addr  # device byte address of the pointer word
        self.parent = parent  # indirect block holding the pointer word; 0 when it is in the inode


def walk_file(
    img: Any, inode: Any, visit: Callable[[Visit], bool], after: Callable[[Visit], None] | None = None
) -> None:
    """Call ``visit`` for every non-zero pointer, top-down.

    ``visit`` returns True to descend into (or keep) the pointer, False when
    it rejected it (the walk does not look below a rejected pointer).
    ``after``, when given, is called for every accepted indirect block once
    its children have been visited (a repair below may have emptied it).
    """
    bs = img.bs
    ppb = fmt.pointers_per_block(bs)
    ino = inode.ino
    for idx in range(fmt.N_BLOCK_POINTERS):
        block = inode.block[idx]
        if not block:
            continue
        addr = img.inode_field_addr(ino, "block", idx)
        if idx < fmt.N_DIRECT:
            visit(Visit(block, idx, 0, addr))
        else:
            k = idx - fmt.N_DIRECT
            _walk_tree(img, Visit(block, tree_first_fblock(k, ppb), k + 1, addr), ppb, visit, after)


def _walk_tree(
    img: Any, v: Visit, ppb: int, visit: Callable[[Visit], bool], after: Callable[[Visit], None] | None
) -> None:
    if not visit(v) or v.level == 0:
        return
    for child in children(img, v, ppb):
        _walk_tree(img, child, ppb, visit, after)
    if after is not None:
        after(v)


def children(img: Any, v: Visit, ppb: int) -> Iterator[Visit]:
    """The non-zero pointers of indirect block ``v`` (one level down, not followed further)."""
    span = ppb ** (v.level - 1)
    base = v.block * img.bs
    ptrs = img.block_view(v.block).cast("Q")
    for i in range(ppb):
        child = ptrs[i]
        if child:
            yield Visit(child, v.fblock + i * span, v.level - 1, base + i * 8, v.block)


def count_illegal(img: Any, block: int) -> int:
    geo = img.geo
    return sum(1 for p in img.block_view(block).cast("Q") if p and bad_block_reason(geo, p))


def owned_blocks_simple(img: Any, inode: Any) -> Iterator[int]:
    """Every valid block an inode owns, best effort, for completing a delete."""
    geo = img.geo
    if maps_blocks(inode):
        found: list[int] = []

        def take(v: Visit) -> bool:
            if bad_block_reason(geo, v.block):
                return False
            if v.level and count_illegal(img, v.block) > MAX_ILLEGAL_IN_INDIRECT:
                return False
            found.append(v.block)
            return True

        walk_file(img, inode, take)
        yield from found
    elif inode.ftype == fmt.S_IFDIR and inode.dir_bank in (0, 1):
        from nvfs_tools.check.dirtree import owned_dir_blocks

        yield from owned_dir_blocks(img, inode.ino, inode.block[inode.dir_bank], lambda b: bad_block_reason(geo, b))
    if inode.xattr_block and not bad_block_reason(geo, inode.xattr_block):
        yield inode.xattr_block
