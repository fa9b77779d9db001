"""A microjournal slot whose checksum does not match: discarded, nothing applied."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    slot = fs.geo.journal_block * 4096
    fs.write(slot + 16, (fs.geo.inode_offset(12)).to_bytes(8, "little") + (99).to_bytes(8, "little"))
    fs.put(slot + 8, 0x12345678, 4)
    fs.put(slot, fmt.journal_commit_word(3, 1))
