"""A defensive, read-only walker for directory radix trees.

fsck and debugfs must read directories that may be damaged in any way: bad
magic, slots pointing anywhere, cycles, torn records.  :func:`walk_tree`
never raises on garbage and never loops: every block is visited at most once,
every record parse is bounded by the block.  Whatever does not follow the
format is reported as a :class:`Problem`; everything that does is returned, so
the caller can decide what to keep.  :class:`nvfs_tools.directory.Directory`
loads its cache through the same code, which keeps the reader and the writer
in agreement about what a valid directory is.

Raw ``struct`` access is used instead of ``construct`` because a directory of
100,000 entries must load in well under a second; the struct formats are
derived from the schemas in :mod:`nvfs_tools.format`, never restated.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from nvfs_tools import format as fmt
from nvfs_tools import namehash
from nvfs_tools.record import Fields


def struct_format(schema: fmt.PlainStruct) -> struct.Struct:
    """A little-endian ``struct.Struct`` with the layout of a plain schema (:data:`format.PLAIN`).

    Named fields map to their own format code (byte strings for ``Bytes`` and
    ``Const``, one byte string for an ``Array``), anonymous, padding or
    ``reserved`` byte fields to pad bytes.
    """
    codes = ["<"]
    for sub in schema.subcons:
        if sub.name is None or sub.kind == "padding" or sub.name == "reserved" and sub.kind == "bytes":
            codes.append(f"{sub.size}x")
        elif sub.kind in ("array", "struct"):
            codes.append(f"{sub.size}s")
        else:
            codes.append(sub.code)
    packed = struct.Struct("".join(codes))
    if packed.size != schema.sizeof():
        raise AssertionError(f"struct format {packed.format} does not match schema size {schema.sizeof()}")
    return packed


#: ``(ino, hash, name_len, file_type, rec_len)``
ENTRY_HEADER = struct_format(fmt.PLAIN["DirEntryHeader"])
#: ``(magic, depth, reserved0, prefix, dir_ino, next)``
PAGE_HEADER = struct_format(fmt.PLAIN["DirPageHeader"])
ENTRY_INO_OFFSET = fmt.field_offset(fmt.PLAIN["DirEntryHeader"], "ino")
PAGE_NEXT_OFFSET = fmt.field_offset(fmt.PLAIN["DirPageHeader"], "next")
HDR = fmt.DIR_PAGE_HEADER_SIZE
EHDR = fmt.DIR_ENTRY_HEADER_SIZE
VALID_DT = frozenset((fmt.DT_FIFO, fmt.DT_CHR, fmt.DT_DIR, fmt.DT_BLK, fmt.DT_REG, fmt.DT_LNK, fmt.DT_SOCK))
U64 = struct.Struct("<Q")
MASK64 = (1 << 64) - 1


def name_problem(name: bytes) -> str | None:
    """Why ``name`` cannot be a directory entry name, or None when it can."""
    if not name:
        return "empty name"
    if len(name) > fmt.MAX_NAME_LEN:
        return f"name of {len(name)} bytes (max {fmt.MAX_NAME_LEN})"
    if b"/" in name or b"\0" in name:
        return "name contains '/' or NUL"
    if name in (b".", b".."):
        return "name is '.' or '..'"
    return None


def slot_index(value: int, level: int, bits: int) -> int:
    """Slot of a node at ``level`` for a 64-bit hash or left-aligned prefix.

    A node at level L consumes hash bits [L*b, L*b+b) counted from the most
    significant bit; bits past the 64th read as zero (deep nodes of block
    sizes whose radix bits do not divide 64).
    """
    shift = 64 - (level * bits + bits)
    if shift >= 0:
        return (value >> shift) & ((1 << bits) - 1)
    return (value << -shift) & ((1 << bits) - 1)


def prefix_of(value: int, depth: int) -> int:
    """The ``depth`` leading bits of ``value``, left-aligned in a u64."""
    if depth <= 0:
        return 0
    return value & (MASK64 << (64 - depth)) & MASK64


def max_node_level(bits: int) -> int:
    """Deepest radix level that still consumes at least one real hash bit."""
    return 63 // bits


class Record(Fields):
    """One record of a directory page, live (``ino != 0``) or dead."""

    _fields = ("offset", "ino", "hash", "name_len", "file_type", "rec_len", "name")

    def __init__(self, offset: int, ino: int, hash: int, name_len: int, file_type: int, rec_len: int, name: bytes):
        self.offset, self.ino, self.hash, self.name_len = offset, ino, hash, name_len
        self.file_type, self.rec_len, self.name = file_type, rec_len, name


class ParsedPage(Fields):
    """The header and records of one page, plus what was wrong with it (``end``: the first free byte,
    where the next record goes)."""

    _fields = ("magic", "depth", "prefix", "dir_ino", "next", "records", "end", "problems")

    def __init__(
        self, magic: bytes, depth: int, prefix: int, dir_ino: int, next: int, records: list[Record], end: int,
        problems: list[str],
    ) -> None:  # fmt: skip
        self.magic, self.depth, self.prefix, self.dir_ino, self.next = magic, depth, prefix, dir_ino, next
        self.records, self.end, self.problems = records, end, problems

    @property
    def dead_bytes(self) -> int:
        return sum(r.rec_len for r in self.records if r.ino == 0)

    @property
    def live_bytes(self) -> int:
        return sum(r.rec_len for r in self.records if r.ino != 0)


def parse_page(buf: bytes | memoryview, block_size: int) -> ParsedPage:
    """Split one page into header and records; stop at the first record that breaks the rules.

    The used area ends at the first record whose ``rec_len`` is 0.  A record
    whose ``rec_len`` is not ``dir_entry_rec_len(name_len)`` or runs past the
    block ends the parse with a problem: nothing after it can be trusted.
    """
    magic, depth, _r0, prefix, dir_ino, nxt = PAGE_HEADER.unpack_from(buf, 0)
    problems: list[str] = []
    records: list[Record] = []
    off = HDR
    unpack = ENTRY_HEADER.unpack_from
    limit = block_size - EHDR
    while off <= limit:
        ino, h, name_len, ft, rec_len = unpack(buf, off)
        if rec_len == 0:
            break
        if rec_len != (EHDR + name_len + 7) & ~7 or off + rec_len > block_size or name_len == 0:
            problems.append(f"bad record at offset {off} (rec_len {rec_len}, name_len {name_len})")
            break
        records.append(Record(off, ino, h, name_len, ft, rec_len, bytes(buf[off + EHDR : off + EHDR + name_len])))
        off += rec_len
    return ParsedPage(magic, depth, prefix, dir_ino, nxt, records, off, problems)


class Problem(Fields):
    """Something in a directory tree that does not follow the format.

    ``kind`` is a short stable tag fsck can act on: ``unreadable``,
    ``bad-block``, ``bad-root``, ``bad-node``, ``bad-magic``, ``bad-depth``,
    ``bad-prefix``, ``bad-slots``, ``bad-next``, ``bad-dir-ino``,
    ``shared-block``, ``bad-record``, ``bad-name``, ``bad-hash``,
    ``bad-file-type``, ``duplicate-name``.
    """

    _fields = ("kind", "block", "message")

    def __init__(self, kind: str, block: int | None, message: str) -> None:
        self.kind, self.block, self.message = kind, block, message

    def __str__(self) -> str:
        where = f"block {self.block}: " if self.block is not None else ""
        return f"{where}{self.message}"


class PageInfo(Fields):
    """A page reached from the root (chained overflow pages included).

    ``level``: of the node whose slots point at it (-1: the root word), of the chain head;
    ``chain_pos``: 0 for the page in the slots, 1.. along the overflow chain.
    """

    _fields = ("block", "depth", "prefix", "next", "level", "chain_pos", "end", "live", "dead", "dead_bytes")

    def __init__(
        self, block: int, depth: int, prefix: int, next: int, level: int, chain_pos: int, end: int, live: int,
        dead: int, dead_bytes: int,
    ) -> None:  # fmt: skip
        self.block, self.depth, self.prefix, self.next, self.level = block, depth, prefix, next, level
        self.chain_pos, self.end, self.live, self.dead, self.dead_bytes = chain_pos, end, live, dead, dead_bytes


class NodeInfo(Fields):
    """A radix node reached from the root."""

    _fields = ("block", "level", "slots")

    def __init__(self, block: int, level: int, slots: list[int]) -> None:
        self.block, self.level, self.slots = block, level, slots


class WalkEntry(Fields):
    """A live entry (``ino != 0``) as found in its page."""

    _fields = ("name", "ino", "file_type", "hash", "block", "offset", "rec_len")

    def __init__(self, name: bytes, ino: int, file_type: int, hash: int, block: int, offset: int, rec_len: int):
        self.name, self.ino, self.file_type, self.hash = name, ino, file_type, hash
        self.block, self.offset, self.rec_len = block, offset, rec_len


class DirTree(Fields):
    """Everything :func:`walk_tree` found; pages in hash order."""

    _fields = ("root", "pages", "nodes", "entries", "problems", "dead_records", "dead_bytes")

    def __init__(
        self, root: int, pages: list[PageInfo] | None = None, nodes: list[NodeInfo] | None = None,
        entries: list[WalkEntry] | None = None, problems: list[Problem] | None = None, dead_records: int = 0,
        dead_bytes: int = 0,
    ) -> None:  # fmt: skip
        self.root = root
        self.pages: list[PageInfo] = [] if pages is None else pages
        self.nodes: list[NodeInfo] = [] if nodes is None else nodes
        self.entries: list[WalkEntry] = [] if entries is None else entries
        self.problems: list[Problem] = [] if problems is None else problems
        self.dead_records, self.dead_bytes = dead_records, dead_bytes

    def blocks(self) -> list[int]:
        """Every block of the tree (nodes and pages), each once."""
        return [n.block for n in self.nodes] + [p.block for p in self.pages]

    @property
    def ok(self) -> bool:
        return not self.problems


class _Walker:
    """State of one walk; see :func:`walk_tree`."""

    def __init__(self, read_block, block_size, seed, dir_ino, block_ok, check_hashes) -> None:
        self.read_block = read_block
        self.bs = block_size
        self.bits = fmt.radix_bits(block_size)
        self.ppb = fmt.pointers_per_block(block_size)
        self.seed = seed
        self.dir_ino = dir_ino
        self.block_ok = block_ok
        self.check_hashes = check_hashes
        self.seen: set[int] = set()
        self.tree: DirTree | None = None

    def problem(self, kind: str, block: int | None, message: str) -> None:
        self.tree.problems.append(Problem(kind, block, message))

    def fetch(self, block: int, what: str) -> bytes | None:
        """The block's bytes, or None (with a problem) when it may not or cannot be read."""
        if block in self.seen:
            self.problem("shared-block", block, f"{what} block {block} is referenced more than once")
            return None
        if block == 0 or (self.block_ok is not None and not self.block_ok(block)):
            self.problem("bad-block", block, f"{what} pointer to invalid block {block}")
            return None
        try:
            data = self.read_block(block)
        except Exception as exc:  # noqa: BLE001 - a damaged tree may point anywhere
            self.problem("unreadable", block, f"cannot read {what} block {block}: {exc}")
            return None
        if data is None or len(data) < self.bs:
            self.problem("unreadable", block, f"short read of {what} block {block}")
            return None
        self.seen.add(block)
        return data

    def walk(self, root: int) -> DirTree:
        self.tree = DirTree(root)
        if root == 0:
            return self.tree
        if root & fmt.RADIX_PAGE_BIT:
            self.page_chain(root & fmt.RADIX_BLOCK_MASK, -1, 0, 0)
        else:
            self.node(root, 0, 0)
        return self.tree

    def node(self, block: int, level: int, path_prefix: int) -> None:
        """Visit a radix node at ``level`` whose region starts with ``path_prefix``."""
        data = self.fetch(block, "radix node")
        if data is None:
            return
        bits, ppb = self.bits, self.ppb
        slots = list(struct.unpack_from(f"<{ppb}Q", data, 0))
        self.tree.nodes.append(NodeInfo(block, level, slots))
        lo, hi = level * bits, level * bits + bits
        s = 0
        while s < ppb:
            word = slots[s]
            if word == 0:
                s += 1
                continue
            if not word & fmt.RADIX_PAGE_BIT:
                s = self.child_node(block, level, path_prefix, slots, s, word)
                continue
            pblock = word & fmt.RADIX_BLOCK_MASK
            # Where must this page sit?  Read its header first (without marking it seen).
            header = self.peek_header(pblock)
            if header is None:
                self.problem("bad-slots", block, f"slot {s} of node {block} points at unusable page {pblock}")
                s += 1
                continue
            depth, prefix = header
            count = 1 << (hi - depth) if lo <= depth <= min(hi, 64) else 0
            start = slot_index(prefix, level, bits) if count else -1
            run_ok = (
                count
                and start == s
                and start + count <= ppb
                and prefix_of(prefix, lo) == path_prefix
                and all(slots[i] == word for i in range(s, s + count))
            )
            if not run_ok:
                self.problem(
                    "bad-slots",
                    block,
                    f"page {pblock} (depth {depth}, prefix {prefix:#018x}) does not fill the slots of node "
                    f"{block} (level {level}) matching it, seen at slot {s}",
                )
                # Skip the run of identical words so one bad page is reported once.
                e = s + 1
                while e < ppb and slots[e] == word:
                    e += 1
                if pblock not in self.seen:
                    self.page_chain(pblock, level, s, path_prefix)
                s = e
                continue
            self.page_chain(pblock, level, s, path_prefix)
            s += count

    def child_node(self, block: int, level: int, path_prefix: int, slots: list[int], s: int, word: int) -> int:
        """Descend into the child node of slot ``s``; returns the next slot to look at."""
        bits = self.bits
        if level + 1 > max_node_level(bits):
            self.problem("bad-node", block, f"slot {s} of level-{level} node {block} points at a node too deep")
            return s + 1
        shift = 64 - (level * bits + bits)
        child_prefix = path_prefix | (s << shift if shift >= 0 else s >> -shift)
        self.node(word, level + 1, child_prefix)
        return s + 1

    def peek_header(self, block: int) -> tuple[int, int] | None:
        if block == 0 or (self.block_ok is not None and not self.block_ok(block)):
            return None
        try:
            data = self.read_block(block)
        except Exception:  # noqa: BLE001
            return None
        if data is None or len(data) < HDR:
            return None
        magic, depth, _r, prefix, _d, _n = PAGE_HEADER.unpack_from(data, 0)
        if magic != fmt.DIR_PAGE_MAGIC:
            return None
        return depth, prefix

    def page_chain(self, block: int, level: int, slot: int, path_prefix: int) -> None:
        """Visit a page and its overflow chain."""
        pos = 0
        head_depth = head_prefix = None
        while block:
            data = self.fetch(block, "directory page")
            if data is None:
                return
            page = parse_page(data, self.bs)
            if page.magic != fmt.DIR_PAGE_MAGIC:
                self.problem("bad-magic", block, f"page {block} has bad magic {page.magic!r}")
                return
            self.check_header(block, page, level, pos, head_depth, head_prefix)
            if pos == 0:
                head_depth, head_prefix = page.depth, page.prefix
            self.records(block, page)
            dead = [r for r in page.records if r.ino == 0]
            dead_bytes = sum(r.rec_len for r in dead)
            self.tree.pages.append(
                PageInfo(
                    block,
                    page.depth,
                    page.prefix,
                    page.next,
                    level,
                    pos,
                    page.end,
                    len(page.records) - len(dead),
                    len(dead),
                    dead_bytes,
                )
            )
            self.tree.dead_records += len(dead)
            self.tree.dead_bytes += dead_bytes
            if page.next and page.depth != 64:
                self.problem("bad-next", block, f"page {block} of depth {page.depth} has an overflow pointer")
                return
            block = page.next
            pos += 1

    def check_header(self, block: int, page: ParsedPage, level: int, pos: int, head_depth, head_prefix) -> None:
        if page.depth > 64 or (level < 0 and page.depth != 0):
            self.problem("bad-depth", block, f"page {block} has depth {page.depth}")
        elif prefix_of(page.prefix, page.depth) != page.prefix:
            self.problem("bad-prefix", block, f"page {block} prefix {page.prefix:#018x} longer than depth")
        if pos and (page.depth != head_depth or page.prefix != head_prefix):
            self.problem("bad-next", block, f"overflow page {block} differs in depth/prefix from its chain")
        if self.dir_ino is not None and page.dir_ino != self.dir_ino:
            self.problem("bad-dir-ino", block, f"page {block} belongs to inode {page.dir_ino}, not {self.dir_ino}")
        for message in page.problems:
            self.problem("bad-record", block, f"page {block}: {message}")

    def records(self, block: int, page: ParsedPage) -> None:
        depth = min(page.depth, 64)
        for r in page.records:
            if r.ino == 0:
                continue
            why = name_problem(r.name)
            if why is not None:
                self.problem("bad-name", block, f"entry at {block}+{r.offset}: {why}")
                continue
            if prefix_of(r.hash, depth) != page.prefix:
                self.problem("bad-hash", block, f"entry {r.name!r} hash {r.hash:#018x} outside page prefix")
                continue
            if self.check_hashes and namehash.name_hash(self.seed, r.name) != r.hash:
                self.problem("bad-hash", block, f"entry {r.name!r} has a stored hash that is not its name's")
                continue
            if r.file_type not in VALID_DT:
                self.problem("bad-file-type", block, f"entry {r.name!r} has file type {r.file_type}")
            self.tree.entries.append(WalkEntry(r.name, r.ino, r.file_type, r.hash, block, r.offset, r.rec_len))


def walk_tree(
    read_block: Callable[[int], bytes],
    root_word: int,
    block_size: int,
    seed: bytes,
    *,
    dir_ino: int | None = None,
    block_ok: Callable[[int], bool] | None = None,
    check_hashes: bool = True,
    check_duplicates: bool = True,
) -> DirTree:
    """Walk the directory tree under ``root_word`` and report what is there and what is wrong.

    ``read_block(n)`` returns block ``n`` (it may raise: that is reported);
    ``block_ok(n)`` (optional) says whether ``n`` may belong to a file at all
    (e.g. not metadata, inside the device).  ``dir_ino`` checks the owner
    field of every page.  ``check_hashes`` recomputes every live entry's
    SipHash from its name (slow in pure Python; the stored hash is always
    checked against the page prefix).  Pages come in hash order, entries in page order.
    """
    walker = _Walker(read_block, block_size, seed, dir_ino, block_ok, check_hashes)
    tree = walker.walk(root_word)
    if check_duplicates:
        seen: dict[bytes, WalkEntry] = {}
        for e in tree.entries:
            if e.name in seen:
                tree.problems.append(
                    Problem("duplicate-name", e.block, f"name {e.name!r} appears twice (blocks {seen[e.name].block})")
                )
            else:
                seen[e.name] = e
    return tree


def walk_directory(vol, ino: int, *, check_hashes: bool = True) -> DirTree:
    """Walk the live bank of directory inode ``ino`` of an open volume (see :func:`walk_tree`).

    Pointers to metadata blocks or past the data area are reported as
    ``bad-block`` without being read; a ``dir_bank`` other than 0 or 1 is a
    ``bad-root`` problem (bank 0 is walked then).
    """
    geo = vol.geo
    inode_raw = vol.dev.read(geo.inode_offset(ino), fmt.INODE_SIZE)
    inode = fmt.PLAIN["Inode"].parse(inode_raw)
    bank = inode.dir_bank
    problems = []
    if bank not in (0, 1):
        problems.append(Problem("bad-root", None, f"directory inode {ino} has dir_bank {bank}"))
        bank = 0
    root = inode.block[bank]

    def block_ok(block: int) -> bool:
        return 0 < block < geo.blocks_count and not geo.is_metadata_block(block)

    if root and not block_ok(root & fmt.RADIX_BLOCK_MASK):
        problems.append(Problem("bad-root", None, f"directory inode {ino} root word {root:#x} points outside data"))
        return DirTree(root, problems=problems)
    tree = walk_tree(
        vol.read_block, root, geo.block_size, vol.hash_seed, dir_ino=ino, block_ok=block_ok, check_hashes=check_hashes
    )
    tree.problems[:0] = problems
    return tree
