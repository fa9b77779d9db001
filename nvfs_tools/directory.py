"""Directories: hashed radix trees of directory pages, switched over by bank flips.

A directory is an extendible hash over the 64-bit SipHash of each name.  Radix
nodes (one block of u64 slots) consume ``radix_bits`` hash bits per level from
the most significant bit; directory pages hold the entries.  The directory
inode keeps two root words (``block[0]`` and ``block[1]``) and ``dir_bank``
says which one is live, so every structural change (first page, split,
compaction, new radix level) is copy-on-write: the new pages and the copied
path of nodes are written and flushed, the new root goes into the inactive
bank's word, and one 8-byte store of ``dir_bank`` switches the directory over.
Only then are the old blocks freed.  Adding an entry writes its record with
``ino = 0`` into the free space of its page, flushes, then stores the ``ino``
word (the commit); removing stores ``ino = 0``.

Lookups must be cheap (mkfs adds a million entries), so the parsed tree --
node slots, page fill levels and a name index of record addresses -- is cached
per volume and inode and re-validated on every call against the inode's bank,
live root word and generation.  Liveness of an entry is always read from the
media (its ``ino`` word), so stores made by others (a rename's journal) are
seen at once.
"""

from __future__ import annotations

import bisect
import itertools
import os
import struct
import weakref
from collections import OrderedDict
from collections.abc import Iterator

from nvfs_tools import format as fmt
from nvfs_tools import namehash
from nvfs_tools.dirwalk import (
    EHDR,
    ENTRY_HEADER,
    ENTRY_INO_OFFSET,
    HDR,
    PAGE_HEADER,
    PAGE_NEXT_OFFSET,
    U64,
    ParsedPage,
    name_problem,
    parse_page,
    prefix_of,
    slot_index,
    walk_tree,
)
from nvfs_tools.errors import (
    CorruptError,
    DirectoryNotEmptyError,
    FileExistsError_,
    InvalidArgumentError,
    NameTooLongError,
    NoSuchFileError,
    ReadOnlyError,
)
from nvfs_tools.record import Fields

PAGE_BIT = fmt.RADIX_PAGE_BIT
BLOCK_MASK = fmt.RADIX_BLOCK_MASK
_U32 = struct.Struct("<I")
# Indexes into a cached page's metadata list.
_DEPTH, _PREFIX, _NEXT, _END, _DEAD = range(5)
#: Directories whose parsed tree is kept per volume (least recently used go first).
MAX_CACHED_DIRECTORIES = 64


def check_name(name: bytes | str) -> bytes:
    """Return ``name`` as bytes, or raise the error a bad directory entry name deserves."""
    if isinstance(name, str):
        name = os.fsencode(name)
    name = bytes(name)
    if len(name) > fmt.MAX_NAME_LEN:
        raise NameTooLongError(f"name of {len(name)} bytes is longer than {fmt.MAX_NAME_LEN}")
    why = name_problem(name)
    if why is not None:
        raise InvalidArgumentError(f"invalid name {name!r}: {why}")
    return name


class DirEntry(Fields):
    """One directory entry as it sits in its page (``offset``: of the record within its block;
    ``block_size`` is neither shown nor compared)."""

    _fields = ("name", "ino", "file_type", "hash", "block", "offset")

    def __init__(
        self, name: bytes, ino: int, file_type: int, hash: int, block: int, offset: int,
        block_size: int = fmt.DEFAULT_BLOCK_SIZE,
    ) -> None:  # fmt: skip
        self.name, self.ino, self.file_type, self.hash = name, ino, file_type, hash
        self.block, self.offset, self.block_size = block, offset, block_size

    @property
    def ino_addr(self) -> int:
        """Device byte address of the entry's ``ino`` word: the commit word."""
        return self.block * self.block_size + self.offset + ENTRY_INO_OFFSET


class _State:
    """The parsed live tree of one directory, shared by every Directory object of it."""

    __slots__ = ("key", "bank", "root", "nodes", "pages", "index")

    def __init__(self, key: tuple[int, int, int]) -> None:
        self.key = key
        self.bank = key[0]
        self.root = key[1]
        #: node block -> its slots
        self.nodes: dict[int, list[int]] = {}
        #: page block -> [depth, prefix, next, end, dead_bytes]
        self.pages: dict[int, list[int]] = {}
        #: name -> device address of its record (a tuple when several records carry it)
        self.index: dict[bytes, int | tuple[int, ...]] = {}


_REGISTRY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _registry(vol) -> OrderedDict | None:
    try:
        reg = _REGISTRY.get(vol)
        if reg is None:
            reg = _REGISTRY[vol] = OrderedDict()
        return reg
    except TypeError:  # volume objects that cannot be weakly referenced get no shared cache
        return None


class Directory:
    """One directory of a volume: lookup, add, remove, iterate (see the module doc)."""

    def __init__(self, vol, ino: int) -> None:
        self.vol = vol
        self.ino = ino
        self.bs = vol.block_size
        self.bits = fmt.radix_bits(self.bs)
        self.ppb = fmt.pointers_per_block(self.bs)
        self.seed = vol.hash_seed
        self._node_struct = struct.Struct(f"<{self.ppb}Q")
        self._bank_addr = vol.inode_field_addr(ino, "dir_bank")
        self._root_addr = (vol.inode_field_addr(ino, "block", 0), vol.inode_field_addr(ino, "block", 1))
        self._gen_addr = vol.inode_field_addr(ino, "generation")
        self._blocks_addr = vol.inode_field_addr(ino, "blocks")
        self._own: _State | None = None  # used when the volume cannot hold a shared cache

    def _writable(self) -> None:
        if not getattr(self.vol, "writable", True):
            raise ReadOnlyError("filesystem opened read-only")

    # ------------------------------------------------------------------ cache

    def _key(self) -> tuple[int, int, int]:
        view = self.vol.dev.view
        bank = U64.unpack_from(view, self._bank_addr)[0]
        if bank > 1:
            raise CorruptError(f"directory inode {self.ino}: dir_bank is {bank}, not 0 or 1")
        root = U64.unpack_from(view, self._root_addr[bank])[0]
        return bank, root, _U32.unpack_from(view, self._gen_addr)[0]

    def _state(self) -> _State:
        """The cached tree, reloaded when the inode's bank, root or generation moved."""
        key = self._key()
        reg = _registry(self.vol)
        st = reg.get(self.ino) if reg is not None else self._own
        if st is None or st.key != key:
            st = self._load(key)
            if reg is not None:
                reg[self.ino] = st
                while len(reg) > MAX_CACHED_DIRECTORIES:
                    reg.popitem(last=False)
            else:
                self._own = st
        if reg is not None:
            reg.move_to_end(self.ino)
        return st

    def _load(self, key: tuple[int, int, int]) -> _State:
        st = _State(key)
        tree = walk_tree(
            self.vol.read_block,
            st.root,
            self.bs,
            self.seed,
            dir_ino=self.ino,
            check_hashes=False,
            check_duplicates=False,
        )
        if tree.problems:
            more = f" (and {len(tree.problems) - 1} more problems)" if len(tree.problems) > 1 else ""
            raise CorruptError(f"directory inode {self.ino}: {tree.problems[0]}{more}")
        st.nodes = {n.block: n.slots for n in tree.nodes}
        st.pages = {p.block: [p.depth, p.prefix, p.next, p.end, p.dead_bytes] for p in tree.pages}
        bs = self.bs
        for e in tree.entries:
            self._index_add(st, e.name, e.block * bs + e.offset)
        return st

    @staticmethod
    def forget(vol, ino: int | None = None) -> None:
        """Drop the cached tree of ``ino`` (every directory when None).

        For code that changes directory blocks behind this class's back (fsck
        repairs, debugfs writes); the next call re-reads the tree.
        """
        reg = _registry(vol)
        if reg is not None:
            if ino is None:
                reg.clear()
            else:
                reg.pop(ino, None)

    _forget = forget

    # ------------------------------------------------------------------ index

    @staticmethod
    def _index_add(st: _State, name: bytes, addr: int) -> None:
        old = st.index.get(name)
        if old is None:
            st.index[name] = addr
        elif isinstance(old, int):
            st.index[name] = (old, addr)
        else:
            st.index[name] = (*old, addr)

    @staticmethod
    def _index_replace(st: _State, name: bytes, old_addr: int, new_addr: int | None) -> None:
        cur = st.index.get(name)
        if cur is None:
            return
        addrs = [cur] if isinstance(cur, int) else list(cur)
        if old_addr not in addrs:
            return
        if new_addr is None:
            addrs.remove(old_addr)
        else:
            addrs[addrs.index(old_addr)] = new_addr
        if not addrs:
            del st.index[name]
        else:
            st.index[name] = addrs[0] if len(addrs) == 1 else tuple(addrs)

    def _find(self, st: _State, name: bytes) -> tuple[int, int] | None:
        """``(record address, ino)`` of the live record of ``name`` (newest first)."""
        cur = st.index.get(name)
        if cur is None:
            return None
        view = self.vol.dev.view
        for addr in (cur,) if isinstance(cur, int) else reversed(cur):
            ino, _h, name_len, _ft, _rl = ENTRY_HEADER.unpack_from(view, addr)
            if view[addr + EHDR : addr + EHDR + name_len] != name or name_len != len(name):
                # The cache no longer matches the media (someone rewrote the page): re-read it all.
                self.forget(self.vol, self.ino)
                return self._find_uncached(name)
            if ino:
                return addr, ino
        return None

    def _find_uncached(self, name: bytes) -> tuple[int, int] | None:
        st = self._state()
        cur = st.index.get(name)
        view = self.vol.dev.view
        for addr in () if cur is None else (cur,) if isinstance(cur, int) else reversed(cur):
            ino = U64.unpack_from(view, addr + ENTRY_INO_OFFSET)[0]
            if ino:
                return addr, ino
        return None

    def _entry_at(self, addr: int) -> DirEntry:
        view = self.vol.dev.view
        ino, h, name_len, ft, _rl = ENTRY_HEADER.unpack_from(view, addr)
        name = bytes(view[addr + EHDR : addr + EHDR + name_len])
        block, offset = divmod(addr, self.bs)
        return DirEntry(name, ino, ft, h, block, offset, self.bs)

    # ------------------------------------------------------------------ public API

    @staticmethod
    def init_empty(vol, ino: int) -> None:
        """Make ``ino`` an empty directory: both root words 0, bank 0 live."""
        vol.store_u64(vol.inode_field_addr(ino, "block", 0), 0)
        vol.store_u64(vol.inode_field_addr(ino, "block", 1), 0)
        vol.store_u64(vol.inode_field_addr(ino, "dir_bank"), 0)
        vol.barrier()
        Directory._forget(vol, ino)

    def lookup(self, name: bytes) -> DirEntry | None:
        """The live entry called ``name``, or None.

        Raises NameTooLongError for names over 255 bytes (as Linux does);
        other impossible names (empty, with '/' or NUL, '.' and '..', which
        are never stored) simply are not found.
        """
        if isinstance(name, str):
            name = os.fsencode(name)
        if len(name) > fmt.MAX_NAME_LEN:
            raise NameTooLongError(f"name of {len(name)} bytes is longer than {fmt.MAX_NAME_LEN}")
        found = self._find(self._state(), bytes(name))
        return self._entry_at(found[0]) if found else None

    def __contains__(self, name: bytes) -> bool:
        return self.lookup(name) is not None

    def __iter__(self) -> Iterator[DirEntry]:
        """Live entries of the live bank, page by page in hash order, read from the media."""
        bs = self.bs
        for block in self._page_order(self._state()):
            page = parse_page(self.vol.read_block(block), bs)
            for r in page.records:
                if r.ino:
                    yield DirEntry(r.name, r.ino, r.file_type, r.hash, block, r.offset, bs)

    def add(self, name: bytes, ino: int, file_type: int) -> DirEntry:
        """Add ``name -> ino``: record first, then the ``ino`` word as the commit."""
        self._writable()
        name = check_name(name)
        if ino <= 0:
            raise InvalidArgumentError(f"cannot link inode {ino}")
        st = self._state()
        if self._find(st, name) is not None:
            raise FileExistsError_(f"{name!r} already exists in directory inode {self.ino}")
        entry = self._insert(st, name, file_type)
        self.vol.store_u64(entry.ino_addr, ino)
        self.vol.barrier()
        entry.ino = ino
        return entry

    def prepare(self, name: bytes, file_type: int) -> DirEntry:
        """Write the record of ``name`` with ``ino = 0`` and flush; the caller commits.

        The caller stores the inode number at ``entry.ino_addr`` (inside a
        journal transaction for rename).  An existing entry of the same name
        is left alone, so rename can clear it in the same transaction.
        """
        self._writable()
        name = check_name(name)
        return self._insert(self._state(), name, file_type)

    def remove(self, name: bytes) -> DirEntry:
        """Remove ``name`` with one store (its ``ino`` word = 0); returns the entry as it was."""
        if isinstance(name, str):
            name = os.fsencode(name)
        name = bytes(name)
        self._writable()
        st = self._state()
        found = self._find(st, name)
        if found is None:
            raise NoSuchFileError(f"{name!r} not found in directory inode {self.ino}")
        addr, _ino = found
        entry = self._entry_at(addr)
        self.vol.store_u64(addr + ENTRY_INO_OFFSET, 0)
        self.vol.barrier()
        meta = st.pages.get(entry.block)
        if meta is not None:
            meta[_DEAD] += fmt.dir_entry_rec_len(len(entry.name))
        self._index_replace(st, name, addr, None)
        return entry

    def is_empty(self) -> bool:
        return next(iter(self), None) is None

    def owned_blocks(self) -> list[int]:
        """Pages (with overflow pages) and radix nodes of the live bank."""
        st = self._state()
        return list(st.nodes) + list(st.pages)

    def release(self) -> None:
        """Free every block of an empty directory (rmdir): roots cleared first, then blocks freed."""
        self._writable()
        st = self._state()
        if not self.is_empty():
            raise DirectoryNotEmptyError(f"directory inode {self.ino} is not empty")
        blocks = self.owned_blocks()
        vol = self.vol
        vol.store_u64(self._root_addr[1 - st.bank], 0)
        vol.store_u64(self._root_addr[st.bank], 0)
        vol.barrier()
        for b in blocks:
            vol.free_block(b)
        st.nodes.clear()
        st.pages.clear()
        st.index.clear()
        st.root = 0
        st.key = (st.bank, 0, st.key[2])
        self._account(-len(blocks), 0)

    def page_blocks(self) -> list[int]:
        """Page blocks of the live bank in hash order (chains in chain order)."""
        return self._page_order(self._state())

    # ------------------------------------------------------------------ tree walking

    def _page_order(self, st: _State) -> list[int]:
        out: list[int] = []

        def chain(word: int) -> None:
            b = word & BLOCK_MASK
            while b:
                out.append(b)
                b = st.pages[b][_NEXT]

        def node(block: int) -> None:
            prev = 0
            for w in st.nodes[block]:
                if w == prev or w == 0:
                    continue
                prev = w
                if w & PAGE_BIT:
                    chain(w)
                else:
                    node(w)

        if st.root & PAGE_BIT:
            chain(st.root)
        elif st.root:
            node(st.root)
        return out

    def _route(self, st: _State, h: int) -> tuple[list[tuple[int, int, int]], int]:
        """Path ``[(node block, level, slot)]`` from the root and the word the hash reaches."""
        word = st.root
        path: list[tuple[int, int, int]] = []
        level = 0
        bits = self.bits
        nodes = st.nodes
        while word and not word & PAGE_BIT:
            s = slot_index(h, level, bits)
            path.append((word, level, s))
            word = nodes[word][s]
            level += 1
        return path, word

    # ------------------------------------------------------------------ insertion

    def _insert(self, st: _State, name: bytes, file_type: int) -> DirEntry:
        """Write the record (ino 0) of ``name`` where its hash leads, making room as needed."""
        h = namehash.name_hash(self.seed, name)
        rl = fmt.dir_entry_rec_len(len(name))
        for _ in range(4 * 64 + 16):  # each round makes one structural change towards room
            path, word = self._route(st, h)
            if word == 0:
                self._new_page_in_hole(st, path, h)
                continue
            head = word & BLOCK_MASK
            target = self._page_with_room(st, head, rl)
            if target is not None:
                return self._write_record(st, target, name, h, file_type, rl)
            self._make_room(st, path, head, rl)
        raise CorruptError(f"directory inode {self.ino}: no room found for {name!r}")

    def _page_with_room(self, st: _State, head: int, rl: int) -> int | None:
        limit = self.bs - rl
        b = head
        while b:
            meta = st.pages[b]
            if meta[_END] <= limit:
                return b
            b = meta[_NEXT]
        return None

    def _write_record(self, st: _State, block: int, name: bytes, h: int, file_type: int, rl: int) -> DirEntry:
        """One write: the record and a zeroed header after it (so a torn earlier write never parses)."""
        meta = st.pages[block]
        off = meta[_END]
        tail = min(EHDR + 4, self.bs - off - rl)
        buf = bytearray(rl + tail)
        ENTRY_HEADER.pack_into(buf, 0, 0, h, len(name), file_type, rl)
        buf[EHDR : EHDR + len(name)] = name
        addr = block * self.bs + off
        self.vol.dev.write(addr, buf)
        self.vol.barrier()
        meta[_END] = off + rl
        # Drop records of this name that are dead (crashed adds, removed entries).
        cur = st.index.get(name)
        if cur is not None:
            view = self.vol.dev.view
            addrs = (cur,) if isinstance(cur, int) else cur
            keep = [a for a in addrs if U64.unpack_from(view, a + ENTRY_INO_OFFSET)[0]]
            if keep:
                st.index[name] = keep[0] if len(keep) == 1 else tuple(keep)
            else:
                del st.index[name]
        self._index_add(st, name, addr)
        return DirEntry(name, 0, file_type, h, block, off, self.bs)

    def _make_room(self, st: _State, path: list[tuple[int, int, int]], head: int, rl: int) -> None:
        """The page (chain) for a hash is full: compact, chain an overflow page, or split."""
        chain = [head]
        while st.pages[chain[-1]][_NEXT]:
            chain.append(st.pages[chain[-1]][_NEXT])
        room = self.bs - HDR
        head_page = None
        for pos, block in enumerate(chain):
            page = parse_page(self.vol.read_block(block), self.bs)
            head_page = head_page or page
            st.pages[block][_DEAD] = page.dead_bytes
            if page.live_bytes + rl <= room and page.dead_bytes:
                self._compact(st, path, chain, pos, page)
                return
        if st.pages[head][_DEPTH] >= 64:
            self._append_overflow(st, chain[-1])
            return
        self._split(st, path, head, head_page)

    def _page_bytes(self, depth: int, prefix: int, nxt: int, records) -> tuple[bytes, int, list[tuple]]:
        """A fresh page image; returns it, its used end and ``(name, old offset, new offset)`` moves."""
        buf = bytearray(self.bs)
        PAGE_HEADER.pack_into(buf, 0, fmt.DIR_PAGE_MAGIC, depth, 0, prefix, self.ino, nxt)
        off = HDR
        moves = []
        for r in records:
            ENTRY_HEADER.pack_into(buf, off, r.ino, r.hash, r.name_len, r.file_type, r.rec_len)
            buf[off + EHDR : off + EHDR + r.name_len] = r.name
            moves.append((r.name, r.offset, off))
            off += r.rec_len
        return bytes(buf), off, moves

    def _alloc(self, goal: int | None) -> int:
        return self.vol.allocate_block(goal)

    def _write_node(self, slots: list[int], goal: int | None) -> int:
        block = self._alloc(goal)
        self.vol.write_block(block, self._node_struct.pack(*slots))
        return block

    def _new_page(self, st_pages_new: dict, depth: int, prefix: int, nxt: int, records, goal: int | None):
        block = self._alloc(goal)
        data, end, moves = self._page_bytes(depth, prefix, nxt, records)
        self.vol.write_block(block, data)
        st_pages_new[block] = [depth, prefix, nxt, end, 0]
        return block, moves

    def _move_index(self, st: _State, old_block: int, new_block: int, moves, dead: list) -> None:
        bs = self.bs
        for name, old_off, new_off in moves:
            self._index_replace(st, name, old_block * bs + old_off, new_block * bs + new_off)
        for r in dead:
            self._index_replace(st, r.name, old_block * bs + r.offset, None)

    def _new_page_in_hole(self, st: _State, path: list[tuple[int, int, int]], h: int) -> None:
        """The hash leads to an empty root or slot: a new page fills exactly that slot (spec 6.3 rule 4)."""
        new_pages: dict[int, list[int]] = {}
        if not path:
            block, _ = self._new_page(new_pages, 0, 0, 0, [], None)
            self._cow(st, path, block | PAGE_BIT, new_pages, {}, [])
            return
        node_block, level, s = path[-1]
        top = level * self.bits + self.bits
        depth = min(64, top)
        prefix = prefix_of(h, depth)
        start = slot_index(prefix, level, self.bits)
        count = 1 << (top - depth)
        if any(st.nodes[node_block][start : start + count]):
            raise CorruptError(f"directory inode {self.ino}: node {node_block} has a hole no page can fill")
        block, _ = self._new_page(new_pages, depth, prefix, 0, [], node_block)
        updates = {start + i: block | PAGE_BIT for i in range(count)}
        self._cow(st, path, updates, new_pages, {}, [])

    def _compact(self, st: _State, path, chain: list[int], pos: int, page: ParsedPage) -> None:
        """Copy the live records of a page into a fresh one and switch to it."""
        old = chain[pos]
        live = [r for r in page.records if r.ino]
        dead = [r for r in page.records if not r.ino]
        new_pages: dict[int, list[int]] = {}
        block, moves = self._new_page(new_pages, page.depth, page.prefix, page.next, live, old)
        if pos == 0:
            updates = self._slots_of(st, path, old, block | PAGE_BIT)
            self._cow(st, path, updates, new_pages, {}, [old])
        else:
            # An overflow page is linked by its predecessor's next word: one store switches it.
            vol = self.vol
            vol.barrier()
            prev = chain[pos - 1]
            vol.store_u64(prev * self.bs + PAGE_NEXT_OFFSET, block)
            vol.barrier()
            vol.free_block(old)
            st.pages[prev][_NEXT] = block
            del st.pages[old]
            st.pages.update(new_pages)
        self._move_index(st, old, block, moves, dead)

    def _slots_of(self, st: _State, path, old_page: int, new_word: int) -> dict[int, int] | int:
        """Slot updates that replace every pointer to ``old_page`` by ``new_word``."""
        if not path:
            return new_word
        old_word = old_page | PAGE_BIT
        slots = st.nodes[path[-1][0]]
        return {i: new_word for i, w in enumerate(slots) if w == old_word}

    def _append_overflow(self, st: _State, tail: int) -> None:
        """At depth 64 names share the whole hash: chain one more page after ``tail``."""
        meta = st.pages[tail]
        new_pages: dict[int, list[int]] = {}
        block, _ = self._new_page(new_pages, meta[_DEPTH], meta[_PREFIX], 0, [], tail)
        vol = self.vol
        vol.barrier()
        vol.store_u64(tail * self.bs + PAGE_NEXT_OFFSET, block)
        vol.barrier()
        meta[_NEXT] = block
        st.pages.update(new_pages)
        self._account(1, len(st.nodes) + len(st.pages))

    def _split(self, st: _State, path, old: int, page: ParsedPage) -> None:
        """Split a full page of depth d into two of depth d+1 (under a new node level if needed)."""
        bits, ppb = self.bits, self.ppb
        d = page.depth
        level = len(path) - 1  # -1: the page is the root word
        bit = 1 << (63 - d)
        live = [r for r in page.records if r.ino]
        dead = [r for r in page.records if not r.ino]
        low = [r for r in live if not r.hash & bit]
        high = [r for r in live if r.hash & bit]
        new_pages: dict[int, list[int]] = {}
        # A half that would be empty is not written: its slots become 0 (spec 6.3).
        halves = []
        goal = old
        for recs, prefix in ((low, page.prefix), (high, page.prefix | bit)):
            if recs:
                block, moves = self._new_page(new_pages, d + 1, prefix, 0, recs, goal)
                halves.append((block, block | PAGE_BIT, moves))
                goal = block
            else:
                halves.append((0, 0, []))
        w0, w1 = halves[0][1], halves[1][1]
        new_nodes: dict[int, list[int]] = {}
        if d == level * bits + bits:
            # The page fills one slot at its level: it gets a node of its own one level down.
            slots = [w0] * (ppb // 2) + [w1] * (ppb // 2)
            nb = self._write_node(slots, goal)
            new_nodes[nb] = slots
            updates: dict[int, int] | int = nb if level < 0 else {path[-1][2]: nb}
        else:
            start = slot_index(page.prefix, level, bits)
            count = 1 << (level * bits + bits - d)
            half = count // 2
            updates = {start + i: (w0 if i < half else w1) for i in range(count)}
        self._cow(st, path, updates, new_pages, new_nodes, [old])
        bs = self.bs
        for block, _w, moves in halves:
            for name, old_off, new_off in moves:
                self._index_replace(st, name, old * bs + old_off, block * bs + new_off)
        for r in dead:
            self._index_replace(st, r.name, old * bs + r.offset, None)

    def _cow(self, st: _State, path, updates, new_pages: dict, new_nodes: dict, old_pages: list[int]) -> None:
        """Copy the path of nodes with ``updates`` applied, then switch banks with one store.

        ``updates`` is the new root word when ``path`` is empty, else a
        ``{slot: word}`` map for the last node of the path.  New pages and
        nodes are already written; old pages are freed after the switch.
        """
        vol = self.vol
        copied: dict[int, list[int]] = {}
        child = 0
        for i in range(len(path) - 1, -1, -1):
            block, _level, s = path[i]
            slots = list(st.nodes[block])
            if i == len(path) - 1:
                for k, w in updates.items():
                    slots[k] = w
            else:
                slots[s] = child
            child = self._write_node(slots, block)
            copied[child] = slots
        new_root = child if path else updates
        vol.barrier()
        inactive = 1 - st.bank
        vol.store_u64(self._root_addr[inactive], new_root)
        vol.barrier()
        vol.store_u64(self._bank_addr, inactive)
        vol.barrier()
        freed = [block for block, _l, _s in path] + list(old_pages)
        for block in freed:
            vol.free_block(block)
        for block, _l, _s in path:
            del st.nodes[block]
        for block in old_pages:
            del st.pages[block]
        st.nodes.update(new_nodes)
        st.nodes.update(copied)
        st.pages.update(new_pages)
        st.bank = inactive
        st.root = new_root
        st.key = (inactive, new_root, st.key[2])
        self._account(len(copied) + len(new_nodes) + len(new_pages) - len(freed), len(st.nodes) + len(st.pages))

    def _account(self, delta_blocks: int, tree_blocks: int) -> None:
        """Keep the directory inode's ``blocks`` and ``size`` right after a structural change.

        ``blocks`` moves by the delta (the inode may own an xattr block too);
        ``size`` is the number of tree blocks times the block size.
        """
        blocks = U64.unpack_from(self.vol.dev.view, self._blocks_addr)[0] + delta_blocks
        self.vol.set_inode_fields(self.ino, size=tree_blocks * self.bs, blocks=max(blocks, 0))
        self.vol.barrier()

    # ------------------------------------------------------------------ bulk build

    @classmethod
    def build(cls, vol, ino: int, entries: list[tuple[bytes, int, int]]) -> Directory:
        """Write a whole fresh (empty) directory at once from ``(name, ino, file_type)``.

        Entries are sorted by hash and cut into pages by extendible hashing
        (a region that does not fit one page is halved by its next hash bit),
        then the smallest radix tree over those pages is written and the live
        root word is stored last: the directory switches from empty to full
        with one store.  Empty regions are left as empty slots.
        """
        d = cls(vol, ino)
        d._writable()
        st = d._state()
        if st.root != 0:
            raise InvalidArgumentError(f"directory inode {ino} is not empty; build needs a fresh directory")
        root, count = write_tree(vol, ino, entries)
        if not count:
            return d
        vol.store_u64(d._root_addr[st.bank], root)
        vol.barrier()
        cls.forget(vol, ino)
        d._account(count, count)
        return d


def write_tree(vol, ino: int, entries: list[tuple[bytes, int, int]]) -> tuple[int, int]:
    """Write pages and radix nodes for ``(name, ino, file_type)`` entries aside, and flush.

    Returns ``(root word, blocks written)``; nothing points at the tree yet.
    :meth:`Directory.build` stores the root word into an empty directory;
    fsck stores it into the inactive bank and flips ``dir_bank`` to replace
    a damaged tree.  Raises like :meth:`Directory.add` on bad or repeated
    names and on inode numbers <= 0.
    """
    names = _valid_names([e[0] for e in entries])
    if len(set(names)) != len(names):
        seen: set[bytes] = set()
        dup = next(n for n in names if n in seen or seen.add(n))
        raise FileExistsError_(f"{dup!r} given twice for directory inode {ino}")
    bad = next((e[1] for e in entries if e[1] <= 0), None)
    if bad is not None:
        raise InvalidArgumentError(f"cannot link inode {bad}")
    if not names:
        return 0, 0
    hashes = hash_names(vol.hash_seed, names)
    order = sorted(range(len(names)), key=hashes.__getitem__)
    recs = [(hashes[i], names[i], entries[i][1], entries[i][2]) for i in order]
    builder = _Builder(Directory(vol, ino), recs, vol.block_size)
    root = builder.run()
    vol.barrier()
    return root, builder.allocated


_DEFAULT_NAME_HASH = namehash.name_hash


#: From this many names on, one bulk call beats one call per name (measured: from 3 or 4 names on).
_BULK_HASH_FROM = 3


def hash_names(seed: bytes, names: list[bytes]) -> list[int]:
    """``name_hash`` of every name, in one call into the compiled core when it is there."""
    if namehash.name_hash is _DEFAULT_NAME_HASH and len(names) > _BULK_HASH_FROM:
        from nvfs_tools import scan

        bulk = getattr(scan.backend(), "siphash24_bulk", None) if scan.using_compiled() else None
        if bulk is not None:
            lengths = [len(n) for n in names]
            offsets = list(itertools.accumulate(lengths, initial=0))[:-1]
            return list(bulk(seed, b"".join(names), offsets, lengths))
    name_hash = namehash.name_hash
    return [name_hash(seed, n) for n in names]


def _valid_names(names: list) -> list[bytes]:
    """The names as bytes; raises on the first invalid one (fast path for the common case)."""
    out = []
    for n in names:
        if type(n) is not bytes or not 0 < len(n) <= fmt.MAX_NAME_LEN or b"/" in n or b"\0" in n or n in _DOTS:
            n = check_name(n)
        out.append(n)
    return out


_DOTS = (b".", b"..")


def blocks_needed(block_size: int, hash_seed: bytes, names: list[bytes]) -> int:
    """Blocks (pages + radix nodes) :meth:`Directory.build` takes for ``names`` (exact).

    Lets mkfs -d check space before writing anything.
    """
    names = _valid_names(names)
    if not names:
        return 0
    hashes = hash_names(hash_seed, names)
    recs = [(hashes[i], names[i], 0, 0) for i in sorted(range(len(names)), key=hashes.__getitem__)]
    builder = _Builder(None, recs, block_size)
    builder.run()
    return builder.allocated


class _Builder:
    """Cuts sorted ``(hash, name, ino, file_type)`` records into pages and a radix tree.

    With ``d`` None nothing is allocated or written: the run only counts blocks.
    """

    def __init__(self, d: Directory | None, recs: list[tuple[int, bytes, int, int]], block_size: int) -> None:
        self.d = d
        self.bs = block_size
        self.bits = fmt.radix_bits(block_size)
        self.ppb = fmt.pointers_per_block(block_size)
        self.recs = recs
        self.hashes = [r[0] for r in recs]
        self.rls = [fmt.dir_entry_rec_len(len(r[1])) for r in recs]
        self.cum = list(itertools.accumulate(self.rls, initial=0))
        self.room = block_size - HDR
        #: (depth, prefix, [(lo, hi) per page of the chain])
        self.pages: list[tuple[int, int, list[tuple[int, int]]]] = []
        self.goal: int | None = None
        self.allocated = 0

    def run(self) -> int:
        self.partition(0, len(self.recs), 0, 0)
        words = [self.write_chain(depth, prefix, parts) for depth, prefix, parts in self.pages]
        self.words = words
        return self.tree(0, len(self.pages), 0)

    def partition(self, lo: int, hi: int, depth: int, prefix: int) -> None:
        if lo == hi:
            return
        if self.cum[hi] - self.cum[lo] <= self.room:
            self.pages.append((depth, prefix, [(lo, hi)]))
            return
        if depth == 64:
            parts, start = [], lo
            for i in range(lo, hi):
                if self.cum[i + 1] - self.cum[start] > self.room:
                    parts.append((start, i))
                    start = i
            parts.append((start, hi))
            self.pages.append((depth, prefix, parts))
            return
        bit = 1 << (63 - depth)
        mid = bisect.bisect_left(self.hashes, prefix | bit, lo, hi)
        self.partition(lo, mid, depth + 1, prefix)
        self.partition(mid, hi, depth + 1, prefix | bit)

    def alloc(self) -> int:
        self.allocated += 1
        if self.d is None:
            return self.allocated
        self.goal = self.d._alloc(self.goal)
        return self.goal

    def write_chain(self, depth: int, prefix: int, parts: list[tuple[int, int]]) -> int:
        """Write a page and its overflow chain (each knowing its next); returns the head word."""
        blocks = [self.alloc() for _ in parts]
        d = self.d
        if d is not None:
            for i, (lo, hi) in enumerate(parts):
                buf = bytearray(self.bs)
                nxt = blocks[i + 1] if i + 1 < len(blocks) else 0
                PAGE_HEADER.pack_into(buf, 0, fmt.DIR_PAGE_MAGIC, depth, 0, prefix, d.ino, nxt)
                off = HDR
                pack = ENTRY_HEADER.pack_into
                for (h, name, ino, ft), rl in zip(self.recs[lo:hi], self.rls[lo:hi], strict=True):
                    pack(buf, off, ino, h, len(name), ft, rl)
                    buf[off + EHDR : off + EHDR + len(name)] = name
                    off += rl
                d.vol.write_block(blocks[i], bytes(buf))
        return blocks[0] | PAGE_BIT

    def tree(self, i: int, j: int, level: int) -> int:
        """The word for pages[i:j], which share their first ``level * bits`` hash bits."""
        bits = self.bits
        if level == 0 and j - i == 1 and self.pages[i][0] == 0:
            return self.words[i]
        slots = [0] * self.ppb
        top = level * bits + bits
        k = i
        while k < j:
            depth, prefix, _parts = self.pages[k]
            s = slot_index(prefix, level, bits)
            if depth <= top:
                count = 1 << (top - depth)
                slots[s : s + count] = [self.words[k]] * count
                k += 1
                continue
            m = k + 1
            while m < j and slot_index(self.pages[m][1], level, bits) == s:
                m += 1
            slots[s] = self.tree(k, m, level + 1)
            k = m
        block = self.alloc()
        if self.d is not None:
            self.d.vol.write_block(block, self.d._node_struct.pack(*slots))
        return block
