"""The populated image every f_* case starts from, and the helpers cases damage it with.

The image is built once per test session (deterministic contents, inode and
block numbers, so expected outputs are stable) and copied for each case.
It has two groups (136 MiB at 4 KiB blocks, sparse) so group copies of the
superblock exist, and one of every kind of object fsck must understand.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.device import Device
from nvfs_tools.volume import Volume

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fsfactory import make_image  # noqa: E402

IMAGE_SIZE = 136 << 20
BS = 4096


def _content(tag: str, size: int) -> bytes:
    seed = (tag * (size // max(len(tag), 1) + 2)).encode()
    return bytes((b + i * 7) & 0xFF for i, b in enumerate(seed[:size]))


def build_base(path: str) -> dict[str, bytes]:
    """Make the populated image at ``path``; returns {path: content} of every file and symlink."""
    make_image(path, IMAGE_SIZE, block_size=BS)
    files: dict[str, bytes] = {}
    with Volume.open(path, writable=True) as vol:
        docs = vol.mkdir(fmt.ROOT_INO, b"docs")
        readme = vol.create(docs, b"readme.txt", 0o644, data=_content("readme", 100))
        files["/docs/readme.txt"] = _content("readme", 100)
        big = _content("big", 20 * BS + 1)
        vol.create(docs, b"big.bin", 0o644, data=big)
        files["/docs/big.bin"] = big
        five = _content("five", 5 * BS)
        vol.create(docs, b"five.bin", 0o644, data=five)
        files["/docs/five.bin"] = five
        sp = vol.create(docs, b"sparse.bin", 0o644)
        vol.write(sp, 50 * BS, b"tail of a sparse file")
        files["/docs/sparse.bin"] = bytes(50 * BS) + b"tail of a sparse file"
        vol.link(readme, fmt.ROOT_INO, b"link-readme")
        files["/link-readme"] = files["/docs/readme.txt"]
        vol.symlink(fmt.ROOT_INO, b"sym-short", b"docs/readme.txt")
        files["/sym-short"] = b"docs/readme.txt"
        long_target = b"/" + b"x" * 299
        vol.symlink(fmt.ROOT_INO, b"sym-long", long_target)
        files["/sym-long"] = long_target
        vol.mknod(fmt.ROOT_INO, b"fifo", fmt.S_IFIFO | 0o644)
        vol.mknod(fmt.ROOT_INO, b"chardev", fmt.S_IFCHR | 0o600, fmt.encode_rdev(1, 3))
        xf = vol.create(fmt.ROOT_INO, b"xattr-file", 0o644, data=b"has attributes")
        vol.setxattr(xf, b"user.test", b"value of the attribute")
        files["/xattr-file"] = b"has attributes"
        many = vol.mkdir(fmt.ROOT_INO, b"many")
        for i in range(300):
            data = _content(f"m{i}", 10 + i % 90)
            vol.create(many, b"f%03d" % i, 0o644, data=data)
            files[f"/many/f{i:03d}"] = data
        small = vol.mkdir(fmt.ROOT_INO, b"small")
        for name in (b"n1", b"n2", b"n3"):
            vol.create(small, name, 0o644, data=name * 10)
            files["/small/" + name.decode()] = name * 10
        a = vol.mkdir(vol.mkdir(fmt.ROOT_INO, b"nested"), b"a")
        c = vol.mkdir(vol.mkdir(a, b"b"), b"c")
        vol.create(c, b"deep.txt", 0o644, data=b"deep inside")
        files["/nested/a/b/c/deep.txt"] = b"deep inside"
        vol.mkdir(fmt.ROOT_INO, b"empty-dir")
        vol.create(fmt.ROOT_INO, b"empty-file", 0o644)
        files["/empty-file"] = b""
    return files


def copy_image(src: str, dst: str) -> None:
    """Copy keeping holes (the base image is sparse: copying its zeros would cost more than fsck)."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fd = fin.fileno()
        size = os.fstat(fd).st_size
        fout.truncate(size)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            fin.seek(start)
            fout.seek(start)
            fout.write(fin.read(end - start))
            offset = end


def digest(path: str) -> str:
    """SHA-256 of every data extent with its offset (holes read as zeros and cannot change unseen)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # no data after offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            h.update(start.to_bytes(8, "little"))
            f.seek(start)
            h.update(f.read(end - start))
            offset = end
        h.update(size.to_bytes(8, "little"))
    return h.hexdigest()


def read_back(path: str, files: dict[str, bytes], skip: set[str]) -> list[str]:
    """Paths (not in ``skip``) whose content differs from ``files`` through the library; [] when all match."""
    bad: list[str] = []
    if "*" in skip:
        return bad
    with Volume.open(path) as vol:
        for name, data in files.items():
            if name in skip:
                continue
            try:
                ino = vol.lookup(os.fsencode(name))
                mode = vol.read_inode(ino).mode
                got = vol.readlink(ino) if mode & fmt.S_IFMT == fmt.S_IFLNK else vol.read(ino)
            except Exception as exc:  # noqa: BLE001 - reported as a mismatch
                bad.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            if got != data:
                bad.append(f"{name}: content differs")
    return bad


class Damage:
    """What a case's ``damage(fs)`` gets: raw field writes plus library look-ups."""

    def __init__(self, path: str) -> None:
        self.path = path
        with Volume.open(path) as vol:
            self.static = vol.static
            self.geo = vol.geo
            self.seed = vol.hash_seed

    # look-ups through the library (read-only)
    def ino(self, path: str) -> int:
        with Volume.open(self.path) as vol:
            return vol.lookup(os.fsencode(path))

    def inode(self, ino: int) -> Any:
        with Volume.open(self.path) as vol:
            return vol.read_inode(ino)

    def entry(self, dir_path: str, name: bytes) -> Any:
        from nvfs_tools.directory import Directory

        with Volume.open(self.path) as vol:
            return Directory(vol, vol.lookup(os.fsencode(dir_path))).lookup(name)

    def volume(self) -> Volume:
        return Volume.open(self.path, writable=True)

    # raw writes
    def write(self, offset: int, data: bytes) -> None:
        with Device(self.path, writable=True) as dev:
            dev.write(offset, data)

    def read(self, offset: int, length: int) -> bytes:
        with Device(self.path) as dev:
            return dev.read(offset, length)

    def u64(self, offset: int) -> int:
        return int.from_bytes(self.read(offset, 8), "little")

    def put(self, offset: int, value: int, size: int = 8) -> None:
        self.write(offset, value.to_bytes(size, "little"))

    def inode_addr(self, ino: int, field: str, index: int = 0) -> int:
        info = fmt.field_layout(fmt.Inode)[field]
        return self.geo.inode_offset(ino) + info.offset + (8 * index if field == "block" else 0)

    def set_inode(self, ino: int, field: str, value: int, index: int = 0) -> None:
        info = fmt.field_layout(fmt.Inode)[field]
        size = 8 if field == "block" else info.size
        self.put(self.inode_addr(ino, field, index), value, size)

    def dyn_addr(self, field: str) -> int:
        return fmt.SB_DYNAMIC_OFFSET + fmt.field_layout(fmt.SuperblockDynamic)[field].offset

    def set_dyn(self, field: str, value: int) -> None:
        self.put(self.dyn_addr(field), value, fmt.field_layout(fmt.SuperblockDynamic)[field].size)

    def get_dyn(self, field: str) -> int:
        info = fmt.field_layout(fmt.SuperblockDynamic)[field]
        return int.from_bytes(self.read(self.dyn_addr(field), info.size), "little")

    def flip_bit(self, byte_offset: int, bit: int) -> None:
        old = self.read(byte_offset, 1)[0]
        self.write(byte_offset, bytes([old ^ (1 << bit)]))

    def block_bit_addr(self, block: int) -> tuple[int, int]:
        g, i = divmod(block, self.geo.blocks_per_group)
        return self.geo.block_bitmap_block(g) * BS + i // 8, i % 8

    def inode_bit_addr(self, ino: int) -> tuple[int, int]:
        g, i = divmod(ino - 1, self.geo.inodes_per_group)
        return self.geo.inode_bitmap_block(g) * BS + i // 8, i % 8

    def remove_entry(self, dir_path: str, name: bytes) -> int:
        """Clear an entry's ino word (one store, as an interrupted unlink leaves it); returns the inode."""
        e = self.entry(dir_path, name)
        self.put(e.ino_addr, 0)
        return e.ino
