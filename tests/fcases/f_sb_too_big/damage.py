"""The primary's blocks_count is one more than the device holds (checksum recomputed).

spec/checking.md 1.5: the backup copy fits the device, so it is used and the primary
rewritten (campaign fuzz_fields, ``sb:blocks_count:add``).
"""

from nvfs_tools import format as fmt


def damage(fs):
    raw = bytearray(fs.read(0, fmt.SB_STATIC_SIZE))
    info = fmt.field_layout(fmt.SuperblockStatic)["blocks_count"]
    count = int.from_bytes(raw[info.offset : info.offset + info.size], "little")
    raw[info.offset : info.offset + info.size] = (count + 1).to_bytes(info.size, "little")
    cks = fmt.field_layout(fmt.SuperblockStatic)["checksum"]
    raw[cks.offset : cks.offset + cks.size] = fmt.sb_static_checksum(bytes(raw)).to_bytes(cks.size, "little")
    fs.write(0, bytes(raw))
