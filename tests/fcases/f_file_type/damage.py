"""An entry's file type byte disagrees with the inode."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    e = fs.entry("/docs", b"readme.txt")
    fs.write(e.block * 4096 + e.offset + 17, bytes([fmt.DT_DIR]))
