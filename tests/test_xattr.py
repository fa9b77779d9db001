"""Extended attribute block encoding: name prefixes, round trip, checksum."""

from __future__ import annotations

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
    lambda p: st.binary(min_size=1, max_size=20).map(lambda s: p + s)
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
