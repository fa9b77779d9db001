"""mkfs.nvfs through its real command line: geometry edges, options, refusals, reproducibility."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time

import pytest
from test_mkfs_helpers import EPOCH, FIXED_UUID, file_hash, mkfs, verify_image

from nvfs_tools import format as fmt
from nvfs_tools import probe
from nvfs_tools.volume import Volume

BS = 4096
BPG = BS * 8
SMALLEST = 23 * BS  # spec/format.md 2.3: header, bitmap, counters, ibm, 1 itable, journal, 16 data, backup


@pytest.fixture
def img(tmp_path):
    return tmp_path / "fs.img"


def _ok(*args, **kw):
    res = mkfs(*args, **kw)
    assert res.code == 0, res.err
    return res


# ---------------------------------------------------------------------------
# Geometry at the edges, checked byte by byte
# ---------------------------------------------------------------------------


def test_smallest_device_accepted(img):
    _ok(img, str(SMALLEST), "-q")
    facts = verify_image(img)
    assert facts["geo"].group_count == 1 and facts["geo"].blocks_count == 23
    assert facts["dyn"].free_blocks == 16 - facts["root"].blocks


def test_one_block_too_small_is_refused_and_leaves_nothing(img):
    res = mkfs(img, str(SMALLEST - BS))
    assert res.code == 1
    assert "too small" in res.err and res.err.count("\n") == 1
    assert not img.exists(), "a refused run must not leave the image it created"


def test_one_block_short_of_a_group_boundary(img):
    _ok(img, str((2 * BPG - 1) * BS), "-q")
    geo = verify_image(img)["geo"]
    assert geo.group_count == 2 and geo.group_end(1) == geo.blocks_count == 2 * BPG - 1
    assert geo.backup_block == 2 * BPG - 2


def test_partial_last_group(img):
    _ok(img, str((3 * BPG + 1000) * BS), "-q")
    geo = verify_image(img)["geo"]
    assert geo.group_count == 4 and geo.group_end(3) - geo.group_start(3) == 1000


def test_tail_too_short_for_a_group_stays_unused(img):
    _ok(img, str((BPG + 20) * BS), "-q")
    geo = verify_image(img)["geo"]
    assert geo.group_count == 1 and geo.blocks_count == BPG + 20 and geo.backup_block == BPG + 19


def test_many_groups(img):
    _ok(img, "8G", "-q")
    assert verify_image(img, itable_groups=8)["geo"].group_count == 64


def test_one_tib_sparse_image_is_fast(tmp_path):
    path = "/dev/shm/nvfs-test-1t.img" if os.path.isdir("/dev/shm") else str(tmp_path / "1t.img")
    try:
        t0 = time.perf_counter()
        _ok(path, "1T", "-q")
        elapsed = time.perf_counter() - t0
        facts = verify_image(path, itable_groups=4)
        assert facts["geo"].group_count == 8192
        assert os.stat(path).st_blocks * 512 < 256 << 20, "inode tables must stay holes"
        assert elapsed < 10, f"mkfs of 1 TiB took {elapsed:.1f} s"
    finally:
        if os.path.exists(path):
            os.unlink(path)


@pytest.mark.parametrize("block_size", [8192, 65536])
def test_other_block_sizes(img, block_size):
    _ok(img, "64M", "-b", str(block_size), "-q")
    facts = verify_image(img)
    assert facts["geo"].block_size == block_size
    assert facts["static"].log_block_size == block_size.bit_length() - 1


def test_existing_garbage_file_gets_zeroed_tables(img):
    """Not a fresh image: inode tables and journal must be zeroed (hole punch), not trusted."""
    with open(img, "wb") as f:
        f.write(b"\xa5" * (32 << 20))
    _ok(img, "-q")
    verify_image(img)


def test_nodiscard_on_existing_file_still_zeroes(img):
    with open(img, "wb") as f:
        f.write(b"\x5a" * (16 << 20))
    res = _ok(img, "-E", "nodiscard")
    assert "inode tables: punch" in res.out
    verify_image(img)


def test_image_file_that_is_one_hole_is_not_probed_nor_zeroed(img, monkeypatch):
    """``truncate -s`` then mkfs: nothing to find or clear, like an image mkfs created (blkid is not asked)."""
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    asked = []
    monkeypatch.setattr(probe, "_blkid", lambda path: asked.append(path) or [])
    res = _ok(img, "-F")
    assert "inode tables: sparse" in res.out and asked == []
    verify_image(img)


def test_image_file_with_any_data_is_probed_and_zeroed(img, monkeypatch):
    """One written byte anywhere and the file is treated as used: blkid asked, tables cleared."""
    with open(img, "wb") as f:
        f.truncate(64 << 20)
        f.seek(40 << 20)
        f.write(b"\x01")
    asked = []
    monkeypatch.setattr(probe, "_blkid", lambda path: asked.append(path) or [])
    res = _ok(img, "-F", "-E", "nodiscard")
    assert "inode tables: punch" in res.out and asked == [str(img)]
    verify_image(img)


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


def test_options_are_recorded(img):
    _ok(
        img,
        "256M",
        "-q",
        "-L",
        "données-ü",
        "-U",
        FIXED_UUID,
        "-N",
        "5000",
        "-E",
        "journal_slots=24,root_owner=1000:100,hash_seed=00112233445566778899aabbccddeeff",
    )
    facts = verify_image(img)
    st = facts["static"]
    assert st.label.rstrip(b"\0") == "données-ü".encode()
    assert str(__import__("uuid").UUID(bytes=bytes(st.uuid))) == FIXED_UUID
    assert st.journal_slots == 24 and facts["geo"].journal_blocks == 3
    assert st.inodes_count >= 5000 and st.inodes_count - 5000 < 2 * 16 * st.group_count
    assert bytes(st.hash_seed) == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert (facts["root"].uid, facts["root"].gid) == (1000, 100)


def test_bytes_per_inode(img):
    _ok(img, "256M", "-q", "-i", "65536")
    assert verify_image(img)["static"].inodes_count == (256 << 20) // 65536


@pytest.mark.parametrize("owner", [None, (1000, 100)])
def test_quota_feature(img, owner):
    """spec/format.md 8: usage counts the root and every inode >= 11, per uid, per gid, all in project 0."""
    extra = ["-E", f"root_owner={owner[0]}:{owner[1]}"] if owner else []
    _ok(img, "64M", "-q", "-O", "quota", *extra)
    verify_image(img, quota=True)
    from nvfs_tools.quota import read_usage

    uid, gid = owner or (0, 0)
    with Volume.open(str(img)) as vol:
        bs = vol.block_size
        root_bytes = vol.read_inode(fmt.ROOT_INO).blocks * bs
        lf_bytes = vol.read_inode(fmt.FIRST_INO).blocks * bs
        want = {fmt.USR_QUOTA_INO: {}, fmt.GRP_QUOTA_INO: {}, fmt.PRJ_QUOTA_INO: {}}
        for qino, root_id in ((fmt.USR_QUOTA_INO, uid), (fmt.GRP_QUOTA_INO, gid), (fmt.PRJ_QUOTA_INO, 0)):
            for qid, nbytes in ((root_id, root_bytes), (0, lf_bytes)):
                b, i = want[qino].get(qid, (0, 0))
                want[qino][qid] = (b + nbytes, i + 1)
        for qino, records in want.items():
            size = vol.read_inode(qino).size
            assert size % fmt.QUOTA_RECORD_SIZE == 0 and size // fmt.QUOTA_RECORD_SIZE == max(records) + 1
            for qid in range(size // fmt.QUOTA_RECORD_SIZE):
                assert read_usage(vol, qino, qid) == records.get(qid, (0, 0)), (qino, qid)


def test_total_free_blocks_closed_form():
    from nvfs_tools.layout import group_free_blocks, total_free_blocks

    for blocks in (23, 40, BPG - 1, BPG, BPG + 20, BPG + 2000, 2 * BPG - 1, 5 * BPG + 777):
        for slots in (1, 8, 100):
            try:
                geo = fmt.compute_geometry(blocks * BS, BS, journal_slots=slots)
            except fmt.GeometryError:
                assert blocks < 40 and slots > 8
                continue
            assert total_free_blocks(geo) == sum(group_free_blocks(geo, g) for g in range(geo.group_count))
            assert total_free_blocks(geo) == geo.data_blocks


def test_xattr_feature_can_be_cleared(img):
    _ok(img, "64M", "-q", "-O", "^xattr")
    assert verify_image(img)["static"].feature_compat == 0


def test_lost_found_is_in_root(img):
    _ok(img, "1G", "-q")
    with Volume.open(str(img)) as vol:
        assert [(e.name, e.ino) for e in vol.listdir(fmt.ROOT_INO)] == [(fmt.LOST_FOUND_NAME, fmt.FIRST_INO)]
        assert vol.lookup(b"/lost+found") == fmt.FIRST_INO


@pytest.mark.parametrize(("size", "block_size", "root_owner"), [(64 << 20, 4096, (0, 0)), (300 << 20, 8192, (7, 8))])
def test_layout_lost_found_is_what_the_library_makes(tmp_path, size, block_size, root_owner):
    """A plain mkfs writes lost+found in the layout; the bytes must be Volume.mkdir's (as mkfs did it before)."""
    from nvfs_tools import layout
    from nvfs_tools import mkfs as mkfs_module
    from nvfs_tools.device import Device

    geo = fmt.compute_geometry(size, block_size)
    when = (1700000000, 123)
    args = {"uuid": bytes(range(16)), "hash_seed": bytes(range(16, 32)), "mkfs_time": when, "fresh": True}
    owner = {"root_uid": root_owner[0], "root_gid": root_owner[1]}
    hashes = []
    for in_layout in (True, False):
        path = tmp_path / f"{in_layout}.img"
        with open(path, "wb") as f:
            f.truncate(size)
        with Device(str(path), writable=True, unordered=True) as dev:
            result = layout.make_filesystem(dev, geo, lost_found=in_layout, **args, **owner)
            assert result.lost_found == in_layout
            if not in_layout:
                times = {
                    f"{t}{s}": v
                    for t in ("atime", "mtime", "ctime", "btime")
                    for s, v in (("", 1700000000), ("_nsec", 123))
                }
                dev.hold_open = True
                vol = Volume.from_device(dev)
                mkfs_module._lost_found_through_library(vol, times, when)
                assert (vol.dyn.free_blocks, vol.dyn.free_inodes) == (result.free_blocks - 1, result.free_inodes - 1)
                vol.close()
                dev.hold_open = False
                stamp = fmt.SB_DYNAMIC_OFFSET + fmt.field_offset(fmt.SuperblockDynamic, "last_write_time")
                dev.write(stamp, when[0].to_bytes(8, "little"))  # as mkfs pins it after the library
            else:
                free = (result.free_blocks, result.free_inodes)
        hashes.append(file_hash(path))
    assert hashes[0] == hashes[1]
    assert free == (layout.total_free_blocks(geo) - 1, geo.inodes_count - layout.RESERVED_INODES - 1)


def test_summary_and_quiet(img):
    res = _ok(img, "1G", "-U", FIXED_UUID)
    assert f"Filesystem UUID: {FIXED_UUID}" in res.out
    assert "262144 4k blocks and 65536 inodes" in res.out
    assert "8 block groups" in res.out and "backup on block 262143" in res.out
    os.unlink(img)
    assert _ok(img, "1G", "-q").out == ""


def test_dry_run_writes_nothing(img):
    with open(img, "wb") as f:
        f.write(os.urandom(1 << 20))
        f.truncate(64 << 20)
    before = file_hash(img)
    res = _ok(img, "-n", "-v")
    assert "Dry run" in res.out and "group 0: blocks 0-" in res.out
    assert file_hash(img) == before


def test_dry_run_does_not_create(img):
    res = _ok(img, "1T", "-n")
    assert "8192 block groups" in res.out
    assert not img.exists()


def test_reproducible_with_source_date_epoch(tmp_path):
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    _ok(a, "300M", "-q", "-U", FIXED_UUID, "-L", "repro", env=env)
    time.sleep(0.01)
    _ok(b, "300M", "-q", "-U", FIXED_UUID, "-L", "repro", env=env)
    assert file_hash(a) == file_hash(b)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read(1 << 20) == fb.read(1 << 20)
    assert verify_image(a)["static"].mkfs_time == int(EPOCH)
    c = tmp_path / "c.img"
    _ok(c, "300M", "-q", "-U", "clear", "-L", "repro", env=env)
    assert file_hash(c) != file_hash(a)


def test_not_reproducible_without_fixed_inputs(tmp_path):
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    _ok(a, "64M", "-q", "-U", FIXED_UUID)
    _ok(b, "64M", "-q", "-U", FIXED_UUID)
    sa, sb = verify_image(a)["static"], verify_image(b)["static"]
    assert bytes(sa.hash_seed) != bytes(sb.hash_seed), "hash seed is random unless SOURCE_DATE_EPOCH is set"


def test_size_on_a_file_with_a_signature_changes_nothing_when_refused(img):
    _blank(img)
    _put(img, 0, b"XFSB")
    before = file_hash(img)
    res = mkfs(img, "128M")
    assert res.code == 1 and "XFS" in res.err
    assert img.stat().st_size == 64 << 20 and file_hash(img) == before
    res = mkfs(img, "128M", "-n")
    assert res.code == 0 and img.stat().st_size == 64 << 20 and "32768 4k blocks" in res.out


def test_size_fills_an_empty_file(img):
    img.write_bytes(b"")
    _ok(img, "64M", "-q")
    assert img.stat().st_size == 64 << 20
    verify_image(img)


def test_resize_existing_file_with_size(img):
    img.write_bytes(b"")
    os.truncate(img, 64 << 20)
    _ok(img, "128M", "-q")
    assert img.stat().st_size == 128 << 20
    verify_image(img)
    res = mkfs(img, "64M", "-q")
    assert res.code == 1 and "smaller" in res.err
    _ok(img, "64M", "-q", "-F")
    assert img.stat().st_size == 64 << 20


# ---------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------


def _blank(img, size=64 << 20):
    with open(img, "wb") as f:
        f.truncate(size)


def _put(img, offset, data):
    with open(img, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _mbr(img):
    entry = bytes([0x80, 1, 1, 0, 0x83, 0xFE, 0xFF, 0xFF]) + (2048).to_bytes(4, "little") + (4096).to_bytes(4, "little")
    _put(img, 446, entry)
    _put(img, 510, b"\x55\xaa")


def _vfat(img):
    _put(img, 0, b"\xeb\x58\x90mkfs.fat")
    _put(img, 82, b"FAT32   ")
    _put(img, 510, b"\x55\xaa")


def _ext4(img):
    if not shutil.which("mke2fs"):
        pytest.skip("mke2fs not installed")
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "old", str(img)], check=True)


def _swap(img):
    if shutil.which("mkswap"):
        subprocess.run(["mkswap", str(img)], check=True, capture_output=True)
    else:
        _put(img, 4086, b"SWAPSPACE2")


def _nvfs(img):
    assert mkfs(img, "-q", "-L", "previous").code == 0


SIGNATURES = {
    "NVFS filesystem": _nvfs,
    "ext4 filesystem": _ext4,
    "XFS filesystem": lambda p: _put(p, 0, b"XFSB"),
    "btrfs filesystem": lambda p: _put(p, 65536 + 64, b"_BHRfS_M"),
    "swap space": _swap,
    "vfat filesystem": _vfat,
    "LUKS encrypted volume": lambda p: _put(p, 0, b"LUKS\xba\xbe\x00\x01"),
    "dos partition table": _mbr,
    "GPT partition table": lambda p: (_mbr(p), _put(p, 512, b"EFI PART")),
    "LVM2 physical volume": lambda p: _put(p, 512, b"LABELONE\x01\x00\x00\x00\x00\x00\x00\x00"),
    "Linux RAID member": lambda p: _put(p, 4096, b"\xfcN+\xa9\x01\x00\x00\x00"),
}


@pytest.mark.parametrize("kind", list(SIGNATURES))
def test_signature_refused_without_force(img, kind):
    _blank(img)
    SIGNATURES[kind](img)
    before = file_hash(img)
    res = mkfs(img)
    assert res.code == 1
    assert kind in res.err and "-F" in res.err and res.err.count("\n") == 1
    assert file_hash(img) == before, "a refused mkfs must write nothing"
    _ok(img, "-F", "-q")
    verify_image(img)
    with open(img, "rb") as f:
        data = f.read(1 << 20)
    found = probe.detect_signatures(lambda o, n: data[o : o + n] if o + n <= len(data) else b"", len(data))
    assert [s.kind for s in found] == ["NVFS filesystem"], found


def test_blkid_agrees_after_force(img):
    blkid = shutil.which("blkid")
    if not blkid:
        pytest.skip("blkid not installed")
    _blank(img)
    _ext4(img)
    _ok(img, "-F", "-q")
    out = subprocess.run([blkid, "-p", "-o", "export", str(img)], capture_output=True, text=True).stdout
    assert "TYPE=ext4" not in out, "the old ext4 signature must be gone"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-b", "3000"], "invalid block size"),
        (["-b", "2M"], "invalid block size"),
        (["-b", "1024"], "invalid block size"),
        (["-L", "x" * 65], "at most 64 bytes"),
        (["-U", "not-a-uuid"], "invalid UUID"),
        (["-E", "bogus=1"], "unknown or malformed extended option"),
        (["-E", "journal_slots=0"], "invalid journal_slots"),
        (["-E", "root_owner=abc"], "invalid root_owner"),
        (["-E", "hash_seed=1234"], "invalid hash_seed"),
        (["-O", "compression"], "unknown feature"),
        (["-N", "100", "-i", "8192"], "exclusive"),
        (["-N", "10000000"], "do not fit"),
        (["-i", "12"], "bytes-per-inode"),
        (["-L", "bad\udcff"], "not valid UTF-8"),
    ],
)
def test_bad_options(img, args, message):
    res = mkfs(img, "64M", *args)
    assert res.code == 1
    assert message in res.err, res.err
    assert not img.exists()


def test_missing_device_without_size(tmp_path):
    res = mkfs(tmp_path / "nope.img")
    assert res.code == 1 and "no such file" in res.err and "SIZE" in res.err


def test_missing_parent_directory(tmp_path):
    res = mkfs(tmp_path / "no" / "such.img", "64M")
    assert res.code == 1 and "parent directory" in res.err


def test_directory_refused(tmp_path):
    res = mkfs(tmp_path)
    assert res.code == 1 and "is a directory" in res.err


def test_char_device_refused():
    res = mkfs("/dev/null")
    assert res.code == 1 and "not a devdax" in res.err
    res = mkfs("/dev/null", "1G")
    assert res.code == 1 and "SIZE cannot be given" in res.err


def test_empty_file_refused(img):
    img.write_bytes(b"")
    res = mkfs(img)
    assert res.code == 1 and "empty" in res.err


def test_bad_size_argument(img):
    res = mkfs(img, "12Q")
    assert res.code == 1 and "invalid SIZE" in res.err
    assert not img.exists()


def test_usage_error_exit_code_is_one(img):
    res = mkfs(img, "1G", "--no-such-option")
    assert res.code == 1 and "No such option" in res.err


def test_help_documents_exit_codes():
    res = mkfs("--help")
    assert res.code == 0 and "Exit status" in res.out and "SOURCE_DATE_EPOCH" in res.out


def test_installed_console_script(tmp_path):
    exe = shutil.which("mkfs.nvfs")
    if exe is None:
        pytest.skip("mkfs.nvfs is not installed (pip install -e .)")
    path = tmp_path / "cli.img"
    done = subprocess.run([exe, str(path), "32M"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Filesystem ready" in done.stdout
    verify_image(path)
    again = subprocess.run([exe, str(path)], capture_output=True, text=True)
    assert again.returncode == 1
    assert again.stderr.startswith("mkfs.nvfs: ") and "Traceback" not in again.stderr
    assert stat.S_ISREG(path.stat().st_mode)


def test_old_signature_in_a_data_block_is_erased(img):
    """On the smallest filesystem the btrfs superblock (64 KiB) falls in a data block mkfs does not write."""
    _blank(img, SMALLEST)
    _put(img, 65536 + 64, b"_BHRfS_M")
    assert mkfs(img).code == 1
    res = _ok(img, "-F", "-v", "-E", "nodiscard")  # no hole punch: the wipe itself must remove it
    assert "erased the old btrfs filesystem signature" in res.out
    data = img.read_bytes()
    assert [s.kind for s in probe.detect_signatures(lambda o, n: data[o : o + n], len(data))] == ["NVFS filesystem"]
    verify_image(img)


@pytest.mark.parametrize("args", [["64M"], [str(SMALLEST)], ["1G", "-O", "quota", "-E", "root_owner=1000:100"]])
def test_fsck_finds_nothing_to_fix(img, args):
    """A second opinion from fsck.nvfs, which re-derives every rule on its own."""
    exe = shutil.which("fsck.nvfs")
    if exe is None:
        pytest.skip("fsck.nvfs is not installed (pip install -e .)")
    _ok(img, "-q", *args)
    done = subprocess.run([exe, "-fn", str(img)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello\n")
    (root / "sub" / "big.bin").write_bytes(os.urandom(100_000))
    os.symlink("a.txt", root / "link")
    return root


@pytest.mark.parametrize("quota", [False, True])
def test_populate_from_directory(tmp_path, img, quota):
    src = _tree(tmp_path / "src")
    _ok(img, "64M", "-q", "-d", src, *(["-O", "quota"] if quota else []))
    with Volume.open(str(img)) as vol:
        assert vol.read(vol.lookup(b"/a.txt")) == b"hello\n"
        assert vol.read(vol.lookup(b"/sub/big.bin")) == (src / "sub" / "big.bin").read_bytes()
        assert vol.readlink(vol.lookup(b"/link")) == b"a.txt"
        assert vol.lookup(b"/lost+found") == fmt.FIRST_INO
    exe = shutil.which("fsck.nvfs")
    if exe:
        done = subprocess.run([exe, "-fn", str(img)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


def test_populate_source_must_be_a_directory(tmp_path, img):
    res = mkfs(img, "64M", "-d", tmp_path / "missing")
    assert res.code == 1 and "not a directory" in res.err and not img.exists()


def test_failed_populate_leaves_no_valid_superblock(tmp_path, img, monkeypatch):
    from nvfs_tools import populate

    def failing(vol, source, **kwargs):
        vol.mkdir(fmt.ROOT_INO, b"partial", 0o755)
        raise populate.SourceError(f"{os.fsdecode(source)}/x: cannot read: Input/output error")

    monkeypatch.setattr(populate, "populate", failing)
    _blank(img, 160 << 20)  # two groups: the copy at the start of group 1 must go too
    res = mkfs(img, "-d", _tree(tmp_path / "src"))
    assert res.code == 1 and "cannot read" in res.err and res.err.count("\n") == 1
    data = img.read_bytes()
    found = probe.detect_signatures(lambda o, n: data[o : o + n], len(data))
    assert not any(s.is_nvfs for s in found), "a half-populated image must not look like NVFS"
    backup = (len(data) // BS - 1) * BS
    assert data[backup : backup + 8] == bytes(8) and data[BPG * BS : BPG * BS + 8] == bytes(8)
    assert data[BPG * BS + 8 : BPG * BS + 16] != bytes(8), "only the magic is erased"


@pytest.mark.parametrize(("spec", "check"), [("time", lambda u: u.version == 1), ("clear", lambda u: u.int == 0)])
def test_uuid_kinds(img, spec, check):
    import uuid

    _ok(img, "64M", "-q", "-U", spec)
    assert check(uuid.UUID(bytes=bytes(verify_image(img)["static"].uuid)))


@pytest.mark.parametrize(
    ("bad", "code", "message"),
    [((0, 512), 1, "falls in filesystem metadata"), ((40 << 20, 4096), 0, "1 data block(s) lie on media")],
)
def test_bad_media(img, monkeypatch, bad, code, message):
    """Bad ranges the kernel lists: refused in metadata, warned about in data."""
    from nvfs_tools.device import Device

    real = Device._sysfs_facts

    def with_badblocks(self, st):
        real(self, st)
        self.badblocks = [bad]

    monkeypatch.setattr(Device, "_sysfs_facts", with_badblocks)
    _blank(img)
    res = mkfs(img, "-q")
    assert res.code == code and message in res.err, res.err


@pytest.mark.parametrize("args", [["300M", "-i", "1024"], ["300M", "-b", "8192", "-i", "1024"]])
def test_inode_bitmap_of_several_blocks(img, args):
    _ok(img, "-q", *args)
    assert verify_image(img)["geo"].inode_bitmap_blocks > 1


@pytest.mark.parametrize("name", sorted(fmt.PLAIN))
def test_plain_layouts_are_the_construct_schemas(name):
    """mkfs builds from format.PLAIN (no construct at start-up): same offsets, sizes and bytes as the schemas."""
    plain, schema = fmt.PLAIN[name], getattr(fmt, name)
    assert fmt.field_layout(plain) == fmt.field_layout(schema)
    assert plain.sizeof() == schema.sizeof()
    if any(sub.kind == "struct" for sub in plain.subcons):
        return  # nested structures are laid out only
    rng = __import__("random").Random(name)
    values = {}
    for sub in schema.subcons:
        inner = getattr(sub, "subcon", sub)
        kind = type(inner).__name__
        if sub.name is None or kind in ("Const", "Padding", "Padded"):
            continue
        if kind == "Array":
            width = inner.subcon.sizeof()
            values[sub.name] = [rng.randrange(1 << (8 * width - 1)) for _ in range(inner.count)]
        elif kind == "Bytes" or kind == "StringEncoded":
            values[sub.name] = rng.randbytes(sub.sizeof())
        else:
            values[sub.name] = rng.randrange(1 << (8 * sub.sizeof() - 1))
    assert plain.build(values) == schema.build(values)
