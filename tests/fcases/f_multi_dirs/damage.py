"""Directory damage everywhere: a bad page, a stale entry, a detached subtree, wrong parent."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {f"/many/f{i:03d}" for i in range(300)} | {"/small/n3", "/nested/a/b/c/deep.txt"}


def damage(fs):
    e = fs.entry("/many", b"f100")
    fs.write(e.block * 4096, b"JUNK")
    fs.put(fs.entry("/small", b"n3").ino_addr, 5000)
    fs.remove_entry("/nested", b"a")
    fs.set_inode(fs.ino("/docs"), "parent", 77)
