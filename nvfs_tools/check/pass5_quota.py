"""Pass 5 (end): quota usage records, when the ro_compat QUOTA feature is set.

Usage is advisory in NVFS (the library updates records without ordering) and
fsck recomputes it: for the root and every ordinary inode (``quota.quota_counted``), the bytes
of the blocks it owns and one inode, charged to its uid (file 3), its gid
(file 4) and project 0 (file 5; NVFS inodes carry no project id).  Records are
read and written through the library's file code, after the bitmaps have been
made right, so any block the quota file needs comes from a correct allocator.
"""

from __future__ import annotations

import struct
from typing import Any

from nvfs_tools import format as fmt

_QR = fmt.field_layout(fmt.PLAIN["QuotaRecord"])
_BYTES = _QR["bytes_used"].offset
_PAIR = struct.Struct("<QQ")
_FLAGS = _QR["flags"].offset
_KINDS = {fmt.USR_QUOTA_INO: "user", fmt.GRP_QUOTA_INO: "group", fmt.PRJ_QUOTA_INO: "project"}


def computed_usage(chk: Any) -> dict[int, dict[int, tuple[int, int]]]:
    img = chk.image
    usage: dict[int, dict[int, list[int]]] = {q: {} for q in _KINDS}
    uid_off = fmt.field_offset(fmt.Inode, "uid")
    gid_off = fmt.field_offset(fmt.Inode, "gid")
    view = img.dev.view
    from nvfs_tools.quota import quota_counted

    for ino, info in chk.inodes.items():
        if not quota_counted(ino):
            continue
        base = img.geo.inode_offset(ino)
        uid = int.from_bytes(view[base + uid_off : base + uid_off + 4], "little")
        gid = int.from_bytes(view[base + gid_off : base + gid_off + 4], "little")
        nbytes = info.nblocks * img.bs
        for qino, qid in ((fmt.USR_QUOTA_INO, uid), (fmt.GRP_QUOTA_INO, gid), (fmt.PRJ_QUOTA_INO, 0)):
            rec = usage[qino].setdefault(qid, [0, 0])
            rec[0] += nbytes
            rec[1] += 1
    return {q: {i: (r[0], r[1]) for i, r in ids.items()} for q, ids in usage.items()}


def run(chk: Any) -> None:
    img = chk.image
    if not img.static.feature_ro_compat & fmt.FEATURE_RO_COMPAT_QUOTA:
        return
    from nvfs_tools.volume import Volume

    want_all = computed_usage(chk)
    vol = Volume(img.dev, img.static, writable=chk.writable)
    for qino, kind in _KINDS.items():
        chk.checkpoint()
        want = want_all[qino]
        info = chk.inodes.get(qino)
        if info is None or info.ftype != fmt.S_IFREG:
            found: dict[int, tuple[int, int]] = {}
            flagged: set[int] = set()
            missing = True
        else:
            found, flagged = _records(vol, img, qino)
            missing = False
        ids = sorted(
            i for i in set(found) | set(want) | flagged if found.get(i, (0, 0)) != want.get(i, (0, 0)) or i in flagged
        )
        if not ids and not missing:
            continue
        sample = ", ".join(
            f"id {i}: {found.get(i, (0, 0))[0]} bytes/{found.get(i, (0, 0))[1]} inodes, counted "
            f"{want.get(i, (0, 0))[0]}/{want.get(i, (0, 0))[1]}"
            for i in ids[:3]
        )
        details = {"kind": kind, "ino": qino, "count": len(ids), "sample": sample or "quota file missing"}

        def repair(
            qino: int = qino, ids: list[int] = ids, want: dict = want, missing: bool = missing, flagged: set = flagged
        ) -> None:
            if missing:
                img.clear_inode(qino) if img.inode(qino).mode else None
                vol.init_reserved_file(qino, fmt.S_IFREG | 0o600)
                img.barrier()
            for qid in ids:
                base = qid * fmt.QUOTA_RECORD_SIZE
                vol.write(qino, base + _BYTES, _PAIR.pack(*want.get(qid, (0, 0))), charge=False)
                if qid in flagged:
                    vol.write(qino, base + _FLAGS, bytes(8), charge=False)
            img.barrier()

        chk.fix("QUOTA_USAGE", details, repair)


def _records(vol: Any, img: Any, qino: int) -> tuple[dict[int, tuple[int, int]], set[int]]:
    """Usage recorded per id, and the ids whose ``flags`` are not 0."""
    per_block = img.bs // fmt.QUOTA_RECORD_SIZE
    found: dict[int, tuple[int, int]] = {}
    flagged: set[int] = set()
    size = img.inode(qino).size
    for fblock, dblock in vol.file_blocks(qino):
        data = img.read_block(dblock)
        for k in range(per_block):
            qid = fblock * per_block + k
            if qid * fmt.QUOTA_RECORD_SIZE >= size:
                break
            b, i = _PAIR.unpack_from(data, k * fmt.QUOTA_RECORD_SIZE + _BYTES)
            if b or i:
                found[qid] = (b, i)
            if int.from_bytes(data[k * fmt.QUOTA_RECORD_SIZE + _FLAGS :][:8], "little"):
                flagged.add(qid)
    return found, flagged
