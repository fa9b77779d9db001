"""An inline symlink with non-zero bytes after its target: the link is cleared (spec 7.5)."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/sym-short"}


def damage(fs):
    ino = fs.ino("/sym-short")
    fs.write(fs.inode_addr(ino, "block", 15), b"\x07")
