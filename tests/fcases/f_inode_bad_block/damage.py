"""A direct pointer of big.bin points beyond the end of the filesystem."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/docs/big.bin"}


def damage(fs):
    fs.set_inode(fs.ino("/docs/big.bin"), "block", fs.geo.blocks_count + 5, index=3)
