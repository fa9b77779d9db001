"""The backup static copy in the last block is garbage."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    fs.write(fs.geo.backup_block * 4096, b"\xa5" * 2048)
