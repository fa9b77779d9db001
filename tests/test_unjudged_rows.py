"""The unjudged rows of spec/checking.md 13 that need the object's state are exactly as broad as true.

Each row is checked at its boundary: the change just inside is unjudged, the one
just outside (which fsck does catch) is not.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaigns import unjudged as U  # noqa: E402
from nvfs_tools import format as fmt  # noqa: E402

ROWS = U.load_rows()
BS = 4096


def u(value: int, size: int = 8) -> bytes:
    return value.to_bytes(size, "little")


def regular(last_fblock: int | None) -> U.ObjectState:
    st = U.ObjectState("inode", ftype=fmt.S_IFREG)
    if last_fblock is not None:
        st.extra.update(last_fblock=last_fblock, block_size=BS)
    return st


def test_size_decrease_within_last_block():
    st = regular(50)  # sparse file: only file block 50 mapped
    size = 50 * BS + 21
    assert U.unjudged(ROWS, st, "size", u(size), u(50 * BS + 1))
    assert not U.unjudged(ROWS, st, "size", u(size), u(50 * BS))  # block 50 would be past EOF
    assert not U.unjudged(ROWS, regular(None), "size", u(size), u(size - 1))  # state unknown: judged
    assert U.unjudged(ROWS, regular(-1), "size", u(size), u(0))  # nothing mapped: any size is legal


def test_rdev_in_range_only_on_devices():
    dev = U.ObjectState("inode", ftype=fmt.S_IFCHR)
    old = u(fmt.encode_rdev(1, 3))
    assert U.unjudged(ROWS, dev, "rdev", old, u(fmt.encode_rdev((1 << 12) - 1, (1 << 20) - 1)))
    assert not U.unjudged(ROWS, dev, "rdev", old, u(fmt.encode_rdev(1 << 12, 0)))
    assert not U.unjudged(ROWS, dev, "rdev", old, u(fmt.encode_rdev(0, 1 << 20)))
    assert not U.unjudged(ROWS, U.ObjectState("inode", ftype=fmt.S_IFIFO), "rdev", u(0), u(1))


def test_dir_bank_only_with_equal_roots():
    st = U.ObjectState("inode", ftype=fmt.S_IFDIR)
    st.extra["roots_equal"] = True
    assert U.unjudged(ROWS, st, "dir_bank", u(0), u(1))
    assert not U.unjudged(ROWS, st, "dir_bank", u(0), u(2))
    st.extra["roots_equal"] = False
    assert not U.unjudged(ROWS, st, "dir_bank", u(0), u(1))


def test_xattr_name_index_same_kind():
    st = U.ObjectState("xattr_entry_header")
    st.extra.update(suffix=b"test", other_names={b"trusted.other"}, is_dir=False)
    ok = [i for i in range(256) if i != 1 and U.unjudged(ROWS, st, "name_index", u(1, 1), u(i, 1))]
    assert ok == [fmt.XATTR_INDEX_TRUSTED, fmt.XATTR_INDEX_SECURITY, fmt.XATTR_INDEX_SYSTEM]
    st.extra["other_names"] = {b"security.test"}  # the block would hold security.test twice
    assert not U.unjudged(ROWS, st, "name_index", u(1, 1), u(fmt.XATTR_INDEX_SECURITY, 1))
    st.extra.update(suffix=b"x" * 250, other_names=set())  # "security." + 250 bytes is longer than 255
    assert not U.unjudged(ROWS, st, "name_index", u(1, 1), u(fmt.XATTR_INDEX_SECURITY, 1))
    acl = U.ObjectState("xattr_entry_header")
    acl.extra.update(suffix=b"", other_names=set(), is_dir=False)
    access, default = fmt.XATTR_INDEX_POSIX_ACL_ACCESS, fmt.XATTR_INDEX_POSIX_ACL_DEFAULT
    assert not U.unjudged(ROWS, acl, "name_index", u(access, 1), u(default, 1))  # default ACL on a file
    acl.extra["is_dir"] = True
    assert U.unjudged(ROWS, acl, "name_index", u(access, 1), u(default, 1))
    acl.extra["other_names"] = {b"system.posix_acl_default"}  # a default ACL is already there
    assert not U.unjudged(ROWS, acl, "name_index", u(access, 1), u(default, 1))


def test_xattr_lengths_within_padding():
    st = U.ObjectState("xattr_entry_header")
    # header 8 + "test" 4 + 22-byte value = 34, padded to 40: six bytes of room
    st.extra.update(index=1, suffix=b"test", value=b"value of the attribute", other_names=set(), fuzzed="value_len")
    assert U.unjudged(ROWS, st, "value_len", u(22, 4), u(28, 4))
    assert not U.unjudged(ROWS, st, "value_len", u(22, 4), u(29, 4))  # the entry would grow
    st.extra["fuzzed"] = "name_len"
    assert U.unjudged(ROWS, st, "name_len", u(4, 1), u(5, 1))  # name "testv"
    st.extra["other_names"] = {b"user.testv"}
    assert not U.unjudged(ROWS, st, "name_len", u(4, 1), u(5, 1))  # a duplicate name
    st.extra.update(other_names=set(), value=b"\0alue of the attribute")
    assert not U.unjudged(ROWS, st, "name_len", u(4, 1), u(5, 1))  # a NUL in the name
    st.extra["index"] = fmt.XATTR_INDEX_POSIX_ACL_ACCESS
    st.extra["fuzzed"] = "value_len"
    assert not U.unjudged(ROWS, st, "value_len", u(22, 4), u(23, 4))  # ACL values are judged
