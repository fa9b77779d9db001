"""A free microjournal slot with a non-zero byte in its reserved tail."""

from nvfs_tools import format as fmt


def damage(fs):
    slot = fs.geo.journal_block * 4096 + 2 * fmt.JOURNAL_SLOT_SIZE
    fs.write(slot + fmt.JOURNAL_SLOT_SIZE - 3, b"\x55")
