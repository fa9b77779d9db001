"""A committed transaction not yet applied stores readme's link count (3 on the media, 2 after it).

Rule 3.2: ``fsck -n`` judges the filesystem as the replay leaves it (in memory only, the device
untouched), so it reports the pending transaction alone and exits 4; it must not report the link
count the replay sets.  ``fsck -y`` replays it and the second run is clean.
"""

from nvfs_tools import format as fmt

TOUCHED = ()
FINDINGS_N = ["JOURNAL_REPLAY"]  # not LINK_COUNT: -n judges the replayed view


def damage(fs):
    import zlib

    ino = fs.ino("/docs/readme.txt")
    addr = fs.inode_addr(ino, "links_count")
    assert addr % 8 == 0
    word = fs.u64(addr)  # links_count (2) and the field after it
    links = fmt.field_layout(fmt.Inode)["links_count"]
    mask = (1 << (8 * links.size)) - 1
    fs.put(addr, (word & ~mask) | 3)
    slot = fs.geo.journal_block * 4096 + 2 * fmt.JOURNAL_SLOT_SIZE
    body = addr.to_bytes(8, "little") + word.to_bytes(8, "little")
    fs.write(slot + fmt.JOURNAL_SLOT_HEADER_SIZE, body)
    fs.put(slot + fmt.field_layout(fmt.JournalSlotHeader)["checksum"].offset, zlib.crc32(body), 4)
    fs.put(slot, fmt.journal_commit_word(9, 1))
