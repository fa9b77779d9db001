"""Block 0's static superblock zeroed: the backup copy is used and the primary rewritten."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    fs.write(0, bytes(2048))
