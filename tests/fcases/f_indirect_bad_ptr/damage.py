"""One word of big.bin's own indirect block is out of range: it is cleared in place (a hole)."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/docs/big.bin"}


def damage(fs):
    indirect = fs.inode(fs.ino("/docs/big.bin")).block[11]
    fs.put(indirect * 4096 + 3 * 8, fs.geo.blocks_count + 5)
