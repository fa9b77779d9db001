"""An in-use inode's bit is cleared in the inode bitmap."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    fs.flip_bit(*fs.inode_bit_addr(fs.ino("/docs/readme.txt")))
