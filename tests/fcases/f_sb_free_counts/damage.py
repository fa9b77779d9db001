"""The superblock's free inode total is off by 3."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    fs.set_dyn("free_inodes", fs.get_dyn("free_inodes") + 3)
