"""Fields with fixed values per type: nanoseconds too big, a file's parent pointer, a FIFO's device
number, a directory's unused block pointer: each set right in place."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    readme = fs.ino("/docs/readme.txt")
    fs.set_inode(readme, "mtime_nsec", 2_000_000_000)
    fs.set_inode(readme, "parent", 17)
    fs.set_inode(fs.ino("/fifo"), "rdev", fmt.encode_rdev(1, 5))
    fs.set_inode(fs.ino("/nested"), "block", 4242, index=5)
