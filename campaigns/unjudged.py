"""The machine-readable table of spec/checking.md ("### Unjudged fields"), and a matcher for it.

The fuzz campaign may accept an undetected change only when a row of that
table covers it: the structure, the field (a path, a whole array/struct, `*`,
or a `*` wildcard inside a name), the state of the object (*When*) and the
kind of change (*Change*).  Anything else that fsck does not see is a failure.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from typing import Any

from nvfs_tools import format as fmt

SPEC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "spec", "checking.md")


@dataclass(frozen=True)
class Row:
    structure: str
    field: str
    when: str
    change: str
    why: str


def load_rows(path: str = SPEC) -> list[Row]:
    """The rows of the unjudged table (a missing table is an error: the campaign depends on it)."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    start = text.index("### Unjudged fields")
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "Structure" or len(cells) < 5:
            continue
        rows.append(Row(*(c.strip("`") for c in cells[:4]), cells[4]))
    return rows


@dataclass
class ObjectState:
    """What the *When* column can ask about the object being fuzzed."""

    structure: str
    in_use: bool = True  # inodes: mode != 0
    ftype: int = 0  # inodes: mode & S_IFMT
    inline: bool = False  # inodes: INLINE symlink
    dir_bank: int = 0
    quota: bool = False
    live: bool = True  # directory records: ino != 0
    slot_free: bool = True  # journal slots: commit == 0
    extra: dict[str, Any] = field(default_factory=dict)


def _field_matches(pattern: str, path: str) -> bool:
    if pattern == "*":
        return True
    if pattern == path or path.startswith(pattern + ".") or path.startswith(pattern + "["):
        return True
    if "*" in pattern:
        bare = re.sub(r"\[\d+\]", "", path)
        return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(bare, pattern)
    return False


def _when_holds(when: str, st: ObjectState, path: str) -> bool:
    w = when.replace("`", "").strip()
    if w == "always":
        return True
    if w.startswith("free (mode 0)"):
        return not st.in_use and (", except mode itself" not in w or path != "mode")
    if w == "in use":
        return st.in_use
    if w == "in use, QUOTA off":
        return st.in_use and not st.quota
    if w == "regular file in use":
        return st.in_use and st.ftype == fmt.S_IFREG
    if w == "inline symlink":
        return st.in_use and st.ftype == fmt.S_IFLNK and st.inline
    if w == "character or block device in use":
        return st.in_use and st.ftype in (fmt.S_IFCHR, fmt.S_IFBLK)
    if w == "directory whose two root words are equal":
        return st.in_use and st.ftype == fmt.S_IFDIR and st.extra.get("roots_equal") is True
    m = re.fullmatch(r"directory with dir_bank (\d)", w)
    if m:
        return st.in_use and st.ftype == fmt.S_IFDIR and st.dir_bank == int(m.group(1))
    if w.startswith("dead record"):
        return not st.live
    if w.startswith("free slot"):
        return st.slot_free
    raise ValueError(f"unknown When condition in the unjudged table: {when!r}")


def _change_allowed(change: str, old: bytes, new: bytes, st: ObjectState) -> bool:
    c = change.replace("`", "").strip()
    a, b = int.from_bytes(old, "little"), int.from_bytes(new, "little")
    if c == "any":
        return True
    m = re.fullmatch(r"bits (0[xo]?[0-9a-fA-F]+)", c)
    if m:
        mask = int(m.group(1), 0)
        return (a ^ b) & ~mask == 0
    m = re.fullmatch(r"below (\d+)", c)
    if m:
        return b < int(m.group(1))
    if c == "increase":
        return b > a
    if c == "valid device number":
        major, minor = fmt.decode_rdev(b)
        return major < 1 << 12 and minor < 1 << 20
    if c == "decrease within the last mapped block":
        # the caller passes the last mapped file block (-1: none) and the block size in extra
        last, bs = st.extra.get("last_fblock"), st.extra.get("block_size")
        return last is not None and bs is not None and last * bs < b < a
    if c == "another name index of the same kind":
        # the caller passes the entry's name suffix, the other entries' full names and whether the
        # inode is a directory in extra
        acl = (fmt.XATTR_INDEX_POSIX_ACL_ACCESS, fmt.XATTR_INDEX_POSIX_ACL_DEFAULT)
        suffix, others = st.extra.get("suffix"), st.extra.get("other_names")
        if b not in fmt.XATTR_PREFIXES or suffix is None or others is None or (a in acl) != (b in acl):
            return False
        if fmt.XATTR_PREFIXES[b] + suffix in others:
            return False  # the block would name one attribute twice (10.2)
        nlen = len(suffix)
        return bool(st.extra.get("is_dir")) if b in acl else len(fmt.XATTR_PREFIXES[b]) + nlen <= 255
    if c == "non-NUL":
        # the caller passes the whole inline area (old/new) and the size in extra
        size = st.extra.get("size", 0)
        area_new = st.extra.get("area_new")
        area_old = st.extra.get("area_old")
        if area_new is None or area_old is None:
            return False
        return b"\0" not in area_new[:size] and area_new[size:] == area_old[size:]
    if c == "longer within the entry's padding":
        return _longer_in_padding(st, a, b)
    raise ValueError(f"unknown Change kind in the unjudged table: {change!r}")


def _longer_in_padding(st: ObjectState, a: int, b: int) -> bool:
    """A non-ACL xattr entry's name_len or value_len grown into the entry's zero padding (the entry's
    length unchanged): the name takes the value's first bytes, or the value a padding zero."""
    index, suffix, value = st.extra.get("index"), st.extra.get("suffix"), st.extra.get("value")
    field_ = st.extra.get("fuzzed")
    acl = (fmt.XATTR_INDEX_POSIX_ACL_ACCESS, fmt.XATTR_INDEX_POSIX_ACL_DEFAULT)
    if index is None or suffix is None or value is None or index in acl or b <= a:
        return False
    nlen, vlen = len(suffix), len(value)
    if field_ == "value_len":
        return fmt.xattr_entry_len(nlen, b) == fmt.xattr_entry_len(nlen, vlen)
    if field_ != "name_len" or fmt.xattr_entry_len(b, vlen) != fmt.xattr_entry_len(nlen, vlen):
        return False
    name = suffix + value[: b - nlen]
    others = st.extra.get("other_names", set())
    full = fmt.XATTR_PREFIXES[index] + name
    return len(name) == b and b"\0" not in name and len(full) <= 255 and full not in others


def unjudged(rows: list[Row], st: ObjectState, path: str, old: bytes, new: bytes) -> Row | None:
    """The row that makes changing ``path`` from ``old`` to ``new`` undetectable, or None."""
    for row in rows:
        if row.structure != st.structure or not _field_matches(row.field, path):
            continue
        if _when_holds(row.when, st, path) and _change_allowed(row.change, old, new, st):
            return row
    return None
