"""Unknown flag bits on a regular file."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    ino = fs.ino("/docs/readme.txt")
    fs.set_inode(ino, "flags", fs.inode(ino).flags | 0x8000)
