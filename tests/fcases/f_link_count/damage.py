"""A file's link count is one too high."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    ino = fs.ino("/docs/big.bin")
    fs.set_inode(ino, "links_count", 2)
