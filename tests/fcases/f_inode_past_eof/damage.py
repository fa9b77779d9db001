"""five.bin's size cut to 3 blocks without unmapping: blocks 3 and 4 are past EOF."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/docs/five.bin"}


def damage(fs):
    fs.set_inode(fs.ino("/docs/five.bin"), "size", 3 * 4096)
