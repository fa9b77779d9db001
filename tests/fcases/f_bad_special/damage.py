"""A FIFO with a size and a block pointer."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    ino = fs.ino("/fifo")
    fs.set_inode(ino, "size", 100)
    fs.set_inode(ino, "block", 12345, index=0)
