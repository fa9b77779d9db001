"""-b: the backup copy is used explicitly; a primary with a damaged checksum is rewritten."""

from nvfs_tools import format as fmt  # noqa: F401

OPTIONS = {"use_backup": True}


def damage(fs):
    fs.put(2044, fs.u64(2040) >> 32 ^ 0xFF, 4)
