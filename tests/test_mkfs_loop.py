"""mkfs.nvfs and the device layer on real loop devices (skipped, with the reason, where none can be attached)."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager

import pytest
from test_mkfs_helpers import file_hash, mkfs, verify_image

from nvfs_tools.device import Device
from nvfs_tools.errors import DeviceBusyError, DeviceError

pytestmark = pytest.mark.loopdev


@contextmanager
def loop_device(path, *extra):
    """Attach ``path`` to a free loop device; always detached afterwards."""
    if not shutil.which("losetup"):
        pytest.skip("losetup is not installed")
    done = subprocess.run(["losetup", "-f", "--show", *extra, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot attach a loop device: {done.stderr.strip() or 'losetup failed'}")
    dev = done.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@contextmanager
def mounted(dev, mnt):
    done = subprocess.run(["mount", dev, str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount {dev}: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.fixture
def backing(tmp_path):
    path = tmp_path / "loop.img"
    with open(path, "wb") as f:
        f.write(b"\xc3" * (4 << 20))  # garbage the inode tables must not inherit
        f.truncate(160 << 20)
    return path


def test_mkfs_on_loop_device(backing):
    with loop_device(backing) as dev:
        res = mkfs(dev, "-q")
        assert res.code == 0, res.err
        verify_image(dev)
        with Device(dev) as d:
            assert d.kind == "block" and d.size == 160 << 20
    verify_image(backing)


def test_size_refused_on_block_device(backing):
    with loop_device(backing) as dev:
        before = file_hash(backing)
        res = mkfs(dev, "64M")
        assert res.code == 1 and "SIZE cannot be given" in res.err
        assert file_hash(backing) == before


def test_exclusive_open_held(backing):
    with loop_device(backing) as dev:
        with Device(dev, writable=True):
            with pytest.raises(DeviceBusyError, match="in use"):
                Device(dev, writable=True)
            res = mkfs(dev, "-q")
            assert res.code == 1 and "in use" in res.err


def test_read_only_loop_device(backing):
    with loop_device(backing, "-r") as dev:
        with pytest.raises(DeviceError, match="read-only"):
            Device(dev, writable=True)
        res = mkfs(dev, "-F")
        assert res.code == 1 and "read-only" in res.err


def test_mounted_ext4_refused_naming_the_mount_point(tmp_path):
    if not shutil.which("mke2fs"):
        pytest.skip("mke2fs is not installed")
    img = tmp_path / "ext4.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", str(img)], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with loop_device(img) as dev, mounted(dev, mnt):
        for target in (dev, str(img)):
            for force in ([], ["-F"], ["-n"]):
                res = mkfs(target, *force)
                assert res.code == 1, (target, force, res.out)
                assert f"mounted on {mnt}" in res.err, res.err
                assert res.err.count("\n") == 1
        with pytest.raises(DeviceBusyError, match=str(mnt)):
            Device(str(img), writable=True)
        assert os.path.ismount(mnt)
    # the mounted filesystem writes to itself, so compare health, not bytes
    if shutil.which("e2fsck"):
        assert subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True).returncode == 0
