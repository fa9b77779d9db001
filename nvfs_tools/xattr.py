"""Extended attribute blocks: encoding, decoding and name prefixes.

One block per inode (``Inode.xattr_block``): an :data:`format.XattrHeader`
(magic, CRC-32 of the whole block with the checksum field zeroed, count, bytes
used including the header) followed by records (:data:`format.XattrEntryHeader`,
name suffix, value, padded to 8).  Names are stored without their namespace
prefix, which becomes ``name_index``; the two POSIX ACL names store an empty
suffix.  ACL values are Linux's binary xattr form, kept verbatim.

The block is never changed in place: :class:`Volume` writes a new block and
swaps the pointer through the microjournal, so this module only turns lists of
attributes into block images and back.
"""

from __future__ import annotations

import struct
import zlib

from nvfs_tools import format as fmt
from nvfs_tools.errors import CorruptError, InvalidArgumentError, NameTooLongError, NoSpaceError

_HDR = fmt.field_layout(fmt.XattrHeader)
_CHECKSUM_OFF = _HDR["checksum"].offset
_HEADER = struct.Struct("<4sIII")
_ENTRY = struct.Struct("<BBHI")
assert _HEADER.size == fmt.XATTR_HEADER_SIZE and _ENTRY.size == fmt.XATTR_ENTRY_HEADER_SIZE

#: Longest prefixes first so "system.posix_acl_access" wins over "system.".
_BY_PREFIX = sorted(fmt.XATTR_PREFIXES.items(), key=lambda kv: -len(kv[1]))
_ACL_INDEXES = (fmt.XATTR_INDEX_POSIX_ACL_ACCESS, fmt.XATTR_INDEX_POSIX_ACL_DEFAULT)


def split_name(name: bytes) -> tuple[int, bytes]:
    """``(name_index, stored suffix)`` of a full attribute name."""
    if not name or len(name) > fmt.MAX_NAME_LEN:
        if name:
            raise NameTooLongError(f"attribute name too long ({len(name)} bytes)")
        raise InvalidArgumentError("empty attribute name")
    for index, prefix in _BY_PREFIX:
        if index in _ACL_INDEXES:
            if name == prefix:
                return index, b""
            continue
        if name.startswith(prefix) and len(name) > len(prefix):
            return index, name[len(prefix) :]
    raise InvalidArgumentError(f"unsupported attribute namespace: {name!r}")


def join_name(index: int, suffix: bytes) -> bytes:
    prefix = fmt.XATTR_PREFIXES.get(index)
    if prefix is None:
        raise CorruptError(f"unknown attribute name index {index}")
    return prefix + suffix


def block_checksum(raw: bytes | bytearray | memoryview) -> int:
    buf = bytearray(raw)
    buf[_CHECKSUM_OFF : _CHECKSUM_OFF + 4] = b"\0\0\0\0"
    return zlib.crc32(buf) & 0xFFFFFFFF


def parse_block(raw: bytes | memoryview, block: int = 0) -> dict[bytes, bytes]:
    """Full name -> value of every attribute in a block image (ordered as stored)."""
    magic, checksum, count, used = _HEADER.unpack_from(raw, 0)
    where = f"xattr block {block}"
    if magic != fmt.XATTR_MAGIC:
        raise CorruptError(f"{where}: bad magic {magic!r}")
    if checksum != block_checksum(raw):
        raise CorruptError(f"{where}: checksum mismatch")
    if not fmt.XATTR_HEADER_SIZE <= used <= len(raw):
        raise CorruptError(f"{where}: used size {used} out of range")
    out: dict[bytes, bytes] = {}
    pos = fmt.XATTR_HEADER_SIZE
    for _ in range(count):
        if pos + fmt.XATTR_ENTRY_HEADER_SIZE > used:
            raise CorruptError(f"{where}: entries run past the used area")
        index, name_len, _res, value_len = _ENTRY.unpack_from(raw, pos)
        rec = fmt.xattr_entry_len(name_len, value_len)
        if pos + rec > used:
            raise CorruptError(f"{where}: entry at {pos} runs past the used area")
        start = pos + fmt.XATTR_ENTRY_HEADER_SIZE
        name = join_name(index, bytes(raw[start : start + name_len]))
        out[name] = bytes(raw[start + name_len : start + name_len + value_len])
        pos += rec
    return out


def build_block(attrs: dict[bytes, bytes], block_size: int) -> bytes:
    """The block image holding ``attrs``; NoSpaceError when they do not fit."""
    parts = []
    used = fmt.XATTR_HEADER_SIZE
    for name, value in attrs.items():
        index, suffix = split_name(name)
        rec = fmt.xattr_entry_len(len(suffix), len(value))
        entry = _ENTRY.pack(index, len(suffix), 0, len(value)) + suffix + value
        parts.append(entry + b"\0" * (rec - len(entry)))
        used += rec
    if used > block_size:
        raise NoSpaceError(f"extended attributes need {used} bytes, more than one {block_size}-byte block")
    raw = bytearray(block_size)
    _HEADER.pack_into(raw, 0, fmt.XATTR_MAGIC, 0, len(attrs), used)
    raw[fmt.XATTR_HEADER_SIZE : used] = b"".join(parts)
    struct.pack_into("<I", raw, _CHECKSUM_OFF, block_checksum(raw))
    return bytes(raw)
