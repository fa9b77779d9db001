"""A file's block pointer names a page of directory /small: the directory keeps it, the file gets a copy."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/docs/five.bin"}


def damage(fs):
    page = fs.entry("/small", b"n1").block
    fs.set_inode(fs.ino("/docs/five.bin"), "block", page, index=1)
