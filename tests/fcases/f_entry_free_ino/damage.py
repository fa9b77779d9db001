"""An entry points to a free inode."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/small/n3"}


def damage(fs):
    e = fs.entry("/small", b"n3")
    fs.put(e.ino_addr, 3000)
