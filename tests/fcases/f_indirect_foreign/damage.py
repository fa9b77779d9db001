"""big.bin's indirect pointer is corrupted to point at sparse.bin's last data block.

That block holds text, which read as pointers has only a few illegal words: fsck
must not clear them in place (that would overwrite sparse.bin); it drops big.bin's
pointer instead, and sparse.bin reads back unchanged (campaign fuzz_fields,
``inode.big:block[11]:add``).
"""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/docs/big.bin"}


def damage(fs):
    with fs.volume() as vol:
        sparse = vol.lookup(b"/docs/sparse.bin")
        tail = dict(vol.file_blocks(sparse))[50]
    fs.set_inode(fs.ino("/docs/big.bin"), "block", tail, index=11)
