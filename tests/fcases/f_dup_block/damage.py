"""Two files share a block: both are listed, the second gets its own copy."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/docs/big.bin"}


def damage(fs):
    a = fs.inode(fs.ino("/docs/five.bin"))
    fs.set_inode(fs.ino("/docs/big.bin"), "block", a.block[2], index=2)
