"""STATE_CHECKING left by a killed repair forces a full check without -f."""

from nvfs_tools import format as fmt  # noqa: F401

FORCE = False


def damage(fs):
    fs.set_dyn("state", fmt.STATE_CHECKING)
    ino = fs.ino("/docs/readme.txt")
    fs.set_inode(ino, "links_count", 5)
