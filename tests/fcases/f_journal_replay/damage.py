"""A committed microjournal transaction not yet cleared: replayed (it sets readme's uid)."""

from nvfs_tools import format as fmt  # noqa: F401

TOUCHED = ()


def damage(fs):
    import zlib

    ino = fs.ino("/docs/readme.txt")
    slot = fs.geo.journal_block * 4096 + 512
    body = fs.inode_addr(ino, "uid").to_bytes(8, "little") + (4242 | (4343 << 32)).to_bytes(8, "little")
    fs.write(slot + 16, body)
    fs.put(slot + 8, zlib.crc32(body), 4)
    fs.put(slot, fmt.journal_commit_word(7, 1))
