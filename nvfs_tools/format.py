"""The NVFS on-media format, declared once.

Every structure that NVFS keeps on persistent memory is described here as a
``construct`` schema; ``spec/format.md`` documents the same structures in prose
and tables, and ``tests/test_spec_sync.py`` keeps the two in step.  Code that
must not parse with construct (the Cython fast-scan core, bulk scans) takes its
field offsets from :func:`field_layout`, so no layout is ever written twice.

All integers are little-endian.  The block is the allocation unit; a block
number times the block size is a byte offset on the device.
"""

from __future__ import annotations

import struct as _struct
import zlib
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable

    from construct import Struct

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

#: First 8 bytes of the static superblock.  The high-bit byte and the CR LF /
#: ^Z pair catch images mangled by 7-bit or text-mode transfers (as PNG does).
MAGIC = b"\x89NVFS\r\n\x1a"
#: On-media format version written by these tools.
FORMAT_VERSION = 1

MIN_BLOCK_SIZE = 4096
MAX_BLOCK_SIZE = 1 << 20
DEFAULT_BLOCK_SIZE = 4096

#: Byte sizes of the two halves of the superblock (block 0).
SB_STATIC_SIZE = 2048
SB_DYNAMIC_OFFSET = 2048
SB_DYNAMIC_SIZE = 2048

INODE_SIZE = 256
#: Bytes of storage per inode that mkfs provisions unless told otherwise.
DEFAULT_INODE_RATIO = 16384
#: Limits of bytes-per-inode (as mke2fs); whether the inodes fit a group is checked separately.
MIN_INODE_RATIO = 1024
MAX_INODE_RATIO = 1 << 26
DEFAULT_JOURNAL_SLOTS = 8
JOURNAL_ENTRIES = 16
JOURNAL_SLOT_SIZE = 512

N_DIRECT = 11
N_INDIRECT = 5
N_BLOCK_POINTERS = N_DIRECT + N_INDIRECT
#: Short symlink targets are kept in the 128 bytes of ``block[]``.
INLINE_SYMLINK_MAX = N_BLOCK_POINTERS * 8

MAX_NAME_LEN = 255
#: Longest symlink target (Linux PATH_MAX less its NUL); longer than 128 goes to one data block.
MAX_SYMLINK_LEN = 4095
#: Longest extended attribute value (Linux XATTR_SIZE_MAX); it must also fit its block.
XATTR_VALUE_MAX = 65536
#: Data blocks a group must offer beyond its metadata to be worth having.
MIN_GROUP_DATA_BLOCKS = 16

# Reserved inode numbers.  Inode 0 does not exist.
BADBLOCKS_INO = 1
ROOT_INO = 2
USR_QUOTA_INO = 3
GRP_QUOTA_INO = 4
PRJ_QUOTA_INO = 5
FIRST_INO = 11  # first ordinary inode; mkfs gives it to lost+found
LOST_FOUND_NAME = b"lost+found"

# Feature words.  An unknown incompat bit makes the filesystem unusable, an
# unknown ro_compat bit makes it read-only, unknown compat bits are ignored.
FEATURE_COMPAT_XATTR = 0x1
FEATURE_COMPAT_KNOWN = FEATURE_COMPAT_XATTR
FEATURE_INCOMPAT_KNOWN = 0x0
FEATURE_RO_COMPAT_QUOTA = 0x1
FEATURE_RO_COMPAT_KNOWN = FEATURE_RO_COMPAT_QUOTA

# Superblock dynamic ``state`` bits.
STATE_CLEAN = 0x1  # unmounted cleanly and last check found nothing
STATE_ERRORS = 0x2  # errors were seen and not yet repaired
STATE_CHECKING = 0x4  # fsck is repairing; a crash leaves this set
STATE_KNOWN = STATE_CLEAN | STATE_ERRORS | STATE_CHECKING

# Name hash algorithm (``hash_version``).
HASH_SIPHASH24 = 1

# File types (``S_IFMT`` values of the mode, as Linux defines them).
S_IFMT = 0o170000
S_IFSOCK = 0o140000
S_IFLNK = 0o120000
S_IFREG = 0o100000
S_IFBLK = 0o060000
S_IFDIR = 0o040000
S_IFCHR = 0o020000
S_IFIFO = 0o010000
VALID_FILE_TYPES = (S_IFSOCK, S_IFLNK, S_IFREG, S_IFBLK, S_IFDIR, S_IFCHR, S_IFIFO)

#: The ``file_type`` byte of a directory entry, as in Linux ``DT_*``.
DT_UNKNOWN, DT_FIFO, DT_CHR, DT_DIR, DT_BLK, DT_REG, DT_LNK, DT_SOCK = 0, 1, 2, 4, 6, 8, 10, 12
MODE_TO_DT = {
    S_IFIFO: DT_FIFO,
    S_IFCHR: DT_CHR,
    S_IFDIR: DT_DIR,
    S_IFBLK: DT_BLK,
    S_IFREG: DT_REG,
    S_IFLNK: DT_LNK,
    S_IFSOCK: DT_SOCK,
}

# Inode ``flags``.
INODE_FLAG_INLINE = 0x1  # symlink target stored in block[] (no data block)
INODE_FLAG_IMMUTABLE = 0x10
INODE_FLAG_APPEND = 0x20
INODE_FLAG_NODUMP = 0x40
INODE_FLAG_NOATIME = 0x80
INODE_FLAGS_KNOWN = (
    INODE_FLAG_INLINE | INODE_FLAG_IMMUTABLE | INODE_FLAG_APPEND | INODE_FLAG_NODUMP | INODE_FLAG_NOATIME
)

# Directory radix slots: 0 is empty, bit 63 marks a directory page, anything
# else is a radix node.  Bank roots in the inode use the same encoding.
RADIX_PAGE_BIT = 1 << 63
RADIX_BLOCK_MASK = RADIX_PAGE_BIT - 1

DIR_PAGE_MAGIC = b"NVDP"
DIR_PAGE_HEADER_SIZE = 64
DIR_ENTRY_HEADER_SIZE = 20
DIR_ENTRY_ALIGN = 8

GROUP_COUNTERS_MAGIC = b"NVFSGCNT"
XATTR_MAGIC = b"NVXA"
XATTR_HEADER_SIZE = 16
XATTR_ENTRY_HEADER_SIZE = 8
JOURNAL_SLOT_HEADER_SIZE = 16

# Extended attribute name indexes: the prefix is stored as a number.
XATTR_INDEX_USER = 1
XATTR_INDEX_TRUSTED = 2
XATTR_INDEX_SECURITY = 3
XATTR_INDEX_POSIX_ACL_ACCESS = 4
XATTR_INDEX_POSIX_ACL_DEFAULT = 5
XATTR_INDEX_SYSTEM = 6
#: index -> prefix; for the two ACL indexes the prefix is the whole name.
XATTR_PREFIXES = {
    XATTR_INDEX_USER: b"user.",
    XATTR_INDEX_TRUSTED: b"trusted.",
    XATTR_INDEX_SECURITY: b"security.",
    XATTR_INDEX_POSIX_ACL_ACCESS: b"system.posix_acl_access",
    XATTR_INDEX_POSIX_ACL_DEFAULT: b"system.posix_acl_default",
    XATTR_INDEX_SYSTEM: b"system.",
}

QUOTA_RECORD_SIZE = 64
QUOTA_INODES = {"user": USR_QUOTA_INO, "group": GRP_QUOTA_INO, "project": PRJ_QUOTA_INO}

# ---------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------


def _declare(c: Any) -> dict[str, Any]:
    """Every on-media structure, declared once.

    ``c`` is the ``construct`` module (the schemas everything parses with) or
    :class:`_Plain`, which reads the same declarations into plain ``struct``
    layouts.  Importing construct costs more than a whole mkfs of a small
    device, so the construct schemas are built on first use (module
    ``__getattr__`` below); mkfs builds its few structures from the plain ones.
    """
    Array, Bytes, Const, Padding, Struct = c.Array, c.Bytes, c.Const, c.Padding, c.Struct
    Int8ul, Int16ul, Int32ul, Int64sl, Int64ul = c.Int8ul, c.Int16ul, c.Int32ul, c.Int64sl, c.Int64ul

    #: Bytes 0..2047 of block 0: written by mkfs, never changed afterwards.  A copy
    #: is kept at the start of the last block of the device and at the start of
    #: the first block of every group after group 0.
    SuperblockStatic = Struct(
        "magic" / Const(MAGIC),
        "version" / Int32ul,
        "feature_compat" / Int32ul,
        "feature_incompat" / Int32ul,
        "feature_ro_compat" / Int32ul,
        "log_block_size" / Int32ul,
        "inode_size" / Int32ul,
        "blocks_count" / Int64ul,
        "blocks_per_group" / Int64ul,
        "inodes_per_group" / Int64ul,
        "group_count" / Int64ul,
        "inodes_count" / Int64ul,
        "root_ino" / Int64ul,
        "lost_found_ino" / Int64ul,
        "first_ino" / Int64ul,
        "journal_block" / Int64ul,
        "journal_slots" / Int32ul,
        "journal_entries" / Int32ul,
        "mkfs_time" / Int64sl,
        "mkfs_time_nsec" / Int32ul,
        "hash_version" / Int32ul,
        "hash_seed" / Bytes(16),
        "uuid" / Bytes(16),
        "label" / Bytes(64),
        "inode_bitmap_blocks" / Int32ul,
        "inode_table_blocks" / Int32ul,
        "journal_blocks" / Int32ul,
    )
    SuperblockStatic = Struct(
        *SuperblockStatic.subcons,
        "reserved" / Padding(SB_STATIC_SIZE - SuperblockStatic.sizeof() - 4),
        "checksum" / Int32ul,
    )

    #: Bytes 2048..4095 of block 0: the state that changes while the filesystem
    #: lives.  Every field is updated by single aligned 8-byte (or smaller) stores.
    SuperblockDynamic = Struct(
        "state" / Int64ul,
        "free_blocks" / Int64ul,
        "free_inodes" / Int64ul,
        "mount_count" / Int32ul,
        "max_mount_count" / Int32ul,
        "check_count" / Int32ul,
        "error_count" / Int32ul,
        "last_mount_time" / Int64sl,
        "last_write_time" / Int64sl,
        "last_check_time" / Int64sl,
        "orphan_head" / Int64ul,
        "journal_seq" / Int64ul,
        "repair_generation" / Int64ul,
    )
    SuperblockDynamic = Struct(
        *SuperblockDynamic.subcons,
        "reserved" / Padding(SB_DYNAMIC_SIZE - SuperblockDynamic.sizeof()),
    )

    #: The third block of every group: its free counters, kept exact by the
    #: allocators and rebuilt by fsck.
    GroupCounters = Struct(
        "magic" / Const(GROUP_COUNTERS_MAGIC),
        "group" / Int64ul,
        "free_blocks" / Int64ul,
        "free_inodes" / Int64ul,
        "used_dirs" / Int64ul,
    )

    #: One inode (256 bytes).  For directories ``block[0]`` and ``block[1]`` are
    #: the radix roots of bank 0 and bank 1 and ``dir_bank`` says which is live;
    #: for inline symlinks ``block[]`` holds the target bytes.
    Inode = Struct(
        "mode" / Int16ul,
        "reserved0" / Int16ul,
        "flags" / Int32ul,
        "uid" / Int32ul,
        "gid" / Int32ul,
        "links_count" / Int32ul,
        "generation" / Int32ul,
        "size" / Int64ul,
        "blocks" / Int64ul,
        "atime" / Int64sl,
        "mtime" / Int64sl,
        "ctime" / Int64sl,
        "btime" / Int64sl,
        "atime_nsec" / Int32ul,
        "mtime_nsec" / Int32ul,
        "ctime_nsec" / Int32ul,
        "btime_nsec" / Int32ul,
        "parent" / Int64ul,
        "xattr_block" / Int64ul,
        "next_orphan" / Int64ul,
        "rdev" / Int64ul,
        "dir_bank" / Int64ul,
        "block" / Array(N_BLOCK_POINTERS, Int64ul),
    )

    #: Header of a directory page (one block); entries follow it.
    DirPageHeader = Struct(
        "magic" / Const(DIR_PAGE_MAGIC),
        "depth" / Int16ul,
        "reserved0" / Int16ul,
        "prefix" / Int64ul,
        "dir_ino" / Int64ul,
        "next" / Int64ul,
        "reserved" / Padding(DIR_PAGE_HEADER_SIZE - 32),
    )

    #: Fixed head of a directory entry; ``name_len`` bytes of name follow and the
    #: record is padded to ``rec_len`` (a multiple of 8).  ``ino`` is written
    #: last: an entry exists exactly when its ``ino`` word is non-zero.
    DirEntryHeader = Struct(
        "ino" / Int64ul,
        "hash" / Int64ul,
        "name_len" / Int8ul,
        "file_type" / Int8ul,
        "rec_len" / Int16ul,
    )

    #: Header of an extended-attribute block.
    XattrHeader = Struct(
        "magic" / Const(XATTR_MAGIC),
        "checksum" / Int32ul,
        "count" / Int32ul,
        "used" / Int32ul,
    )

    #: Head of one extended attribute; name then value follow, padded to 8.
    XattrEntryHeader = Struct(
        "name_index" / Int8ul,
        "name_len" / Int8ul,
        "reserved" / Int16ul,
        "value_len" / Int32ul,
    )

    #: One microjournal slot header; the entries follow it.
    JournalSlotHeader = Struct(
        "commit" / Int64ul,
        "checksum" / Int32ul,
        "reserved" / Int32ul,
    )

    #: One microjournal entry: store ``value`` at byte ``addr`` of the device.
    JournalEntry = Struct(
        "addr" / Int64ul,
        "value" / Int64ul,
    )

    JournalSlot = Struct(
        "header" / JournalSlotHeader,
        "entries" / Array(JOURNAL_ENTRIES, JournalEntry),
        "reserved" / Padding(JOURNAL_SLOT_SIZE - JOURNAL_SLOT_HEADER_SIZE - 16 * JOURNAL_ENTRIES),
    )

    #: One quota usage record; the quota file is a sparse array indexed by id.
    QuotaRecord = Struct(
        "bytes_used" / Int64ul,
        "inodes_used" / Int64ul,
        "bytes_soft" / Int64ul,
        "bytes_hard" / Int64ul,
        "inodes_soft" / Int64ul,
        "inodes_hard" / Int64ul,
        "grace_until" / Int64sl,
        "flags" / Int64ul,
    )

    #: Every named structure, for generic tools (debugfs ``print``, spec tests).
    STRUCTURES = {
        "superblock_static": SuperblockStatic,
        "superblock_dynamic": SuperblockDynamic,
        "group_counters": GroupCounters,
        "inode": Inode,
        "dir_page_header": DirPageHeader,
        "dir_entry_header": DirEntryHeader,
        "xattr_header": XattrHeader,
        "xattr_entry_header": XattrEntryHeader,
        "journal_slot_header": JournalSlotHeader,
        "journal_entry": JournalEntry,
        "journal_slot": JournalSlot,
        "quota_record": QuotaRecord,
    }
    return {"STRUCTURES": STRUCTURES, **{name: value for name, value in locals().items() if name in _SCHEMA_NAMES}}


_SCHEMA_NAMES = frozenset(
    (
        "SuperblockStatic", "SuperblockDynamic", "GroupCounters", "Inode", "DirPageHeader", "DirEntryHeader",
        "XattrHeader", "XattrEntryHeader", "JournalSlotHeader", "JournalEntry", "JournalSlot", "QuotaRecord",
    )
)  # fmt: skip


def __getattr__(name: str) -> Any:
    """The construct schemas (and ``STRUCTURES``), built when first asked for.

    Two threads asking at once may both build them; ``setdefault`` publishes
    one set atomically, so everyone ends up with the same schema objects.
    """
    if name in _SCHEMA_NAMES or name == "STRUCTURES":
        import construct

        schemas = globals().setdefault("_CONSTRUCT_SCHEMAS", _declare(construct))
        globals().update(schemas)
        return schemas[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _PlainField:
    """One field as the light reader of :func:`_declare` sees it: name, size, ``struct`` code, default."""

    def __init__(self, kind: str, size: int, code: str, const: bytes | None = None, count: int = 1) -> None:
        self.kind, self.size, self.code, self.const, self.count = kind, size, code, const, count
        self.name: str | None = None
        self.inner: PlainStruct | None = None

    def sizeof(self) -> int:
        return self.size

    def __rtruediv__(self, name: str) -> _PlainField:
        named = _PlainField(self.kind, self.size, self.code, self.const, self.count)
        named.name, named.inner = name, self.inner
        return named


class PlainStruct:
    """A fixed-size structure read from the same declaration as its construct schema, packed with ``struct``.

    It has what :func:`field_layout` needs (``subcons``, ``sizeof``) and a
    ``build`` that gives the bytes construct's ``build`` gives for a dict of
    every named field (``Const`` and ``Padding`` filled in).  Nested
    structures are not supported by ``build``.
    """

    def __init__(self, *subcons: _PlainField) -> None:
        self.subcons = subcons
        self.packer = _struct.Struct("<" + "".join(sub.code for sub in subcons))
        if self.packer.size != self.sizeof():
            raise AssertionError(f"plain layout {self.packer.format} does not add up to {self.sizeof()} bytes")

    def sizeof(self) -> int:
        return sum(sub.size for sub in self.subcons)

    def __rtruediv__(self, name: str) -> _PlainField:
        field = _PlainField("struct", self.sizeof(), f"{self.sizeof()}s")
        field.name, field.inner = name, self
        return field

    def parse(self, raw: bytes | bytearray | memoryview) -> Record:
        """The fields of ``raw`` as construct's ``parse`` gives them (named padding is None, arrays are lists).

        ``Const`` fields are not verified (callers check magics themselves, with their own messages).
        Nested structures are not supported.
        """
        values = self.packer.unpack_from(raw)
        record = Record()
        i = 0
        for sub in self.subcons:
            if sub.kind == "padding":
                value = None
            elif sub.kind == "array":
                value = list(values[i : i + sub.count])
                i += sub.count
            elif sub.kind == "struct":
                raise TypeError("PlainStruct.parse does not parse nested structures")
            else:
                value = values[i]
                i += 1
            if sub.name is not None:
                record[sub.name] = value
        return record

    def build(self, values: dict[str, Any]) -> bytes:
        args: list[Any] = []
        for sub in self.subcons:
            if sub.kind == "const":
                args.append(sub.const)
            elif sub.kind == "array":
                args.extend(values[sub.name])
            elif sub.kind == "bytes" and len(values[sub.name]) != sub.size:
                raise ValueError(f"{sub.name}: {len(values[sub.name])} bytes given, the field holds {sub.size}")
            elif sub.kind == "struct":
                raise TypeError("PlainStruct.build does not build nested structures")
            elif sub.kind != "padding":
                args.append(values[sub.name])
        return self.packer.pack(*args)


class Record(dict):
    """Parsed fields with attribute access, like construct's ``Container`` (which would load construct).

    Equality ignores keys that start with ``_`` as ``Container``'s does (construct's parse adds ``_io``).
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, dict):
            return False
        mine = {k: v for k, v in self.items() if not str(k).startswith("_")}
        return mine == {k: v for k, v in other.items() if not str(k).startswith("_")}

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]


class _Plain:
    """The stand-in for the construct module that :func:`_declare` reads into :class:`PlainStruct` layouts."""

    Struct = PlainStruct
    Int8ul = _PlainField("int", 1, "B")
    Int16ul = _PlainField("int", 2, "H")
    Int32ul = _PlainField("int", 4, "I")
    Int64ul = _PlainField("int", 8, "Q")
    Int64sl = _PlainField("int", 8, "q")

    @staticmethod
    def Bytes(size: int) -> _PlainField:  # noqa: N802 - construct's spelling
        return _PlainField("bytes", size, f"{size}s")

    @staticmethod
    def Const(value: bytes) -> _PlainField:  # noqa: N802
        return _PlainField("const", len(value), f"{len(value)}s", const=value)

    @staticmethod
    def Padding(size: int) -> _PlainField:  # noqa: N802
        return _PlainField("padding", size, f"{size}x")

    @staticmethod
    def Array(count: int, item: _PlainField) -> _PlainField:  # noqa: N802
        if isinstance(item, PlainStruct):  # an array of structures: laid out, not built
            return _PlainField("struct", count * item.sizeof(), f"{count * item.sizeof()}s", count=count)
        return _PlainField("array", count * item.size, f"{count}{item.code}", count=count)


#: The structures as plain ``struct`` layouts (same names as the construct schemas), for code that
#: must start fast (mkfs) -- same offsets (:func:`field_layout` accepts both) and the same built bytes.
PLAIN: dict[str, PlainStruct] = {name: value for name, value in _declare(_Plain).items() if name in _SCHEMA_NAMES}


# ---------------------------------------------------------------------------
# Field offsets, for code that reads raw bytes
# ---------------------------------------------------------------------------


class FieldInfo(NamedTuple):
    """Where one named field of a structure sits, for raw-byte readers.

    (A NamedTuple, like :class:`Geometry`: creating dataclasses costs several
    milliseconds of every tool's start-up.)
    """

    name: str
    offset: int
    size: int


def field_layout(struct: Struct | PlainStruct) -> dict[str, FieldInfo]:
    """Offsets and sizes of the named fields of a fixed-size ``struct``.

    Derived from the schema itself so that the Cython core and bulk scans never
    restate an offset by hand.
    """
    layout: dict[str, FieldInfo] = {}
    offset = 0
    for sub in struct.subcons:
        size = sub.sizeof()
        if sub.name is not None:
            layout[sub.name] = FieldInfo(sub.name, offset, size)
        offset += size
    return layout


def field_offset(struct: Struct | PlainStruct, name: str) -> int:
    """Byte offset of field ``name`` in ``struct``."""
    return field_layout(struct)[name].offset


def sb_static_checksum(static_bytes: bytes) -> int:
    """CRC-32 (the zlib / ISO-HDLC polynomial) of static bytes 0..2043."""
    return zlib.crc32(static_bytes[: SB_STATIC_SIZE - 4]) & 0xFFFFFFFF


def build_static_superblock(fields: dict[str, Any]) -> bytes:
    """Build the 2048-byte static part with its checksum filled in."""
    raw = bytearray(PLAIN["SuperblockStatic"].build({**fields, "checksum": 0}))
    raw[SB_STATIC_SIZE - 4 :] = sb_static_checksum(bytes(raw)).to_bytes(4, "little")
    return bytes(raw)


def block_size_of(static: Any) -> int:
    """Block size in bytes from a parsed static superblock."""
    return 1 << static.log_block_size


# ---------------------------------------------------------------------------
# Small encodings
# ---------------------------------------------------------------------------


def dir_entry_rec_len(name_len: int) -> int:
    """Record length of a directory entry with a ``name_len``-byte name."""
    return (DIR_ENTRY_HEADER_SIZE + name_len + DIR_ENTRY_ALIGN - 1) & ~(DIR_ENTRY_ALIGN - 1)


def xattr_entry_len(name_len: int, value_len: int) -> int:
    """Padded length of one extended attribute record."""
    raw = XATTR_ENTRY_HEADER_SIZE + name_len + value_len
    return (raw + 7) & ~7


def encode_rdev(major: int, minor: int) -> int:
    """Device number as stored in ``Inode.rdev``: major high, minor low."""
    return (major << 32) | minor


def decode_rdev(rdev: int) -> tuple[int, int]:
    return rdev >> 32, rdev & 0xFFFFFFFF


def journal_commit_word(sequence: int, count: int) -> int:
    """The slot's commit word: transaction sequence and entry count (1..16)."""
    return (sequence << 8) | count


def pointers_per_block(block_size: int) -> int:
    return block_size // 8


def radix_bits(block_size: int) -> int:
    """Hash bits consumed by one level of the directory radix tree."""
    return pointers_per_block(block_size).bit_length() - 1


def max_file_blocks(block_size: int) -> int:
    """Number of file blocks the 16 pointers can map."""
    p = pointers_per_block(block_size)
    return N_DIRECT + sum(p**level for level in range(1, N_INDIRECT + 1))


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


class GeometryError(ValueError):
    """The requested filesystem does not fit the device."""


class Geometry(NamedTuple):
    """Where every area of an NVFS filesystem lies (an immutable value, compared field by field).

    The device is cut into groups of ``blocks_per_group`` blocks.  Each group
    holds, in this order: one header block (the superblock in group 0, a copy
    of the static superblock elsewhere), the block bitmap (1 block), the group
    counters (1 block), the inode bitmap, the inode table, and data blocks.
    Group 0 also holds the microjournal right after its inode table.  The last
    block of the device holds the backup static superblock.  Blocks past the
    last group (a tail too short to be a group) are unused.
    """

    block_size: int
    blocks_count: int
    blocks_per_group: int
    inodes_per_group: int
    group_count: int
    inode_bitmap_blocks: int
    inode_table_blocks: int
    journal_slots: int
    journal_blocks: int

    @property
    def inodes_count(self) -> int:
        return self.inodes_per_group * self.group_count

    @property
    def inodes_per_block(self) -> int:
        return self.block_size // INODE_SIZE

    @property
    def backup_block(self) -> int:
        return self.blocks_count - 1

    @property
    def journal_block(self) -> int:
        return self.inode_table_block(0) + self.inode_table_blocks

    def group_start(self, group: int) -> int:
        return group * self.blocks_per_group

    def group_end(self, group: int) -> int:
        """One past the last block that belongs to ``group``."""
        return min((group + 1) * self.blocks_per_group, self.blocks_count)

    def group_byte_offsets(self, block_of_group: Callable[[int], int], first: int = 0) -> range:
        """``block_of_group(g) * block_size`` for every group g from ``first`` on (``block_of_group`` one of the
        per-group header methods below), as a range: a group's headers sit at the same place in every group,
        so the offsets step by a group's bytes (fsck asks this of all 8192 groups of a 1 TiB device)."""
        step = self.blocks_per_group * self.block_size
        start = block_of_group(first) * self.block_size
        return range(start, start + (self.group_count - first) * step, step)

    def block_bitmap_block(self, group: int) -> int:
        return self.group_start(group) + 1

    def counters_block(self, group: int) -> int:
        return self.group_start(group) + 2

    def inode_bitmap_block(self, group: int) -> int:
        return self.group_start(group) + 3

    def inode_table_block(self, group: int) -> int:
        return self.inode_bitmap_block(group) + self.inode_bitmap_blocks

    def first_data_block(self, group: int) -> int:
        first = self.inode_table_block(group) + self.inode_table_blocks
        return first + self.journal_blocks if group == 0 else first

    def metadata_blocks(self, group: int) -> int:
        """Blocks at the start of ``group`` that hold metadata."""
        return self.first_data_block(group) - self.group_start(group)

    def group_of_block(self, block: int) -> int:
        return block // self.blocks_per_group

    def group_of_inode(self, ino: int) -> int:
        return (ino - 1) // self.inodes_per_group

    def inode_offset(self, ino: int) -> int:
        """Byte offset of inode ``ino`` (1-based) on the device."""
        if not 1 <= ino <= self.inodes_count:
            raise ValueError(f"inode {ino} out of range 1..{self.inodes_count}")
        group, index = divmod(ino - 1, self.inodes_per_group)
        return self.inode_table_block(group) * self.block_size + index * INODE_SIZE

    def is_metadata_block(self, block: int) -> bool:
        """True for blocks no file may own: group metadata, journal, backup, tail."""
        if block == self.backup_block:
            return True
        group = self.group_of_block(block)
        if group >= self.group_count:
            return True
        return block < self.first_data_block(group)

    @property
    def data_blocks(self) -> int:
        """Blocks available to files right after mkfs."""
        total = sum(self.group_end(g) - self.first_data_block(g) for g in range(self.group_count))
        last_end = self.group_end(self.group_count - 1)
        if self.backup_block < last_end:
            total -= 1
        return total


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def compute_geometry(
    device_bytes: int,
    block_size: int = DEFAULT_BLOCK_SIZE,
    *,
    inode_ratio: int = DEFAULT_INODE_RATIO,
    inode_count: int | None = None,
    journal_slots: int = DEFAULT_JOURNAL_SLOTS,
) -> Geometry:
    """Lay out a filesystem of ``device_bytes`` with the given parameters.

    Every group has the same number of inodes, a multiple of the inodes that
    fit in one block.  A last group too short for its metadata plus
    ``MIN_GROUP_DATA_BLOCKS`` data blocks is dropped (its blocks stay unused).
    Raises :class:`GeometryError` when nothing usable fits.
    """
    if block_size & (block_size - 1) or not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise GeometryError(
            f"block size {block_size} is not a power of two between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}"
        )
    if not 1 <= journal_slots <= 1024:
        raise GeometryError(f"journal slots {journal_slots} not in 1..1024")
    blocks_count = device_bytes // block_size
    bpg = block_size * 8
    ipb = block_size // INODE_SIZE
    journal_blocks = _round_up(journal_slots * JOURNAL_SLOT_SIZE, block_size) // block_size
    if inode_count is not None:
        wanted_inodes = inode_count
    else:
        if not MIN_INODE_RATIO <= inode_ratio <= MAX_INODE_RATIO:
            raise GeometryError(f"bytes-per-inode {inode_ratio} out of range {MIN_INODE_RATIO}..{MAX_INODE_RATIO}")
        wanted_inodes = (blocks_count * block_size) // inode_ratio
    wanted_inodes = max(wanted_inodes, FIRST_INO + 5)
    groups = -(-blocks_count // bpg) if blocks_count else 0
    while groups > 0:
        ipg = _round_up(-(-wanted_inodes // groups), ipb)
        ibm_blocks = _round_up(ipg, block_size * 8) // (block_size * 8)
        itable_blocks = ipg // ipb
        overhead = 3 + ibm_blocks + itable_blocks
        last_end = min(groups * bpg, blocks_count)
        last_size = last_end - (groups - 1) * bpg
        if last_end == blocks_count:
            last_size -= 1  # the backup superblock block
        if groups == 1:
            overhead += journal_blocks
        if overhead + MIN_GROUP_DATA_BLOCKS > bpg:
            raise GeometryError(f"{ipg} inodes per group do not fit in a group of {bpg} blocks; lower the inode count")
        if last_size >= overhead + MIN_GROUP_DATA_BLOCKS:
            geometry = Geometry(
                block_size=block_size,
                blocks_count=blocks_count,
                blocks_per_group=bpg,
                inodes_per_group=ipg,
                group_count=groups,
                inode_bitmap_blocks=ibm_blocks,
                inode_table_blocks=itable_blocks,
                journal_slots=journal_slots,
                journal_blocks=journal_blocks,
            )
            if groups == 1 or geometry.first_data_block(0) + MIN_GROUP_DATA_BLOCKS <= bpg:
                return geometry
        groups -= 1
    raise GeometryError(
        f"device of {device_bytes} bytes is too small for an NVFS filesystem with {block_size}-byte blocks"
    )


def geometry_from_static(static: Any) -> Geometry:
    """Rebuild the :class:`Geometry` recorded in a parsed static superblock."""
    return Geometry(
        block_size=1 << static.log_block_size,
        blocks_count=static.blocks_count,
        blocks_per_group=static.blocks_per_group,
        inodes_per_group=static.inodes_per_group,
        group_count=static.group_count,
        inode_bitmap_blocks=static.inode_bitmap_blocks,
        inode_table_blocks=static.inode_table_blocks,
        journal_slots=static.journal_slots,
        journal_blocks=static.journal_blocks,
    )


# ---------------------------------------------------------------------------
# File block mapping
# ---------------------------------------------------------------------------


def block_path(file_block: int, block_size: int) -> tuple[int, list[int]]:
    """Route to file block ``file_block`` through the 16 pointers.

    Returns ``(pointer_index, indexes)``: the index in ``Inode.block`` and the
    slot to follow in each indirect block from the top down (empty for a
    direct block).  Pointer 11 + k roots a tree k + 1 levels deep.
    """
    if file_block < N_DIRECT:
        return file_block, []
    p = pointers_per_block(block_size)
    rest = file_block - N_DIRECT
    for level in range(1, N_INDIRECT + 1):
        span = p**level
        if rest < span:
            indexes = []
            for depth in range(level - 1, -1, -1):
                indexes.append((rest // p**depth) % p)
            return N_DIRECT + level - 1, indexes
        rest -= span
    raise ValueError(f"file block {file_block} beyond what 16 pointers can map")
