"""Two directories share a page: /empty-dir's root word names /small's page.

/small keeps its page; /empty-dir (whose tree is now wrong) is rebuilt empty.
"""

from nvfs_tools import format as fmt

TOUCHED = ()


def damage(fs):
    small = fs.inode(fs.ino("/small"))
    fs.set_inode(fs.ino("/empty-dir"), "block", small.block[small.dir_bank], index=0)
    fs.set_inode(fs.ino("/empty-dir"), "dir_bank", 0)
    assert fmt.RADIX_PAGE_BIT & small.block[small.dir_bank]
