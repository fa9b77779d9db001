"""mkfs -d populate: round trips through an image, exact metadata, failures that must stop the run."""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import stat
import sys
import tempfile
import time

import pytest
from checker import check_image
from fsfactory import make_image, scratch
from treecompare import compare_trees

from nvfs_tools import format as fmt
from nvfs_tools import populate as pop
from nvfs_tools.errors import FileExistsError_, NoSpaceError
from nvfs_tools.extract import extract
from nvfs_tools.hosttree import BOUNDARY_BLOCKS, make_big_dir, make_full_tree
from nvfs_tools.volume import Volume

IS_ROOT = os.geteuid() == 0
SHM = "/dev/shm"


@pytest.fixture
def tmp_path(tmp_path):
    """Work in /dev/shm when it exists: images and trees on the disk cost seconds of writeback."""
    yield from scratch(tmp_path)


def populated(tmp_path, src, size=64 << 20, **kw) -> tuple[str, pop.PopulateStats]:
    img = make_image(tmp_path / "img", size)
    with Volume.open(img, writable=True, unordered=True) as vol:
        stats = pop.populate(vol, src, **kw)
    assert check_image(img) == []
    return img, stats


def round_trip(tmp_path, src, size=64 << 20) -> tuple[str, list[str]]:
    img, _stats = populated(tmp_path, src, size)
    out = tmp_path / "out"
    with Volume.open(img) as vol:
        extract(vol, "/", out)
    return img, compare_trees(src, out, ignore=(b"lost+found",))


@pytest.fixture(scope="module")
def full_tree(tmp_path_factory):
    base = tempfile.mkdtemp(prefix="nvfs-tree-", dir=SHM) if os.path.isdir(SHM) else tmp_path_factory.mktemp("full")
    src = pathlib.Path(base) / "src"
    made = make_full_tree(src)
    yield src, made
    shutil.rmtree(base, ignore_errors=True)


def test_full_tree_round_trip_is_identical(tmp_path, full_tree):
    src, made = full_tree
    assert made["xattrs_skipped"] == 0, "the host refused some xattrs: the test would not cover them"
    img, diffs = round_trip(tmp_path, src)
    assert diffs == []


def test_ordered_volume_round_trip_without_copy_thread(tmp_path, full_tree, monkeypatch):
    """On an ordered device the contents are stored through the device, in the store order of
    spec/operations.md, not by the copy thread (whose own descriptor no barrier would cover)."""
    started = []
    monkeypatch.setattr(pop._Copier, "__init__", lambda *args: started.append(args) or pytest.fail("copy thread"))
    src, _ = full_tree
    img = make_image(tmp_path / "img", 64 << 20)
    with Volume.open(img, writable=True) as vol:
        pop.populate(vol, src)
    assert check_image(img) == [] and not started
    out = tmp_path / "out"
    with Volume.open(img) as vol:
        extract(vol, "/", out)
    assert compare_trees(src, out, ignore=(b"lost+found",)) == []


def test_directory_gone_before_the_write_names_its_path(tmp_path, monkeypatch):
    """Without the copy thread each source directory is opened again to read its files: one removed
    after the walk fails the run with its path, not a traceback."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"data")
    real_walk = pop._walk

    def walk_then_remove(*args):
        plan = real_walk(*args)
        shutil.rmtree(src / "d")
        return plan

    monkeypatch.setattr(pop, "_walk", walk_then_remove)
    img = make_image(tmp_path / "img")
    with Volume.open(img, writable=True) as vol:
        with pytest.raises(pop.SourceError, match=r"src/d: cannot open directory: No such file or directory"):
            pop.populate(vol, src)


def test_image_keeps_source_ctime_links_and_owner(tmp_path, full_tree):
    src, _ = full_tree
    img, stats = populated(tmp_path, src)
    with Volume.open(img) as vol:
        for rel in (b"d/file_1", b"links/a", b"links/sym_short", b"specials/fifo", b"d/sub"):
            st = os.lstat(os.path.join(os.fsencode(src), rel))
            node = vol.read_inode(vol.lookup(b"/" + rel))
            assert node.ctime * 10**9 + node.ctime_nsec == st.st_ctime_ns
            assert node.mtime * 10**9 + node.mtime_nsec == st.st_mtime_ns
        a = vol.lookup(b"/links/a")
        assert vol.lookup(b"/links/a2") == a == vol.lookup(b"/d/sub/a3")
        assert vol.read_inode(a).links_count == 3
        assert vol.read_inode(vol.lookup(b"/links/fifo")).links_count == 2
        sub = vol.read_inode(vol.lookup(b"/d"))
        assert sub.links_count == 2 + 1  # one subdirectory
        root = vol.read_inode(fmt.ROOT_INO)
        assert (root.uid, root.gid) == (0, 0)  # as mkfs made it
        top_dirs = sum(1 for e in os.scandir(src) if e.is_dir(follow_symlinks=False))
        assert root.links_count == 2 + top_dirs + 1  # + lost+found
        short = vol.read_inode(vol.lookup(b"/links/sym_128"))
        assert short.flags & fmt.INODE_FLAG_INLINE and short.blocks == 0
        assert vol.read_inode(vol.lookup(b"/links/sym_129")).blocks == 1
        if IS_ROOT:
            dev = vol.read_inode(vol.lookup(b"/specials/blk"))
            assert fmt.decode_rdev(dev.rdev) == (259, 1048575)
    assert stats.hard_links == 4 and stats.symlinks == 6


def test_boundary_files_map_exactly_their_data_blocks(tmp_path, full_tree):
    src, _ = full_tree
    img, _ = populated(tmp_path, src)
    p = 4096 // 8
    with Volume.open(img) as vol:
        for blocks in BOUNDARY_BLOCKS:
            for extra in (0, 1):
                ino = vol.lookup(b"/sparse/b%d_%d" % (blocks, extra))
                mapped = [fb for fb, _db in vol.file_blocks(ino)]
                last = blocks - 1 + extra
                assert mapped == sorted({0, (blocks * 4096 + extra - 5) // 4096, last})
                node = vol.read_inode(ino)
                indirect = node.blocks - len(mapped)
                assert indirect == pop.indirect_blocks_sparse(mapped, p)
                assert vol.read(ino, node.size - 5, 5) == b"tail!"
        hole = vol.lookup(b"/sparse/all_hole")
        assert list(vol.file_blocks(hole)) == [] and vol.read_inode(hole).blocks == 0


def test_space_needed_is_exact(tmp_path, full_tree):
    src, _ = full_tree
    img = make_image(tmp_path / "img", 64 << 20)
    with Volume.open(img, writable=True, unordered=True) as vol:
        before = vol.dyn
        stats = pop.populate(vol, src)
        after = vol.dyn
    assert before.free_inodes - after.free_inodes == stats.inodes_needed
    # the root directory's existing page is counted as if new: at most one block over
    used = before.free_blocks - after.free_blocks
    assert stats.blocks_needed - 1 <= used <= stats.blocks_needed


def test_too_small_device_is_refused_before_writing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i}").write_bytes(os.urandom(100_000))
    img = make_image(tmp_path / "img", 2 << 20)
    before = open(img, "rb").read()
    with Volume.open(img, writable=True, unordered=True) as vol:
        free = vol.dyn.free_blocks
        with pytest.raises(NoSpaceError) as info:
            pop.populate(vol, src)
    message = str(info.value)
    assert f"device has {free} blocks" in message and "needs" in message
    needed = int(message.split("needs ")[1].split(" blocks")[0])
    assert needed >= 40 * 25
    assert open(img, "rb").read() == before


def test_walk_reports_counted_blocks_chunk_by_chunk(tmp_path):
    """The preallocator hears what the walk has counted after every _SCAN_CHUNK directories, not once per
    level of the tree: a level of 100 directories gives several reports, growing to the plan's total."""
    src = tmp_path / "src"
    for i in range(100):
        (src / f"d{i:03}").mkdir(parents=True)
        (src / f"d{i:03}" / "f").write_bytes(b"x" * 5000)
    reports: list[int] = []
    plan = pop._walk(os.fsencode(src), 4096, lambda names: 1, reports.append)
    assert len(reports) == 1 + -(-100 // pop._SCAN_CHUNK)  # the root alone, then level 1 chunk by chunk
    assert reports == sorted(reports) and reports[-1] == plan.blocks
    assert len(set(reports[1:])) == len(reports) - 1  # each chunk of level 1 added its files' blocks


def test_preallocation_covers_data_areas_only_and_no_more_than_counted(tmp_path):
    """While the walk runs, the image file's data area is allocated up to what the walk has counted, group by
    group; inode tables (which fsck skips while they are holes) and what was not counted stay holes."""
    img = make_image(tmp_path / "img", 320 << 20)
    with Volume.open(img, writable=True, unordered=True) as vol:
        geo, bs = vol.geo, vol.block_size
        assert geo.group_count >= 2
        group0_data = geo.group_end(0) - geo.first_data_block(0)
        wanted = group0_data + 300  # into group 1's data area
        before = os.stat(img).st_blocks * 512
        pre = pop._Preallocator.start(vol)
        assert pre is not None
        pre.want(wanted // 2)
        pre.want(wanted)
        deadline = time.monotonic() + 30
        while os.stat(img).st_blocks * 512 - before < (wanted - 8) * bs and time.monotonic() < deadline:
            time.sleep(0.01)  # the thread works in the background; finish() would stop it
        time.sleep(0.05)
        pre.finish()
        grown = os.stat(img).st_blocks * 512 - before
        assert wanted * bs - 8 * bs <= grown <= wanted * bs  # group 0's first data blocks were written by mkfs
        fd = vol.dev.fd
        table = geo.inode_table_block(1) * bs
        assert os.lseek(fd, table, os.SEEK_DATA) >= geo.first_data_block(1) * bs  # group 1's inode table: a hole
        end_of_wanted = (geo.first_data_block(1) + 300) * bs
        assert os.lseek(fd, end_of_wanted, os.SEEK_HOLE) == end_of_wanted
    assert check_image(img) == []


def test_too_few_inodes_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(200):
        (src / f"f{i}").write_bytes(b"")
    img = make_image(tmp_path / "img", 8 << 20, inode_count=64)
    with Volume.open(img, writable=True, unordered=True) as vol:
        with pytest.raises(NoSpaceError, match="200 inodes"):
            pop.populate(vol, src)


@pytest.mark.parametrize("size", [5000, 300_000])  # a small file and one with indirect blocks
def test_unreadable_file_names_its_path(tmp_path, monkeypatch, size):
    """A read error reaches the user with the file's path, from the copy thread as well.

    The fault is injected into ``os.pread``, which only the pure backend's
    ``copy_files`` calls, so the copy thread runs the pure backend here.
    """
    from nvfs_tools import scan, scan_pure

    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "bad").write_bytes(b"x" * size)
    (src / "good").write_bytes(b"y")
    real_pread = os.pread

    def failing_pread(fd, n, off):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/bad"):
            raise OSError(errno.EIO, "Input/output error")
        return real_pread(fd, n, off)

    monkeypatch.setattr(pop.os, "pread", failing_pread)
    monkeypatch.setattr(scan, "_backend", scan_pure)
    img = make_image(tmp_path / "img")
    with Volume.open(img, writable=True, unordered=True) as vol:
        with pytest.raises(pop.SourceError, match=r"a/b/bad: read error: Input/output error"):
            pop.populate(vol, src)


@pytest.mark.parametrize("size", [1, 5000, 300_000])
def test_file_vanished_after_the_walk_names_its_path(tmp_path, monkeypatch, size):
    """A file removed between the walk and the copy fails the run with its path (either backend)."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "gone").write_bytes(b"z" * size)
    (src / "kept").write_bytes(b"k" * 10)
    real_walk = pop._walk

    def walk_then_remove(*args):
        plan = real_walk(*args)
        os.unlink(src / "d" / "gone")
        return plan

    monkeypatch.setattr(pop, "_walk", walk_then_remove)
    switch_interval = sys.getswitchinterval()
    img = make_image(tmp_path / "img")
    with Volume.open(img, writable=True, unordered=True) as vol:
        with pytest.raises(pop.SourceError, match=r"d/gone: cannot open: No such file or directory"):
            pop.populate(vol, src)
    assert not _copy_threads()
    assert sys.getswitchinterval() == switch_interval  # the copy thread's shorter interval is given back


def _copy_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "nvfs-populate-copy"]


def test_vanished_directory_names_its_path(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"x")
    real = pop._walk_dir

    def racing_walk_dir(d, plan, *args):
        real(d, plan, *args)
        if d.path == os.path.realpath(os.fsencode(src)):  # found "d"; it goes before its level is scanned
            os.unlink(d.path + b"/d/f")
            os.rmdir(d.path + b"/d")

    monkeypatch.setattr(pop, "_walk_dir", racing_walk_dir)
    img = make_image(tmp_path / "img")
    with Volume.open(img, writable=True, unordered=True) as vol:
        with pytest.raises(pop.SourceError, match=r"/d: cannot open directory"):
            pop.populate(vol, src)


def test_root_owner_and_lost_found_merge(tmp_path):
    src = tmp_path / "src"
    (src / "lost+found").mkdir(parents=True)
    (src / "lost+found" / "kept").write_bytes(b"found")
    (src / "top").write_bytes(b"t")
    os.chmod(src, 0o750)
    img, _ = populated(tmp_path, src, root_owner=(1234, 5678))
    with Volume.open(img) as vol:
        root = vol.read_inode(fmt.ROOT_INO)
        assert (root.uid, root.gid) == (1234, 5678)
        assert stat.S_IMODE(root.mode) == 0o750
        assert vol.lookup(b"/lost+found") == fmt.FIRST_INO
        assert vol.read(vol.lookup(b"/lost+found/kept")) == b"found"
        assert root.links_count == 3


def test_lost_found_that_is_not_a_directory_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "lost+found").write_bytes(b"")
    img = make_image(tmp_path / "img")
    with Volume.open(img, writable=True, unordered=True) as vol:
        with pytest.raises(FileExistsError_, match="lost\\+found"):
            pop.populate(vol, src)
    assert not _copy_threads()  # a failed populate leaves no copy thread behind


def test_source_that_is_not_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_bytes(b"")
    img = make_image(tmp_path / "img")
    with Volume.open(img, writable=True, unordered=True) as vol:
        with pytest.raises(pop.SourceError, match="not a directory"):
            pop.populate(vol, f)


@pytest.mark.parametrize("tree", ["/usr/share/doc", "/usr/share/zoneinfo"])
def test_real_tree_round_trip(tmp_path, tree):
    if not os.path.isdir(tree):
        pytest.skip(f"{tree} not on this machine")
    _img, diffs = round_trip(tmp_path, tree, 512 << 20)
    assert diffs == []


@pytest.mark.slow
def test_directory_of_100000_entries(tmp_path):
    src = tmp_path / "src"
    make_big_dir(os.fsencode(src / "big"), 100_000)
    os.makedirs(src / "other")
    img, diffs = round_trip(tmp_path, src, 128 << 20)
    assert diffs == []
    with Volume.open(img) as vol:
        big = vol.lookup(b"/big")
        names = {e.name for e in vol.listdir(big)}
        assert len(names) == 100_000
        assert vol.read_inode(vol.lookup(b"/big/entry-0000199")).links_count == 100


def test_quota_usage_is_charged(tmp_path):
    # small ids: the checker walks every quota record up to the largest id
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"x" * 10_000)
    (src / "g").write_bytes(b"")
    os.link(src / "g", src / "d" / "g2")
    os.setxattr(src / "g", b"user.k", b"v")
    if IS_ROOT:
        os.chown(src / "d" / "f", 7, 8)
        os.chown(src / "d", 9, 10)
    img = make_image(tmp_path / "img", 64 << 20, quota=True)
    with Volume.open(img, writable=True, unordered=True) as vol:
        pop.populate(vol, src)
    assert check_image(img) == []  # the checker recomputes quota usage from the inodes


def test_source_given_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").write_bytes(b"via link")
    os.symlink(real, tmp_path / "link")
    img, stats = populated(tmp_path, tmp_path / "link")
    assert stats.files == 1
    with Volume.open(img) as vol:
        assert vol.read(vol.lookup(b"/f")) == b"via link"


@pytest.mark.parametrize("block_size", [4096, 8192])
def test_copy_files_backends_agree(tmp_path, block_size):
    """copy_files of the compiled core and of the pure reference: same bytes written, same failure answers."""
    import random
    from array import array

    from nvfs_tools import _fastscan, scan_pure

    rng = random.Random(block_size)
    paths, starts, sizes, offsets = [], array("Q"), array("Q"), array("Q")
    offset = 3 * block_size
    for i in range(120):
        data = rng.randbytes(rng.choice([0, 1, 100, 4095, 4096, 4097, 9000, 45056, rng.randrange(300_000)]))
        if i in (5, 6, 50):  # bigger than the compiled core's staging buffer: sent on their own
            data = rng.randbytes((1 << 20) + 3 * i)
        folder = tmp_path / f"d{i // 7 % 3}"  # runs of one directory, then another (the core keeps it open)
        folder.mkdir(exist_ok=True)
        path = folder / f"f{i}"
        path.write_bytes(data)
        start = rng.randrange(len(data)) // block_size * block_size if data and i % 3 == 0 else 0
        size = len(data) - start + {7: 100, 8: 3 * block_size + 5}.get(i, 0)  # these end early: zero padded
        paths.append(os.fsencode(path))
        starts.append(start)
        sizes.append(size)
        offsets.append(offset)
        offset += -(-size // block_size) * block_size + (block_size if rng.random() < 0.2 else 0)
    link = tmp_path / "d1" / "link"  # never followed: a symbolic link is copied as one, not opened
    link.symlink_to(tmp_path / "d0" / "f0")
    results = []
    for backend in (_fastscan, scan_pure):
        img = tmp_path / f"{backend.__name__}.img"
        img.write_bytes(b"\xaa" * (offset + block_size))
        fd = os.open(img, os.O_RDWR)
        try:
            answer = backend.copy_files(fd, paths, starts, sizes, offsets, block_size)
            failures = [
                backend.copy_files(fd, [*paths[:3], bad], [0] * 4, [1] * 4, [0] * 4, block_size)
                for bad in (b"/nonexistent/x", os.fsencode(tmp_path / "d0" / "gone"), os.fsencode(link))
            ]
        finally:
            os.close(fd)
        bad_fd = backend.copy_files(-1, paths[:2], [0, 0], [1, 1], [0, block_size], block_size)
        results.append((answer, failures, bad_fd, img.read_bytes()))
    assert results[0] == results[1]
    assert results[0][:3] == (
        (-1, 0, 0),
        [(3, errno.ENOENT, 0), (3, errno.ENOENT, 0), (3, errno.ELOOP, 0)],
        (0, errno.EBADF, 2),
    )
    written = results[0][3]
    assert written[offsets[1] : offsets[1] + sizes[1]] == (tmp_path / "d0" / "f1").read_bytes()[starts[1] :]
    assert written[offsets[60] : offsets[60] + sizes[60]] == (tmp_path / "d2" / "f60").read_bytes()[starts[60] :]


def test_take_bits_backends_agree():
    """Inode numbers for a directory's children: the compiled populate_take_bits takes the same bits, in the
    same order, as the pure reference, on bitmaps with runs, single holes and a cursor past the free space."""
    import random

    _fastscan = pytest.importorskip("nvfs_tools._fastscan")
    rng = random.Random(7)
    for trial in range(300):
        nbytes = rng.randint(1, 64)
        bm = bytearray(rng.choice((0, 0xFF, rng.getrandbits(8))) for _ in range(nbytes))
        nbits = nbytes * 8 - rng.randint(0, 7)
        start, count = rng.randrange(nbytes), rng.randint(0, nbytes * 8 + 3)
        pure_bm, core_bm = bytearray(bm), bytearray(bm)
        pure = pop._take_bits_pure(pure_bm, nbits, start, count, 1000 * trial)
        core = _fastscan.populate_take_bits(core_bm, nbits, start, count, 1000 * trial)
        assert core == pure and core_bm == pure_bm, (trial, bytes(bm).hex(), nbits, start, count)
        got, lo, hi = pure
        assert len(got) == len(set(got)) <= count
        assert all(not bm[(n - 1000 * trial) // 8] >> ((n - 1000 * trial) % 8) & 1 for n in got)


def test_scan_of_an_entry_whose_path_is_too_long_agrees(tmp_path):
    """An entry whose whole path reaches PATH_MAX: the pure walk's listxattr fails on it (flagged, the
    caller reports it), and so does the compiled one, even though listxattrat(2) would reach it."""
    _fastscan = pytest.importorskip("nvfs_tools._fastscan")
    deep = os.fsencode(tmp_path)
    while len(deep) < 3900:
        deep += b"/" + b"d" * min(200, 3900 - len(deep))
    os.makedirs(deep)
    name = b"f" * 250
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    assert len(deep) + 1 + len(name) >= 4096
    simple_max = pop._simple_max(4096)
    pure = pop._scan_dirs_pure([deep], 4096, simple_max)
    assert _fastscan.populate_scan_dirs([deep], 4096, simple_max) == pure
    assert pure[0][1][pop.META_FIELDS.index("xattr")] == 1


def _listxattrat_works() -> bool:
    """Whether this kernel (and any seccomp filter) answers listxattrat(2), number 465 on x86-64 and arm64."""
    import ctypes
    import platform

    if platform.machine() not in ("x86_64", "aarch64"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        answer = libc.syscall(465, fd, b"tmp", 0x100, None, 0)  # AT_SYMLINK_NOFOLLOW
    finally:
        os.close(fd)
    return answer >= 0 or ctypes.get_errno() not in (errno.ENOSYS, errno.EPERM)


def test_scan_dirs_backends_agree(full_tree):
    """The compiled walk scan (system calls without the GIL) answers as the pure reference does, for every
    directory of the full tree (every file type, hard links, holes, xattrs, odd names) and a missing one."""
    _fastscan = pytest.importorskip("nvfs_tools._fastscan")
    src, _made = full_tree
    paths = [os.fsencode(dirpath) for dirpath, _dirs, _files in os.walk(src)] + [os.fsencode(src) + b"/missing"]
    simple_max = pop._simple_max(4096)
    pure = pop._scan_dirs_pure(paths, 4096, simple_max)
    assert _fastscan.populate_scan_dirs(paths, 4096, simple_max) == pure
    assert [_fastscan.populate_scan_dir(p, 4096, simple_max) for p in paths] == pure
    previous = _fastscan.populate_scan_by_path(True)  # xattrs asked by whole path, as on kernels before 6.13
    assert previous is (not _listxattrat_works())  # the scans above asked listxattrat(2) where it answers
    try:
        assert _fastscan.populate_scan_dirs(paths, 4096, simple_max) == pure
    finally:
        _fastscan.populate_scan_by_path(previous)
    xattr = pop.META_FIELDS.index("xattr")
    assert any(any(r[1][xattr :: pop._NF]) for r in pure[:-1])  # files with xattrs
    assert pure[-1][4:6] == (errno.ENOENT, 0)
    assert any(sum(r[2]) for r in pure) and any(0 in r[2] for r in pure)  # simple files and others


@pytest.mark.parametrize("when", [10**10, -(10**10)])  # the year 2286, the year 1653: both fit the image, not the walk
def test_timestamp_out_of_range_is_refused_by_name(tmp_path, when):
    """A time outside what the walk's 64-bit nanosecond counts hold stops the run naming the file (the
    compiled scan used to wrap it into a wrong date, the pure one to fail with an internal error)."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "ok").write_bytes(b"ok")
    odd = src / "d" / "odd"
    odd.write_bytes(b"x")
    try:
        os.utime(odd, (0, when))
    except (OSError, OverflowError):
        pytest.skip("the host filesystem does not take such a time")
    paths = [os.fsencode(src / "d")]
    simple_max = pop._simple_max(4096)
    pure = pop._scan_dirs_pure(paths, 4096, simple_max)
    assert pure[0][4:7] == (errno.EOVERFLOW, 3, b"odd")
    if pop._Backend().scan_dirs is not pop._scan_dirs_pure:
        assert pop._Backend().scan_dirs(paths, 4096, simple_max)[0][3:] == pure[0][3:]
    img = make_image(tmp_path / "img")
    with Volume.open(img, writable=True, unordered=True) as vol:
        with pytest.raises(pop.SourceError, match=r"d/odd: a timestamp outside the years 1677-2262"):
            pop.populate(vol, src)


def test_source_xattr_the_library_would_refuse_names_the_file(tmp_path, monkeypatch):
    """xattrs are written raw, so the walk checks them as Volume.set_xattr would (here a malformed ACL), naming
    the source file."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    real_read = pop._read_xattrs
    monkeypatch.setattr(
        pop,
        "_read_xattrs",
        lambda path: [(b"system.posix_acl_access", b"\x02\0\0\0junk")] if path.endswith(b"/f") else real_read(path),
    )
    real_scan = pop._Backend.__init__

    def scan_with_xattr_flag(self):  # the entry must take the Python path: the scan marks it as having xattrs
        real_scan(self)
        scan = self.scan_dirs

        def flagged(paths, *args):
            out = scan(paths, *args)
            for names, meta, simple, *_rest in out:
                for i, name in enumerate(names):
                    if name == b"f":
                        meta[i * pop._NF + pop.META_FIELDS.index("xattr")] = 1
                        simple[i] = 0
            return out

        self.scan_dirs = flagged

    monkeypatch.setattr(pop._Backend, "__init__", scan_with_xattr_flag)
    img = make_image(tmp_path / "img")
    with Volume.open(img, writable=True, unordered=True) as vol:
        with pytest.raises(pop.SourceError, match=r"src/f: extended attributes cannot be stored: .*posix_acl_access"):
            pop.populate(vol, src)


def test_reproducible_walk_does_not_depend_on_creation_order(tmp_path, monkeypatch):
    """With SOURCE_DATE_EPOCH the walk takes each directory's entries in name order, so the same tree made
    in another order gets the same inode number at every path (readdir order follows creation here)."""
    layout = ["d1/", "d1/x", "d1/s/", "d1/s/f", "d2/", "d2/y", "a", "b", "c/", "c/z"]
    numbers = []
    for tree, order in (("t1", layout), ("t2", layout[::-1])):
        src = tmp_path / tree
        src.mkdir()
        made: set[str] = set()
        for rel in order:
            parts = rel.rstrip("/").split("/")
            for k in range(1, len(parts)):
                parent = "/".join(parts[:k])
                if parent not in made:
                    (src / parent).mkdir(exist_ok=True)
                    made.add(parent)
            if rel.endswith("/"):
                (src / rel).mkdir(exist_ok=True)
                made.add(rel.rstrip("/"))
            else:
                (src / rel).write_bytes(rel.encode())
        monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
        img = make_image(tmp_path / f"{tree}.img")
        with Volume.open(img, writable=True, unordered=True) as vol:
            pop.populate(vol, src)
        with Volume.open(img) as vol:
            numbers.append({rel: vol.lookup(b"/" + rel.rstrip("/").encode()) for rel in layout})
    assert numbers[0] == numbers[1]
