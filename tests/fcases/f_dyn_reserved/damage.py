"""A stray byte in the reserved area of the dynamic superblock."""

from nvfs_tools import format as fmt


def damage(fs):
    fs.write(fmt.SB_DYNAMIC_OFFSET + fmt.field_offset(fmt.SuperblockDynamic, "reserved") + 100, b"\x01")
