"""Typed, xfs_db-style field paths over the construct schemas of format.py.

debugfs.nvfs ``print`` / ``write`` / ``fuzz`` and the field-fuzzing campaign
of the reliability tests all need the same thing: turn ``TYPE ADDR
FIELD.PATH[i]`` into a byte range on the device, show it, change it, or damage
it in a reproducible way.  Everything here is derived from the schemas in
``format.STRUCTURES`` (plus the two block-sized pointer arrays, whose length
depends on the block size), so no offset is written twice.

A *field* is a leaf of a schema: an integer, a byte string, a constant magic
or a reserved (padding) area.  Arrays expand to ``name[i]`` leaves and nested
structures to ``outer.inner`` leaves.  A path may also name a whole array or
nested structure, which selects every leaf under it.

Fuzz verbs act on the field's bytes read as one little-endian unsigned
integer, so they mean the same thing for integers and byte strings:
``zeroes`` / ``ones`` set every bit, ``firstbit`` flips the most significant
bit, ``middlebit`` the bit in the middle, ``lastbit`` the least significant
bit, ``add`` / ``sub`` add or subtract a small amount (default 1) modulo the
field width, ``random`` stores random bytes that differ from the old ones.

A field-fuzzing campaign needs three calls::

    for inst in annotate.structures(dev, geo):            # every structure on the image
        for field in leaves(inst.type_name, geo.block_size):  # every field of it
            for verb in FUZZ_VERBS:
                field, old, new = fuzz_field(dev, geo, inst.type_name, inst.addr, field.path, verb,
                                             rng=random.Random(seed))
                ...  # run fsck, then put ``old`` back with store_field(...) or use a fresh copy

``fuzz_field`` recomputes the checksums that cover the field (static
superblock, xattr block, journal slot) unless ``fix_checksums=False``, so the
damage reaches the checks behind the checksum, as xfs_db's fuzz does.  The
same case replays in debugfs.nvfs as ``fuzz -s SEED TYPE @ADDR FIELD VERB``.
"""

from __future__ import annotations

import random as _random
import re
import uuid as _uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from construct import Array, Int64ul, Struct

from nvfs_tools import format as fmt

FUZZ_VERBS = ("zeroes", "ones", "firstbit", "middlebit", "lastbit", "add", "sub", "random")


class FieldPathError(ValueError):
    """A type name, field path, address or value that cannot be used."""


@dataclass(frozen=True)
class Field:
    """One leaf of a structure: where it is and how to read it.

    ``offset`` is relative to the start of the structure until
    :func:`locate` makes it absolute (a device byte address).
    """

    path: str
    offset: int
    size: int
    kind: str  # "uint", "sint", "bytes", "const" (magic) or "pad" (reserved)
    const: bytes | None = None

    @property
    def name(self) -> str:
        """Last component without indexes (for formatting hints)."""
        return re.sub(r"\[\d+\]", "", self.path.rsplit(".", 1)[-1])


# ---------------------------------------------------------------------------
# Structure types
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StructType:
    """A structure debugfs can address: its schema and how ADDR finds it."""

    name: str
    aliases: tuple[str, ...]
    doc: str
    schema: Callable[[int], Struct]  # block size -> schema
    addr_doc: str


def _fixed(struct: Struct) -> Callable[[int], Struct]:
    return lambda _bs: struct


def _pointer_block(field: str) -> Callable[[int], Struct]:
    return lambda bs: Struct(field / Array(fmt.pointers_per_block(bs), Int64ul))


TYPES: dict[str, StructType] = {}


def _register(t: StructType) -> None:
    TYPES[t.name] = t


_register(
    StructType(
        "superblock_static",
        ("sb", "super"),
        "static superblock (block 0 bytes 0..2047)",
        _fixed(fmt.SuperblockStatic),
        "default block 0; `backup`; `group N` (copy); BLOCK",
    )
)
_register(
    StructType(
        "superblock_dynamic",
        ("dsb", "dynsb"),
        "dynamic superblock (block 0 bytes 2048..4095)",
        _fixed(fmt.SuperblockDynamic),
        "default block 0 + 2048",
    )
)
_register(
    StructType(
        "group_counters",
        ("group", "gc", "bg"),
        "free counters of one group",
        _fixed(fmt.GroupCounters),
        "group number (default 0)",
    )
)
_register(
    StructType(
        "inode",
        ("ino", "i"),
        "one 256-byte inode",
        _fixed(fmt.Inode),
        "inode number, <INO> or path (default: current directory)",
    )
)
_register(StructType("indirect", ("ind",), "indirect block of a file (pointer array)", _pointer_block("ptr"), "BLOCK"))
_register(
    StructType("radix_node", ("radix", "dxnode"), "directory radix node (slot array)", _pointer_block("slot"), "BLOCK")
)
_register(StructType("dir_page_header", ("dirpage", "dp"), "directory page header", _fixed(fmt.DirPageHeader), "BLOCK"))
_register(
    StructType(
        "dir_entry_header", ("dirent", "de"), "directory entry header", _fixed(fmt.DirEntryHeader), "BLOCK:OFFSET"
    )
)
_register(
    StructType(
        "xattr_header",
        ("xattr", "xa"),
        "extended attribute block header",
        _fixed(fmt.XattrHeader),
        "BLOCK, <INO> or path (its xattr block)",
    )
)
_register(
    StructType(
        "xattr_entry_header",
        ("xentry", "xe"),
        "extended attribute entry header",
        _fixed(fmt.XattrEntryHeader),
        "BLOCK:OFFSET",
    )
)
_register(
    StructType(
        "journal_slot",
        ("jslot", "js"),
        "microjournal slot (header + 16 entries)",
        _fixed(fmt.JournalSlot),
        "slot number (default 0)",
    )
)
_register(
    StructType(
        "journal_slot_header",
        ("jheader", "jh"),
        "microjournal slot header",
        _fixed(fmt.JournalSlotHeader),
        "slot number (default 0)",
    )
)
_register(
    StructType("journal_entry", ("jentry", "je"), "one microjournal entry", _fixed(fmt.JournalEntry), "SLOT:ENTRY")
)
_register(
    StructType(
        "quota_record",
        ("dquot", "quota"),
        "one quota usage record",
        _fixed(fmt.QuotaRecord),
        "user|group|project ID (needs a file map), or @BYTE",
    )
)

_ALIASES = {alias: t.name for t in TYPES.values() for alias in (t.name, *t.aliases)}


def type_names() -> list[str]:
    """Every accepted type name and alias, for help and completion."""
    return sorted(_ALIASES)


def get_type(name: str) -> StructType:
    try:
        return TYPES[_ALIASES[name]]
    except KeyError:
        raise FieldPathError(f"unknown structure type {name!r} (known: {', '.join(TYPES)})") from None


# ---------------------------------------------------------------------------
# Flattening schemas into leaves
# ---------------------------------------------------------------------------


def _leaf_kind(con: Any) -> tuple[str, bytes | None]:
    cls = type(con).__name__
    if cls == "FormatField":
        return ("sint" if con.fmtstr[-1].islower() else "uint"), None
    if cls == "Const":
        return "const", con.value
    if cls == "Padded":
        return "pad", None
    if cls == "Bytes":
        return "bytes", None
    raise FieldPathError(f"cannot address a {cls} field")


def _walk(con: Any, prefix: str, offset: int, out: list[Field]) -> None:
    cls = type(con).__name__
    if cls == "Renamed":
        con = con.subcon
        cls = type(con).__name__
    if cls == "Struct":
        for sub in con.subcons:
            size = sub.sizeof()
            if sub.name is not None:
                _walk(sub, f"{prefix}.{sub.name}" if prefix else sub.name, offset, out)
            offset += size
    elif cls == "Array":
        esize = con.subcon.sizeof()
        for i in range(con.count):
            _walk(con.subcon, f"{prefix}[{i}]", offset + i * esize, out)
    else:
        kind, const = _leaf_kind(con)
        out.append(Field(prefix, offset, con.sizeof(), kind, const))


_LEAF_CACHE: dict[tuple[str, int], list[Field]] = {}


def leaves(type_name: str, block_size: int = fmt.DEFAULT_BLOCK_SIZE) -> list[Field]:
    """Every leaf field of a structure type, in layout order (offsets relative)."""
    t = get_type(type_name)
    key = (t.name, block_size)
    if key not in _LEAF_CACHE:
        out: list[Field] = []
        _walk(t.schema(block_size), "", 0, out)
        _LEAF_CACHE[key] = out
    return _LEAF_CACHE[key]


def struct_size(type_name: str, block_size: int = fmt.DEFAULT_BLOCK_SIZE) -> int:
    return get_type(type_name).schema(block_size).sizeof()


def _normalise(path: str) -> str:
    """Accept ``a.b[3]``, ``a.b.3`` and ``a/b`` spellings alike."""
    path = path.strip().replace("/", ".")
    for k, level in enumerate(("IND", "DIND", "TIND", "QIND", "5IND")):  # debugfs' block[IND] spelling
        path = path.replace(f"[{level}]", f"[{fmt.N_DIRECT + k}]")
    path = re.sub(r"\.(\d+)(?=\.|\[|$)", r"[\1]", path)
    return path


def resolve(type_name: str, path: str, block_size: int = fmt.DEFAULT_BLOCK_SIZE) -> list[Field]:
    """Leaves selected by ``path``: one leaf, or all leaves of an array/struct.

    An index range ``name[a-b]`` selects elements a..b.
    """
    all_leaves = leaves(type_name, block_size)
    path = _normalise(path)
    rng = re.fullmatch(r"(.*)\[(\d+)-(\d+)\]", path)
    if rng:
        base, lo, hi = rng.group(1), int(rng.group(2)), int(rng.group(3))
        out = []
        for i in range(lo, hi + 1):
            out.extend(resolve(type_name, f"{base}[{i}]", block_size))
        return out
    selected = [
        f for f in all_leaves if f.path == path or f.path.startswith(path + ".") or f.path.startswith(path + "[")
    ]
    if not selected:
        raise FieldPathError(f"{get_type(type_name).name} has no field {path!r}")
    return selected


def resolve_one(type_name: str, path: str, block_size: int = fmt.DEFAULT_BLOCK_SIZE) -> Field:
    """The single leaf named by ``path`` (writes and fuzzing need exactly one)."""
    fields = resolve(type_name, path, block_size)
    if len(fields) != 1:
        raise FieldPathError(f"{path!r} names {len(fields)} fields; give one element, e.g. {fields[0].path}")
    return fields[0]


def locate(field: Field, base: int) -> Field:
    """The field at absolute device byte address ``base + offset``."""
    return replace(field, offset=base + field.offset)


def field_names(type_name: str, block_size: int = fmt.DEFAULT_BLOCK_SIZE) -> list[str]:
    """Top-level and nested names without array indexes, for completion."""
    names: list[str] = []
    for f in leaves(type_name, block_size):
        base = re.sub(r"\[\d+\]", "", f.path)
        if base not in names:
            names.append(base)
    return names


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

_HEX_NAMES = {"checksum", "hash", "prefix", "commit", "flags", "state", "rdev", "addr", "value", "slot", "ptr"}
_HEX_PREFIXES = ("feature_",)


def decode(field: Field, raw: bytes) -> int | bytes:
    """The field's value: an int for integers, bytes otherwise."""
    if field.kind in ("uint", "sint"):
        return int.from_bytes(raw, "little", signed=field.kind == "sint")
    return bytes(raw)


def format_value(field: Field, raw: bytes) -> str:
    """Human form of a field value, as ``print`` shows it."""
    value = decode(field, raw)
    name = field.name
    if isinstance(value, int):
        if name == "mode":
            return f"0{value:o}"
        if name in _HEX_NAMES or name.startswith(_HEX_PREFIXES) or value >= 1 << 63:
            return f"{value:#x}"
        return str(value)
    if field.kind == "const":
        mark = "" if value == field.const else "  (BAD, expected " + _escaped(field.const or b"") + ")"
        return _escaped(value) + mark
    if name == "uuid" and len(value) == 16:
        return str(_uuid.UUID(bytes=value))
    if name == "label":
        return '"' + value.rstrip(b"\0").decode("utf-8", "backslashreplace") + '"'
    if not any(value):
        return f"(zero, {len(value)} bytes)" if field.kind == "pad" or len(value) > 16 else "0x" + value.hex()
    if len(value) > 64:
        first = next(i for i, b in enumerate(value) if b)
        return f"({len(value)} bytes, first non-zero at +{first}: {value[first : first + 16].hex()}...)"
    return "0x" + value.hex()


def _escaped(data: bytes) -> str:
    return '"' + "".join(chr(b) if 32 <= b < 127 and b != 0x5C else f"\\x{b:02x}" for b in data) + '"'


def parse_value(field: Field, text: str) -> bytes:
    """Encode user input for ``field``: integers (any base, in range) or bytes.

    Byte fields take ``0xHEX``, a quoted string, or a UUID for ``uuid``; shorter
    values are zero-padded.  Integer fields also take ``0xHEX``.
    """
    text = text.strip()
    if field.kind in ("uint", "sint"):
        try:
            value = int(text, 0)
        except ValueError:
            raise FieldPathError(f"{field.path}: {text!r} is not an integer") from None
        bits = field.size * 8
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if field.kind == "sint" else (0, (1 << bits) - 1)
        if not lo <= value <= hi:
            # allow the unsigned spelling of a signed field's bit pattern
            if field.kind == "sint" and 0 <= value < (1 << bits):
                return value.to_bytes(field.size, "little")
            raise FieldPathError(f"{field.path}: {value} does not fit in {bits} bits")
        return value.to_bytes(field.size, "little", signed=value < 0)
    if field.name == "uuid" and re.fullmatch(r"[0-9a-fA-F-]{32,36}", text):
        data = _uuid.UUID(text).bytes
    elif text[:2].lower() == "0x":
        try:
            data = bytes.fromhex(text[2:])
        except ValueError:
            raise FieldPathError(f"{field.path}: {text!r} is not hex") from None
    else:
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            text = text[1:-1]
        data = text.encode("utf-8").decode("unicode_escape").encode("latin-1")
    if len(data) > field.size:
        raise FieldPathError(f"{field.path}: {len(data)} bytes do not fit in {field.size}")
    return data.ljust(field.size, b"\0")


def fuzz_value(raw: bytes, verb: str, rng: _random.Random | None = None, amount: int = 1) -> bytes:
    """Damage ``raw`` (one field's bytes) according to ``verb`` (see module doc)."""
    size = len(raw)
    bits = size * 8
    mask = (1 << bits) - 1
    value = int.from_bytes(raw, "little")
    if verb == "zeroes":
        new = 0
    elif verb == "ones":
        new = mask
    elif verb == "firstbit":
        new = value ^ (1 << (bits - 1))
    elif verb == "middlebit":
        new = value ^ (1 << (bits // 2))
    elif verb == "lastbit":
        new = value ^ 1
    elif verb == "add":
        new = (value + amount) & mask
    elif verb == "sub":
        new = (value - amount) & mask
    elif verb == "random":
        rng = rng or _random.Random()
        new = value
        while new == value and bits:
            new = rng.getrandbits(bits)
    else:
        raise FieldPathError(f"unknown fuzz verb {verb!r} (known: {', '.join(FUZZ_VERBS)})")
    return new.to_bytes(size, "little")


# ---------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------


@dataclass
class AddressContext:
    """What address parsing needs to know about the filesystem.

    ``lookup`` turns a path into an inode number; ``file_map`` turns (inode,
    file byte offset) into a device byte address (for quota records); both are
    optional so that a damaged image can still be addressed by numbers.
    """

    geo: fmt.Geometry
    cwd: int = fmt.ROOT_INO
    lookup: Callable[[str], int] | None = None
    read_inode: Callable[[int], Any] | None = None
    file_map: Callable[[int, int], int | None] | None = None
    sb_addr: int = 0  # the static superblock in use (the backup's address with debugfs -b)


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise FieldPathError(f"{text!r} is not a valid {what}") from None


def looks_like_address(tokens: list[str]) -> bool:
    """True when the first token is an address form rather than a field name."""
    if not tokens:
        return False
    t = tokens[0]
    return bool(re.match(r"^(@|<|\d|-\d)", t)) or t in ("sb", "backup", "group", "user", "project") or "/" in t


def parse_inode(ctx: AddressContext, text: str) -> int:
    """``12``, ``<12>`` or a path (absolute or relative to the current directory)."""
    m = re.fullmatch(r"<(\d+)>", text)
    if m:
        ino = int(m.group(1))
    elif re.fullmatch(r"\d+", text):
        ino = int(text)
    else:
        if ctx.lookup is None:
            raise FieldPathError(f"cannot look up path {text!r} (no directory access)")
        ino = ctx.lookup(text)
    if not 1 <= ino <= ctx.geo.inodes_count:
        raise FieldPathError(f"inode {ino} out of range 1..{ctx.geo.inodes_count}")
    return ino


def address_of(type_name: str, tokens: list[str], ctx: AddressContext) -> tuple[int, int]:
    """Resolve ADDR tokens for ``type_name``; returns (byte address, tokens used).

    Every type accepts ``@BYTE`` (absolute byte address) and ``BLOCK:OFFSET``.
    """
    t = get_type(type_name)
    geo = ctx.geo
    bs = geo.block_size
    tok = tokens[0] if tokens else None
    if tok is not None and tok.startswith("@"):
        return _check(_int(tok[1:], "byte address"), t, geo), 1
    if tok is not None and ":" in tok and t.name not in ("journal_entry",):
        b, off = tok.split(":", 1)
        return _check(_int(b, "block") * bs + _int(off, "offset"), t, geo), 1
    name = t.name
    if name == "superblock_static":
        if tok is None:
            return ctx.sb_addr, 0
        if tok == "sb":
            return ctx.sb_addr, 1
        if tok == "backup":
            return geo.backup_block * bs, 1
        if tok == "group":
            g = _group(tokens, geo)
            return geo.group_start(g) * bs, 2
        return _check(_int(tok, "block") * bs, t, geo), 1
    if name == "superblock_dynamic":
        if tok in (None, "sb"):
            return fmt.SB_DYNAMIC_OFFSET, 0 if tok is None else 1
        return _check(_int(tok, "block") * bs + fmt.SB_DYNAMIC_OFFSET, t, geo), 1
    if name == "group_counters":
        if tok is None:
            return geo.counters_block(0) * bs, 0
        used = 1
        if tok == "group":
            g, used = _group(tokens, geo), 2
        else:
            g = _int(tok, "group")
        if not 0 <= g < geo.group_count:
            raise FieldPathError(f"group {g} out of range 0..{geo.group_count - 1}")
        return geo.counters_block(g) * bs, used
    if name == "inode":
        ino = ctx.cwd if tok is None else parse_inode(ctx, tok)
        return geo.inode_offset(ino), 0 if tok is None else 1
    if name in ("journal_slot", "journal_slot_header", "journal_entry"):
        slot, entry = 0, 0
        if tok is not None:
            if name == "journal_entry" and ":" in tok:
                s, e = tok.split(":", 1)
                slot, entry = _int(s, "slot"), _int(e, "entry")
            else:
                slot = _int(tok, "slot")
        if not 0 <= slot < geo.journal_slots:
            raise FieldPathError(f"journal slot {slot} out of range 0..{geo.journal_slots - 1}")
        if not 0 <= entry < fmt.JOURNAL_ENTRIES:
            raise FieldPathError(f"journal entry {entry} out of range 0..{fmt.JOURNAL_ENTRIES - 1}")
        base = geo.journal_block * bs + slot * fmt.JOURNAL_SLOT_SIZE
        if name == "journal_entry":
            base += fmt.JOURNAL_SLOT_HEADER_SIZE + entry * 16
        return base, 0 if tok is None else 1
    if name == "xattr_header" and tok is not None and not re.fullmatch(r"\d+", tok):
        if ctx.read_inode is None:
            raise FieldPathError("cannot read inodes here")
        ino = parse_inode(ctx, tok)
        block = ctx.read_inode(ino).xattr_block
        if not block:
            raise FieldPathError(f"inode {ino} has no extended attribute block")
        return _check(block * bs, t, geo), 1
    if name == "quota_record" and tok in ("user", "group", "project"):
        if len(tokens) < 2:
            raise FieldPathError(f"quota_record {tok} needs an ID")
        qid = _int(tokens[1], "quota id")
        if ctx.file_map is None:
            raise FieldPathError("cannot map quota files here")
        addr = ctx.file_map(fmt.QUOTA_INODES[tok], qid * fmt.QUOTA_RECORD_SIZE)
        if addr is None:
            raise FieldPathError(f"no quota record for {tok} {qid} (hole)")
        return addr, 2
    if tok is None:
        raise FieldPathError(f"{name} needs an address: {t.addr_doc}")
    return _check(_int(tok, "block") * bs, t, geo), 1


def _group(tokens: list[str], geo: fmt.Geometry) -> int:
    if len(tokens) < 2:
        raise FieldPathError("`group` needs a group number")
    g = _int(tokens[1], "group")
    if not 0 <= g < geo.group_count:
        raise FieldPathError(f"group {g} out of range 0..{geo.group_count - 1}")
    return g


def _check(addr: int, t: StructType, geo: fmt.Geometry) -> int:
    end = addr + t.schema(geo.block_size).sizeof()
    if addr < 0 or end > geo.blocks_count * geo.block_size:
        raise FieldPathError(f"address {addr} is outside the device")
    return addr


# ---------------------------------------------------------------------------
# Checksums that cover a field (recomputed after a write unless asked not to)
# ---------------------------------------------------------------------------


def checksum_fixups(type_name: str, addr: int, geo: fmt.Geometry, read: Callable[[int, int], bytes]) -> list[Field]:
    """Checksum fields covering the structure at ``addr``, with their new values.

    Returns located ``Field`` objects whose ``const`` holds the bytes to store.
    The static superblock CRC, the xattr block CRC and a journal slot's entry
    CRC are the checksums of the format; writes done by ``write``/``fuzz``
    recompute them unless told otherwise, so that damage reaches the checks
    behind them (as xfs_db does).
    """
    t = get_type(type_name).name
    bs = geo.block_size
    if t == "superblock_static":
        raw = read(addr, fmt.SB_STATIC_SIZE)
        f = locate(resolve_one(t, "checksum", bs), addr)
        return [replace(f, const=fmt.sb_static_checksum(raw).to_bytes(4, "little"))]
    if t in ("xattr_header", "xattr_entry_header"):
        block = addr // bs
        raw = bytearray(read(block * bs, bs))
        if raw[:4] != fmt.XATTR_MAGIC:
            return []
        off = fmt.field_offset(fmt.XattrHeader, "checksum")
        raw[off : off + 4] = b"\0\0\0\0"
        f = locate(resolve_one("xattr_header", "checksum", bs), block * bs)
        return [replace(f, const=(zlib.crc32(bytes(raw)) & 0xFFFFFFFF).to_bytes(4, "little"))]
    if t in ("journal_slot", "journal_slot_header", "journal_entry"):
        jstart = geo.journal_block * bs
        slot = (addr - jstart) // fmt.JOURNAL_SLOT_SIZE
        base = jstart + slot * fmt.JOURNAL_SLOT_SIZE
        return [
            replace(
                locate(resolve_one("journal_slot", "header.checksum", bs), base),
                const=journal_checksum(read(base, fmt.JOURNAL_SLOT_SIZE)).to_bytes(4, "little"),
            )
        ]
    return []


def journal_checksum(slot_bytes: bytes) -> int:
    """CRC-32 of the entries a slot's commit word counts (spec: used entries)."""
    commit = int.from_bytes(slot_bytes[:8], "little")
    count = min(commit & 0xFF, fmt.JOURNAL_ENTRIES)
    start = fmt.JOURNAL_SLOT_HEADER_SIZE
    return zlib.crc32(slot_bytes[start : start + count * 16]) & 0xFFFFFFFF


# ---------------------------------------------------------------------------
# Device-level get / set / fuzz (what debugfs and the fuzz campaign call)
# ---------------------------------------------------------------------------


def read_fields(
    dev: Any, geo: fmt.Geometry, type_name: str, addr: int, paths: list[str] | None = None
) -> list[tuple[Field, bytes]]:
    """Located fields of the structure at ``addr`` (all, or those ``paths`` select) with their bytes."""
    bs = geo.block_size
    if paths:
        fields = [f for p in paths for f in resolve(type_name, p, bs)]
    else:
        fields = leaves(type_name, bs)
    return [(locate(f, addr), dev.read(addr + f.offset, f.size)) for f in fields]


def store_field(
    dev: Any, geo: fmt.Geometry, type_name: str, addr: int, field: Field, new: bytes, *, fix_checksums: bool = True
) -> bytes:
    """Store ``new`` into located ``field`` (raw), fix covering checksums, barrier.

    Returns the old bytes.  The write is deliberately raw (no journal, no
    consistency checks): this is how damage is made for tests.
    """
    old = dev.read(field.offset, field.size)
    dev.write(field.offset, new)
    if fix_checksums and not field.path.endswith("checksum"):
        for fix in checksum_fixups(type_name, addr, geo, dev.read):
            dev.write(fix.offset, fix.const)
    dev.barrier()
    return old


def set_field(
    dev: Any, geo: fmt.Geometry, type_name: str, addr: int, path: str, text: str, *, fix_checksums: bool = True
) -> tuple[Field, bytes, bytes]:
    """Parse ``text`` for the field and store it; returns (field, old, new)."""
    field = locate(resolve_one(type_name, path, geo.block_size), addr)
    new = parse_value(field, text)
    old = store_field(dev, geo, type_name, addr, field, new, fix_checksums=fix_checksums)
    return field, old, new


def fuzz_field(
    dev: Any,
    geo: fmt.Geometry,
    type_name: str,
    addr: int,
    path: str,
    verb: str,
    *,
    rng: _random.Random | None = None,
    amount: int = 1,
    fix_checksums: bool = True,
) -> tuple[Field, bytes, bytes]:
    """Damage one field with a fuzz verb; returns (field, old, new)."""
    field = locate(resolve_one(type_name, path, geo.block_size), addr)
    new = fuzz_value(dev.read(field.offset, field.size), verb, rng, amount)
    old = store_field(dev, geo, type_name, addr, field, new, fix_checksums=fix_checksums)
    return field, old, new


def collapse_runs(fields: list[tuple[Field, bytes]]) -> list[tuple[Field, Field | None, bytes]]:
    """Group array elements for display: (first, last or None, bytes of first).

    A run is consecutive array leaves that are all zero, or that are elements of
    the same array with equal values (a radix node whose 128 slots point to one
    page prints as one line).  Fields outside arrays are never grouped.
    """
    out: list[tuple[Field, Field | None, bytes]] = []
    run: list[tuple[Field, bytes]] = []

    def key(f: Field) -> str:
        return re.sub(r"\[\d+\]", "[]", f.path)

    def flush() -> None:
        if run:
            out.append((run[0][0], run[-1][0] if len(run) > 1 else None, run[0][1]))
            run.clear()

    for f, raw in fields:
        if "[" not in f.path:
            flush()
            out.append((f, None, raw))
            continue
        if run:
            f0, raw0 = run[-1]
            zero = not any(raw) and not any(raw0)
            same = key(f) == key(f0) and raw == raw0
            if not (zero or same):
                flush()
        run.append((f, raw))
    flush()
    return out


def format_run(first: Field, last: Field | None, raw: bytes) -> tuple[str, str]:
    """(label, value) for a run from :func:`collapse_runs`."""
    label = first.path if last is None else f"{first.path}..{last.path}"
    value = format_value(first, raw)
    if last is not None and not any(raw):
        value = "0"
    return label, value
