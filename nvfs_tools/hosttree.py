"""Generated host directory trees for populate/extract tests and benchmarks.

The tests need a tree that exercises every corner of ``mkfs.nvfs -d`` at
once (every file type, hard links, holes at the direct/indirect boundaries,
xattrs in every namespace, odd names, odd times); the benchmark needs a big
tree of small files.  Both are generated here so tests and ``bench/populate``
build exactly the same thing.
"""

from __future__ import annotations

import os
import socket
import stat
import struct

#: Block size the boundary files are laid out for (the default NVFS block).
BOUNDARY_BLOCK_SIZE = 4096
#: File block counts where the mapping changes shape at 4 KiB: the last direct
#: block, the end of the single-indirect range, the end of the double range.
BOUNDARY_BLOCKS = (11, 11 + 512, 11 + 512 + 512 * 512)

# Linux ACL xattr binary form (acl_ea_header / acl_ea_entry).
_ACL_VERSION = 2
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_ACL_UNDEFINED_ID = 0xFFFFFFFF


def posix_acl_bytes(entries: list[tuple[int, int, int]]) -> bytes:
    """Encode ``(tag, perm, id)`` entries as Linux's ``system.posix_acl_*`` value.

    Used instead of setfacl, which this machine does not have.
    """
    out = struct.pack("<I", _ACL_VERSION)
    for tag, perm, ident in entries:
        out += struct.pack("<HHI", tag, perm, ident)
    return out


#: A non-minimal ACL (named user and group plus mask), so the kernel keeps it
#: as an xattr instead of folding it into the mode bits.
SAMPLE_ACL = posix_acl_bytes(
    [
        (_ACL_USER_OBJ, 6, _ACL_UNDEFINED_ID),
        (_ACL_USER, 4, 1000),
        (_ACL_GROUP_OBJ, 4, _ACL_UNDEFINED_ID),
        (_ACL_GROUP, 6, 2000),
        (_ACL_MASK, 6, _ACL_UNDEFINED_ID),
        (_ACL_OTHER, 0, _ACL_UNDEFINED_ID),
    ]
)


def _write(path: bytes, data: bytes = b"", *, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)


def _sparse(path: bytes, size: int, pieces: list[tuple[int, bytes]]) -> None:
    """A file of ``size`` bytes with data only at the given offsets (holes elsewhere)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for offset, data in pieces:
            os.pwrite(fd, data, offset)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _make_socket(path: bytes) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    finally:
        sock.close()


def _try_setxattr(path: bytes, name: bytes, value: bytes) -> bool:
    try:
        os.setxattr(path, name, value, follow_symlinks=False)
        return True
    except OSError:
        return False


def make_full_tree(root: str | bytes, *, big_dir_entries: int = 0) -> dict[str, int]:
    """Fill ``root`` (created if missing) with every kind of entry populate must keep.

    Returns counts of what was made (``xattrs_skipped`` says how many xattrs the
    host filesystem refused).  Ownership changes and device nodes need root;
    when not root they are left out.  ``big_dir_entries`` > 0 adds a directory
    with that many empty files (hard-linked in groups so it stays cheap).
    """
    root = os.fsencode(root)
    os.makedirs(root, exist_ok=True)
    j = lambda *parts: os.path.join(root, *parts)  # noqa: E731
    is_root = os.geteuid() == 0
    made = {"files": 0, "dirs": 0, "xattrs_skipped": 0}

    for d in (b"d", b"d/sub", b"d/sub/deeper", b"empty_dir", b"links", b"specials", b"sparse", b"names"):
        os.makedirs(j(d), exist_ok=True)
        made["dirs"] += 1

    # Regular files of assorted sizes, including empty and block-boundary sizes.
    for size in (0, 1, 7, 4095, 4096, 4097, 8192, 65536 + 3, 300_000):
        _write(j(b"d", b"file_%d" % size), bytes((i * 7 + size) & 0xFF for i in range(size)))
        made["files"] += 1
    _write(j(b"d", b"sub", b"deeper", b"leaf"), b"deep leaf\n")

    # Sparse files at the direct / indirect boundaries (4 KiB blocks).
    bs = BOUNDARY_BLOCK_SIZE
    for blocks in BOUNDARY_BLOCKS:
        for extra in (0, 1):
            size = blocks * bs + extra
            _sparse(j(b"sparse", b"b%d_%d" % (blocks, extra)), size, [(0, b"head"), (max(0, size - 5), b"tail!")])
            made["files"] += 1
    _sparse(j(b"sparse", b"all_hole"), 10 * bs + 123, [])
    _sparse(j(b"sparse", b"middle"), 40 * bs, [(17 * bs + 100, b"x" * 9000)])
    made["files"] += 2

    # Hard links: same directory, across directories, and a 3-link group.
    _write(j(b"links", b"a"), b"linked content\n")
    os.link(j(b"links", b"a"), j(b"links", b"a2"))
    os.link(j(b"links", b"a"), j(b"d", b"sub", b"a3"))
    _write(j(b"links", b"b"), b"")
    os.link(j(b"links", b"b"), j(b"links", b"b2"))
    os.mkfifo(j(b"links", b"fifo"))
    os.link(j(b"links", b"fifo"), j(b"links", b"fifo2"))
    made["files"] += 3

    # Symlinks: inline (<= 128 bytes), exactly 128, 129 (needs a block), long, dangling, absolute.
    os.symlink(b"a", j(b"links", b"sym_short"))
    os.symlink(b"x" * 128, j(b"links", b"sym_128"))
    os.symlink(b"y" * 129, j(b"links", b"sym_129"))
    os.symlink(b"/".join([b"z" * 200] * 20), j(b"links", b"sym_long"))
    os.symlink(b"/nonexistent/target", j(b"links", b"sym_abs"))
    os.symlink(b"../d/sub", j(b"links", b"sym_dir"))

    # Specials.
    os.mkfifo(j(b"specials", b"fifo"), 0o620)
    _make_socket(j(b"specials", b"socket"))
    if is_root:
        os.mknod(j(b"specials", b"chr"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
        os.mknod(j(b"specials", b"blk"), stat.S_IFBLK | 0o640, os.makedev(259, 1048575))
        os.mknod(j(b"specials", b"chr_big"), stat.S_IFCHR | 0o644, os.makedev(4095, 0xFFFFF))

    # Names: 255 bytes, non-ASCII UTF-8, bytes that are not UTF-8, odd characters.
    for name in (
        b"n" * 255,
        "naïve-日本語-ёж".encode(),
        b"\xff\xfe\x80latin1-\xe9",
        b" leading space",
        b"-dash",
        b"new\nline",
        b"tab\there",
        b"..dots",
        b".hidden",
    ):
        _write(j(b"names", name), name)
        made["files"] += 1
    os.makedirs(j(b"names", b"d" * 255), exist_ok=True)

    # Modes.
    _write(j(b"d", b"setuid"), b"#!/bin/sh\n", mode=0o755)
    os.chmod(j(b"d", b"setuid"), 0o4755)
    os.chmod(j(b"d", b"file_1"), 0o2711)
    os.chmod(j(b"d", b"file_7"), 0o000)
    os.chmod(j(b"empty_dir"), 0o1777)
    os.chmod(j(b"d", b"sub", b"deeper"), 0o700)

    # Owners (root only).
    if is_root:
        os.chown(j(b"d", b"file_0"), 1000, 1000)
        os.chown(j(b"d", b"file_4096"), 65534, 12345)
        os.chown(j(b"links", b"sym_short"), 4242, 4343, follow_symlinks=False)
        os.chown(j(b"d", b"sub"), 2_000_000_000, 3_000_000_000)
        # chown clears setuid; restore it.
        os.chmod(j(b"d", b"file_4096"), 0o6644)

    # Extended attributes in every namespace the host allows.
    want = [
        (j(b"d", b"file_1"), b"user.comment", b"hello"),
        (j(b"d", b"file_1"), b"user.empty", b""),
        (j(b"d", b"file_1"), b"user.binary", bytes(range(256))),
        (j(b"d", b"file_1"), b"trusted.secret", b"\x00\x01\x02"),
        (j(b"d", b"file_1"), b"security.selinux", b"system_u:object_r:etc_t:s0\x00"),
        (j(b"d", b"file_4097"), b"system.posix_acl_access", SAMPLE_ACL),
        (j(b"d"), b"system.posix_acl_default", SAMPLE_ACL),
        (j(b"d"), b"user.dir_attr", b"on a directory"),
        (j(b"links", b"a"), b"user.on_hardlink", b"shared by three names"),
        (j(b"links", b"sym_short"), b"trusted.on_symlink", b"symlinks take trusted.*"),
        (j(b"specials", b"fifo"), b"trusted.fifo", b"fifo attr"),
        (j(b"d", b"file_8192"), b"user." + b"k" * 200, b"v" * 1500),
    ]
    for path, name, value in want:
        if not _try_setxattr(path, name, value):
            made["xattrs_skipped"] += 1

    if big_dir_entries:
        make_big_dir(j(b"big"), big_dir_entries)
        made["dirs"] += 1
        made["files"] += big_dir_entries

    # Times with nanoseconds, one before 1970, set last (children change dir mtimes).
    # atime is later than mtime so that relatime on the host does not bump it when populate reads.
    times = [
        (j(b"d", b"file_1"), (1_700_000_000_123_456_789, 1_600_000_000_987_654_321)),
        (j(b"d", b"file_0"), (1_700_000_001_000_000_001, -1_234_567_890_500_000_000)),
        (j(b"links", b"sym_short"), (1_700_000_002_999_999_999, 1_500_000_000_000_000_007)),
        (j(b"d", b"sub"), (1_700_000_003_000_000_000, 1_400_000_000_111_111_111)),
        (j(b"d"), (1_700_000_004_000_000_000, 1_300_000_000_222_222_222)),
    ]
    for path, (atime, mtime) in times:
        os.utime(path, ns=(atime, mtime), follow_symlinks=False)
    return made


def make_big_dir(path: bytes | str, entries: int) -> None:
    """A directory of ``entries`` names: empty files, hard-linked 100 to an inode."""
    path = os.fsencode(path)
    os.makedirs(path, exist_ok=True)
    first = b""
    for i in range(entries):
        name = os.path.join(path, b"entry-%07d" % i)
        if i % 100 == 0:
            _write(name, b"")
            first = name
        else:
            os.link(first, name)


def make_small_files_tree(root: str | bytes, files: int, dirs: int, *, min_size: int = 0, max_size: int = 2048) -> int:
    """``files`` small files spread over ``dirs`` directories (for the benchmark).

    Sizes cycle deterministically between ``min_size`` and ``max_size`` so the
    tree is identical on every run.  Returns the number of files made.
    """
    root = os.fsencode(root)
    os.makedirs(root, exist_ok=True)
    per_dir = -(-files // dirs)
    span = max_size - min_size + 1
    payload = bytes((i * 31) & 0xFF for i in range(max_size))
    made = 0
    for d in range(dirs):
        dpath = os.path.join(root, b"dir%04d" % d)
        os.makedirs(dpath, exist_ok=True)
        for i in range(per_dir):
            if made >= files:
                break
            size = min_size + (made * 7919) % span
            fd = os.open(os.path.join(dpath, b"file%06d" % i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            if size:
                os.write(fd, payload[:size])
            os.close(fd)
            made += 1
    return made
