"""One page of a multi-page directory loses its magic:
the directory is rebuilt from what remains, the lost entries' files go to /lost+found."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = {f"/many/f{i:03d}" for i in range(300)}


def damage(fs):
    e = fs.entry("/many", b"f000")
    fs.write(e.block * 4096, b"JUNK")
