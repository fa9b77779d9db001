"""A directory's size does not match its pages and radix nodes."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    ino = fs.ino("/many")
    fs.set_inode(ino, "size", fs.inode(ino).size + 4096)
