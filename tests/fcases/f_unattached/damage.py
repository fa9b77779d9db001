"""A file with data lost its only entry: reconnected to /lost+found."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {"/docs/five.bin"}


def damage(fs):
    fs.remove_entry("/docs", b"five.bin")
