"""An entry's name gains a '/': removed, the file goes to /lost+found."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/small/n2"}


def damage(fs):
    e = fs.entry("/small", b"n2")
    fs.write(e.block * 4096 + e.offset + 20, b"/")
