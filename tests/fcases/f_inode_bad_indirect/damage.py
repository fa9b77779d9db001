"""big.bin's indirect pointer points into the inode table."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/docs/big.bin"}


def damage(fs):
    fs.set_inode(fs.ino("/docs/big.bin"), "block", fs.geo.inode_table_block(0) + 1, index=11)
