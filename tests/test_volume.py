"""Volume operations on real images, reopened from the device between steps."""

from __future__ import annotations

import struct

import pytest
from checker import assert_clean, check_image
from fsfactory import make_image, scratch

from nvfs_tools import format as fmt
from nvfs_tools.errors import (
    CorruptError,
    DirectoryNotEmptyError,
    FileExistsError_,
    InvalidArgumentError,
    IsADirectoryError_,
    NameTooLongError,
    NoSpaceError,
    NoSuchFileError,
    NotADirectoryError_,
    NotNvfsError,
    ReadOnlyError,
    UnsupportedFeatureError,
)
from nvfs_tools.volume import Volume


@pytest.fixture
def shm_tmp(tmp_path):
    yield from scratch(tmp_path)


ROOT = fmt.ROOT_INO


@pytest.fixture
def image(shm_tmp):
    return make_image(shm_tmp / "fs.img", 32 << 20)


def rw(path):
    return Volume.open(path, writable=True)


def test_fresh_image_is_clean_and_has_lost_found(image):
    assert_clean(image)
    with Volume.open(image) as vol:
        assert vol.lookup("/lost+found") == vol.static.lost_found_ino == fmt.FIRST_INO
        assert [e.name for e in vol.listdir(ROOT)] == [b"lost+found"]
        assert vol.read_inode(ROOT).links_count == 3


def test_create_write_read_reopen(image):
    data = bytes(range(256)) * 100
    with rw(image) as vol:
        ino = vol.create(ROOT, "f", 0o640, uid=12, gid=34, times=(1000, 5))
    with Volume.open(image) as vol:
        assert vol.lookup(b"/f") == ino
        node = vol.read_inode(ino)
        assert node.mode == fmt.S_IFREG | 0o640 and (node.uid, node.gid) == (12, 34)
        assert (node.mtime, node.mtime_nsec, node.btime) == (1000, 5, 1000)
        assert vol.read(ino) == b""
    with rw(image) as vol:
        vol.write(ino, 0, data)
    with Volume.open(image) as vol:
        assert vol.read(ino) == data
        assert vol.read(ino, 300, 10) == data[300:310]
        assert vol.read(ino, len(data) + 5) == b""
    assert_clean(image)


def test_create_with_data_matches_write(image):
    payload = b"abc" * 5000
    with rw(image) as vol:
        a = vol.create(ROOT, "a", 0o644, data=payload)
        b = vol.create(ROOT, "b", 0o644)
        vol.write(b, 0, payload)
    with Volume.open(image) as vol:
        assert vol.read(a) == vol.read(b) == payload
        assert vol.read_inode(a).blocks == vol.read_inode(b).blocks == 4
    assert_clean(image)


def test_holes_read_as_zeros(image):
    with rw(image) as vol:
        ino = vol.create(ROOT, "sparse", 0o644)
        vol.write(ino, 5 * 4096 + 10, b"X")
        vol.write(ino, 100 * 4096, b"Y")
    with Volume.open(image) as vol:
        data = vol.read(ino)
        assert len(data) == 100 * 4096 + 1
        assert data[5 * 4096 + 10] == ord("X") and data[-1] == ord("Y")
        assert data.count(0) == len(data) - 2
        assert sorted(fb for fb, _ in vol.file_blocks(ino)) == [5, 100]
    assert_clean(image)


def test_overwrite_in_place_keeps_blocks(image):
    with rw(image) as vol:
        ino = vol.create(ROOT, "f", 0o644, data=b"a" * 10000)
        before = list(vol.file_blocks(ino))
        vol.write(ino, 4000, b"b" * 200)
        assert list(vol.file_blocks(ino)) == before
    with Volume.open(image) as vol:
        assert vol.read(ino) == b"a" * 4000 + b"b" * 200 + b"a" * 5800
    assert_clean(image)


def test_truncate_shrink_extend_zeroes_tail(image):
    with rw(image) as vol:
        ino = vol.create(ROOT, "f", 0o644, data=b"z" * 50000)
        free_before = vol.dyn.free_blocks
    with rw(image) as vol:
        vol.truncate(ino, 5000)
        assert vol.dyn.free_blocks == free_before + 12  # 11 data blocks and the indirect block
    with rw(image) as vol:
        assert vol.read(ino) == b"z" * 5000
        vol.truncate(ino, 9000)
    with Volume.open(image) as vol:
        assert vol.read(ino) == b"z" * 5000 + b"\0" * 4000
    assert_clean(image)
    with rw(image) as vol:
        vol.truncate(ino, 0)
        assert vol.read_inode(ino).blocks == 0 and vol.read(ino) == b""
    assert_clean(image)


def test_mkdir_nested_lookup_and_dotdot(image):
    with rw(image) as vol:
        a = vol.mkdir(ROOT, "a", 0o750)
        b = vol.mkdir(a, "b")
        f = vol.create(b, "f", 0o644)
    with Volume.open(image) as vol:
        assert vol.lookup("/a/b/f") == f
        assert vol.lookup("/a/b/..") == a
        assert vol.lookup("/a/./b/../..") == ROOT
        assert vol.read_inode(b).parent == a
        assert vol.read_inode(a).links_count == 3
        assert vol.read_inode(a).mode == fmt.S_IFDIR | 0o750
        with pytest.raises(NoSuchFileError):
            vol.lookup("/a/nope")
        with pytest.raises(NotADirectoryError_):
            vol.lookup("/a/b/f/x")
    assert_clean(image)


def test_symlinks_inline_and_block(image):
    short, long_ = b"/some/where", b"x/" * 1000
    with rw(image) as vol:
        s = vol.symlink(ROOT, "s", short)
        t = vol.symlink(ROOT, "t", long_)
        edge = vol.symlink(ROOT, "edge", b"e" * fmt.INLINE_SYMLINK_MAX)
    with Volume.open(image) as vol:
        assert vol.readlink(s) == short and vol.read_inode(s).flags & fmt.INODE_FLAG_INLINE
        assert vol.readlink(t) == long_ and vol.read_inode(t).blocks == 1
        assert vol.readlink(edge) == b"e" * 128 and vol.read_inode(edge).blocks == 0
        with pytest.raises(InvalidArgumentError):
            vol.readlink(ROOT)
    assert_clean(image)
    with rw(image) as vol:
        vol.unlink(ROOT, "t")
        vol.unlink(ROOT, "s")
    assert_clean(image)


def test_mknod_kinds(image):
    with rw(image) as vol:
        c = vol.mknod(ROOT, "c", fmt.S_IFCHR | 0o600, fmt.encode_rdev(4, 64))
        b = vol.mknod(ROOT, "b", fmt.S_IFBLK | 0o600, fmt.encode_rdev(259, 1))
        p = vol.mknod(ROOT, "p", fmt.S_IFIFO | 0o644, 123)
        s = vol.mknod(ROOT, "s", fmt.S_IFSOCK | 0o644)
        with pytest.raises(InvalidArgumentError):
            vol.mknod(ROOT, "r", fmt.S_IFREG | 0o644)
    with Volume.open(image) as vol:
        assert fmt.decode_rdev(vol.read_inode(c).rdev) == (4, 64)
        assert fmt.decode_rdev(vol.read_inode(b).rdev) == (259, 1)
        assert vol.read_inode(p).rdev == 0 and vol.read_inode(s).mode == fmt.S_IFSOCK | 0o644
        types = {e.name: e.file_type for e in vol.listdir(ROOT)}
        assert types[b"c"] == fmt.DT_CHR and types[b"b"] == fmt.DT_BLK
        assert types[b"p"] == fmt.DT_FIFO and types[b"s"] == fmt.DT_SOCK
    assert_clean(image)


def test_hard_links_and_unlink(image):
    with rw(image) as vol:
        d = vol.mkdir(ROOT, "d")
        f = vol.create(ROOT, "f", 0o644, data=b"data" * 3000)
        vol.link(f, d, "g")
        free = vol.dyn.free_blocks
    with rw(image) as vol:
        assert vol.read_inode(f).links_count == 2
        vol.unlink(ROOT, "f")
        assert vol.dyn.free_blocks == free
    assert_clean(image)
    with rw(image) as vol:
        assert vol.read(vol.lookup("/d/g")) == b"data" * 3000
        vol.unlink(d, "g")
        assert vol.dyn.free_blocks == free + 3
        assert vol.inode_mode(f) == 0
        assert vol.dyn.orphan_head == 0
    assert_clean(image)


def test_rmdir(image):
    with rw(image) as vol:
        d = vol.mkdir(ROOT, "d")
        vol.create(d, "x", 0o644)
        with pytest.raises(DirectoryNotEmptyError):
            vol.rmdir(ROOT, "d")
        with pytest.raises(IsADirectoryError_):
            vol.unlink(ROOT, "d")
        with pytest.raises(NotADirectoryError_):
            vol.rmdir(d, "x")
        vol.unlink(d, "x")
        vol.rmdir(ROOT, "d")
        assert vol.read_inode(ROOT).links_count == 3
    assert_clean(image)


def test_rename_cases(image):
    with rw(image) as vol:
        a = vol.mkdir(ROOT, "a")
        b = vol.mkdir(ROOT, "b")
        f = vol.create(a, "f", 0o644, data=b"one")
        g = vol.create(b, "g", 0o644, data=b"two" * 2000)
        sub = vol.mkdir(a, "sub")
    with rw(image) as vol:
        vol.rename(a, "f", a, "f2")  # same directory
    assert_clean(image)
    with rw(image) as vol:
        vol.rename(a, "f2", b, "g")  # over an existing file: g's inode is freed
        assert vol.inode_mode(g) == 0
    assert_clean(image)
    with rw(image) as vol:
        assert vol.read(vol.lookup("/b/g")) == b"one"
        vol.rename(a, "sub", b, "sub")  # directory moves: parent pointer and link counts
        assert vol.read_inode(sub).parent == b
        assert vol.read_inode(a).links_count == 2 and vol.read_inode(b).links_count == 3
    assert_clean(image)
    with rw(image) as vol:
        with pytest.raises(InvalidArgumentError):
            vol.rename(ROOT, "b", sub, "inside")
        with pytest.raises(IsADirectoryError_):
            vol.rename(b, "g", b, "sub")
        with pytest.raises(NotADirectoryError_):
            vol.rename(b, "sub", b, "g")
        empty = vol.mkdir(ROOT, "empty")
        vol.rename(b, "sub", ROOT, "empty")  # over an empty directory
        assert vol.inode_mode(empty) == 0 and vol.lookup("/empty") == sub
        s = vol.symlink(ROOT, "sym", "target")
        vol.rename(ROOT, "sym", b, "g")  # different file type replaces a regular file
        assert vol.lookup("/b/g") == s and vol.inode_mode(f) == 0
    assert_clean(image)
    with Volume.open(image) as vol:
        assert {e.name: e.file_type for e in vol.listdir(b)} == {b"g": fmt.DT_LNK}


def test_rename_hard_link_onto_itself_is_noop(image):
    with rw(image) as vol:
        f = vol.create(ROOT, "f", 0o644)
        vol.link(f, ROOT, "g")
        vol.rename(ROOT, "f", ROOT, "g")
        assert {e.name for e in vol.listdir(ROOT)} >= {b"f", b"g"}
    assert_clean(image)


def test_setattr_and_times(image):
    with rw(image) as vol:
        f = vol.create(ROOT, "f", 0o644)
        vol.setattr(f, mode=0o4711, uid=1000, gid=2000, atime=(1, 2), mtime=(3, 4), ctime=(5, 6), btime=(7, 8))
    with Volume.open(image) as vol:
        n = vol.read_inode(f)
        assert n.mode == fmt.S_IFREG | 0o4711 and (n.uid, n.gid) == (1000, 2000)
        assert (n.atime, n.atime_nsec, n.mtime, n.mtime_nsec) == (1, 2, 3, 4)
        assert (n.ctime, n.ctime_nsec, n.btime, n.btime_nsec) == (5, 6, 7, 8)
        assert (n.links_count, n.size) == (1, 0)
    assert_clean(image)


def test_name_errors(image):
    with rw(image) as vol:
        vol.create(ROOT, "x", 0o644)
        with pytest.raises(FileExistsError_):
            vol.create(ROOT, "x", 0o644)
        with pytest.raises(FileExistsError_):
            vol.mkdir(ROOT, "x")
        with pytest.raises(NameTooLongError):
            vol.create(ROOT, b"n" * 256, 0o644)
        for bad in (b"", b".", b"..", b"a/b", b"a\0b"):
            with pytest.raises(InvalidArgumentError):
                vol.create(ROOT, bad, 0o644)
        long_name = b"\xc3\xa9" * 127 + b"z"
        ino = vol.create(ROOT, long_name, 0o644)
        assert vol.lookup(b"/" + long_name) == ino
        with pytest.raises(NoSuchFileError):
            vol.unlink(ROOT, "missing")
        with pytest.raises(NotADirectoryError_):
            vol.create(ino, "y", 0o644)
        with pytest.raises(IsADirectoryError_):
            vol.link(ROOT, ROOT, "rootlink")
    assert_clean(image)


def test_read_only_refuses_writes(image):
    with Volume.open(image) as vol:
        with pytest.raises(ReadOnlyError):
            vol.create(ROOT, "x", 0o644)
        with pytest.raises(ReadOnlyError):
            vol.setattr(ROOT, mode=0o700)


def test_no_space(shm_tmp):
    path = make_image(shm_tmp / "small.img", 2 << 20)
    with rw(path) as vol:
        free = vol.dyn.free_blocks
        with pytest.raises(NoSpaceError, match="needed"):
            vol.create(ROOT, "big", 0o644, data=b"x" * (free + 1) * 4096)
        assert vol.dyn.free_blocks == free
    with rw(path) as vol:
        n = 0
        with pytest.raises(NoSpaceError):
            while True:
                vol.create(ROOT, f"f{n}", 0o644)
                n += 1
        assert vol.dyn.free_inodes == 0 and n > 10
    assert_clean(path)


def _patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_open_validation(image, shm_tmp):
    junk = shm_tmp / "junk.img"
    junk.write_bytes(b"\0" * (1 << 20))
    with pytest.raises(NotNvfsError):
        Volume.open(str(junk))
    off = fmt.field_offset(fmt.SuperblockStatic, "label")
    _patch(image, off, b"X")  # checksum no longer matches
    with pytest.raises(CorruptError, match="checksum"):
        Volume.open(image)
    with Volume.open(image, use_backup=True) as vol:  # the backup at the end still works
        assert vol.lookup("/lost+found") == fmt.FIRST_INO


def _set_static(path, field, value):
    with open(path, "r+b") as f:
        raw = bytearray(f.read(fmt.SB_STATIC_SIZE))
        struct.pack_into("<I", raw, fmt.field_offset(fmt.SuperblockStatic, field), value)
        struct.pack_into("<I", raw, fmt.SB_STATIC_SIZE - 4, fmt.sb_static_checksum(bytes(raw)))
        f.seek(0)
        f.write(raw)


def test_unknown_features(image, shm_tmp):
    _set_static(image, "feature_ro_compat", 0x80)
    with Volume.open(image) as vol:  # read-only is fine
        assert vol.lookup("/lost+found")
    with pytest.raises(UnsupportedFeatureError):
        Volume.open(image, writable=True)
    _set_static(image, "feature_incompat", 0x40)
    with pytest.raises(UnsupportedFeatureError):
        Volume.open(image)


def test_checker_catches_damage(image):
    with rw(image) as vol:
        f = vol.create(ROOT, "f", 0o644, data=b"x" * 9000)
        blk = next(iter(vol.file_blocks(f)))[1]
        vol.alloc.free_block_list([blk])  # a block in use marked free
    problems = check_image(image)
    assert any("in use but marked free" in p for p in problems)
    with rw(image) as vol:
        vol.set_inode_fields(f, links_count=5)
    assert any("links 5" in p for p in check_image(image))


def test_xattrs_and_acls(image):
    acl = bytes.fromhex("02000000010006000000000004000400000000002000040000000000")
    with rw(image) as vol:
        f = vol.create(ROOT, "f", 0o644)
        free = vol.dyn.free_blocks
        vol.setxattr(f, b"user.a", b"1")
        vol.setxattr(f, b"trusted.t", b"")
        vol.setxattr(f, b"security.selinux", b"ctx\0")
        vol.setxattr(f, b"system.posix_acl_access", acl)
        with pytest.raises(InvalidArgumentError):
            vol.setxattr(f, b"system.posix_acl_default", acl)  # only directories have default ACLs
        with pytest.raises(InvalidArgumentError):
            vol.setxattr(f, b"system.posix_acl_access", acl[:-8])  # no other:: entry
        vol.setxattr(ROOT, b"system.posix_acl_default", acl)
        vol.setxattr(f, b"user.a", b"2" * 100)  # replacement
        assert vol.dyn.free_blocks == free - 2  # the file's xattr block and the root's
    assert_clean(image)
    with rw(image) as vol:
        assert vol.getxattr(f, "user.a") == b"2" * 100
        assert vol.getxattr(f, "system.posix_acl_access") == acl
        assert set(vol.listxattr(f)) == {b"user.a", b"trusted.t", b"security.selinux", b"system.posix_acl_access"}
        assert vol.getxattr(ROOT, b"system.posix_acl_default") == acl
        vol.removexattr(ROOT, b"system.posix_acl_default")
        with pytest.raises(InvalidArgumentError):
            vol.setxattr(f, b"bogus.x", b"")
        with pytest.raises(NoSpaceError):
            vol.setxattr(f, b"user.big", b"v" * 5000)
        with pytest.raises(NoSuchFileError):
            vol.getxattr(f, "user.none")
        for name in list(vol.listxattr(f)):
            vol.removexattr(f, name)
        assert vol.read_inode(f).xattr_block == 0 and vol.dyn.free_blocks == free
    assert_clean(image)


def test_xattr_on_directory_and_removal_of_owner(image):
    with rw(image) as vol:
        d = vol.mkdir(ROOT, "d")
        vol.setxattr(d, "user.x", b"y")
        f = vol.create(d, "f", 0o644)
        vol.setxattr(f, "user.x", b"y")
    assert_clean(image)
    with rw(image) as vol:
        vol.unlink(d, "f")
        vol.rmdir(ROOT, "d")
    assert_clean(image)


def test_quota_usage_tracked(shm_tmp):
    path = make_image(shm_tmp / "q.img", 32 << 20, quota=True)
    assert_clean(path)
    with rw(path) as vol:
        f = vol.create(ROOT, "f", 0o644, uid=7, gid=8, data=b"q" * 10000)
        d = vol.mkdir(ROOT, "d", uid=7, gid=9)
        for i in range(40):
            vol.create(d, f"n{i}", 0o644, uid=7)
        vol.setxattr(f, "user.k", b"v")
    assert_clean(path)
    with rw(path) as vol:
        vol.setattr(f, uid=70, gid=80)
        vol.truncate(f, 100)
        vol.write(f, 1 << 20, b"end")
    assert_clean(path)
    with rw(path) as vol:
        vol.rename(d, "n1", ROOT, "f")
        vol.unlink(d, "n2")
    assert_clean(path)


def test_corrupt_structures_raise(image):
    with rw(image) as vol:
        f = vol.create(ROOT, "f", 0o644, data=b"x" * 100)
        g = vol.create(ROOT, "g", 0o644)
        vol.setxattr(g, "user.a", b"b")
        vol.set_inode_fields(f, block={0: vol.geo.block_bitmap_block(0)})  # a pointer into metadata
        xb = vol.read_inode(g).xattr_block
        vol.dev.write(xb * vol.block_size + 100, b"garbage")
    with Volume.open(image) as vol:
        with pytest.raises(CorruptError):
            vol.read(f)
        with pytest.raises(CorruptError):
            list(vol.file_blocks(f))
        with pytest.raises(CorruptError):
            vol.getxattr(g, "user.a")
    with rw(image) as vol:
        with pytest.raises(CorruptError):
            vol.write(f, 0, b"y")
        vol.set_inode_fields(f, block={0: vol.geo.blocks_count + 5})  # past the end
        with pytest.raises(CorruptError):
            vol.read(f)


def test_exchange(image):
    with rw(image) as vol:
        a = vol.mkdir(ROOT, "a")
        b = vol.mkdir(ROOT, "b")
        sub = vol.mkdir(a, "sub")
        f = vol.create(b, "f", 0o644, data=b"file")
        s = vol.symlink(ROOT, "s", "target")
    with rw(image) as vol:
        vol.exchange(a, "sub", b, "f")  # directory <-> file across parents
        assert vol.lookup("/a/sub") == f and vol.lookup("/b/f") == sub
        assert vol.read_inode(sub).parent == b
        assert vol.read_inode(a).links_count == 2 and vol.read_inode(b).links_count == 3
    assert_clean(image)
    with rw(image) as vol:
        vol.exchange(ROOT, "s", a, "sub")  # symlink <-> regular file
        assert vol.lookup("/s") == f and vol.lookup("/a/sub") == s
        with pytest.raises(InvalidArgumentError):
            vol.exchange(ROOT, "b", b, "f")  # b would move into its own subdirectory
        with pytest.raises(NoSuchFileError):
            vol.exchange(ROOT, "s", ROOT, "missing")
    assert_clean(image)
    with Volume.open(image) as vol:
        assert {e.name: e.file_type for e in vol.listdir(a)} == {b"sub": fmt.DT_LNK}
        assert {e.name: e.file_type for e in vol.listdir(ROOT)}[b"s"] == fmt.DT_REG


def test_create_with_xattrs(image):
    acl = bytes.fromhex("02000000010006000000000004000400000000002000040000000000")
    attrs = {b"user.a": b"1", b"security.selinux": b"ctx", b"system.posix_acl_access": acl}
    with rw(image) as vol:
        f = vol.create(ROOT, "f", 0o644, data=b"x" * 5000, xattrs=attrs)
        d = vol.mkdir(ROOT, "d", xattrs={b"trusted.t": b"v"})
        s = vol.symlink(d, "s", "t", xattrs={b"user.l": b""})
        n = vol.mknod(d, "n", fmt.S_IFIFO | 0o600, xattrs={b"user.n": b"z"})
        with pytest.raises(InvalidArgumentError):
            vol.create(ROOT, "bad", 0o644, xattrs={b"nope.x": b""})
    with Volume.open(image) as vol:
        assert {k: vol.getxattr(f, k) for k in vol.listxattr(f)} == attrs
        assert vol.read_inode(f).blocks == 3 and vol.read(f) == b"x" * 5000
        assert vol.getxattr(d, "trusted.t") == b"v" and vol.getxattr(s, "user.l") == b""
        assert vol.getxattr(n, "user.n") == b"z"
        with pytest.raises(NoSuchFileError):
            vol.lookup("/bad")
    assert_clean(image)


def test_orphan_list_left_by_interrupted_unlink(image):
    with rw(image) as vol:
        f = vol.create(ROOT, "f", 0o644, data=b"x")
        g = vol.create(ROOT, "g", 0o644)
        assert vol.orphans() == []
        vol._orphan_push(f)  # what a crash right after the push leaves
        vol._orphan_push(g)
        assert vol.orphans() == [g, f]
        vol.set_inode_fields(f, next_orphan=g)  # a loop
    with Volume.open(image) as vol:
        with pytest.raises(CorruptError):
            vol.orphans()


def test_values_out_of_range_refused(image):
    with rw(image) as vol:
        free = (vol.dyn.free_blocks, vol.dyn.free_inodes)
        with pytest.raises(InvalidArgumentError):
            vol.create(ROOT, "f", 0o644, uid=1 << 32, data=b"x" * 9000)
        with pytest.raises(InvalidArgumentError):
            vol.mkdir(ROOT, "d", times=(0, 1_000_000_000))
        assert (vol.dyn.free_blocks, vol.dyn.free_inodes) == free
        f = vol.create(ROOT, "g", 0o644)
        with pytest.raises(InvalidArgumentError):
            vol.setattr(f, gid=-1)
        with pytest.raises(InvalidArgumentError):
            vol.setattr(f, mtime=(1, -5))
        assert vol.read_inode(f).gid == 0
    assert_clean(image)
