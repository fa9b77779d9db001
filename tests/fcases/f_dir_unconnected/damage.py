"""The entry of /nested/a was cleared: the subtree comes back as /lost+found/#INO."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/nested/a/b/c/deep.txt"}


def damage(fs):
    fs.remove_entry("/nested", b"a")
