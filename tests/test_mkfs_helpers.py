"""Helpers for the mkfs tests: run the tool in-process and check a fresh image byte by byte.

No tests live here.  :func:`verify_image` re-derives every rule of a freshly
made filesystem from ``format.py`` (parsing with construct) rather than from
``layout.py``, so a mistake in the writer cannot hide behind the same mistake
in the check.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import random
from dataclasses import dataclass

from nvfs_tools import format as fmt
from nvfs_tools.mkfs import run_argv

EPOCH = "1700000000"
FIXED_UUID = "0b4e5c8a-1f0d-4b64-9a3e-2a6f1c9d7e55"


@dataclass
class Result:
    code: int
    out: str
    err: str


def mkfs(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run mkfs.nvfs in this process (as its console script does: fast parser, else click) and capture its output."""
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ["NVFS_NO_PROGRESS"] = "1"
    if env:
        os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run_argv([str(a) for a in args])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Result(code, out.getvalue(), err.getvalue())


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a (possibly sparse, possibly huge) file's contents: size plus every non-zero MiB and its offset.

    Holes are skipped with SEEK_DATA, and all-zero chunks are ignored, so the
    hash depends on what the file reads as, not on where it has holes.
    """
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    chunk_size = 1 << 20
    try:
        size = os.fstat(fd).st_size
        h.update(str(size).encode())
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            start = data - data % chunk_size
            for off in range(start, hole, chunk_size):
                chunk = os.pread(fd, chunk_size, off)
                if chunk.count(0) != len(chunk):
                    h.update(off.to_bytes(8, "little") + chunk)
            pos = max(hole, start + chunk_size)
    finally:
        os.close(fd)
    return h.hexdigest()


def _bit(buf: bytes | memoryview, i: int) -> int:
    return (buf[i // 8] >> (i % 8)) & 1


def _popcount(buf: bytes | memoryview, nbits: int) -> int:
    return (int.from_bytes(bytes(buf[: (nbits + 7) // 8]), "little") & ((1 << nbits) - 1)).bit_count()


def verify_image(path: str | os.PathLike, *, itable_groups: int | None = None, quota: bool = False) -> dict:
    """Assert every rule of a freshly made NVFS image; returns facts for further checks.

    ``itable_groups``: check the inode tables of only this many groups (the
    first, the last and random ones) to keep 1 TiB images fast; every group's
    header, bitmaps and counters are always checked.
    """
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    if size == 0:
        import fcntl
        import struct

        size = struct.unpack("Q", fcntl.ioctl(fd, 0x80081272, b"\0" * 8))[0]
    m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    view = memoryview(m)
    try:
        return _verify(view, size, itable_groups, quota)
    finally:
        view.release()
        m.close()
        os.close(fd)


def _verify(view: memoryview, size: int, itable_groups: int | None, quota: bool) -> dict:
    raw = bytes(view[: fmt.SB_STATIC_SIZE])
    static = fmt.SuperblockStatic.parse(raw)
    assert static.checksum == fmt.sb_static_checksum(raw), "static superblock checksum"
    assert static.version == fmt.FORMAT_VERSION
    geo = fmt.geometry_from_static(static)
    bs = geo.block_size
    assert static.blocks_count == size // bs, "blocks_count is the whole device"
    assert static.root_ino == fmt.ROOT_INO and static.lost_found_ino == fmt.FIRST_INO == static.first_ino
    assert static.inodes_count == geo.inodes_per_group * geo.group_count
    assert static.journal_block == geo.journal_block and static.journal_entries == fmt.JOURNAL_ENTRIES
    assert static.inode_size == fmt.INODE_SIZE and static.hash_version == fmt.HASH_SIPHASH24
    assert bool(static.feature_ro_compat & fmt.FEATURE_RO_COMPAT_QUOTA) == quota
    dyn = fmt.SuperblockDynamic.parse(bytes(view[fmt.SB_DYNAMIC_OFFSET : fmt.SB_DYNAMIC_OFFSET + fmt.SB_DYNAMIC_SIZE]))
    assert dyn.state == fmt.STATE_CLEAN and dyn.orphan_head == 0 and dyn.journal_seq == 0
    assert not any(view[4096:bs]), "block 0 past the superblock is zero"
    backup = geo.backup_block * bs
    assert bytes(view[backup : backup + fmt.SB_STATIC_SIZE]) == raw, "backup static superblock"
    assert not any(view[backup + fmt.SB_STATIC_SIZE : backup + bs]), "rest of the backup block is zero"

    # Inodes in use: read them from the tables of group 0 (mkfs uses nothing else).
    used_inodes = {}
    for ino in range(1, geo.inodes_per_group + 1):
        off = geo.inode_offset(ino)
        if view[off] or view[off + 1]:
            used_inodes[ino] = fmt.Inode.parse(bytes(view[off : off + fmt.INODE_SIZE]))
    expected = {fmt.ROOT_INO, fmt.FIRST_INO} | (set(fmt.QUOTA_INODES.values()) if quota else set())
    assert set(used_inodes) == expected, f"inodes in use {sorted(used_inodes)}"
    root, lf = used_inodes[fmt.ROOT_INO], used_inodes[fmt.FIRST_INO]
    assert root.mode == fmt.S_IFDIR | 0o755 and root.links_count == 3 and root.parent == fmt.ROOT_INO
    assert lf.mode == fmt.S_IFDIR | 0o700 and lf.links_count == 2 and lf.parent == fmt.ROOT_INO
    assert lf.block[0] == lf.block[1] == 0 and lf.dir_bank == 0 and lf.size == 0 and lf.blocks == 0
    for q in fmt.QUOTA_INODES.values() if quota else ():
        assert used_inodes[q].mode == fmt.S_IFREG | 0o600 and used_inodes[q].links_count == 1
    owned = sum(i.blocks for i in used_inodes.values())

    free_blocks = free_inodes = used_data = 0
    groups = list(range(geo.group_count))
    check_tables = set(groups)
    if itable_groups is not None and itable_groups < geo.group_count:
        rnd = random.Random(geo.group_count)
        check_tables = {0, geo.group_count - 1} | set(rnd.sample(groups, max(itable_groups - 2, 0)))
    zero_table = bytes(geo.inode_table_blocks * bs)
    for g in groups:
        start = geo.group_start(g) * bs
        if g:
            assert bytes(view[start : start + fmt.SB_STATIC_SIZE]) == raw, f"static copy of group {g}"
            assert not any(view[start + fmt.SB_STATIC_SIZE : start + bs]), f"header block of group {g}"
        bbm = view[geo.block_bitmap_block(g) * bs : (geo.block_bitmap_block(g) + 1) * bs]
        length = geo.group_end(g) - geo.group_start(g)
        meta = geo.metadata_blocks(g)
        assert _popcount(bbm, meta) == meta, f"metadata bits of group {g}"
        bits = int.from_bytes(bytes(bbm), "little")
        assert bits >> length == (1 << (geo.blocks_per_group - length)) - 1, f"bits past the end of group {g}"
        backup_in = geo.group_start(g) <= geo.backup_block < geo.group_end(g)
        if backup_in:
            assert _bit(bbm, geo.backup_block - geo.group_start(g)), "backup block bit"
        set_bits = _popcount(bbm, geo.blocks_per_group)
        used_data += set_bits - meta - (geo.blocks_per_group - length) - backup_in
        counters = fmt.GroupCounters.parse(bytes(view[geo.counters_block(g) * bs :][:40]))
        assert counters.group == g
        assert counters.free_blocks == geo.blocks_per_group - set_bits, f"free blocks counter of group {g}"
        ibm = view[geo.inode_bitmap_block(g) * bs : (geo.inode_bitmap_block(g) + geo.inode_bitmap_blocks) * bs]
        ipg = geo.inodes_per_group
        used = _popcount(ibm, ipg)
        if g == 0:
            assert _popcount(ibm, fmt.FIRST_INO) == fmt.FIRST_INO, "inodes 1..11 marked used"
            assert used == fmt.FIRST_INO
        else:
            assert used == 0
        total_bits = len(ibm) * 8
        ibits = int.from_bytes(bytes(ibm), "little")
        assert ibits >> ipg == (1 << (total_bits - ipg)) - 1, "inode bits past inodes_per_group set"
        assert counters.free_inodes == ipg - used, f"free inodes counter of group {g}"
        assert counters.used_dirs == (2 if g == 0 else 0)
        free_blocks += counters.free_blocks
        free_inodes += counters.free_inodes
        if g in check_tables:
            table = bytes(view[geo.inode_table_block(g) * bs :][: len(zero_table)])
            if g == 0:
                table = bytearray(table)
                for ino in used_inodes:
                    table[(ino - 1) * fmt.INODE_SIZE : ino * fmt.INODE_SIZE] = bytes(fmt.INODE_SIZE)
            assert table == zero_table, f"inode table of group {g} is zero except the inodes in use"
    assert not any(view[geo.journal_block * bs : (geo.journal_block + geo.journal_blocks) * bs]), "journal zeroed"
    assert used_data == owned, f"data blocks marked used ({used_data}) == blocks owned by inodes ({owned})"
    assert dyn.free_blocks == free_blocks == geo.data_blocks - owned
    assert dyn.free_inodes == free_inodes == geo.inodes_count - fmt.FIRST_INO
    return {"static": static, "dyn": dyn, "geo": geo, "root": root, "lost_found": lf, "inodes": used_inodes}
