"""A file carries an orphan link but the orphan list is empty."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    fs.set_inode(fs.ino("/docs/readme.txt"), "next_orphan", 12)
