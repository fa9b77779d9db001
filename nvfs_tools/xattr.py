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

_HDR = fmt.field_layout(fmt.PLAIN["XattrHeader"])
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
            if b"\0" in name:
                raise InvalidArgumentError(f"attribute name {name!r} contains a NUL byte")
            return index, name[len(prefix) :]
    raise InvalidArgumentError(f"unsupported attribute namespace: {name!r}")


#: Largest attribute value (format.md 7), as Linux's XATTR_SIZE_MAX.
XATTR_VALUE_MAX = fmt.XATTR_VALUE_MAX
ACL_NAMES = (
    fmt.XATTR_PREFIXES[fmt.XATTR_INDEX_POSIX_ACL_ACCESS],
    fmt.XATTR_PREFIXES[fmt.XATTR_INDEX_POSIX_ACL_DEFAULT],
)
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20


def acl_problem(value: bytes) -> str | None:
    """Why ``value`` is not a valid POSIX ACL in Linux's xattr form (the kernel's posix_acl_valid), or None."""
    if len(value) < 4 or (len(value) - 4) % 8:
        return f"ACL of {len(value)} bytes is not 4 + 8*n"
    if struct.unpack_from("<I", value, 0)[0] != 2:
        return "ACL version is not 2"
    entries = [struct.unpack_from("<HHI", value, off) for off in range(4, len(value), 8)]
    seen: dict[int, int] = {}
    ids: dict[int, set[int]] = {_ACL_USER: set(), _ACL_GROUP: set()}
    last = (0, -1)
    for tag, perm, qid in entries:
        if tag not in (_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER):
            return f"ACL tag 0x{tag:x} unknown"
        if perm > 7:
            return f"ACL permission {perm} > 7"
        key = (tag, qid if tag in ids else 0)
        if key < last:
            return "ACL entries not sorted by tag and id"
        last = key
        if tag in ids:
            if qid in ids[tag]:
                return f"ACL names id {qid} twice"
            ids[tag].add(qid)
        seen[tag] = seen.get(tag, 0) + 1
    for tag in (_ACL_USER_OBJ, _ACL_GROUP_OBJ, _ACL_OTHER):
        if seen.get(tag) != 1:
            return "ACL needs exactly one user::, group:: and other:: entry"
    if seen.get(_ACL_MASK, 0) > 1 or ((ids[_ACL_USER] or ids[_ACL_GROUP]) and not seen.get(_ACL_MASK)):
        return "ACL with named users or groups needs exactly one mask entry"
    return None


def check_value(name: bytes, value: bytes, *, is_dir: bool) -> None:
    """Reject values format.md 7 does not allow (size, ACL form, default ACL on a non-directory)."""
    if len(value) > XATTR_VALUE_MAX:
        raise InvalidArgumentError(f"attribute value of {len(value)} bytes is over {XATTR_VALUE_MAX}")
    if name in ACL_NAMES:
        why = acl_problem(value)
        if why is not None:
            raise InvalidArgumentError(f"{name.decode()}: {why}")
        if name == ACL_NAMES[1] and not is_dir:
            raise InvalidArgumentError("a default ACL can only be set on a directory")


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
