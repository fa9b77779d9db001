"""A file's block count is wrong."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    ino = fs.ino("/docs/big.bin")
    fs.set_inode(ino, "blocks", fs.inode(ino).blocks + 3)
