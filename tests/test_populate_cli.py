"""mkfs.nvfs -d end to end: success round trip, and failures that must exit non-zero."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest
from checker import check_image
from fsfactory import scratch
from treecompare import compare_trees

from nvfs_tools import mkfs, scan, scan_pure
from nvfs_tools import populate as pop
from nvfs_tools.errors import NvfsError
from nvfs_tools.extract import extract
from nvfs_tools.hosttree import make_full_tree
from nvfs_tools.volume import Volume


@pytest.fixture
def tmp_path(tmp_path):
    """Work in /dev/shm when it exists: images and trees on the disk cost seconds of writeback."""
    yield from scratch(tmp_path)


def run_mkfs(*args: str) -> int:
    with pytest.raises(SystemExit) as info:
        mkfs.main(list(args))
    return info.value.code


def test_mkfs_d_round_trip(tmp_path, capsys):
    src = tmp_path / "src"
    make_full_tree(src)
    img = str(tmp_path / "img")
    assert run_mkfs("-q", "-F", "-d", str(src), img, "64M") == 0
    assert check_image(img) == []
    out = tmp_path / "out"
    with Volume.open(img) as vol:
        extract(vol, "/", out)
    assert compare_trees(src, out, ignore=(b"lost+found",)) == []


def test_mkfs_d_unreadable_file_fails_and_names_it(tmp_path, capsys, monkeypatch):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "broken").write_bytes(b"z" * 100)
    real_pread = os.pread

    def failing_pread(fd, n, off):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/broken"):
            raise OSError(errno.EIO, "Input/output error")
        return real_pread(fd, n, off)

    monkeypatch.setattr(pop.os, "pread", failing_pread)
    monkeypatch.setattr(scan, "_backend", scan_pure)  # the copy thread's reads go through os.pread there
    img = tmp_path / "img"
    img.write_bytes(b"")
    os.truncate(img, 64 << 20)
    assert run_mkfs("-q", "-F", "-d", str(src), str(img)) != 0
    err = capsys.readouterr().err
    assert "sub/broken" in err and "Input/output error" in err
    with pytest.raises(NvfsError):  # the half-populated image must not look like a filesystem
        Volume.open(str(img)).close()


def test_mkfs_d_too_small_says_how_much_is_needed(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(3 << 20))
    img = str(tmp_path / "img")
    assert run_mkfs("-q", "-F", "-d", str(src), img, "2M") != 0
    err = capsys.readouterr().err
    assert "needs" in err and "blocks" in err and "device has" in err


def test_mkfs_d_backends_make_identical_images(tmp_path, monkeypatch):
    """The copy thread's compiled ``copy_files`` and the pure reference write the same image, byte for byte
    (small files, files with indirect blocks, sparse files, one past the 2 MiB of a pool allocation)."""
    from nvfs_tools import _fastscan

    src = tmp_path / "src"
    make_full_tree(src)
    (src / "big").write_bytes(os.urandom((2 << 20) + 5000))
    (src / "mid").write_bytes(os.urandom(300_000))
    for i in range(40):
        (src / "d" / f"small{i}").write_bytes(os.urandom(i * 1111))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    images = []
    # the first run is not compared: reading a symlink sets its atime once (relatime), later runs see it
    for backend in (_fastscan, _fastscan, scan_pure):
        monkeypatch.setattr(scan, "_backend", backend)
        img = tmp_path / f"{backend.__name__}.img"
        img.write_bytes(b"\xa5" * (64 << 20))  # old contents: padding must be written, not assumed
        uuid = "12345678-1234-1234-1234-123456789abc"
        assert run_mkfs("-q", "-F", "-U", uuid, "-d", str(src), str(img)) == 0
        assert check_image(str(img)) == []
        images.append(img.read_bytes())
    assert images[1] == images[2]


@pytest.mark.skipif(not os.path.isdir("/usr/include/linux"), reason="needs /usr/include/linux")
def test_mkfs_d_backends_make_identical_images_of_a_real_tree(tmp_path, monkeypatch):
    """The compiled per-entry loops (populate_scan_dir, populate_write_simple, populate_dir_page) and their
    pure references give the same image of a real tree: hundreds of small files, files with an indirect
    block, many one-page directories; fsck finds it clean and it extracts to the same tree."""
    from nvfs_tools import _fastscan

    assert getattr(_fastscan, "POPULATE_META_FIELDS", None) == pop.META_FIELDS  # else both runs are pure
    src = "/usr/include/linux"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    digests = []
    for backend in (_fastscan, _fastscan, scan_pure):  # the first run may set atimes once (see above)
        monkeypatch.setattr(scan, "_backend", backend)
        img = tmp_path / "img"
        img.write_bytes(b"\xa5" * (32 << 20))
        uuid = "12345678-1234-1234-1234-123456789abc"
        assert run_mkfs("-q", "-F", "-U", uuid, "-d", src, str(img)) == 0
        assert check_image(str(img)) == []
        digests.append(hashlib.sha256(img.read_bytes()).hexdigest())
    assert digests[1] == digests[2]
    out = tmp_path / "out"
    with Volume.open(str(img)) as vol:
        extract(vol, "/", out)
    assert compare_trees(src, out, ignore=(b"lost+found",)) == []
