"""Extraction of image subtrees to the host: subtrees, single files, holes, owners, errors."""

from __future__ import annotations

import os
import shutil
import stat

import pytest
from fsfactory import make_image, scratch
from treecompare import compare_trees, data_map

from nvfs_tools import format as fmt
from nvfs_tools.errors import NoSuchFileError, NotADirectoryError_
from nvfs_tools.extract import extract
from nvfs_tools.volume import Volume

IS_ROOT = os.geteuid() == 0


@pytest.fixture
def tmp_path(tmp_path):
    """Work in /dev/shm when it exists: images and trees on the disk cost seconds of writeback."""
    yield from scratch(tmp_path)


@pytest.fixture
def image(tmp_path):
    """An image built through the library API (not populate), so extraction is tested on its own."""
    img = make_image(tmp_path / "img", 64 << 20)
    t = (1_600_000_000, 123_456_789)
    with Volume.open(img, writable=True) as vol:
        d = vol.mkdir(fmt.ROOT_INO, b"d", 0o750, 1000, 1001, times=t)
        f = vol.create(d, b"sparse", 0o640, 1000, 1001, times=t)
        vol.write(f, 0, b"head")
        vol.write(f, 20 * 4096 + 7, b"tail")
        vol.setxattr(f, b"user.k", b"value")
        vol.setxattr(f, b"trusted.t", b"\x00\x01")
        vol.link(f, fmt.ROOT_INO, b"link-to-sparse")
        vol.symlink(d, b"sym", b"../target", 1000, 1001, times=t)
        vol.mknod(d, b"fifo", stat.S_IFIFO | 0o600, 0, times=t)
        vol.mknod(d, b"chr", stat.S_IFCHR | 0o600, fmt.encode_rdev(1, 5), times=t)
        sub = vol.mkdir(d, b"sub", 0o500, times=t)  # read-only dir: children must still be made
        g = vol.create(sub, b"inner", 0o400, times=t)
        vol.write(g, 0, b"inner data")
        vol.setattr(g, atime=(1_500_000_000, 1), mtime=(1_400_000_000, 999_999_999))
        vol.setattr(sub, atime=t, mtime=t)
        vol.setattr(d, atime=t, mtime=t)
    return img


def test_subtree_with_all_metadata(tmp_path, image):
    out = tmp_path / "out"
    with Volume.open(image) as vol:
        stats = extract(vol, "/d", out)
    assert stats.files == 2 and stats.directories == 2 and stats.symlinks == 1 and stats.specials == 2
    st = os.lstat(out)
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_mtime_ns == 1_600_000_000_123_456_789
    inner = os.lstat(out / "sub" / "inner")
    assert inner.st_mtime_ns == 1_400_000_000_999_999_999 and inner.st_atime_ns == 1_500_000_000_000_000_001
    assert (out / "sub" / "inner").read_bytes() == b"inner data"
    assert stat.S_IMODE(os.lstat(out / "sub").st_mode) == 0o500
    assert os.readlink(out / "sym") == "../target"
    assert stat.S_ISFIFO(os.lstat(out / "fifo").st_mode)
    assert os.lstat(out / "chr").st_rdev == os.makedev(1, 5)
    assert (out / "sparse").read_bytes() == b"head" + bytes(20 * 4096 + 7 - 4) + b"tail"
    assert data_map(bytes(out / "sparse"), 20 * 4096 + 11) == [(0, 4096), (20 * 4096, 20 * 4096 + 11)]
    assert os.getxattr(out / "sparse", "user.k") == b"value"
    if IS_ROOT:
        assert os.getxattr(out / "sparse", "trusted.t") == b"\x00\x01"
        assert (st.st_uid, st.st_gid) == (1000, 1001)


def test_hard_links_become_host_links(tmp_path, image):
    out = tmp_path / "out"
    with Volume.open(image) as vol:
        stats = extract(vol, "/", out)
    assert stats.hard_links == 1
    assert os.lstat(out / "link-to-sparse").st_ino == os.lstat(out / "d" / "sparse").st_ino
    assert os.lstat(out / "d" / "sparse").st_nlink == 2


def test_owners_false_keeps_the_caller_as_owner(tmp_path, image):
    out = tmp_path / "out"
    with Volume.open(image) as vol:
        extract(vol, "/d", out, owners=False)
    st = os.lstat(out / "sparse")
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())


def test_single_file_and_errors(tmp_path, image):
    with Volume.open(image) as vol:
        extract(vol, "/d/sparse", tmp_path / "one")
        assert (tmp_path / "one").stat().st_size == 20 * 4096 + 11
        with pytest.raises(NoSuchFileError):
            extract(vol, "/nope", tmp_path / "x")
        (tmp_path / "file").write_bytes(b"")
        with pytest.raises(NotADirectoryError_):
            extract(vol, "/d", tmp_path / "file")


def test_extract_of_extract_round_trips(tmp_path, image):
    """Image -> host -> image (populate) -> host gives the same tree twice."""
    from nvfs_tools.populate import populate

    first = tmp_path / "first"
    with Volume.open(image) as vol:
        extract(vol, "/", first)
    shutil.rmtree(first / "lost+found")
    os.utime(first, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    img2 = make_image(tmp_path / "img2", 64 << 20)
    with Volume.open(img2, writable=True, unordered=True) as vol:
        populate(vol, first)
    second = tmp_path / "second"
    with Volume.open(img2) as vol:
        extract(vol, "/", second)
    assert compare_trees(first, second, ignore=(b"lost+found",)) == []
