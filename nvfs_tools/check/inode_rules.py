"""The rules for one inode's leaves that the bulk fast path and pass 1 share: an extended attribute
block (spec/checking.md 10) and a symbolic link's target (7.5).

Their own module, light to import: the fast path needs them only when a tree has symbolic links or
xattr blocks (/usr/share: 3,917 links), and importing pass1_inodes (dataclasses through dirtree)
cost it ~10 ms more, ~50 ms while its xattr layouts still came from the construct schemas.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.check import blockmap as bm

_XH = fmt.field_layout(fmt.PLAIN["XattrHeader"])  # the plain mirror: the construct schemas cost ~40 ms to import
_XE = fmt.field_layout(fmt.PLAIN["XattrEntryHeader"])


def xattr_reason(img: Any, block: int, is_dir: bool = True) -> str | None:
    """Why an extended attribute block is unusable (spec/checking.md 10), or None."""
    why = bm.bad_block_reason(img.geo, block)
    if why:
        return why
    data = bytearray(img.read_block(block))
    if bytes(data[:4]) != fmt.XATTR_MAGIC:
        return "bad magic"
    cks = _XH["checksum"]
    stored = int.from_bytes(data[cks.offset : cks.offset + 4], "little")
    data[cks.offset : cks.offset + 4] = b"\0\0\0\0"
    if zlib.crc32(data) & 0xFFFFFFFF != stored:
        return "checksum mismatch"
    count = int.from_bytes(data[_XH["count"].offset :][:4], "little")
    used = int.from_bytes(data[_XH["used"].offset :][:4], "little")
    if count < 1:
        return "no attributes in the block"
    if not fmt.XATTR_HEADER_SIZE <= used <= img.bs:
        return f"used size {used}"
    if any(data[used:]):
        return "bytes after the used area are not zero"
    from nvfs_tools import xattr as xa

    off = fmt.XATTR_HEADER_SIZE
    names: set[bytes] = set()
    for _ in range(count):
        if off + fmt.XATTR_ENTRY_HEADER_SIZE > used:
            return "entries overrun the used area"
        index = data[off + _XE["name_index"].offset]
        nlen = data[off + _XE["name_len"].offset]
        reserved = int.from_bytes(data[off + _XE["reserved"].offset :][:2], "little")
        vlen = int.from_bytes(data[off + _XE["value_len"].offset :][:4], "little")
        if index not in fmt.XATTR_PREFIXES:
            return f"unknown name index {index}"
        if reserved:
            return "entry reserved field not zero"
        acl = index in (fmt.XATTR_INDEX_POSIX_ACL_ACCESS, fmt.XATTR_INDEX_POSIX_ACL_DEFAULT)
        if (nlen != 0) if acl else (nlen == 0 or len(fmt.XATTR_PREFIXES[index]) + nlen > 255):
            return f"bad name length {nlen}"
        if vlen > getattr(xa, "XATTR_VALUE_MAX", 65536):
            return f"value of {vlen} bytes"
        start = off + fmt.XATTR_ENTRY_HEADER_SIZE
        end = off + fmt.xattr_entry_len(nlen, vlen)
        if end > used:
            return "entries overrun the used area"
        suffix = bytes(data[start : start + nlen])
        value = bytes(data[start + nlen : start + nlen + vlen])
        if b"\0" in suffix:
            return "NUL in an attribute name"
        if any(data[start + nlen + vlen : end]):
            return "entry padding not zero"
        full = fmt.XATTR_PREFIXES[index] + suffix
        if full in names:
            return f"attribute {full.decode('utf-8', 'backslashreplace')} twice"
        names.add(full)
        if acl:
            bad = xa.acl_problem(value)
            if bad:
                return bad
            if index == fmt.XATTR_INDEX_POSIX_ACL_DEFAULT and not is_dir:
                return "default ACL on a non-directory"
        off = end
    if off != used:
        return "entries do not end at the used size"
    return None


#: The block pointers as stored (an inline symlink's target is these bytes).
_POINTERS = struct.Struct(f"<{fmt.N_BLOCK_POINTERS}Q")


def symlink_reason(img: Any, inode: Any) -> str | None:
    """Why a symbolic link is invalid (spec/checking.md 7.5), or None."""
    size = inode.size
    if inode.flags & fmt.INODE_FLAG_INLINE:
        if not 1 <= size <= fmt.INLINE_SYMLINK_MAX:
            return f"inline target of {size} bytes"
        raw = _POINTERS.pack(*inode.block)
        if b"\0" in raw[:size]:
            return "NUL byte in the inline target"
        if any(raw[size:]):
            return "bytes after the inline target are not zero"
        return None
    if not fmt.INLINE_SYMLINK_MAX < size < 4096 or size > img.bs:
        return f"target of {size} bytes"
    if any(inode.block[1:]):
        return "more than one block pointer"
    block = inode.block[0]
    if block == 0 or bm.bad_block_reason(img.geo, block):
        return "no valid data block"
    data = img.block_view(block)
    if 0 in bytes(data[:size]):
        return "NUL byte in the target"
    if any(data[size:]):
        return "bytes after the target are not zero"
    return None
