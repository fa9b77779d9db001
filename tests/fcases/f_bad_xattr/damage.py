"""The xattr block lost its magic: the reference is dropped."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    ino = fs.ino("/xattr-file")
    fs.write(fs.inode(ino).xattr_block * 4096, b"XXXX")
