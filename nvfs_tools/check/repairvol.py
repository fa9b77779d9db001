"""The volume interface the library's directory code needs, backed by the checker.

Repairs that change directories (re-adding entries, rebuilding a directory,
creating /lost+found) go through :mod:`nvfs_tools.directory`, so they follow
the same store ordering as everything else.  The library normally takes its
blocks from the on-media bitmaps, which fsck does not trust; this adapter
hands it blocks from the checker's proven-free map instead
(:class:`~nvfs_tools.check.image.CheckAllocator`).
"""

from __future__ import annotations

from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.check.image import Image


class RepairVolume:
    """Duck-typed stand-in for :class:`nvfs_tools.volume.Volume` during repairs."""

    def __init__(self, image: Image, allocator: Any) -> None:
        self.image = image
        self.dev = image.dev
        self.geo = image.geo
        self.block_size = image.bs
        self.hash_seed = image.hash_seed
        self.static = image.static
        self.allocator = allocator
        self.writable = True
        self.allocated: list[int] = []
        self.freed: list[int] = []

    def barrier(self) -> None:
        self.image.barrier()

    def store_u64(self, addr: int, value: int) -> None:
        self.image.store(addr, value)

    def read_block(self, block: int) -> bytes:
        return self.image.read_block(block)

    def write_block(self, block: int, data: bytes) -> None:
        self.image.write_bytes(block * self.block_size, data)

    def read_inode(self, ino: int) -> Any:
        off = self.geo.inode_offset(ino)
        return fmt.Inode.parse(self.dev.read(off, fmt.INODE_SIZE))

    def inode_field_addr(self, ino: int, field: str, index: int = 0) -> int:
        return self.image.inode_field_addr(ino, field, index)

    def set_inode_fields(self, ino: int, **fields: Any) -> None:
        for name, value in fields.items():
            if name == "block":
                items = value.items() if isinstance(value, dict) else enumerate(value)
                for i, v in items:
                    self.image.set_inode(ino, block=(i, v))
            else:
                self.image.set_inode(ino, **{name: value})

    def allocate_block(self, goal: int | None = None) -> int:
        block = self.allocator.allocate_block(goal)
        self.allocated.append(block)
        return block

    def free_block(self, block: int) -> None:
        self.allocator.free_block(block)
        self.freed.append(block)
