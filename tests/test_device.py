"""The device layer: opening, refusing bad input, barriers that flush only what is dirty, sysfs facts."""

from __future__ import annotations

import os
import subprocess

import pytest

from nvfs_tools import device as devmod
from nvfs_tools import probe
from nvfs_tools.device import PAGE_SIZE, Device, MediaError, create_image, parse_badblocks
from nvfs_tools.errors import DeviceBusyError, DeviceError


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "dev.img"
    create_image(str(path), 4 << 20)
    return str(path)


class RecordingMap:
    """Stands in for the mmap object to record msync calls (mmap objects take no attributes)."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def flush(self, offset=0, size=None):
        self.calls.append((offset, size))
        return self.real.flush(offset, size) if size is not None else self.real.flush()

    def close(self):
        self.real.close()


def test_read_write_round_trip(image):
    with Device(image, writable=True) as dev:
        assert dev.kind == "file" and dev.size == 4 << 20 and not dev.dax
        dev.write(5000, b"hello")
        dev.pwrite(3 << 20, b"world")
        assert dev.read(5000, 5) == b"hello"
        assert bytes(dev.view[3 << 20 : (3 << 20) + 5]) == b"world", "pwrite is visible through the mapping"
    with open(image, "rb") as f:
        data = f.read()
    assert data[5000:5005] == b"hello" and data[3 << 20 : (3 << 20) + 5] == b"world"


def test_read_only_device_refuses_writes(image):
    with Device(image) as dev:
        with pytest.raises(DeviceError, match="read-only"):
            dev.write(0, b"x")
        with pytest.raises(TypeError):
            dev.view[0:1] = b"x"


def test_out_of_range_access(image):
    with Device(image, writable=True) as dev:
        with pytest.raises(DeviceError, match="outside the device"):
            dev.read(dev.size - 2, 4)
        with pytest.raises(DeviceError, match="outside the device"):
            dev.write(dev.size, b"x")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file or device"),
        (lambda p: os.mkdir(p), "is a directory"),
        (lambda p: open(p, "wb").close(), "empty"),
        (lambda p: os.mkfifo(p), "not a regular file or device"),
    ],
)
def test_bad_paths(tmp_path, make, message):
    path = str(tmp_path / "target")
    make(path)
    with pytest.raises(DeviceError, match=message) as info:
        Device(path, writable=True)
    assert info.value.exit_code == 8 and "\n" not in str(info.value)


def test_char_device_that_is_not_dax():
    with pytest.raises(DeviceError, match="not a devdax"):
        Device("/dev/null")


def test_parent_not_a_directory(image):
    with pytest.raises(DeviceError, match="no such file"):
        Device(os.path.join(image, "x"))


def test_read_only_filesystem(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8M", "none", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        create_image(str(mnt / "x.img"), 1 << 20)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(DeviceError, match="read-only media"):
            Device(str(mnt / "x.img"), writable=True)
        with Device(str(mnt / "x.img")) as dev:
            assert dev.size == 1 << 20
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_barrier_flushes_only_dirty_pages(image):
    dev = Device(image, writable=True)
    rec = dev.map = RecordingMap(dev.map)
    try:
        dev.barrier()
        assert rec.calls == [], "nothing written, nothing flushed"
        dev.write(PAGE_SIZE * 10 + 8, b"a" * 8)
        dev.write(PAGE_SIZE * 10 + 100, b"b" * 8)
        dev.write(PAGE_SIZE * 700 + 8, b"c" * 8)
        dev.barrier()
        assert sorted(rec.calls) == [(PAGE_SIZE * 10, 108), (PAGE_SIZE * 700, 16)]
        rec.calls.clear()
        dev.barrier()
        assert rec.calls == []
        for i in range(200):  # many scattered writes: ranges are merged, never dropped
            dev.write(PAGE_SIZE * (3 * i + 1), b"z")
        dev.barrier()
        flushed = rec.calls
        assert 0 < len(flushed) <= 64
        for i in range(200):
            page = PAGE_SIZE * (3 * i + 1)
            assert any(off <= page and page + 1 <= off + size for off, size in flushed), page
    finally:
        dev.map = rec.real
        dev.close()


def test_unordered_mode_flushes_once_at_close(image):
    dev = Device(image, writable=True, unordered=True)
    rec = dev.map = RecordingMap(dev.map)
    dev.write(0, b"x")
    dev.barrier()
    dev.write(PAGE_SIZE * 5, b"y")
    dev.barrier()
    assert rec.calls == []
    dev.flush_all()
    assert rec.calls == [(0, None)]
    dev.map = rec.real
    dev.close()


def test_zero_range_punches_holes(image):
    with Device(image, writable=True) as dev:
        dev.pwrite(0, b"\xff" * (2 << 20))
    before = os.stat(image).st_blocks
    with Device(image, writable=True) as dev:
        dev.zero_range(PAGE_SIZE, 1 << 20)
        assert dev.read(PAGE_SIZE, 1 << 20) == bytes(1 << 20)
        assert dev.read(0, PAGE_SIZE) == b"\xff" * PAGE_SIZE
        assert dev.read(PAGE_SIZE + (1 << 20), 16) == b"\xff" * 16
    assert os.stat(image).st_blocks < before


def test_preallocate_allocates_without_changing_contents(image):
    with Device(image, writable=True) as dev:
        dev.pwrite(1 << 20, b"kept")
    before = os.stat(image).st_blocks
    with Device(image, writable=True) as dev:
        assert dev.preallocate(1 << 20, 2 << 20)
        assert not dev.preallocate(3 << 20, 2 << 20)  # past the end of the device: refused
        assert dev.read(1 << 20, 8) == b"kept" + bytes(4)
        assert dev.read(2 << 20, 1 << 20) == bytes(1 << 20)
    grown = (os.stat(image).st_blocks - before) * 512
    assert (2 << 20) - 2 * PAGE_SIZE <= grown <= 2 << 20  # the page already written was allocated before
    assert os.path.getsize(image) == 4 << 20


def test_discard_whole_image(image):
    with Device(image, writable=True) as dev:
        dev.pwrite(0, b"\x01" * (1 << 20))
        assert dev.discard()
        assert dev.read(0, 1 << 20) == bytes(1 << 20)


def test_badblocks_parsing_and_media_errors(image):
    assert parse_badblocks("8 8\n100 1\nbogus\n") == [(4096, 4096), (51200, 512)]
    assert parse_badblocks("8 8\n", shift=4096 + 512, size=10000) == [(0, 3584)]
    with Device(image) as dev:
        dev.badblocks = [(8192, 512)]
        assert dev.read(0, 8192) == bytes(8192)
        with pytest.raises(MediaError, match="bad media"):
            dev.read(8000, 400)


def test_fake_sysfs_devdax_and_persistence_domain(tmp_path, monkeypatch):
    """sysfs lookups, against a fake tree shaped like the kernel's."""
    st = os.stat("/dev/null")
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    region = tmp_path / "devices" / "ndbus0" / "region0"
    daxdir = region / "dax0.0" / "dax0.0"
    daxdir.mkdir(parents=True)
    (tmp_path / "bus" / "dax").mkdir(parents=True)
    (daxdir / "subsystem").symlink_to(tmp_path / "bus" / "dax")
    (daxdir / "size").write_text(str(64 << 20) + "\n")
    (daxdir / "align").write_text(str(2 << 20) + "\n")
    (region / "persistence_domain").write_text("cpu_cache\n")
    chardir = tmp_path / "dev" / "char"
    chardir.mkdir(parents=True)
    (chardir / f"{major}:{minor}").symlink_to(daxdir)
    monkeypatch.setattr(probe, "SYSFS", str(tmp_path))
    assert devmod.is_devdax(st)
    assert devmod._dax_attr(st, "size") == str(64 << 20)
    assert devmod.persistence_domain_of(str(chardir / f"{major}:{minor}")) == "cpu_cache"
    # /dev/null now looks like devdax; mapping it fails with one clear line
    with pytest.raises(DeviceError, match="cannot map"):
        Device("/dev/null")


def test_mount_info_parsing(tmp_path, monkeypatch):
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 7:3 / /mnt/with\\040space rw,relatime shared:1 - ext4 /dev/loop3 rw\n23 1 0:5 / /proc rw - proc proc rw\n"
    )
    monkeypatch.setattr(probe, "MOUNTINFO", str(info))
    mounts = probe.read_mounts()
    assert mounts[0].devnum == (7, 3) and mounts[0].mount_point == "/mnt/with space"
    assert mounts[0].fstype == "ext4" and mounts[1].fstype == "proc"


def test_image_not_mounted_has_no_users(image):
    assert probe.find_users(image) == []


def test_create_image_refuses_existing(image):
    with pytest.raises(DeviceError, match="already exists"):
        create_image(image, 1 << 20)


def test_busy_error_is_a_device_error():
    assert issubclass(DeviceBusyError, DeviceError)


def _fake_dax(dev, domain):
    """Turn a page-cache Device into what a DAX mapping looks like to the barrier code."""
    calls, fences = [], []
    dev.dax = True
    dev.persistence_domain = domain
    dev._flush_range = lambda view, off, n: calls.append((off, n))
    dev._sfence = lambda: fences.append(1)
    return calls, fences


def test_dax_barrier_writes_back_only_dirty_cache_lines(image):
    with Device(image, writable=True) as dev:
        calls, fences = _fake_dax(dev, "memory_controller")
        dev.write(1000, b"x" * 8)
        dev.write(1 << 20, b"y" * 100)
        dev.barrier()
        assert sorted(calls) == [(960, 48), (1 << 20, 100)]
        assert fences == [1]
        calls.clear()
        dev.barrier()
        assert calls == []


def test_dax_unordered_flushes_recorded_ranges_at_the_end(image):
    with Device(image, writable=True, unordered=True) as dev:
        calls, _ = _fake_dax(dev, "memory_controller")
        dev.write(64, b"a")
        dev.barrier()
        dev.write(3 << 20, b"b" * 64)
        dev.barrier()
        assert calls == []
        dev.flush_all()
        assert sorted(calls) == [(64, 1), (3 << 20, 64)], "never the whole device"


def test_dax_cpu_cache_domain_needs_no_write_back(image):
    with Device(image, writable=True) as dev:
        calls, fences = _fake_dax(dev, "cpu_cache")
        dev.write(0, b"z")
        dev.barrier()
        assert calls == [] and fences == [1]
