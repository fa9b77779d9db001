"""An unlink interrupted after the entry was cleared: the inode is still on the orphan list."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/docs/five.bin"}


def damage(fs):
    ino = fs.ino("/docs/five.bin")
    fs.set_inode(ino, "next_orphan", fs.get_dyn("orphan_head"))
    fs.set_dyn("orphan_head", ino)
    fs.remove_entry("/docs", b"five.bin")
