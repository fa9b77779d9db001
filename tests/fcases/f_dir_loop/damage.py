"""Two detached directories point at each other as parents (a loop): broken and reconnected."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/nested/a/b/c/deep.txt"}


def damage(fs):
    b = fs.ino("/nested/a/b")
    c = fs.ino("/nested/a/b/c")
    fs.remove_entry("/nested/a", b"b")
    fs.set_inode(b, "parent", c)
