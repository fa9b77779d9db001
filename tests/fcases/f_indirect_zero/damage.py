"""sparse.bin's indirect block holds no pointer (a truncate cut short, or its words lost): rule 7.6.

The pointer to it is cleared and the block freed; the data block it used to map is leaked and
freed by pass 5.  The file keeps its size and reads as zeros (a hole) from file block 11 on.
"""

from nvfs_tools import format as fmt

TOUCHED = {"/docs/sparse.bin"}


def damage(fs):
    indirect = fs.inode(fs.ino("/docs/sparse.bin")).block[fmt.N_DIRECT]
    fs.write(indirect * 4096, bytes(4096))
