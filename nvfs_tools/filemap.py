"""File block mapping: 11 direct pointers and five indirect trees, 1..5 levels.

Pointer ``11 + k`` of ``Inode.block`` roots a tree ``k + 1`` levels deep (see
:func:`format.block_path`); 0 anywhere is a hole.  The functions here work on a
list of the 16 root pointers so that a file still being built in memory
(create with data) and a live file share one code path.

Store order for writes into a live file (spec): new data blocks and new
indirect blocks are written completely, a barrier makes them durable, and only
then are pointers linked into blocks or inodes that are already reachable.
Truncate stores the size first and unlinks pointers from the end after it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nvfs_tools import format as fmt
from nvfs_tools.record import Fields

if TYPE_CHECKING:
    from nvfs_tools.volume import Volume

_U64 = struct.Struct("<Q")


def subtree_spans(block_size: int) -> list[tuple[int, int, int]]:
    """``(first file block, blocks covered, levels)`` for each of the 16 pointers."""
    p = fmt.pointers_per_block(block_size)
    out = [(i, 1, 0) for i in range(fmt.N_DIRECT)]
    start = fmt.N_DIRECT
    for level in range(1, fmt.N_INDIRECT + 1):
        out.append((start, p**level, level))
        start += p**level
    return out


_SPANS: dict[int, list[tuple[int, int, int]]] = {}


def spans(block_size: int) -> list[tuple[int, int, int]]:
    s = _SPANS.get(block_size)
    if s is None:
        s = _SPANS[block_size] = subtree_spans(block_size)
    return s


def lookup_block(vol: Volume, ptrs: list[int], fblock: int) -> int:
    """Device block holding file block ``fblock`` (0 for a hole)."""
    bs = vol.block_size
    index, path = fmt.block_path(fblock, bs)
    blk = ptrs[index]
    view = vol.dev.view
    for slot in path:
        if blk == 0:
            return 0
        vol.check_data_block(blk)
        blk = _U64.unpack_from(view, blk * bs + slot * 8)[0]
    return blk


def iter_tree(
    vol: Volume, ptrs: list[int], first: int = 0, last: int | None = None, *, nodes: bool = False
) -> Iterator[tuple[int, int]]:
    """Yield ``(file block, device block)`` of mapped blocks in ``[first, last)``.

    With ``nodes`` the indirect blocks are yielded too, as ``(-1, block)``.
    Blocks are checked to lie in the data area: a pointer into metadata raises
    :class:`CorruptError` instead of reading garbage.
    """
    bs = vol.block_size
    p = bs // 8
    view = vol.dev.view
    unpack = struct.Struct(f"<{p}Q").unpack_from
    for i, (start, span, level) in enumerate(spans(bs)):
        blk = ptrs[i]
        if blk == 0 or (last is not None and start >= last) or start + span <= first:
            continue
        if level == 0:
            vol.check_data_block(blk)
            yield start, blk
            continue
        yield from _walk(vol, view, unpack, blk, level, start, p, first, last, nodes)


def _walk(vol, view, unpack, blk, level, start, p, first, last, nodes):  # noqa: ANN001
    vol.check_data_block(blk)
    if nodes:
        yield -1, blk
    bs = p * 8
    slots = unpack(view, blk * bs)
    child_span = p ** (level - 1)
    for i, child in enumerate(slots):
        if child == 0:
            continue
        cstart = start + i * child_span
        if last is not None and cstart >= last:
            break
        if cstart + child_span <= first:
            continue
        if level == 1:
            vol.check_data_block(child)
            yield cstart, child
        else:
            yield from _walk(vol, view, unpack, child, level - 1, cstart, p, first, last, nodes)


def all_blocks(vol: Volume, ptrs: list[int]) -> list[int]:
    """Every block the tree owns: data and indirect."""
    return [b for _, b in iter_tree(vol, ptrs, nodes=True)]


def read(vol: Volume, ptrs: list[int], size: int, offset: int, length: int | None) -> bytes:
    """Bytes ``[offset, offset+length)`` of a file of ``size`` bytes; holes read as zeros."""
    if offset >= size:
        return b""
    end = size if length is None else min(size, offset + length)
    bs = vol.block_size
    out = bytearray(end - offset)
    first, last = offset // bs, (end + bs - 1) // bs
    view = vol.dev.view
    run_f = run_d = run_n = 0
    for fb, db in iter_tree(vol, ptrs, first, last):
        if run_n and fb == run_f + run_n and db == run_d + run_n:
            run_n += 1
            continue
        if run_n:
            _copy_run(view, out, bs, offset, end, run_f, run_d, run_n)
        run_f, run_d, run_n = fb, db, 1
    if run_n:
        _copy_run(view, out, bs, offset, end, run_f, run_d, run_n)
    return bytes(out)


def _copy_run(view, out, bs, offset, end, fb, db, n):  # noqa: ANN001
    lo = max(fb * bs, offset)
    hi = min((fb + n) * bs, end)
    src = db * bs + (lo - fb * bs)
    out[lo - offset : hi - offset] = view[src : src + hi - lo]


class TreeUpdate(Fields):
    """What linking new blocks into a file needs, in store order."""

    _fields = ("new_nodes", "late_stores", "root_changes")

    def __init__(self) -> None:
        #: new indirect blocks with their complete contents (write before barrier)
        self.new_nodes: dict[int, bytearray] = {}
        #: (device byte address, value) pointer stores into reachable blocks (after barrier)
        self.late_stores: list[tuple[int, int]] = []
        #: root pointers changed: index -> value
        self.root_changes: dict[int, int] = {}


def missing_nodes(vol: Volume, ptrs: list[int], fblocks: list[int]) -> int:
    """How many indirect blocks mapping ``fblocks`` would have to allocate."""
    bs = vol.block_size
    view = vol.dev.view
    seen: set[tuple] = set()
    count = 0
    for fb in fblocks:
        index, path = fmt.block_path(fb, bs)
        if not path:
            continue
        key: tuple = (index,)
        blk = ptrs[index]
        if key not in seen:
            seen.add(key)
            count += blk == 0
        for slot in path[:-1]:
            key = key + (slot,)
            child = _U64.unpack_from(view, blk * bs + slot * 8)[0] if blk else 0
            if key not in seen:
                seen.add(key)
                count += child == 0
            blk = child
    return count


def link_blocks(
    vol: Volume,
    ptrs: list[int],
    items: list[tuple[int, int]],
    goal: int | None,
    *,
    reachable: bool,
    node_blocks: list[int] | None = None,
) -> TreeUpdate:
    """Plan linking ``(file block, device block)`` pairs into the tree rooted at ``ptrs``.

    Missing indirect blocks come from ``node_blocks`` (set aside by the caller)
    or are allocated (near ``goal``).  When the inode is
    ``reachable`` (a live file) stores into existing blocks are deferred to
    ``late_stores``; root pointer changes always go to ``root_changes`` for the
    caller to store after the barrier (or to put into a new inode image).
    """
    bs = vol.block_size
    view = vol.dev.view
    upd = TreeUpdate()
    spare = iter(node_blocks or ())

    def new_node() -> int:
        """A block for a new indirect node: one set aside by the caller, else allocated now."""
        return next(spare, None) or vol.allocate_block(goal)

    # node key (root index, path prefix) -> (block, new contents or None if existing)
    nodes: dict[tuple, tuple[int, bytearray | None]] = {}
    roots = list(ptrs)
    for fb, db in items:
        index, path = fmt.block_path(fb, bs)
        if not path:
            roots[index] = db
            upd.root_changes[index] = db
            continue
        key: tuple = (index,)
        node = nodes.get(key)
        if node is None:
            blk = roots[index]
            if blk:
                vol.check_data_block(blk)
                node = (blk, None)
            else:
                blk = new_node()
                node = (blk, bytearray(bs))
                upd.new_nodes[blk] = node[1]
                roots[index] = blk
                upd.root_changes[index] = blk
            nodes[key] = node
        for depth, slot in enumerate(path):
            blk, content = node
            if depth == len(path) - 1:
                if content is not None:
                    _U64.pack_into(content, slot * 8, db)
                else:
                    upd.late_stores.append((blk * bs + slot * 8, db))
                break
            key = key + (slot,)
            child = nodes.get(key)
            if child is None:
                if content is not None:
                    cur = _U64.unpack_from(content, slot * 8)[0]
                else:
                    cur = _U64.unpack_from(view, blk * bs + slot * 8)[0]
                if cur:
                    vol.check_data_block(cur)
                    child = (cur, None)
                else:
                    nb = new_node()
                    child = (nb, bytearray(bs))
                    upd.new_nodes[nb] = child[1]
                    if content is not None:
                        _U64.pack_into(content, slot * 8, nb)
                    else:
                        upd.late_stores.append((blk * bs + slot * 8, nb))
                nodes[key] = child
            node = child
    return upd


def indirect_blocks_needed(nblocks: int, block_size: int) -> int:
    """Indirect blocks a file whose blocks 0..nblocks-1 are all mapped needs."""
    total = 0
    p = block_size // 8
    for start, span, level in spans(block_size):
        if level == 0 or nblocks <= start:
            continue
        covered = min(nblocks - start, span)
        # nodes at height h (h = 1 points at data blocks) number ceil(covered / p**h)
        total += sum(-(-covered // p**h) for h in range(1, level + 1))
    return total


def plan_truncate(vol: Volume, ptrs: list[int], keep: int) -> tuple[list[tuple[int, int]], dict[int, int], list[int]]:
    """Pointer stores and blocks to free so that only file blocks < ``keep`` stay mapped.

    Returns ``(stores into existing blocks, root pointer changes, blocks to free)``.
    """
    bs = vol.block_size
    p = bs // 8
    view = vol.dev.view
    unpack = struct.Struct(f"<{p}Q").unpack_from
    stores: list[tuple[int, int]] = []
    roots: dict[int, int] = {}
    free: list[int] = []
    for i, (start, span, level) in enumerate(spans(bs)):
        blk = ptrs[i]
        if blk == 0 or start + span <= keep:
            continue
        if start >= keep:
            roots[i] = 0
            if level == 0:
                vol.check_data_block(blk)
                free.append(blk)
            else:
                free.extend(b for _, b in _walk(vol, view, unpack, blk, level, start, p, 0, None, True))
            continue
        if _prune(vol, view, unpack, blk, level, start, p, keep, stores, free):
            roots[i] = 0  # an indirect block left with no pointer is unlinked too
            free.append(blk)
    stores.reverse()  # from the end of the file, as spec/operations.md 7.2 words it
    return stores, roots, free


def _prune(vol, view, unpack, blk, level, start, p, keep, stores, free) -> bool:  # noqa: ANN001
    """Unlink what lies past ``keep`` below node ``blk``; True when the node is left empty."""
    vol.check_data_block(blk)
    bs = p * 8
    slots = unpack(view, blk * bs)
    child_span = p ** (level - 1)
    left = 0
    for i, child in enumerate(slots):
        if child == 0:
            continue
        cstart = start + i * child_span
        if cstart + child_span <= keep:
            left += 1
            continue
        if cstart >= keep:
            stores.append((blk * bs + i * 8, 0))
            if level == 1:
                vol.check_data_block(child)
                free.append(child)
            else:
                free.extend(b for _, b in _walk(vol, view, unpack, child, level - 1, cstart, p, 0, None, True))
        elif level > 1 and _prune(vol, view, unpack, child, level - 1, cstart, p, keep, stores, free):
            stores.append((blk * bs + i * 8, 0))
            free.append(child)
        else:
            left += 1
    return left == 0
