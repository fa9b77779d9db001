"""Several kinds of damage at once:
zeroed primary superblock, bad pointer, wrong link count, cleared bitmap bit, shared block."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/docs/big.bin", "/many/f007"}


def damage(fs):
    fs.set_inode(fs.ino("/docs/big.bin"), "block", fs.geo.blocks_count + 9, index=1)
    fs.set_inode(fs.ino("/small/n1"), "links_count", 3)
    a = fs.inode(fs.ino("/docs/five.bin"))
    fs.set_inode(fs.ino("/many/f007"), "block", a.block[0], index=0)
    fs.flip_bit(*fs.inode_bit_addr(fs.ino("/xattr-file")))
    fs.write(0, bytes(2048))
