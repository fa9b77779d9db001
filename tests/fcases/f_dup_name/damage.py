"""Two entries of one directory carry the same name: the second is removed."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/small/n2", "/small/n1"}


def damage(fs):
    a = fs.entry("/small", b"n1")
    b = fs.entry("/small", b"n2")
    fs.write(b.block * 4096 + b.offset + 8, fs.read(a.block * 4096 + a.offset + 8, 8))
    fs.write(b.block * 4096 + b.offset + 20, b"n1")
