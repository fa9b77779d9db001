"""An inline symlink with size 0: cleared, its entry removed."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/sym-short"}


def damage(fs):
    fs.set_inode(fs.ino("/sym-short"), "size", 0)
