"""The superblock copy at the start of group 1 is zeroed."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    fs.write(fs.geo.group_start(1) * 4096, bytes(2048))
