"""A microjournal slot with an invalid commit word (entry count 0) and non-zero reserved bytes.

Discarding the transaction frees the slot; its reserved bytes must be zeroed in the
same run, not found by the next one (campaign random_damage, rounds 1001 and 1084).
"""

from nvfs_tools import format as fmt


def damage(fs):
    slot = fs.geo.journal_block * 4096 + 3 * fmt.JOURNAL_SLOT_SIZE
    fs.put(slot, 7 << 8)  # seq 7, count 0
    reserved = fmt.field_layout(fmt.JournalSlotHeader)["reserved"]
    fs.write(slot + reserved.offset, b"\x42")
    fs.write(slot + fmt.JOURNAL_SLOT_SIZE - 1, b"\x17")
