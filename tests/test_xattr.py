"""Extended attribute block encoding: name prefixes, round trip, checksum."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvfs_tools import format as fmt
from nvfs_tools import xattr as xa
from nvfs_tools.errors import CorruptError, InvalidArgumentError, NameTooLongError, NoSpaceError


def test_split_and_join_names():
    assert xa.split_name(b"user.mime") == (fmt.XATTR_INDEX_USER, b"mime")
    assert xa.split_name(b"trusted.x") == (fmt.XATTR_INDEX_TRUSTED, b"x")
    assert xa.split_name(b"security.selinux") == (fmt.XATTR_INDEX_SECURITY, b"selinux")
    assert xa.split_name(b"system.posix_acl_access") == (fmt.XATTR_INDEX_POSIX_ACL_ACCESS, b"")
    assert xa.split_name(b"system.posix_acl_default") == (fmt.XATTR_INDEX_POSIX_ACL_DEFAULT, b"")
    assert xa.split_name(b"system.posix_acl_accessX") == (fmt.XATTR_INDEX_SYSTEM, b"posix_acl_accessX")
    assert xa.split_name(b"system.nfs4_acl") == (fmt.XATTR_INDEX_SYSTEM, b"nfs4_acl")
    for bad in (b"", b"user.", b"other.x", b"user"):
        with pytest.raises(InvalidArgumentError):
            xa.split_name(bad)
    with pytest.raises(NameTooLongError):
        xa.split_name(b"user." + b"n" * 251)
    for name in (b"user.a", b"system.posix_acl_access", b"security.x"):
        assert xa.join_name(*xa.split_name(name)) == name


names = st.sampled_from([b"user.", b"trusted.", b"security.", b"system."]).flatmap(
    lambda p: st.binary(min_size=1, max_size=20).filter(lambda s: b"\0" not in s).map(lambda s: p + s)
) | st.sampled_from([b"system.posix_acl_access", b"system.posix_acl_default"])


@given(st.dictionaries(names, st.binary(max_size=200), max_size=12))
def test_round_trip(attrs):
    try:
        raw = xa.build_block(attrs, 4096)
    except NoSpaceError:
        return
    assert len(raw) == 4096
    assert xa.parse_block(raw) == attrs
    assert list(xa.parse_block(raw)) == list(attrs)


def test_corruption_detected():
    raw = bytearray(xa.build_block({b"user.a": b"value"}, 4096))
    raw[40] ^= 1
    with pytest.raises(CorruptError, match="checksum"):
        xa.parse_block(bytes(raw))
    raw = bytearray(xa.build_block({b"user.a": b"value"}, 4096))
    raw[0:4] = b"XXXX"
    with pytest.raises(CorruptError, match="magic"):
        xa.parse_block(bytes(raw))


def test_too_big():
    with pytest.raises(NoSpaceError):
        xa.build_block({b"user.a": b"v" * 4096}, 4096)
    xa.build_block({b"user.a": b"v" * (4096 - 16 - 8 - 1)}, 4096)


def acl(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


U = 0xFFFFFFFF


@pytest.mark.parametrize(
    "value,ok",
    [
        (acl((1, 6, U), (4, 4, U), (0x20, 4, U)), True),
        (acl((1, 7, U), (2, 5, 1000), (4, 5, U), (8, 1, 50), (0x10, 7, U), (0x20, 0, U)), True),
        (acl((1, 7, U), (2, 5, 1000), (4, 5, U), (0x20, 0, U)), False),  # named user, no mask
        (acl((1, 7, U), (4, 5, U)), False),  # no other
        (acl((4, 5, U), (1, 7, U), (0x20, 0, U)), False),  # unsorted
        (acl((1, 7, U), (2, 5, 9), (2, 5, 9), (4, 5, U), (0x10, 7, U), (0x20, 0, U)), False),  # duplicate id
        (acl((1, 8, U), (4, 5, U), (0x20, 0, U)), False),  # perm > 7
        (acl((1, 7, U), (3, 5, U), (4, 5, U), (0x20, 0, U)), False),  # unknown tag
        (struct.pack("<I", 1) + acl((1, 6, U), (4, 4, U), (0x20, 4, U))[4:], False),  # version 1
        (b"\x02\0\0\0\0", False),  # not 4 + 8n bytes
    ],
)
def test_acl_validation(value, ok):
    assert (xa.acl_problem(value) is None) == ok
    if ok:
        xa.check_value(b"system.posix_acl_access", value, is_dir=False)
    else:
        with pytest.raises(InvalidArgumentError):
            xa.check_value(b"system.posix_acl_access", value, is_dir=False)


def test_value_limits():
    xa.check_value(b"user.x", b"v" * fmt.XATTR_VALUE_MAX, is_dir=False)
    with pytest.raises(InvalidArgumentError):
        xa.check_value(b"user.x", b"v" * (fmt.XATTR_VALUE_MAX + 1), is_dir=False)
    with pytest.raises(InvalidArgumentError):
        xa.split_name(b"user.a\0b")
