"""Reserved inode 8 is free (mode 0) but holds leftovers: zeroed."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    fs.set_inode(8, "uid", 1234)
