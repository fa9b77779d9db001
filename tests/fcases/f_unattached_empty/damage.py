"""A create interrupted before its entry was committed: zero-length inode, no name."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    with fs.volume() as vol:
        vol.create(fmt.ROOT_INO, b"half-made", 0o644)
    fs.remove_entry("/", b"half-made")
