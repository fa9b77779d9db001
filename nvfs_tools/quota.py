"""Quota usage records, kept current when the ro_compat QUOTA feature is set.

Inodes 3, 4 and 5 (user, group, project) are regular files holding a sparse
array of :data:`format.QuotaRecord` indexed by id (record ``id`` at byte
``id * 64``).  Usage is counted in bytes of allocated blocks (every block the
inode owns: data, indirect, directory pages and radix nodes, xattr block) and
in inodes, for the inodes spec/format.md counts: the root (2) and every
ordinary inode (``>= first_ino``); the bad-blocks, quota and reserved inodes do
not count.  NVFS inodes carry no project id, so every inode belongs to project 0.

Records are updated with plain stores and no ordering: usage is advisory and
fsck recomputes it from the inodes.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from nvfs_tools import format as fmt

if TYPE_CHECKING:
    from nvfs_tools.volume import Volume

_QR = fmt.field_layout(fmt.PLAIN["QuotaRecord"])
BYTES_OFF = _QR["bytes_used"].offset
INODES_OFF = _QR["inodes_used"].offset
_PAIR = struct.Struct("<QQ")
assert INODES_OFF == BYTES_OFF + 8
QUOTA_FILE_INOS = (fmt.USR_QUOTA_INO, fmt.GRP_QUOTA_INO, fmt.PRJ_QUOTA_INO)


def quota_counted(ino: int) -> bool:
    """Whether inode ``ino`` is charged to quota (format.md 8: the root and ordinary inodes)."""
    return ino == fmt.ROOT_INO or ino >= fmt.FIRST_INO


def read_usage(vol: Volume, qino: int, qid: int) -> tuple[int, int]:
    """``(bytes_used, inodes_used)`` of id ``qid`` in quota file ``qino`` (zeros if absent)."""
    raw = vol.read(qino, qid * fmt.QUOTA_RECORD_SIZE + BYTES_OFF, 16)
    if len(raw) < 16:
        return 0, 0
    b, i = _PAIR.unpack(raw)
    return b, i


class Quota:
    """Charges usage deltas to the three quota files of one volume."""

    def __init__(self, vol: Volume) -> None:
        self.vol = vol
        self.ensure_files()

    def ensure_files(self) -> None:
        """Create the quota inodes as empty regular files if mkfs left them unused."""
        vol = self.vol
        for qino in QUOTA_FILE_INOS:
            if vol.inode_mode(qino) == 0:
                vol.init_reserved_file(qino, fmt.S_IFREG | 0o600)

    def charge(self, uid: int, gid: int, dbytes: int, dinodes: int) -> None:
        if not dbytes and not dinodes:
            return
        for qino, qid in ((fmt.USR_QUOTA_INO, uid), (fmt.GRP_QUOTA_INO, gid), (fmt.PRJ_QUOTA_INO, 0)):
            b, i = read_usage(self.vol, qino, qid)
            b = max(0, b + dbytes)
            i = max(0, i + dinodes)
            self.vol.write(qino, qid * fmt.QUOTA_RECORD_SIZE + BYTES_OFF, _PAIR.pack(b, i), charge=False)
