"""A directory's link count is wrong."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    ino = fs.ino("/nested")
    fs.set_inode(ino, "links_count", 9)
