"""A file with data, named by nothing and with link count 0 (rule 7: freed).

Its data block must fall free in the same run: a second run must not find it
still marked in the bitmap (campaign crash_replay --populate, seed 10).
"""

from nvfs_tools import format as fmt


def damage(fs):
    with fs.volume() as vol:
        ino = vol.create(fmt.ROOT_INO, b"half-unlinked", 0o644, data=b"some data" * 600)
    fs.remove_entry("/", b"half-unlinked")
    fs.set_inode(ino, "links_count", 0)
