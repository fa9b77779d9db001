"""Two directories point at one page: /empty-dir's root word names /small's page.

The page says it belongs to /small, so /empty-dir's tree is damaged: it claims nothing (no shared
block) and is rebuilt empty; /small keeps its page untouched.
"""

from nvfs_tools import format as fmt

TOUCHED = ()


def damage(fs):
    small = fs.inode(fs.ino("/small"))
    fs.set_inode(fs.ino("/empty-dir"), "block", small.block[small.dir_bank], index=0)
    fs.set_inode(fs.ino("/empty-dir"), "dir_bank", 0)
    assert fmt.RADIX_PAGE_BIT & small.block[small.dir_bank]
