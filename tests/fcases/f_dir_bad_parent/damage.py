"""A directory's parent pointer names the wrong directory."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    fs.set_inode(fs.ino("/nested/a/b"), "parent", fs.ino("/docs"))
