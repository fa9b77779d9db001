"""A directory's live-bank flag is 7."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    fs.set_inode(fs.ino("/small"), "dir_bank", 7)
