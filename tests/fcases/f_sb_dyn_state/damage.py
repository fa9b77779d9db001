"""Unknown bits in the dynamic state word."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    fs.set_dyn("state", fs.get_dyn("state") | 0x100)
