"""An unlink cut right after the inode went on the orphan list: the name is still there, so the file is kept."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    ino = fs.ino("/docs/five.bin")
    fs.set_inode(ino, "next_orphan", fs.get_dyn("orphan_head"))
    fs.set_dyn("orphan_head", ino)
