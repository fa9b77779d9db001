"""A bad media block under /docs's only directory page (listed with --badblocks, garbage on the image).

fsck names the bad block's owner (MEDIA_BAD_BLOCK), never reads the page, rebuilds
/docs empty and moves its children to lost+found.  The image holds garbage there
(what the lost page looks like to anything that ignores the list), so a run without
the list must find the damage too.  OPTIONS is set by damage(): the block number
comes from the image (the harness reads OPTIONS after damaging).
"""

from nvfs_tools import format as fmt

FILES = ("/docs/readme.txt", "/docs/big.bin", "/docs/five.bin", "/docs/sparse.bin", "/link-readme")
TOUCHED = set(FILES)
OPTIONS: dict = {}


def damage(fs):
    docs = fs.inode(fs.ino("/docs"))
    word = docs.block[docs.dir_bank]
    assert word & fmt.RADIX_PAGE_BIT, "the case expects /docs to be a single page"
    block = word & fmt.RADIX_BLOCK_MASK
    bs = fs.geo.block_size
    fs.write(block * bs + 512, bytes([0xA5]) * 512)  # what an unreadable sector may return
    OPTIONS["badblocks"] = ((block * bs + 512, 512),)
