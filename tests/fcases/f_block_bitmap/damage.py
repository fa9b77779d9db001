"""Bits of used blocks cleared in the block bitmap, and a free block marked used."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    blk = fs.inode(fs.ino("/docs/big.bin")).block[0]
    fs.flip_bit(*fs.block_bit_addr(blk))
    fs.flip_bit(*fs.block_bit_addr(fs.geo.blocks_count - 100))
