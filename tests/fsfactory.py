"""Test fixture helper: fresh NVFS images made the way mkfs makes them.

Uses :func:`nvfs_tools.layout.make_filesystem` (the mkfs library half) and then
adds lost+found through :meth:`Volume.mkdir`, as mkfs does.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import time

from nvfs_tools import format as fmt
from nvfs_tools import layout
from nvfs_tools.device import Device
from nvfs_tools.volume import Volume

SEED = bytes(range(16))


def make_image(
    path: str | os.PathLike,
    size: int = 64 << 20,
    *,
    block_size: int = 4096,
    inode_count: int | None = None,
    quota: bool = False,
    journal_slots: int = fmt.DEFAULT_JOURNAL_SLOTS,
) -> str:
    """Format a new image file at ``path`` (replaced if present) and return its path."""
    path = os.fspath(path)
    if os.path.exists(path):
        os.unlink(path)
    with open(path, "wb") as f:
        f.truncate(size)
    geo = fmt.compute_geometry(size, block_size, inode_count=inode_count, journal_slots=journal_slots)
    features = layout.Features(ro_compat=fmt.FEATURE_RO_COMPAT_QUOTA if quota else 0)
    ns = time.time_ns()
    with Device(path, writable=True) as dev:
        layout.make_filesystem(
            dev,
            geo,
            uuid=os.urandom(16),
            hash_seed=SEED,
            mkfs_time=(ns // 10**9, ns % 10**9),
            features=features,
            fresh=True,
        )
    with Volume.open(path, writable=True) as vol:
        if vol.quota is not None:  # the root inode, written by make_filesystem, counts too (as mkfs does)
            root = vol.read_inode(fmt.ROOT_INO)
            vol.quota.charge(root.uid, root.gid, root.blocks * vol.block_size, 1)
        vol.mkdir(fmt.ROOT_INO, fmt.LOST_FOUND_NAME, 0o700)
    return path


def scratch(tmp_path):
    """Fixture body: a scratch directory in /dev/shm if possible (msync on a disk-backed /tmp is slow)."""
    if not (os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="nvfs-test-") as d:
        yield pathlib.Path(d)
