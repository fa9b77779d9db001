"""Reserved inode 7 is marked in use as a regular file."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    fs.set_inode(7, "mode", 0o100644)
