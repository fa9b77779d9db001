"""Thirteen bad blocks in free space (listed with --badblocks): rule 5.1, as e2fsck -c does.

fsck names each one (free space), then maps them into the bad-blocks inode (inode 1, free until
now: created) before pass 5, so their bitmap bits are set and nothing allocates them; the 12th
and 13th need an indirect block, taken from good free space.  The second run, without the list,
finds a valid bad-blocks file.  OPTIONS is set by damage() from the image's free space.
"""

from nvfs_tools import format as fmt  # noqa: F401

OPTIONS: dict = {}
IMAGE_CLEAN = True  # only the list says anything is wrong: the bulk fast path proves the image itself


def damage(fs):
    with fs.volume() as vol:
        probe = vol.alloc.allocate_blocks(13)  # the first 13 free blocks, given back at once
        vol.alloc.free_block_list(probe)
    bs = fs.geo.block_size
    OPTIONS["badblocks"] = tuple((b * bs, bs) for b in probe)
