"""An entry's stored hash is wrong: the directory is rebuilt so the name hashes to it."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    e = fs.entry("/small", b"n1")
    fs.put(e.block * 4096 + e.offset + 8, 0x0123456789ABCDEF)
