"""The primary's label was changed and its checksum recomputed: the backup and the group-1 copy agree
with each other, so they overrule it (spec/checking.md 1.7)."""

from nvfs_tools import format as fmt


def damage(fs):
    raw = bytearray(fs.read(0, fmt.SB_STATIC_SIZE))
    off = fmt.field_offset(fmt.SuperblockStatic, "label")
    raw[off : off + 6] = b"forged"
    raw[-4:] = fmt.sb_static_checksum(bytes(raw)).to_bytes(4, "little")
    fs.write(0, bytes(raw))
