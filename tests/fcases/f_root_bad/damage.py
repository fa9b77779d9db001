"""The root inode's mode says regular file: a new root is made, everything goes to /lost+found."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"*"}


def damage(fs):
    fs.set_inode(2, "mode", 0o100755)
