"""The orphan list head points past the inode table."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    fs.set_dyn("orphan_head", 10**9)
