"""Raw, defensive readers of NVFS metadata, and annotated block dumps.

debugfs.nvfs must show damaged images as they are: these readers parse
straight from the device with the schemas of format.py, check every block
number against the device before following it, and stop on loops, so they
never raise on bad pointers (they report them).  The library (volume.py,
directory.py) is for doing things right; this module is for looking.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nvfs_tools import fieldpath as fp
from nvfs_tools import format as fmt


def read_static(dev: Any, block: int = 0, block_size: int | None = None) -> Any:
    """Parse the static superblock at ``block`` (block size known or guessed)."""
    if block and block_size is None:
        raise ValueError("a backup superblock needs the block size")
    return fmt.SuperblockStatic.parse(dev.read(block * (block_size or 0), fmt.SB_STATIC_SIZE))


def find_backup(dev: Any) -> tuple[int, int]:
    """Locate the backup static superblock at the start of the last block.

    The block size is unknown when block 0 is gone, so try every legal size.
    Returns (block, block_size).
    """
    bs = fmt.MIN_BLOCK_SIZE
    while bs <= fmt.MAX_BLOCK_SIZE:
        last = dev.size // bs - 1
        if last > 0:
            raw = dev.read(last * bs, fmt.SB_STATIC_SIZE)
            if raw[:8] == fmt.MAGIC and 1 << int.from_bytes(raw[24:28], "little") == bs:
                return last, bs
        bs *= 2
    raise ValueError("no backup superblock found at the start of the last block")


def read_inode(dev: Any, geo: fmt.Geometry, ino: int) -> Any:
    return fmt.Inode.parse(dev.read(geo.inode_offset(ino), fmt.INODE_SIZE))


def valid_block(geo: fmt.Geometry, block: int) -> bool:
    return 0 < block < geo.blocks_count


def read_u64s(dev: Any, geo: fmt.Geometry, block: int) -> list[int]:
    raw = dev.read(block * geo.block_size, geo.block_size)
    return [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8)]


# ---------------------------------------------------------------------------
# File block trees
# ---------------------------------------------------------------------------


@dataclass
class BlockMap:
    """Everything a regular file / symlink inode's pointers reach."""

    data: list[tuple[int, int]] = field(default_factory=list)  # (file block, device block)
    meta: list[tuple[str, int]] = field(default_factory=list)  # ("IND" / "DIND" ..., device block)
    bad: list[str] = field(default_factory=list)  # problems found while walking


_LEVEL_NAMES = ["IND", "DIND", "TIND", "QIND", "5IND"]


def file_block_map(dev: Any, geo: fmt.Geometry, inode: Any) -> BlockMap:
    """Walk the 16 block pointers of ``inode`` (not for directories / inline symlinks)."""
    out = BlockMap()
    if inode.flags & fmt.INODE_FLAG_INLINE:
        return out
    ppb = fmt.pointers_per_block(geo.block_size)
    for i in range(fmt.N_DIRECT):
        b = inode.block[i]
        if b:
            if valid_block(geo, b):
                out.data.append((i, b))
            else:
                out.bad.append(f"block[{i}] = {b} is outside the device")
    first = fmt.N_DIRECT
    seen: set[int] = set()
    for k in range(fmt.N_INDIRECT):
        root = inode.block[fmt.N_DIRECT + k]
        if root:
            _walk_indirect(dev, geo, root, k + 1, first, out, seen, f"block[{fmt.N_DIRECT + k}]")
        first += ppb ** (k + 1)
    return out


def _walk_indirect(dev, geo, block, levels, first, out: BlockMap, seen, where) -> None:
    if not valid_block(geo, block):
        out.bad.append(f"{where} = {block} is outside the device")
        return
    if block in seen:
        out.bad.append(f"{where} = {block} is reached twice")
        return
    seen.add(block)
    out.meta.append((_LEVEL_NAMES[levels - 1], block))
    ppb = fmt.pointers_per_block(geo.block_size)
    span = ppb ** (levels - 1)
    for i, ptr in enumerate(read_u64s(dev, geo, block)):
        if not ptr:
            continue
        if levels == 1:
            if valid_block(geo, ptr):
                out.data.append((first + i, ptr))
            else:
                out.bad.append(f"indirect block {block} slot {i} = {ptr} is outside the device")
        else:
            _walk_indirect(dev, geo, ptr, levels - 1, first + i * span, out, seen, f"block {block} slot {i}")


def file_block_lookup(dev: Any, geo: fmt.Geometry, inode: Any, file_block: int) -> int:
    """Device block of ``file_block`` (0 for a hole), following block_path."""
    index, route = fmt.block_path(file_block, geo.block_size)
    block = inode.block[index]
    for slot in route:
        if not block:
            return 0
        if not valid_block(geo, block):
            raise ValueError(f"pointer {block} is outside the device")
        block = read_u64s(dev, geo, block)[slot]
    return block


# ---------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------


@dataclass
class RawEntry:
    offset: int
    ino: int
    hash: int
    name_len: int
    file_type: int
    rec_len: int
    name: bytes


def page_header(dev: Any, geo: fmt.Geometry, block: int) -> Any | None:
    raw = dev.read(block * geo.block_size, fmt.DIR_PAGE_HEADER_SIZE)
    if raw[:4] != fmt.DIR_PAGE_MAGIC:
        return None
    return fmt.DirPageHeader.parse(raw)


def page_entries(dev: Any, geo: fmt.Geometry, block: int) -> tuple[list[RawEntry], str | None]:
    """Records of a directory page, live and removed, up to the first rec_len 0."""
    bs = geo.block_size
    raw = dev.read(block * bs, bs)
    out: list[RawEntry] = []
    off = fmt.DIR_PAGE_HEADER_SIZE
    hsize = fmt.DIR_ENTRY_HEADER_SIZE
    unpack = _ENTRY.unpack_from
    while off + hsize <= bs:
        ino, hsh, name_len, file_type, rec_len = unpack(raw, off)
        if rec_len == 0:
            return out, None
        if rec_len % fmt.DIR_ENTRY_ALIGN or off + rec_len > bs or rec_len < fmt.dir_entry_rec_len(name_len):
            return out, f"bad rec_len {rec_len} at +{off}"
        name = raw[off + hsize : off + hsize + name_len]
        out.append(RawEntry(off, ino, hsh, name_len, file_type, rec_len, name))
        off += rec_len
    return out, None


def _struct_of(type_name: str) -> struct.Struct:
    """A ``struct.Struct`` for a flat schema, derived from its leaves (fast bulk parsing)."""
    codes = {1: "B", 2: "H", 4: "I", 8: "Q"}
    parts = ["<"]
    for f in fp.leaves(type_name):
        code = codes[f.size]
        parts.append(code.lower() if f.kind == "sint" else code)
    return struct.Struct("".join(parts))


_ENTRY = _struct_of("dir_entry_header")
assert _ENTRY.size == fmt.DIR_ENTRY_HEADER_SIZE


def find_entry(dev: Any, geo: fmt.Geometry, inode: Any, name: bytes, seed: bytes) -> RawEntry | None:
    """Look ``name`` up by its hash through the radix tree of the live bank.

    Falls back to a scan of every page when the hash path does not find it, so
    entries sitting in the wrong page of a damaged directory are still found.
    """
    from nvfs_tools import namehash

    h = namehash.name_hash(seed, name)
    bits = fmt.radix_bits(geo.block_size)
    bank = inode.dir_bank if inode.dir_bank in (0, 1) else 0
    word = inode.block[bank]
    level = 0
    seen: set[int] = set()
    while word and not word & fmt.RADIX_PAGE_BIT and word not in seen and valid_block(geo, word) and level * bits < 64:
        seen.add(word)
        shift = 64 - (level + 1) * bits
        index = (h >> shift) & ((1 << bits) - 1) if shift >= 0 else (h << -shift) & ((1 << bits) - 1)
        word = read_u64s(dev, geo, word)[index]
        level += 1
    block = word & fmt.RADIX_BLOCK_MASK if word & fmt.RADIX_PAGE_BIT else 0
    chain = 0
    while block and valid_block(geo, block) and chain < 1 << 16:
        for e in page_entries(dev, geo, block)[0]:
            if e.ino and e.hash == h and e.name == name:
                return e
        hdr = page_header(dev, geo, block)
        block = hdr.next if hdr is not None else 0
        chain += 1
    for e in dir_entries(dev, geo, inode):
        if e.name == name:
            return e
    return None


@dataclass
class DirNode:
    kind: str  # "node" or "page"
    block: int
    level: int  # radix level of a node; for a page the level of the node holding it (-1: root word)
    slots: list[tuple[int, int, int]] = field(default_factory=list)  # node: (first, last, word) runs


def decode_word(word: int) -> tuple[str, int]:
    if word == 0:
        return "empty", 0
    if word & fmt.RADIX_PAGE_BIT:
        return "page", word & fmt.RADIX_BLOCK_MASK
    return "node", word


def dir_structure(dev: Any, geo: fmt.Geometry, root_word: int) -> tuple[list[DirNode], list[str]]:
    """Nodes and pages reached from a bank root word, in walk order (each once)."""
    out: list[DirNode] = []
    bad: list[str] = []
    seen: set[int] = set()

    def visit(word: int, level: int, where: str, depth_guard: int) -> None:
        kind, block = decode_word(word)
        if kind == "empty":
            return
        if not valid_block(geo, block):
            bad.append(f"{where}: {kind} {block} is outside the device")
            return
        if block in seen:
            return
        seen.add(block)
        if kind == "page":
            out.append(DirNode("page", block, level))
            hdr = page_header(dev, geo, block)
            chain = 0
            while hdr is not None and hdr.next and chain < 1 << 16:
                nxt = hdr.next
                if not valid_block(geo, nxt) or nxt in seen:
                    bad.append(f"page {block}: bad overflow pointer {nxt}")
                    break
                seen.add(nxt)
                out.append(DirNode("page", nxt, level))
                hdr = page_header(dev, geo, nxt)
                chain += 1
            return
        if depth_guard > 64:
            bad.append(f"{where}: radix tree deeper than the hash")
            return
        words = read_u64s(dev, geo, block)
        node = DirNode("node", block, level + 1)
        start = 0
        for i in range(1, len(words) + 1):
            if i == len(words) or words[i] != words[start]:
                node.slots.append((start, i - 1, words[start]))
                start = i
        out.append(node)
        for first, _last, w in node.slots:
            visit(w, level + 1, f"node {block} slot {first}", depth_guard + 1)

    visit(root_word, -1, "root", 0)
    return out, bad


def dir_blocks(dev: Any, geo: fmt.Geometry, inode: Any) -> tuple[list[int], list[str]]:
    """Blocks (nodes and pages) of a directory's live bank."""
    bank = inode.dir_bank if inode.dir_bank in (0, 1) else 0
    nodes, bad = dir_structure(dev, geo, inode.block[bank])
    return [n.block for n in nodes], bad


def dir_entries(dev: Any, geo: fmt.Geometry, inode: Any) -> Iterator[RawEntry]:
    """Live entries of a directory's live bank, read raw."""
    bank = inode.dir_bank if inode.dir_bank in (0, 1) else 0
    nodes, _bad = dir_structure(dev, geo, inode.block[bank])
    for n in nodes:
        if n.kind == "page":
            entries, _err = page_entries(dev, geo, n.block)
            yield from (e for e in entries if e.ino)


def inode_blocks(dev: Any, geo: fmt.Geometry, inode: Any) -> list[tuple[str, int]]:
    """Every block an inode owns, labelled: data, IND..., DIR, XATTR."""
    out: list[tuple[str, int]] = []
    if inode.mode & fmt.S_IFMT == fmt.S_IFDIR:
        blocks, _ = dir_blocks(dev, geo, inode)
        out.extend(("DIR", b) for b in blocks)
    elif inode.mode & fmt.S_IFMT in (fmt.S_IFREG, fmt.S_IFLNK):
        bm = file_block_map(dev, geo, inode)
        out.extend(("DATA", b) for _i, b in bm.data)
        out.extend(bm.meta)
    if inode.xattr_block and valid_block(geo, inode.xattr_block):
        out.append(("XATTR", inode.xattr_block))
    return out


# ---------------------------------------------------------------------------
# What is where
# ---------------------------------------------------------------------------


def describe_block(dev: Any, geo: fmt.Geometry, block: int) -> tuple[str, str | None]:
    """(description, structure type to annotate with) for a device block."""
    if block == 0:
        return "superblock", "superblock_static"
    if block == geo.backup_block:
        return "backup superblock", "superblock_static"
    g = geo.group_of_block(block)
    if g >= geo.group_count:
        return "unused tail of the device", None
    start = geo.group_start(g)
    if block == start:
        return f"group {g} header (static superblock copy)", "superblock_static"
    if block == geo.block_bitmap_block(g):
        return f"group {g} block bitmap", None
    if block == geo.counters_block(g):
        return f"group {g} counters", "group_counters"
    if geo.inode_bitmap_block(g) <= block < geo.inode_table_block(g):
        return f"group {g} inode bitmap", None
    it = geo.inode_table_block(g)
    if it <= block < it + geo.inode_table_blocks:
        first = g * geo.inodes_per_group + (block - it) * geo.inodes_per_block + 1
        return f"group {g} inode table (inodes {first}..{first + geo.inodes_per_block - 1})", "inode"
    if g == 0 and geo.journal_block <= block < geo.journal_block + geo.journal_blocks:
        return "microjournal", "journal_slot"
    head = dev.read(block * geo.block_size, 4)
    if head == fmt.DIR_PAGE_MAGIC:
        return "data block (looks like a directory page)", "dir_page"
    if head == fmt.XATTR_MAGIC:
        return "data block (looks like an xattr block)", "xattr"
    return "data block", None


def describe_address(dev: Any, geo: fmt.Geometry, addr: int) -> str:
    """Name the field (if any) at device byte ``addr``: used by the journal dump."""
    bs = geo.block_size
    block, off = divmod(addr, bs)
    desc, stype = describe_block(dev, geo, block)
    if stype == "inode":
        g = geo.group_of_block(block)
        index = (block - geo.inode_table_block(g)) * geo.inodes_per_block + off // fmt.INODE_SIZE
        ino = g * geo.inodes_per_group + index + 1
        return f"inode {ino} {_field_at('inode', off % fmt.INODE_SIZE, bs)}"
    if block == 0 and off >= fmt.SB_DYNAMIC_OFFSET:
        return f"superblock_dynamic {_field_at('superblock_dynamic', off - fmt.SB_DYNAMIC_OFFSET, bs)}"
    if stype in ("superblock_static", "group_counters") and off < fp.struct_size(stype, bs):
        return f"{desc} {_field_at(stype, off, bs)}"
    return f"{desc}, block {block} +{off}"


def _field_at(type_name: str, off: int, bs: int) -> str:
    for f in fp.leaves(type_name, bs):
        if f.offset <= off < f.offset + f.size:
            return f.path if f.offset == off else f"{f.path}+{off - f.offset}"
    return f"+{off}"


# ---------------------------------------------------------------------------
# Block dumps
# ---------------------------------------------------------------------------


def hexdump(data: bytes, base: int = 0) -> list[str]:
    """od-style lines with ``*`` for repeated lines, as debugfs block_dump prints."""
    lines: list[str] = []
    prev = None
    starred = False
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        if chunk == prev and off + 16 < len(data):
            if not starred:
                lines.append("*")
                starred = True
            continue
        starred = False
        prev = chunk
        words = " ".join(chunk[i : i + 2].hex() for i in range(0, len(chunk), 2))
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{base + off:04o}  {words:<39}  {text}")
    return lines


def annotate_struct(
    dev: Any, geo: fmt.Geometry, type_name: str, addr: int, base: int, title: str, skip_zero: bool = True
) -> list[str]:
    """Field-per-line listing of a structure (runs of equal array elements collapsed)."""
    lines = [f"--- {title} at +{addr - base:#x} ---"]
    fields = fp.read_fields(dev, geo, type_name, addr)
    runs = fp.collapse_runs(fields) if skip_zero else [(f, None, raw) for f, raw in fields]
    for first, last, raw in runs:
        label, value = fp.format_run(first, last, raw)
        where = f"+{first.offset - base:x}"
        lines.append(f"  {where:<7} {label:<24} = {value}")
    return lines


def annotate_block(dev: Any, geo: fmt.Geometry, block: int, force: str | None = None) -> list[str]:
    """Field-level listing of what ``block`` holds (``force``: a type name)."""
    bs = geo.block_size
    base = block * bs
    desc, stype = describe_block(dev, geo, block)
    if force:
        stype = force if force in ("dir_page", "xattr") else fp.get_type(force).name
    lines = [f"Block {block}: {desc}"]
    if stype is None:
        return lines + ["  (no structure to annotate; use -t TYPE to force one)"]
    if stype == "superblock_static":
        lines += annotate_struct(dev, geo, stype, base, base, "superblock_static", skip_zero=False)
        raw = dev.read(base, fmt.SB_STATIC_SIZE)
        ok = fmt.sb_static_checksum(raw) == int.from_bytes(raw[-4:], "little")
        lines.append(f"  checksum {'ok' if ok else 'BAD'}")
        if block == 0:
            lines += annotate_struct(
                dev, geo, "superblock_dynamic", base + fmt.SB_DYNAMIC_OFFSET, base, "superblock_dynamic", False
            )
    elif stype == "inode":
        g = geo.group_of_block(block)
        first = g * geo.inodes_per_group + (block - geo.inode_table_block(g)) * geo.inodes_per_block + 1
        for i in range(geo.inodes_per_block):
            addr = base + i * fmt.INODE_SIZE
            if not any(dev.read(addr, fmt.INODE_SIZE)):
                lines.append(f"--- inode {first + i} at +{addr - base:#x}: all zero ---")
                continue
            lines += annotate_struct(dev, geo, "inode", addr, base, f"inode {first + i}")
    elif stype == "journal_slot":
        per = bs // fmt.JOURNAL_SLOT_SIZE
        first_slot = (block - geo.journal_block) * per
        for i in range(per):
            slot = first_slot + i
            if slot >= geo.journal_slots:
                break
            addr = base + i * fmt.JOURNAL_SLOT_SIZE
            lines += annotate_struct(dev, geo, "journal_slot", addr, base, f"journal slot {slot}")
    elif stype == "dir_page":
        lines += annotate_struct(dev, geo, "dir_page_header", base, base, "dir_page_header", False)
        entries, err = page_entries(dev, geo, block)
        for e in entries:
            lines += annotate_struct(dev, geo, "dir_entry_header", base + e.offset, base, f"entry {e.name!r}", False)
        if err:
            lines.append(f"  {err}")
    elif stype == "xattr":
        lines += annotate_struct(dev, geo, "xattr_header", base, base, "xattr_header", False)
        for off, _hdr, name, value in xattr_entries(dev.read(base, bs)):
            lines += annotate_struct(dev, geo, "xattr_entry_header", base + off, base, "xattr entry", False)
            lines.append(f"  {'':7} name = {name!r}  value = {value[:64]!r}")
    else:
        size = fp.struct_size(stype, bs)
        for addr in range(base, base + bs - size + 1, size):
            lines += annotate_struct(dev, geo, stype, addr, base, stype)
    return lines


def xattr_entries(block: bytes) -> Iterator[tuple[int, Any, bytes, bytes]]:
    """(offset, header, name suffix, value) of each entry of an xattr block."""
    hdr = fmt.XattrHeader.parse(block[: fmt.XATTR_HEADER_SIZE])
    off = fmt.XATTR_HEADER_SIZE
    end = min(hdr.used, len(block))
    for _ in range(hdr.count):
        if off + fmt.XATTR_ENTRY_HEADER_SIZE > end:
            return
        eh = fmt.XattrEntryHeader.parse(block[off : off + fmt.XATTR_ENTRY_HEADER_SIZE])
        start = off + fmt.XATTR_ENTRY_HEADER_SIZE
        name = block[start : start + eh.name_len]
        value = block[start + eh.name_len : start + eh.name_len + eh.value_len]
        yield off, eh, name, value
        off += fmt.xattr_entry_len(eh.name_len, eh.value_len)


def xattr_block_checksum(block: bytes) -> int:
    raw = bytearray(block)
    off = fmt.field_offset(fmt.XattrHeader, "checksum")
    raw[off : off + 4] = b"\0\0\0\0"
    return zlib.crc32(bytes(raw)) & 0xFFFFFFFF


# ---------------------------------------------------------------------------
# Every structure instance on an image (for field-fuzzing campaigns)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """One structure on the device: its type (a fieldpath type name), byte address and a label."""

    type_name: str
    addr: int
    label: str


def structures(dev: Any, geo: fmt.Geometry) -> Iterator[Instance]:
    """Every structure instance reachable on an image, in device order per kind.

    Superblock (static, dynamic, backup and group copies), group counters,
    journal slots, every inode in use, and what those inodes own: indirect
    blocks, directory radix nodes, pages and entries, xattr blocks and entries,
    quota records that are not holes.  The field-fuzzing campaign walks this
    list with :func:`nvfs_tools.fieldpath.leaves` to reach every field of every
    structure; debugfs' ``print TYPE @ADDR`` shows any of them.
    """
    bs = geo.block_size
    yield Instance("superblock_static", 0, "superblock")
    yield Instance("superblock_dynamic", fmt.SB_DYNAMIC_OFFSET, "dynamic superblock")
    for g in range(1, geo.group_count):
        yield Instance("superblock_static", geo.group_start(g) * bs, f"group {g} superblock copy")
    yield Instance("superblock_static", geo.backup_block * bs, "backup superblock")
    for g in range(geo.group_count):
        yield Instance("group_counters", geo.counters_block(g) * bs, f"group {g} counters")
    for s in range(geo.journal_slots):
        yield Instance("journal_slot", geo.journal_block * bs + s * fmt.JOURNAL_SLOT_SIZE, f"journal slot {s}")
    for ino in range(1, geo.inodes_count + 1):
        off = geo.inode_offset(ino)
        if dev.read(off, 2) == b"\0\0":
            continue
        inode = read_inode(dev, geo, ino)
        yield Instance("inode", off, f"inode {ino}")
        yield from _owned_structures(dev, geo, ino, inode)


def _owned_structures(dev: Any, geo: fmt.Geometry, ino: int, inode: Any) -> Iterator[Instance]:
    bs = geo.block_size
    ftype = inode.mode & fmt.S_IFMT
    if ftype == fmt.S_IFDIR:
        bank = inode.dir_bank if inode.dir_bank in (0, 1) else 0
        nodes, _bad = dir_structure(dev, geo, inode.block[bank])
        for n in nodes:
            if n.kind == "node":
                yield Instance("radix_node", n.block * bs, f"inode {ino} radix node {n.block}")
                continue
            if page_header(dev, geo, n.block) is None:
                continue
            yield Instance("dir_page_header", n.block * bs, f"inode {ino} directory page {n.block}")
            for e in page_entries(dev, geo, n.block)[0]:
                label = f"inode {ino} entry {e.name.decode('utf-8', 'backslashreplace')!r}"
                yield Instance("dir_entry_header", n.block * bs + e.offset, label)
    elif ftype in (fmt.S_IFREG, fmt.S_IFLNK):
        for kind, b in file_block_map(dev, geo, inode).meta:
            yield Instance("indirect", b * bs, f"inode {ino} {kind} block {b}")
        if ino in fmt.QUOTA_INODES.values():
            for fb, b in file_block_map(dev, geo, inode).data:
                raw = dev.read(b * bs, bs)
                for i in range(0, bs, fmt.QUOTA_RECORD_SIZE):
                    if any(raw[i : i + fmt.QUOTA_RECORD_SIZE]):
                        qid = (fb * bs + i) // fmt.QUOTA_RECORD_SIZE
                        yield Instance("quota_record", b * bs + i, f"inode {ino} quota record {qid}")
    xb = inode.xattr_block
    if xb and valid_block(geo, xb):
        raw = dev.read(xb * bs, bs)
        if raw[:4] == fmt.XATTR_MAGIC:
            yield Instance("xattr_header", xb * bs, f"inode {ino} xattr block {xb}")
            for off, _h, name, _v in xattr_entries(raw):
                yield Instance("xattr_entry_header", xb * bs + off, f"inode {ino} xattr {name!r}")
