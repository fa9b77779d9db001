"""A file's mode has no valid file type: the inode is cleared, its entry removed, its blocks freed."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/docs/five.bin"}


def damage(fs):
    fs.set_inode(fs.ino("/docs/five.bin"), "mode", 0o170644)
