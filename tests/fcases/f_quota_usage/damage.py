"""The QUOTA feature is switched on but the quota files hold nothing: fsck counts usage and writes the records."""

from nvfs_tools import format as fmt


def damage(fs):
    raw = bytearray(fs.read(0, fmt.SB_STATIC_SIZE))
    off = fmt.field_offset(fmt.SuperblockStatic, "feature_ro_compat")
    raw[off : off + 4] = fmt.FEATURE_RO_COMPAT_QUOTA.to_bytes(4, "little")
    raw[-4:] = fmt.sb_static_checksum(bytes(raw)).to_bytes(4, "little")
    for block in (0, fs.geo.backup_block, *(fs.geo.group_start(g) for g in range(1, fs.geo.group_count))):
        fs.write(block * 4096, bytes(raw))
    for qino in fmt.QUOTA_INODES.values():  # empty quota files, as a quota-enabled mkfs makes them
        fs.set_inode(qino, "mode", fmt.S_IFREG | 0o600)
        fs.set_inode(qino, "links_count", 1)
