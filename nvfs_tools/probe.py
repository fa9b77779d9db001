"""What is already on a device, and who is using it.

:func:`detect_signatures` looks for the magic numbers of filesystems, swap,
RAID/LVM/LUKS containers and partition tables at their usual offsets, so
``mkfs.nvfs`` can refuse to destroy them without ``-F``.  :func:`find_users`
finds mounts (``/proc/self/mountinfo``), active swap (``/proc/swaps``),
kernel holders (dm, md) of a block device, and for an image file the mounts
of any loop device backed by it.  Paths of ``/proc`` and ``/sys`` are module
variables so tests can point them at a fake tree.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import NamedTuple

from nvfs_tools import format as fmt

SYSFS = "/sys"
MOUNTINFO = "/proc/self/mountinfo"
PROC_SWAPS = "/proc/swaps"

Reader = Callable[[int, int], bytes]


class Signature(NamedTuple):
    """A recognised on-device signature; ``offset``/``length`` locate the magic bytes."""

    kind: str  # e.g. "ext4 filesystem", "dos partition table"
    offset: int
    length: int
    detail: str = ""

    @property
    def is_nvfs(self) -> bool:
        return self.kind == "NVFS filesystem"

    def __str__(self) -> str:
        return f"{self.kind} ({self.detail})" if self.detail else self.kind


# (kind, byte offset, magic).  Offsets past the end of the device are skipped.
_MAGICS: list[tuple[str, int, bytes]] = [
    ("XFS filesystem", 0, b"XFSB"),
    ("LUKS encrypted volume", 0, b"LUKS\xba\xbe"),
    ("LUKS2 encrypted volume (secondary header)", 16384, b"SKUL\xba\xbe"),
    ("btrfs filesystem", 65536 + 64, b"_BHRfS_M"),
    ("LVM2 physical volume", 512, b"LABELONE"),
    ("LVM2 physical volume", 536, b"LVM2 001"),
    ("GPT partition table", 512, b"EFI PART"),
    ("GPT partition table", 4096, b"EFI PART"),
    ("Linux RAID member (md 1.1)", 0, b"\xfcN+\xa9"),
    ("Linux RAID member (md 1.2)", 4096, b"\xfcN+\xa9"),
    ("ISO 9660 filesystem", 32769, b"CD001"),
    ("squashfs filesystem", 0, b"hsqs"),
    ("NTFS filesystem", 3, b"NTFS    "),
    ("exFAT filesystem", 3, b"EXFAT   "),
    ("F2FS filesystem", 1024, b"\x10\x20\xf5\xf2"),
    ("ReiserFS filesystem", 65536 + 52, b"ReIsEr2Fs"),
    ("ReiserFS filesystem", 65536 + 52, b"ReIsEr3Fs"),
    ("JFS filesystem", 32768, b"JFS1"),
    ("bcache device", 4096 + 24, b"\xc6\x85\x73\xf6\x4e\x1a\x45\xca\x82\x65\xf5\x7f\x48\xba\x6d\x81"),
    ("swap space", 4096 - 10, b"SWAPSPACE2"),
    ("swap space", 4096 - 10, b"SWAP-SPACE"),
    ("swap space", 8192 - 10, b"SWAPSPACE2"),
    ("swap space", 16384 - 10, b"SWAPSPACE2"),
    ("swap space", 65536 - 10, b"SWAPSPACE2"),
]

_EXT_SB = 1024
_EXT_MAGIC_OFF = _EXT_SB + 56
_EXT_COMPAT_HAS_JOURNAL = 0x4
_EXT4_INCOMPAT = 0x40 | 0x80 | 0x200 | 0x2000 | 0x8000  # extents, 64bit, flex_bg, large_dir/ea_inode, inline
_EXT4_RO_COMPAT = 0x8 | 0x20 | 0x40 | 0x400  # huge_file, dir_nlink, extra_isize, metadata_csum


def _safe(read: Reader, size: int, offset: int, length: int) -> bytes:
    if offset + length > size:
        return b""
    try:
        return read(offset, length)
    except OSError:
        return b""


def _ext(read: Reader, size: int) -> Signature | None:
    sb = _safe(read, size, _EXT_SB, 1024)
    if len(sb) < 1024 or sb[56:58] != b"\x53\xef":
        return None
    compat = int.from_bytes(sb[92:96], "little")
    incompat = int.from_bytes(sb[96:100], "little")
    ro_compat = int.from_bytes(sb[100:104], "little")
    if incompat & _EXT4_INCOMPAT or ro_compat & _EXT4_RO_COMPAT:
        kind = "ext4"
    elif compat & _EXT_COMPAT_HAS_JOURNAL:
        kind = "ext3"
    else:
        kind = "ext2"
    label = sb[120:136].split(b"\0", 1)[0].decode("utf-8", "replace")
    detail = f"label '{label}'" if label else ""
    return Signature(f"{kind} filesystem", _EXT_MAGIC_OFF, 2, detail)


def _nvfs(read: Reader, size: int) -> Signature | None:
    head = _safe(read, size, 0, fmt.SB_STATIC_SIZE)
    if head[: len(fmt.MAGIC)] != fmt.MAGIC:
        return None
    detail = ""
    label_off = fmt.field_offset(fmt.PLAIN["SuperblockStatic"], "label")
    label = head[label_off : label_off + 64].split(b"\0", 1)[0].decode("utf-8", "replace")
    if label:
        detail = f"label '{label}'"
    return Signature("NVFS filesystem", 0, len(fmt.MAGIC), detail)


def _boot_sector(read: Reader, size: int) -> Signature | None:
    """FAT boot sector or DOS (MBR) partition table, both marked 0x55AA at 510."""
    sector = _safe(read, size, 0, 512)
    if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
        return None
    for off, tag in ((54, b"FAT12"), (54, b"FAT16"), (82, b"FAT32"), (54, b"FAT  ")):
        if sector[off : off + len(tag)] == tag:
            return Signature(f"vfat filesystem ({tag.decode().strip()})", 510, 2)
    entries = [sector[446 + 16 * i : 462 + 16 * i] for i in range(4)]
    if any(e[4] != 0 for e in entries) and all(e[0] in (0, 0x80) for e in entries):
        return Signature("dos partition table", 510, 2)
    return Signature("boot sector", 510, 2)


def detect_signatures(read: Reader, size: int, *, use_blkid: str | None = None) -> list[Signature]:
    """Every known signature found through ``read(offset, length)`` on a device of ``size`` bytes.

    ``use_blkid``: a device path to also ask ``blkid -p`` about when the table
    here finds nothing (it knows many more formats); ``None`` skips it.
    """
    found: list[Signature] = []
    for probe in (_nvfs, _ext, _boot_sector):
        sig = probe(read, size)
        if sig:
            found.append(sig)
    for kind, offset, magic in _MAGICS:
        if _safe(read, size, offset, len(magic)) == magic and not any(s.kind == kind for s in found):
            found.append(Signature(kind, offset, len(magic)))
    if size >= 65536 + 4096:  # md 0.90 / 1.0 superblocks sit near the end
        for label, off in (("md 0.90", (size & ~0xFFFF) - 65536), ("md 1.0", ((size - 8192) & ~4095))):
            if off >= 0 and _safe(read, size, off, 4) == b"\xfcN+\xa9":
                found.append(Signature(f"Linux RAID member ({label})", off, 4))
    if not found and use_blkid:
        found.extend(_blkid(use_blkid))
    return found


def _blkid(path: str) -> list[Signature]:
    """Ask libblkid (``blkid -p``, low-level probing, no cache) as a second opinion."""
    import shutil
    import subprocess

    exe = shutil.which("blkid") or ("/sbin/blkid" if os.path.exists("/sbin/blkid") else None)
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "-p", "-o", "export", path], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    kind = values.get("TYPE") or values.get("PTTYPE")
    if not kind:
        return []
    what = "partition table" if "PTTYPE" in values and "TYPE" not in values else "signature"
    return [Signature(f"{kind} {what} (found by blkid)", 0, 0)]


# ---------------------------------------------------------------------------
# Who is using a device
# ---------------------------------------------------------------------------


class Mount(NamedTuple):
    """One line of ``/proc/self/mountinfo``: what is mounted where."""

    devnum: tuple[int, int]
    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def read_mounts(path: str | None = None) -> list[Mount]:
    """Parse ``/proc/self/mountinfo``."""
    mounts = []
    try:
        with open(path or MOUNTINFO, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            major, minor = fields[2].split(":")
            mounts.append(
                Mount((int(major), int(minor)), _unescape(fields[4]), fields[sep + 1], _unescape(fields[sep + 2]))
            )
        except (ValueError, IndexError):
            continue
    return mounts


def _devnum(st: os.stat_result) -> tuple[int, int]:
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def _sys_block_dir(devnum: tuple[int, int]) -> str:
    return os.path.join(SYSFS, "dev", "block", f"{devnum[0]}:{devnum[1]}")


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def partitions_of(devnum: tuple[int, int]) -> list[tuple[str, tuple[int, int]]]:
    """(name, devnum) of the partitions of a whole block device, from sysfs."""
    base = _sys_block_dir(devnum)
    result = []
    try:
        names = os.listdir(base)
    except OSError:
        return []
    for name in names:
        if os.path.exists(os.path.join(base, name, "partition")):
            dev = _read_text(os.path.join(base, name, "dev"))
            if dev and ":" in dev:
                major, minor = dev.split(":")
                result.append((name, (int(major), int(minor))))
    return result


def holders_of(devnum: tuple[int, int]) -> list[str]:
    """Kernel holders (device-mapper, md) of a block device."""
    try:
        return sorted(os.listdir(os.path.join(_sys_block_dir(devnum), "holders")))
    except OSError:
        return []


def loop_devices_backed_by(st: os.stat_result) -> list[tuple[str, tuple[int, int]]]:
    """Loop devices whose backing file is the file with stat ``st`` (name, devnum)."""
    result = []
    base = os.path.join(SYSFS, "block")
    try:
        names = sorted(n for n in os.listdir(base) if n.startswith("loop"))
    except OSError:
        return []
    for name in names:
        backing = _read_text(os.path.join(base, name, "loop", "backing_file"))
        if not backing:
            continue
        if backing.endswith(" (deleted)"):
            continue
        try:
            bst = os.stat(backing)
        except OSError:
            continue
        if (bst.st_dev, bst.st_ino) == (st.st_dev, st.st_ino):
            dev = _read_text(os.path.join(base, name, "dev")) or ""
            if ":" in dev:
                major, minor = dev.split(":")
                result.append((f"/dev/{name}", (int(major), int(minor))))
    return result


def _swap_users(path: str, st: os.stat_result) -> list[str]:
    try:
        with open(PROC_SWAPS, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()[1:]
    except OSError:
        return []
    users = []
    for line in lines:
        name = _unescape(line.split()[0]) if line.split() else ""
        try:
            sst = os.stat(name)
        except OSError:
            continue
        same_dev = stat.S_ISBLK(st.st_mode) and stat.S_ISBLK(sst.st_mode) and sst.st_rdev == st.st_rdev
        if same_dev or (sst.st_dev, sst.st_ino) == (st.st_dev, st.st_ino):
            users.append(f"{path} is in use as swap space")
    return users


def find_users(path: str, st: os.stat_result | None = None) -> list[str]:
    """One human-readable line per reason ``path`` must not be written to; empty when free.

    Block devices: mounts of the device or of one of its partitions, swap, and
    kernel holders.  Image files: mounts of loop devices backed by the file,
    and swap.  Character devices (devdax) cannot be mounted; none reported.
    """
    st = st or os.stat(path)
    mounts = read_mounts()
    real = os.path.realpath(path)

    def mounted(devnum: tuple[int, int], devname: str) -> list[str]:
        hits = []
        for m in mounts:
            if m.devnum == devnum or os.path.realpath(m.source) == os.path.realpath(devname):
                if m.mount_point not in hits:
                    hits.append(m.mount_point)
        return hits

    reasons: list[str] = []
    if stat.S_ISBLK(st.st_mode):
        devnum = _devnum(st)
        for mp in mounted(devnum, real):
            reasons.append(f"{path} is mounted on {mp}")
        for name, pdev in partitions_of(devnum):
            for mp in mounted(pdev, f"/dev/{name}"):
                reasons.append(f"{path} has partition /dev/{name} mounted on {mp}")
        for holder in holders_of(devnum):
            reasons.append(f"{path} is in use by {holder}")
    elif stat.S_ISREG(st.st_mode):
        for loop, devnum in loop_devices_backed_by(st):
            for mp in mounted(devnum, loop):
                reasons.append(f"{path} is mounted on {mp} (through {loop})")
            for name, pdev in partitions_of(devnum):
                for mp in mounted(pdev, f"/dev/{name}"):
                    reasons.append(f"{path} is mounted on {mp} (through /dev/{name})")
    reasons.extend(_swap_users(path, st))
    return reasons
