"""A bad-blocks file in inode 1 (rule 5.1) with permission bits set and a size that misses a block.

It is repaired in place, never cleared: its three blocks stay owned (their bitmap bits set), the
mode becomes S_IFREG with permissions 0, the size follows the block map (3 blocks).
"""

from nvfs_tools import format as fmt

TOUCHED = ()


def damage(fs):
    with fs.volume() as vol:  # three blocks marked used the way any allocation marks them
        blocks = vol.alloc.allocate_blocks(3)
    ino = fmt.BADBLOCKS_INO
    for i, block in enumerate(blocks):
        fs.set_inode(ino, "block", block, i)
    fs.set_inode(ino, "links_count", 1)
    fs.set_inode(ino, "blocks", 3)
    fs.set_inode(ino, "size", 2 * 4096)
    fs.set_inode(ino, "mode", fmt.S_IFREG | 0o644)
