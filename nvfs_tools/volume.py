"""An open NVFS filesystem: the one library mkfs, fsck and debugfs share.

:class:`Volume` validates the superblock, replays a committed microjournal
when opened for writing, and offers file and namespace operations that follow
the store and barrier order of ``spec/``.  Every store goes through
``self.dev.write`` (or :meth:`store_u64`) and every ordering point through
:meth:`barrier`, so a recording device sees exactly what the spec demands.

Hot paths never parse with construct: inode fields are read and written with
:mod:`struct` at offsets taken from :func:`format.field_layout` once at import.

The library never updates timestamps on its own (an offline tool must be able
to reproduce a tree exactly); callers pass times at creation or call
:meth:`Volume.setattr`.
"""

from __future__ import annotations

import os
import random
import struct
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from nvfs_tools import filemap
from nvfs_tools import format as fmt
from nvfs_tools import journal as jr
from nvfs_tools import xattr as xa
from nvfs_tools.alloc import HUGE_BYTES, Allocator
from nvfs_tools.device import Device
from nvfs_tools.errors import (
    CorruptError,
    DeviceError,
    DirectoryNotEmptyError,
    FileExistsError_,
    InvalidArgumentError,
    IsADirectoryError_,
    NameTooLongError,
    NoSpaceError,
    NoSuchFileError,
    NotADirectoryError_,
    NotNvfsError,
    NvfsError,
    ReadOnlyError,
    UnsupportedFeatureError,
)
from nvfs_tools.quota import quota_counted

if TYPE_CHECKING:
    from construct import Container

# ---------------------------------------------------------------------------
# Raw layouts (from format.py, computed once)
# ---------------------------------------------------------------------------


# The plain ``struct`` forms of the schemas (format.PLAIN): importing construct costs more than a
# whole ``mkfs -d`` of a small tree, and these layouts come from the same declaration.
_INODE = fmt.PLAIN["Inode"]
_STATIC = fmt.PLAIN["SuperblockStatic"]
_DYNAMIC = fmt.PLAIN["SuperblockDynamic"]
INODE_LAYOUT = fmt.field_layout(_INODE)
_INODE_FIELD = {sub.name: struct.Struct("<" + sub.code) for sub in _INODE.subcons if sub.name and sub.name != "block"}
_INODE_OFF = {name: info.offset for name, info in INODE_LAYOUT.items()}
_BLOCK_OFF = _INODE_OFF["block"]
_PTRS = struct.Struct(f"<{fmt.N_BLOCK_POINTERS}Q")
#: the whole inode in one struct; "block" is the last field and expands to 16 values
_INODE_STRUCT = _INODE.packer
_INODE_NAMES = [sub.name for sub in _INODE.subcons if sub.name != "block"]
_N_SCALAR = len(_INODE_NAMES)
_FIELD_MAX = {name: (1 << (8 * INODE_LAYOUT[name].size)) - 1 for name in ("uid", "gid", "mode")}
assert _INODE.subcons[-1].name == "block" and _INODE_STRUCT.size == fmt.INODE_SIZE
_U64 = struct.Struct("<Q")
_U16 = struct.Struct("<H")
_DYN_LAYOUT = fmt.field_layout(_DYNAMIC)
_DYN_OFF = {name: fmt.SB_DYNAMIC_OFFSET + info.offset for name, info in _DYN_LAYOUT.items()}
_STATIC_CHECKSUM_OFF = fmt.field_offset(_STATIC, "checksum")
_TIME_FIELDS = ("atime", "mtime", "ctime", "btime")
assert _INODE.sizeof() == fmt.INODE_SIZE

Name = bytes | str


def _name(name: Name) -> bytes:
    return os.fsencode(name) if isinstance(name, str) else bytes(name)


def check_name(name: bytes) -> None:
    """Reject names a directory entry cannot hold."""
    if len(name) > fmt.MAX_NAME_LEN:
        raise NameTooLongError(f"name too long ({len(name)} bytes, at most {fmt.MAX_NAME_LEN})")
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise InvalidArgumentError(f"invalid file name {name!r}")


def _now() -> tuple[int, int]:
    ns = time.time_ns()
    return ns // 1_000_000_000, ns % 1_000_000_000


def _times(times: Any) -> dict[str, tuple[int, int]]:
    """Normalise ``times``: None (now), one ``(sec, nsec)`` for all, or a dict per field."""
    if times is None:
        now = _now()
        return dict.fromkeys(_TIME_FIELDS, now)
    if isinstance(times, tuple):
        return dict.fromkeys(_TIME_FIELDS, times)
    now = None
    out = {}
    for f in _TIME_FIELDS:
        value = times.get(f)
        if value is None:
            now = now or _now()
            value = now
        out[f] = value
    return out


def _dir_module():
    from nvfs_tools import directory

    return directory


def is_dir(mode: int) -> bool:
    return mode & fmt.S_IFMT == fmt.S_IFDIR


class Volume:
    """An NVFS filesystem on a device, opened read-only or read-write."""

    def __init__(self, dev: Device, static: fmt.Record | Container, *, writable: bool) -> None:
        self.dev = dev
        self.static = static
        self.geo = fmt.geometry_from_static(static)
        self.block_size = self.geo.block_size
        self.hash_seed = bytes(static.hash_seed)
        self.writable = writable
        self.quota_enabled = bool(static.feature_ro_compat & fmt.FEATURE_RO_COMPAT_QUOTA)
        geo = self.geo
        self._ipg = geo.inodes_per_group
        self._itable = [geo.inode_table_block(g) * self.block_size for g in range(geo.group_count)]
        self._first_data = [geo.first_data_block(g) for g in range(geo.group_count)]
        self._bpg = geo.blocks_per_group
        self._data_limit = min(geo.group_end(geo.group_count - 1), geo.blocks_count)
        from nvfs_tools import scan

        # the pure reference scans are slower than the allocator's own regex scans
        self.scan_backend = scan.backend() if scan.using_compiled() else None
        self.alloc = Allocator(self)
        self.journal: jr.Journal | None = None
        self.quota = None
        self._modified = False

    # ------------------------------------------------------------------ open/close
    @classmethod
    def open(cls, path: str, *, writable: bool = False, use_backup: bool = False, **device_options: Any) -> Volume:
        """Open ``path``; validates the static superblock and replays the journal when writable.

        ``device_options`` go to :class:`Device` (``unordered=True`` for mkfs).
        """
        return cls.from_device(Device(path, writable=writable, **device_options), use_backup=use_backup)

    @classmethod
    def from_device(cls, dev: Device, *, use_backup: bool = False) -> Volume:
        """A volume over an already opened device (closed again if the superblock is refused)."""
        writable = dev.writable
        try:
            static = cls._load_static(dev, use_backup)
            if writable:  # before anything is cached from the media
                geo = fmt.geometry_from_static(static)
                jr.replay(dev, geo.journal_block, geo.block_size, geo.journal_slots)
            vol = cls(dev, static, writable=writable)
            if writable:
                vol.journal = jr.Journal(vol)
                if vol.quota_enabled:
                    from nvfs_tools.quota import Quota

                    vol.quota = Quota(vol)
            return vol
        except BaseException:
            dev.close()
            raise

    @staticmethod
    def _load_static(dev: Device, use_backup: bool) -> fmt.Record:
        if use_backup:
            raw = Volume._find_backup(dev)
        else:
            if dev.size < fmt.MIN_BLOCK_SIZE:
                raise NotNvfsError(f"{dev.path}: too small to hold an NVFS superblock")
            raw = dev.read(0, fmt.SB_STATIC_SIZE)
        if raw[:8] != fmt.MAGIC:
            raise NotNvfsError(f"{dev.path}: no NVFS superblock (bad magic)")
        stored = struct.unpack_from("<I", raw, _STATIC_CHECKSUM_OFF)[0]
        if fmt.sb_static_checksum(raw) != stored:
            raise CorruptError(f"{dev.path}: static superblock checksum mismatch (try the backup superblock)")
        static = _STATIC.parse(raw)
        if static.version != fmt.FORMAT_VERSION:
            raise UnsupportedFeatureError(f"{dev.path}: format version {static.version} is not supported")
        unknown = static.feature_incompat & ~fmt.FEATURE_INCOMPAT_KNOWN
        if unknown:
            raise UnsupportedFeatureError(f"{dev.path}: unknown incompatible features 0x{unknown:x}")
        unknown = static.feature_ro_compat & ~fmt.FEATURE_RO_COMPAT_KNOWN
        if unknown and dev.writable:
            raise UnsupportedFeatureError(
                f"{dev.path}: unknown read-only-compatible features 0x{unknown:x}; can only be opened read-only"
            )
        bs = 1 << static.log_block_size
        if not fmt.MIN_BLOCK_SIZE <= bs <= fmt.MAX_BLOCK_SIZE or static.inode_size != fmt.INODE_SIZE:
            raise CorruptError(f"{dev.path}: superblock has block size {bs}, inode size {static.inode_size}")
        if static.blocks_count * bs > dev.size:
            raise DeviceError(
                f"{dev.path}: filesystem is {static.blocks_count * bs} bytes but the device only {dev.size}"
            )
        geo = fmt.geometry_from_static(static)
        if (
            static.group_count == 0
            or static.blocks_per_group != bs * 8
            or (static.group_count - 1) * geo.blocks_per_group >= static.blocks_count
            or static.inodes_count != geo.inodes_count
            or static.journal_block != geo.journal_block
            or static.inodes_per_group > geo.inode_table_blocks * geo.inodes_per_block
            or static.inodes_per_group > geo.inode_bitmap_blocks * bs * 8
            or not 1 <= static.journal_slots <= geo.journal_blocks * bs // fmt.JOURNAL_SLOT_SIZE
            or geo.first_data_block(0) >= min(geo.group_end(0), static.blocks_count)
        ):
            raise CorruptError(f"{dev.path}: superblock geometry is inconsistent")
        return static

    @staticmethod
    def _find_backup(dev: Device) -> bytes:
        """The backup static superblock at the start of the device's last block, for any block size."""
        bs = fmt.MIN_BLOCK_SIZE
        while bs <= fmt.MAX_BLOCK_SIZE:
            blocks = dev.size // bs
            if blocks:
                raw = dev.read((blocks - 1) * bs, fmt.SB_STATIC_SIZE)
                if raw[:8] == fmt.MAGIC and _STATIC.parse(raw).log_block_size == bs.bit_length() - 1:
                    return raw
            bs *= 2
        raise NotNvfsError(f"{dev.path}: no backup NVFS superblock found at the end of the device")

    def close(self) -> None:
        if self.dev.map is None:
            return
        if self.writable and self._modified:
            self.barrier()
            self._store_dyn("last_write_time", int(time.time()))
            if getattr(self, "_was_clean", False):  # CLEAN only comes back if it was there before
                self._store_dyn("state", self._dyn_get_sized("state") | fmt.STATE_CLEAN)
                self.barrier()
        self.dev.close()

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ raw access
    def barrier(self) -> None:
        self.dev.barrier()

    def _w(self) -> None:
        if not self.writable:
            raise ReadOnlyError("filesystem opened read-only")
        if not self._modified:
            self._modified = True
            self._mark_unclean()

    def _mark_unclean(self) -> None:
        """spec/operations.md 10: a writer clears ``CLEAN`` before its first change (and sets it back
        at close), so a crash in between is never taken for a clean filesystem by ``fsck -y``.

        Skipped on an unordered device (mkfs): nothing may trust it before mkfs finishes anyway.
        """
        if getattr(self.dev, "unordered", False):
            return
        state = self._dyn_get_sized("state")
        self._was_clean = bool(state & fmt.STATE_CLEAN)
        if self._was_clean:
            self._store_dyn("state", state & ~fmt.STATE_CLEAN)
            self.barrier()

    def _dyn_get_sized(self, name: str) -> int:
        info = _DYN_LAYOUT[name]
        return int.from_bytes(self.dev.view[_DYN_OFF[name] : _DYN_OFF[name] + info.size], "little")

    def store_u64(self, addr: int, value: int) -> None:
        """One aligned 8-byte store at device byte ``addr``."""
        if addr % 8:
            raise InvalidArgumentError(f"unaligned 8-byte store at {addr}")
        self.dev.write(addr, _U64.pack(value))

    def read_block(self, block: int) -> bytes:
        return self.dev.read(block * self.block_size, self.block_size)

    def write_block(self, block: int, data: bytes) -> None:
        if len(data) > self.block_size:
            raise InvalidArgumentError(f"{len(data)} bytes do not fit in one block")
        self.dev.write(block * self.block_size, data)

    @property
    def dyn(self) -> fmt.Record:
        return _DYNAMIC.parse(self.dev.read(fmt.SB_DYNAMIC_OFFSET, fmt.SB_DYNAMIC_SIZE))

    def _dyn_get(self, name: str) -> int:
        return _U64.unpack_from(self.dev.view, _DYN_OFF[name])[0]

    def _store_dyn(self, name: str, value: int) -> None:
        info = _DYN_LAYOUT[name]
        self.dev.write(_DYN_OFF[name], value.to_bytes(info.size, "little", signed=value < 0))

    def transaction(self) -> AbstractContextManager[jr.Transaction]:
        """A microjournal transaction: ``with vol.transaction() as tx: tx.store(addr, value)``."""
        self._w()
        assert self.journal is not None
        return self.journal.transaction()

    def check_data_block(self, block: int) -> None:
        """Raise CorruptError unless ``block`` is a block a file may own."""
        if block >= self._data_limit or block == self.geo.backup_block:
            raise CorruptError(f"block pointer {block} lies outside the data area")
        g = block // self._bpg
        if block < self._first_data[g]:
            raise CorruptError(f"block pointer {block} points into the metadata of group {g}")

    # ------------------------------------------------------------------ inodes
    def inode_offset(self, ino: int) -> int:
        if not 1 <= ino <= self.geo.inodes_count:
            raise CorruptError(f"inode number {ino} out of range 1..{self.geo.inodes_count}")
        g, index = divmod(ino - 1, self._ipg)
        return self._itable[g] + index * fmt.INODE_SIZE

    def read_inode(self, ino: int) -> Container:
        """The parsed inode: a Container with the fields of :data:`format.Inode` (block as a list).

        Decoded with one :mod:`struct` call rather than construct (fsck and
        debugfs read inodes by the million).
        """
        from construct import Container  # debugfs and fsck print it as construct does

        values = _INODE_STRUCT.unpack_from(self.dev.view, self.inode_offset(ino))
        c = Container(zip(_INODE_NAMES, values[:_N_SCALAR], strict=True))
        c["block"] = list(values[_N_SCALAR:])
        return c

    def inode_raw(self, ino: int) -> bytes:
        return self.dev.read(self.inode_offset(ino), fmt.INODE_SIZE)

    def _get(self, ino: int, field: str) -> int:
        return _INODE_FIELD[field].unpack_from(self.dev.view, self.inode_offset(ino) + _INODE_OFF[field])[0]

    def inode_mode(self, ino: int) -> int:
        return self._get(ino, "mode")

    def _ptrs(self, ino: int) -> list[int]:
        return list(_PTRS.unpack_from(self.dev.view, self.inode_offset(ino) + _BLOCK_OFF))

    def inode_field_addr(self, ino: int, field: str, index: int = 0) -> int:
        """Device byte address of an inode field (``("block", i)`` for pointer i)."""
        if field not in _INODE_OFF:
            raise InvalidArgumentError(f"no inode field {field!r}")
        return self.inode_offset(ino) + _INODE_OFF[field] + (8 * index if field == "block" else 0)

    def set_inode_fields(self, ino: int, **fields: Any) -> None:
        """Store fields in the given order (the caller barriers).

        ``block`` takes a full list of 16 pointers or a dict ``{index: value}``.
        A change of ``blocks`` is charged to quota when quota is enabled.
        """
        self._w()
        base = self.inode_offset(ino)
        for name, value in fields.items():
            if name == "block":
                items = value.items() if isinstance(value, dict) else enumerate(value)
                for i, v in items:
                    self.dev.write(base + _BLOCK_OFF + 8 * i, _U64.pack(v))
                continue
            if name == "blocks" and self.quota is not None:
                old = self._get(ino, "blocks")
                if value != old:
                    self._charge_blocks(ino, value - old)
            st = _INODE_FIELD.get(name)
            if st is None:
                raise InvalidArgumentError(f"no inode field {name!r}")
            self.dev.write(base + _INODE_OFF[name], st.pack(value))

    def _charge_blocks(self, ino: int, delta: int) -> None:
        if self.quota is not None and delta and quota_counted(ino):
            self.quota.charge(self._get(ino, "uid"), self._get(ino, "gid"), delta * self.block_size, 0)

    def _add_blocks(self, ino: int, delta: int) -> None:
        if delta:
            self.set_inode_fields(ino, blocks=self._get(ino, "blocks") + delta)

    def init_reserved_file(self, ino: int, mode: int) -> None:
        """Make reserved inode ``ino`` an empty file (quota files); its bitmap bit is set by mkfs."""
        self._w()
        t = _times(None)
        self.dev.write(self.inode_offset(ino), self._inode_image(mode, 0, 0, 1, t))

    @staticmethod
    def _validate(mode: int, uid: int, gid: int, times: dict[str, tuple[int, int]]) -> None:
        """Reject values the inode cannot hold before anything is allocated."""
        for field, value in (("uid", uid), ("gid", gid), ("mode", mode)):
            if not 0 <= value <= _FIELD_MAX[field]:
                raise InvalidArgumentError(f"{field} {value} out of range")
        for f, (sec, nsec) in times.items():
            if not -(1 << 63) <= sec < 1 << 63 or not 0 <= nsec < 1_000_000_000:
                raise InvalidArgumentError(f"{f} ({sec}, {nsec}) out of range")

    @staticmethod
    def _inode_image(
        mode: int, uid: int, gid: int, links: int, times: dict[str, tuple[int, int]], **extra: Any
    ) -> bytearray:
        img = bytearray(fmt.INODE_SIZE)
        F, O = _INODE_FIELD, _INODE_OFF  # noqa: E741
        F["mode"].pack_into(img, O["mode"], mode)
        F["uid"].pack_into(img, O["uid"], uid)
        F["gid"].pack_into(img, O["gid"], gid)
        F["links_count"].pack_into(img, O["links_count"], links)
        F["generation"].pack_into(img, O["generation"], random.getrandbits(32))
        for f in _TIME_FIELDS:
            sec, nsec = times[f]
            F[f].pack_into(img, O[f], sec)
            F[f + "_nsec"].pack_into(img, O[f + "_nsec"], nsec)
        for name, value in extra.items():
            if name == "block":
                _PTRS.pack_into(img, _BLOCK_OFF, *value)
            elif name == "inline":
                img[_BLOCK_OFF : _BLOCK_OFF + len(value)] = value
            else:
                F[name].pack_into(img, O[name], value)
        return img

    def allocate_inode(self, mode: int, goal_group: int | None = None) -> int:
        """Take a free inode (bitmap + counters); directories spread over groups."""
        self._w()
        return self.alloc.allocate_inode(is_dir(mode), goal_group)

    def free_inode(self, ino: int) -> None:
        """Mark ``ino`` unused: mode 0, links 0, then bitmap and counters."""
        self._w()
        mode = self.inode_mode(ino)
        base = self.inode_offset(ino)
        self.dev.write(base + _INODE_OFF["mode"], _U16.pack(0))
        self.dev.write(base + _INODE_OFF["links_count"], b"\0\0\0\0")
        self.alloc.free_inode(ino, is_dir(mode))

    def allocate_block(self, goal: int | None = None) -> int:
        self._w()
        return self.alloc.allocate_blocks(1, goal)[0]

    def allocate_blocks(self, count: int, goal: int | None = None, huge_align: bool = False) -> list[int]:
        self._w()
        return self.alloc.allocate_blocks(count, goal, huge_align)

    def free_block(self, block: int) -> None:
        self._w()
        self.alloc.free_block_list([block])

    def free_blocks(self, blocks: list[int]) -> None:
        self._w()
        self.alloc.free_block_list(blocks)

    # ------------------------------------------------------------------ namespace helpers
    def _dir(self, ino: int):  # noqa: ANN202
        mode = self.inode_mode(ino)
        if mode == 0:
            raise NoSuchFileError(f"inode {ino} is not in use")
        if not is_dir(mode):
            raise NotADirectoryError_(f"inode {ino} is not a directory")
        return _dir_module().Directory(self, ino)

    def _dir_and_entry(self, parent: int, name: bytes):  # noqa: ANN202
        """The parent's Directory and the live entry ``name`` in it (NoSuchFileError when absent)."""
        d = self._dir(parent)
        entry = d.lookup(name)
        if entry is None:
            raise NoSuchFileError(f"{os.fsdecode(name)}: no such file or directory")
        return d, entry

    def _entry(self, parent: int, name: bytes):  # noqa: ANN202
        return self._dir_and_entry(parent, name)[1]

    def lookup(self, path: Name) -> int:
        """Inode number of an absolute path (symlinks are not followed)."""
        ino = fmt.ROOT_INO
        for part in _name(path).split(b"/"):
            if part in (b"", b"."):
                continue
            if part == b"..":
                self._dir(ino)
                ino = self._get(ino, "parent") or fmt.ROOT_INO
                continue
            ino = self._entry(ino, part).ino
        return ino

    def listdir(self, ino: int) -> Iterator[Any]:
        """Live entries of directory ``ino`` (no ``.``/``..``)."""
        return iter(self._dir(ino))

    def _check_new_name(self, parent: int, name: Name):  # noqa: ANN202
        self._w()
        name = _name(name)
        check_name(name)
        d = self._dir(parent)
        if d.lookup(name) is not None:
            raise FileExistsError_(f"{os.fsdecode(name)}: file exists")
        return name, d

    # ------------------------------------------------------------------ creation
    def create(
        self,
        parent: int,
        name: Name,
        mode: int,
        uid: int = 0,
        gid: int = 0,
        times: Any = None,
        *,
        data: bytes | None = None,
        xattrs: dict[bytes, bytes] | None = None,
    ) -> int:
        """Create a regular file (``mode`` may omit S_IFREG); ``data`` fills it in one go.

        With ``data`` (and ``xattrs``) the blocks are written before the inode
        is linked, so the new file costs two barriers in all (those of the
        directory add) and no journal transaction.
        """
        if mode & fmt.S_IFMT == 0:
            mode |= fmt.S_IFREG
        if mode & fmt.S_IFMT != fmt.S_IFREG:
            raise InvalidArgumentError("create makes regular files; use mkdir/symlink/mknod")
        return self._make(parent, name, mode, uid, gid, times, data=data, xattrs=xattrs)

    def mkdir(
        self,
        parent: int,
        name: Name,
        mode: int = 0o755,
        uid: int = 0,
        gid: int = 0,
        times: Any = None,
        *,
        xattrs: dict[bytes, bytes] | None = None,
    ) -> int:
        mode = (mode & 0o7777) | fmt.S_IFDIR
        return self._make(parent, name, mode, uid, gid, times, xattrs=xattrs)

    def symlink(
        self,
        parent: int,
        name: Name,
        target: Name,
        uid: int = 0,
        gid: int = 0,
        times: Any = None,
        *,
        xattrs: dict[bytes, bytes] | None = None,
    ) -> int:
        target = _name(target)
        if not target or b"\0" in target or len(target) > self.block_size:
            raise InvalidArgumentError(f"invalid symlink target of {len(target)} bytes")
        mode = fmt.S_IFLNK | 0o777
        if len(target) <= fmt.INLINE_SYMLINK_MAX:
            return self._make(parent, name, mode, uid, gid, times, inline=target, xattrs=xattrs)
        return self._make(parent, name, mode, uid, gid, times, data=target, xattrs=xattrs)

    def mknod(
        self,
        parent: int,
        name: Name,
        mode: int,
        rdev: int = 0,
        uid: int = 0,
        gid: int = 0,
        times: Any = None,
        *,
        xattrs: dict[bytes, bytes] | None = None,
    ) -> int:
        """Create a device node, FIFO or socket; ``rdev`` in media encoding (major << 32 | minor)."""
        if mode & fmt.S_IFMT not in (fmt.S_IFCHR, fmt.S_IFBLK, fmt.S_IFIFO, fmt.S_IFSOCK):
            raise InvalidArgumentError(f"mknod cannot make mode 0o{mode:o}")
        if mode & fmt.S_IFMT in (fmt.S_IFIFO, fmt.S_IFSOCK):
            rdev = 0
        return self._make(parent, name, mode, uid, gid, times, rdev=rdev, xattrs=xattrs)

    def _make(
        self,
        parent: int,
        name: Name,
        mode: int,
        uid: int,
        gid: int,
        times: Any,
        *,
        data: bytes | None = None,
        inline: bytes | None = None,
        rdev: int = 0,
        xattrs: dict[bytes, bytes] | None = None,
    ) -> int:
        name, d = self._check_new_name(parent, name)
        xblock = None
        if xattrs:
            xattrs = {_name(k): bytes(v) for k, v in xattrs.items()}
            for k, v in xattrs.items():
                xa.check_value(k, v, is_dir=is_dir(mode))
            xblock = xa.build_block(xattrs, self.block_size)
        directory = is_dir(mode)
        t = _times(times)
        self._validate(mode, uid, gid, t)
        pgroup = (parent - 1) // self._ipg
        if directory:
            goal = 0 if parent == fmt.ROOT_INO and name == fmt.LOST_FOUND_NAME else None
        else:
            goal = pgroup
        need = 1 if xblock is not None else 0
        if data:
            n = -(-len(data) // self.block_size)
            need += n + filemap.indirect_blocks_needed(n, self.block_size)
        if need:
            if need > self.alloc.sb_free_blocks:
                raise NoSpaceError(
                    f"no space left: {need * self.block_size} bytes needed, "
                    f"{self.alloc.sb_free_blocks * self.block_size} free"
                )
        extra: dict[str, Any] = {}
        if directory:
            extra["parent"] = parent
        elif inline is not None:
            extra["inline"] = inline
            extra["size"] = len(inline)
            extra["flags"] = fmt.INODE_FLAG_INLINE
        if rdev:
            extra["rdev"] = rdev

        def write_inode(ino: int) -> None:
            """Data blocks, then the inode itself: all before the inode's bitmap bit is set."""
            if data:
                ptrs, nblocks = self._write_new_file(ino, data)
                extra.update(block=ptrs, size=len(data), blocks=nblocks)
            if xblock is not None:
                blk = self.alloc.allocate_blocks(1, self._block_goal(ino))[0]
                self.write_block(blk, xblock)
                extra.update(xattr_block=blk, blocks=extra.get("blocks", 0) + 1)
            self.dev.write(self.inode_offset(ino), self._inode_image(mode, uid, gid, 2 if directory else 1, t, **extra))

        ino = self.alloc.allocate_inode(directory, goal, write_inode)
        linked = False
        try:
            if directory:
                self._adjust_links(parent, +1)
                linked = True
            d.add(name, ino, fmt.MODE_TO_DT[mode & fmt.S_IFMT])
        except NvfsError:
            self._undo_make(ino, directory, extra.get("block"), extra.get("xattr_block", 0), parent if linked else 0)
            raise
        nblocks = extra.get("blocks", 0)
        if self.quota is not None:
            self.quota.charge(uid, gid, nblocks * self.block_size, 1)
        return ino

    def _undo_make(self, ino: int, directory: bool, ptrs: list[int] | None, xblock: int, parent: int) -> None:
        """Give back what a failed creation took (the inode was never linked)."""
        blocks = filemap.all_blocks(self, ptrs) if ptrs else []
        if xblock:
            blocks.append(xblock)
        if blocks:
            self.alloc.free_block_list(blocks)
        if parent:
            self._adjust_links(parent, -1)
        self.dev.write(self.inode_offset(ino), bytes(fmt.INODE_SIZE))
        self.alloc.free_inode(ino, directory)

    def _block_goal(self, ino: int) -> int | None:
        """Where data of inode ``ino`` should go: its own group, or the rotating cursor."""
        g = (ino - 1) // self._ipg
        cur = self.alloc.block_cursor
        if self.geo.group_of_block(cur) == g:
            return None
        return self._first_data[g] if self.alloc.free_blocks[g] else None

    def _write_new_file(self, ino: int, data: bytes) -> tuple[list[int], int]:
        """Allocate and write all blocks of a file not yet linked; returns (pointers, blocks owned)."""
        bs = self.block_size
        n = -(-len(data) // bs)
        blocks = self.alloc.allocate_blocks(n, self._block_goal(ino), huge_align=len(data) > HUGE_BYTES)
        self._write_runs(list(range(n)), blocks, data, 0)
        upd = filemap.link_blocks(self, [0] * fmt.N_BLOCK_POINTERS, list(enumerate(blocks)), None, reachable=False)
        for blk, content in upd.new_nodes.items():
            self.dev.write(blk * bs, content)
        ptrs = [0] * fmt.N_BLOCK_POINTERS
        for i, v in upd.root_changes.items():
            ptrs[i] = v
        return ptrs, n + len(upd.new_nodes)

    def _write_runs(self, fblocks: list[int], dblocks: list[int], data: bytes | memoryview, offset: int) -> None:
        """Write ``data`` (at file ``offset``) into NEW blocks, zero-padding partial blocks."""
        bs = self.block_size
        head = offset - fblocks[0] * bs
        total = len(fblocks) * bs
        tail = total - head - len(data)
        padded = data if head == 0 and tail == 0 else b"\0" * head + bytes(data) + b"\0" * tail
        mv = memoryview(padded)
        i = 0
        n = len(fblocks)
        while i < n:
            j = i + 1
            while j < n and fblocks[j] == fblocks[j - 1] + 1 and dblocks[j] == dblocks[j - 1] + 1:
                j += 1
            src = (fblocks[i] - fblocks[0]) * bs
            self.dev.write(dblocks[i] * bs, mv[src : src + (j - i) * bs])
            i = j

    def _adjust_links(self, ino: int, delta: int) -> int:
        links = self._get(ino, "links_count") + delta
        if links < 0:
            raise CorruptError(f"inode {ino}: link count would go negative")
        self.dev.write(self.inode_offset(ino) + _INODE_OFF["links_count"], _INODE_FIELD["links_count"].pack(links))
        return links

    def link(self, ino: int, parent: int, name: Name) -> None:
        """Add a hard link; link count first so a crash leaves it too high, never too low."""
        mode = self.inode_mode(ino)
        if mode == 0:
            raise NoSuchFileError(f"inode {ino} is not in use")
        if is_dir(mode):
            raise IsADirectoryError_("hard links to directories are not allowed")
        name, d = self._check_new_name(parent, name)
        self._adjust_links(ino, +1)
        try:
            d.add(name, ino, fmt.MODE_TO_DT[mode & fmt.S_IFMT])
        except NvfsError:
            self._adjust_links(ino, -1)
            raise

    # ------------------------------------------------------------------ removal
    def unlink(self, parent: int, name: Name) -> None:
        self._w()
        name = _name(name)
        d, entry = self._dir_and_entry(parent, name)
        ino = entry.ino
        mode = self.inode_mode(ino)
        if is_dir(mode):
            raise IsADirectoryError_(f"{os.fsdecode(name)}: is a directory")
        if self._get(ino, "links_count") > 1:
            d.remove(name)
            self.barrier()
            self._adjust_links(ino, -1)
            self.barrier()
            return
        self._orphan_push(ino)
        d.remove(name)
        self.barrier()
        self._destroy(ino)

    def rmdir(self, parent: int, name: Name) -> None:
        self._w()
        name = _name(name)
        d, entry = self._dir_and_entry(parent, name)
        ino = entry.ino
        sub = self._dir(ino)
        if ino == fmt.ROOT_INO:
            raise InvalidArgumentError("cannot remove the root directory")
        if not sub.is_empty():
            raise DirectoryNotEmptyError(f"{os.fsdecode(name)}: directory not empty")
        self._orphan_push(ino)
        d.remove(name)
        self._adjust_links(parent, -1)
        self.barrier()
        self._destroy(ino)

    def orphans(self) -> list[int]:
        """Inodes on the orphan list, head first (deletes a crash interrupted; fsck completes them)."""
        out: list[int] = []
        seen: set[int] = set()
        ino = self._dyn_get("orphan_head")
        while ino:
            if ino in seen or not 1 <= ino <= self.geo.inodes_count:
                raise CorruptError(f"orphan list broken at inode {ino}")
            seen.add(ino)
            out.append(ino)
            ino = self._get(ino, "next_orphan")
        return out

    def _orphan_push(self, ino: int) -> None:
        base = self.inode_offset(ino)
        self.dev.write(base + _INODE_OFF["next_orphan"], _U64.pack(self._dyn_get("orphan_head")))
        self.barrier()
        self._store_dyn("orphan_head", ino)
        self.barrier()

    def _orphan_pop(self, ino: int, nxt: int) -> None:
        head = self._dyn_get("orphan_head")
        if head == ino:
            self._store_dyn("orphan_head", nxt)
        else:
            cur, seen = head, 0
            while cur and seen < self.geo.inodes_count:
                after = self._get(cur, "next_orphan")
                if after == ino:
                    self.dev.write(self.inode_offset(cur) + _INODE_OFF["next_orphan"], _U64.pack(nxt))
                    break
                cur, seen = after, seen + 1
        self.barrier()

    def owned_blocks(self, ino: int) -> list[int]:
        """Every block inode ``ino`` owns: data, indirect, directory pages/nodes, xattr block."""
        mode = self.inode_mode(ino)
        out: list[int] = []
        if is_dir(mode):
            out.extend(self._dir(ino).owned_blocks())
        elif not self._get(ino, "flags") & fmt.INODE_FLAG_INLINE:
            out.extend(filemap.all_blocks(self, self._ptrs(ino)))
        xb = self._get(ino, "xattr_block")
        if xb:
            self.check_data_block(xb)
            out.append(xb)
        return out

    def _destroy(self, ino: int) -> None:
        """Free everything an orphaned inode owns, then the inode, then pop it off the orphan list."""
        mode = self.inode_mode(ino)
        nxt = self._get(ino, "next_orphan")
        uid, gid = self._get(ino, "uid"), self._get(ino, "gid")
        owned = self._get(ino, "blocks")
        if is_dir(mode):
            self._dir(ino).release()
            blocks = []
        elif self._get(ino, "flags") & fmt.INODE_FLAG_INLINE:
            blocks = []
        else:
            blocks = filemap.all_blocks(self, self._ptrs(ino))
        xb = self._get(ino, "xattr_block")
        if xb:
            blocks.append(xb)
        if blocks:
            self.alloc.free_block_list(blocks)
        self.free_inode(ino)
        if self.quota is not None and quota_counted(ino):
            self.quota.charge(uid, gid, -owned * self.block_size, -1)
        self.barrier()
        self._orphan_pop(ino, nxt)

    # ------------------------------------------------------------------ file data
    def _file(self, ino: int) -> int:
        mode = self.inode_mode(ino)
        if mode == 0:
            raise NoSuchFileError(f"inode {ino} is not in use")
        if is_dir(mode):
            raise IsADirectoryError_(f"inode {ino} is a directory")
        return mode

    def read(self, ino: int, offset: int = 0, length: int | None = None) -> bytes:
        """File bytes; holes read as zeros, reads stop at EOF."""
        mode = self._file(ino)
        size = self._get(ino, "size")
        if mode & fmt.S_IFMT == fmt.S_IFLNK and self._get(ino, "flags") & fmt.INODE_FLAG_INLINE:
            raw = self.inode_raw(ino)[_BLOCK_OFF : _BLOCK_OFF + size]
            return raw[offset : None if length is None else offset + length]
        return filemap.read(self, self._ptrs(ino), size, offset, length)

    def readlink(self, ino: int) -> bytes:
        if self.inode_mode(ino) & fmt.S_IFMT != fmt.S_IFLNK:
            raise InvalidArgumentError(f"inode {ino} is not a symbolic link")
        return self.read(ino)

    def file_blocks(self, ino: int) -> Iterator[tuple[int, int]]:
        """``(file block index, device block)`` of every mapped data block."""
        mode = self._file(ino)
        if mode & fmt.S_IFMT == fmt.S_IFLNK and self._get(ino, "flags") & fmt.INODE_FLAG_INLINE:
            return iter(())
        return filemap.iter_tree(self, self._ptrs(ino))

    def write(self, ino: int, offset: int, data: bytes, *, charge: bool = True) -> None:
        """Write ``data`` at ``offset``, allocating blocks; extends the size (timestamps untouched)."""
        self._w()
        mode = self._file(ino)
        if mode & fmt.S_IFMT not in (fmt.S_IFREG, fmt.S_IFLNK) or self._get(ino, "flags") & fmt.INODE_FLAG_INLINE:
            raise InvalidArgumentError(f"inode {ino} holds no data blocks")
        if not data:
            return
        bs = self.block_size
        end = offset + len(data)
        if -(-end // bs) > fmt.max_file_blocks(bs):
            raise InvalidArgumentError("write past the largest file NVFS can map")
        ptrs = self._ptrs(ino)
        first, last = offset // bs, (end - 1) // bs
        mapped = dict(filemap.iter_tree(self, ptrs, first, last + 1))
        mv = memoryview(data)
        for fb, db in mapped.items():  # overwrite in place
            lo, hi = max(fb * bs, offset), min((fb + 1) * bs, end)
            self.dev.write(db * bs + lo - fb * bs, mv[lo - offset : hi - offset])
        new = [fb for fb in range(first, last + 1) if fb not in mapped]
        size = self._get(ino, "size")
        if new:
            goal = None
            if mapped:
                goal = max(mapped.values()) + 1
            elif first:
                before = [db for _, db in filemap.iter_tree(self, ptrs, max(0, first - 1), first)]
                goal = before[0] + 1 if before else None
            if goal is None:
                goal = self._block_goal(ino)
            nodes: list[int] = []
            hb = self.alloc.huge_blocks
            if end > HUGE_BYTES:
                # big files: indirect blocks first, so that they never cut into a data run
                nodes = self.alloc.allocate_blocks(filemap.missing_nodes(self, ptrs, new), goal)
                if nodes:
                    goal = nodes[-1] + 1
            if end > HUGE_BYTES and new[0] % hb == 0 and (goal is None or goal % hb):
                # a big file reaching a 2 MiB boundary of its own: start a fresh aligned run,
                # so that appends (each continuing at the previous block) fill aligned chunks
                goal = self.alloc.aligned_goal(goal) or goal
            dblocks = self.alloc.allocate_blocks(len(new), goal, huge_align=end > HUGE_BYTES)
            self._write_new_blocks(new, dblocks, mv, offset, end)
            upd = filemap.link_blocks(
                self, ptrs, list(zip(new, dblocks, strict=True)), None, reachable=True, node_blocks=nodes
            )
            if nodes and len(upd.new_nodes) != len(nodes):  # the tree changed under us
                raise CorruptError(f"inode {ino}: indirect tree inconsistent while writing")
            for blk, content in upd.new_nodes.items():
                self.dev.write(blk * bs, content)
            self.barrier()
            for addr, value in upd.late_stores:
                self.dev.write(addr, _U64.pack(value))
            base = self.inode_offset(ino)
            for i, value in upd.root_changes.items():
                self.dev.write(base + _BLOCK_OFF + 8 * i, _U64.pack(value))
            delta = len(new) + len(upd.new_nodes)
            if charge:
                self._add_blocks(ino, delta)
            else:
                self.dev.write(base + _INODE_OFF["blocks"], _U64.pack(self._get(ino, "blocks") + delta))
            if end > size:
                self.barrier()
        if end > size:
            self.dev.write(self.inode_offset(ino) + _INODE_OFF["size"], _U64.pack(end))
        self.barrier()

    def _write_new_blocks(self, fblocks: list[int], dblocks: list[int], mv: memoryview, offset: int, end: int) -> None:
        """Fill newly allocated blocks: the data that falls in them, zeros elsewhere."""
        bs = self.block_size
        i, n = 0, len(fblocks)
        while i < n:
            j = i + 1
            while j < n and fblocks[j] == fblocks[j - 1] + 1 and dblocks[j] == dblocks[j - 1] + 1:
                j += 1
            lo, hi = fblocks[i] * bs, fblocks[j - 1] * bs + bs
            dlo, dhi = max(lo, offset), min(hi, end)
            buf = b"\0" * (dlo - lo) + bytes(mv[dlo - offset : dhi - offset]) + b"\0" * (hi - dhi)
            self.dev.write(dblocks[i] * bs, buf)
            i = j

    def truncate(self, ino: int, size: int) -> None:
        """Set the size: shrinking stores the size first, then unlinks and frees blocks past it."""
        self._w()
        mode = self._file(ino)
        if mode & fmt.S_IFMT != fmt.S_IFREG:
            raise InvalidArgumentError(f"inode {ino} is not a regular file")
        if size < 0 or -(-size // self.block_size) > fmt.max_file_blocks(self.block_size):
            raise InvalidArgumentError(f"invalid size {size}")
        old = self._get(ino, "size")
        base = self.inode_offset(ino)
        if size >= old:
            if size > old:
                self.dev.write(base + _INODE_OFF["size"], _U64.pack(size))
                self.barrier()
            return
        bs = self.block_size
        self.dev.write(base + _INODE_OFF["size"], _U64.pack(size))
        self.barrier()
        ptrs = self._ptrs(ino)
        if size % bs:
            blk = filemap.lookup_block(self, ptrs, size // bs)
            if blk:  # bytes past EOF must read as zeros if the file grows again
                self.dev.write(blk * bs + size % bs, b"\0" * (bs - size % bs))
        stores, roots, free = filemap.plan_truncate(self, ptrs, -(-size // bs))
        for addr, value in stores:
            self.dev.write(addr, _U64.pack(value))
        for i, value in roots.items():
            self.dev.write(base + _BLOCK_OFF + 8 * i, _U64.pack(value))
        if free:
            self.barrier()
            self.alloc.free_block_list(free)
            self._add_blocks(ino, -len(free))
        self.barrier()

    # ------------------------------------------------------------------ journaled updates
    def _journal_images(self, images: dict[int, tuple[bytes, bytearray]], extra: list[tuple[int, int]]) -> None:
        """Commit changed 8-byte words of inode images plus ``extra`` stores in one transaction."""
        with self.transaction() as tx:
            for ino, (old, new) in images.items():
                base = self.inode_offset(ino)
                for off in range(0, fmt.INODE_SIZE, 8):
                    if old[off : off + 8] != new[off : off + 8]:
                        tx.store(base + off, _U64.unpack_from(new, off)[0])
            for addr, value in extra:
                tx.store(addr, value)

    def _image(self, images: dict[int, tuple[bytes, bytearray]], ino: int) -> bytearray:
        if ino not in images:
            raw = self.inode_raw(ino)
            images[ino] = (raw, bytearray(raw))
        return images[ino][1]

    @staticmethod
    def _img_get(img: bytearray, field: str) -> int:
        return _INODE_FIELD[field].unpack_from(img, _INODE_OFF[field])[0]

    @staticmethod
    def _img_set(img: bytearray, field: str, value: int) -> None:
        try:
            _INODE_FIELD[field].pack_into(img, _INODE_OFF[field], value)
        except struct.error:
            raise InvalidArgumentError(f"{field} value {value!r} does not fit the inode field") from None

    def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        atime: tuple[int, int] | None = None,
        mtime: tuple[int, int] | None = None,
        ctime: tuple[int, int] | None = None,
        btime: tuple[int, int] | None = None,
    ) -> None:
        """Change permission bits, owner and times atomically (one journal transaction)."""
        self._w()
        if self.inode_mode(ino) == 0:
            raise NoSuchFileError(f"inode {ino} is not in use")
        images: dict[int, tuple[bytes, bytearray]] = {}
        img = self._image(images, ino)
        old_mode = self._img_get(img, "mode")
        if mode is not None:
            self._img_set(img, "mode", (old_mode & fmt.S_IFMT) | (mode & 0o7777))
        old_uid, old_gid = self._img_get(img, "uid"), self._img_get(img, "gid")
        if uid is not None:
            self._img_set(img, "uid", uid)
        if gid is not None:
            self._img_set(img, "gid", gid)
        for f, value in (("atime", atime), ("mtime", mtime), ("ctime", ctime), ("btime", btime)):
            if value is not None:
                if not 0 <= value[1] < 1_000_000_000:
                    raise InvalidArgumentError(f"{f} nanoseconds {value[1]} out of range")
                self._img_set(img, f, value[0])
                self._img_set(img, f + "_nsec", value[1])
        self._journal_images(images, [])
        if (
            self.quota is not None
            and quota_counted(ino)
            and ((uid is not None and uid != old_uid) or (gid is not None and gid != old_gid))
        ):
            nbytes = self._img_get(img, "blocks") * self.block_size
            self.quota.charge(old_uid, old_gid, -nbytes, -1)
            self.quota.charge(self._img_get(img, "uid"), self._img_get(img, "gid"), nbytes, 1)

    def _is_ancestor(self, anc: int, ino: int) -> bool:
        """True if directory ``anc`` is ``ino`` or one of its ancestors (by parent pointers)."""
        seen = 0
        while seen <= self.geo.inodes_count:
            if ino == anc:
                return True
            if ino == fmt.ROOT_INO:
                return False
            nxt = self._get(ino, "parent")
            if nxt == 0 or nxt == ino:
                return False
            ino, seen = nxt, seen + 1
        raise CorruptError("directory parent pointers form a loop")

    def rename(self, src_parent: int, src_name: Name, dst_parent: int, dst_name: Name) -> None:
        """Move an entry; the switch-over (entries, link counts, parent pointer) is one journal transaction."""
        self._w()
        src_name, dst_name = _name(src_name), _name(dst_name)
        check_name(dst_name)
        sd, dd = self._dir(src_parent), self._dir(dst_parent)
        se = sd.lookup(src_name)
        if se is None:
            raise NoSuchFileError(f"{os.fsdecode(src_name)}: no such file or directory")
        sino = se.ino
        smode = self.inode_mode(sino)
        if src_parent == dst_parent and src_name == dst_name:
            return
        de = dd.lookup(dst_name)
        dino = de.ino if de is not None else 0
        if dino == sino:
            return  # both names are links to the same inode: nothing to do (POSIX)
        if dino:
            dmode = self.inode_mode(dino)
            if is_dir(smode) and not is_dir(dmode):
                raise NotADirectoryError_(f"{os.fsdecode(dst_name)}: not a directory")
            if not is_dir(smode) and is_dir(dmode):
                raise IsADirectoryError_(f"{os.fsdecode(dst_name)}: is a directory")
            if is_dir(dmode) and not self._dir(dino).is_empty():
                raise DirectoryNotEmptyError(f"{os.fsdecode(dst_name)}: directory not empty")
        if is_dir(smode) and self._is_ancestor(sino, dst_parent):
            raise InvalidArgumentError("cannot move a directory into itself")
        ftype = fmt.MODE_TO_DT[smode & fmt.S_IFMT]
        if de is not None and de.file_type == ftype:
            new_addr = de.ino_addr
            old_dst_addr = None
        else:
            ne = dd.prepare(dst_name, ftype)
            new_addr = ne.ino_addr
            old_dst_addr = None
            if de is not None:  # pages may have been split by prepare: find it again
                de = _dir_module().Directory(self, dst_parent).lookup(dst_name)
                old_dst_addr = de.ino_addr if de is not None and de.ino_addr != new_addr else None
        se = _dir_module().Directory(self, src_parent).lookup(src_name)
        images: dict[int, tuple[bytes, bytearray]] = {}
        extra = [(new_addr, sino), (se.ino_addr, 0)]
        if old_dst_addr is not None:
            extra.append((old_dst_addr, 0))
        links_delta: dict[int, int] = {}
        if is_dir(smode):
            links_delta[src_parent] = links_delta.get(src_parent, 0) - 1
            links_delta[dst_parent] = links_delta.get(dst_parent, 0) + 1
            if src_parent != dst_parent:
                self._img_set(self._image(images, sino), "parent", dst_parent)
        orphan = False
        if dino:
            img = self._image(images, dino)
            if is_dir(self._img_get(img, "mode")):
                links_delta[dst_parent] = links_delta.get(dst_parent, 0) - 1
                left = 0
            else:
                left = self._img_get(img, "links_count") - 1
            self._img_set(img, "links_count", left)
            if left == 0:
                orphan = True
                self._img_set(img, "next_orphan", self._dyn_get("orphan_head"))
                extra.append((_DYN_OFF["orphan_head"], dino))
        for d, delta in links_delta.items():
            if delta:
                img = self._image(images, d)
                self._img_set(img, "links_count", self._img_get(img, "links_count") + delta)
        self._journal_images(images, extra)
        if orphan:
            self._destroy(dino)

    def exchange(self, src_parent: int, src_name: Name, dst_parent: int, dst_name: Name) -> None:
        """Swap two existing entries atomically (RENAME_EXCHANGE), in one journal transaction."""
        self._w()
        src_name, dst_name = _name(src_name), _name(dst_name)
        sd, dd = self._dir(src_parent), self._dir(dst_parent)
        se, de = sd.lookup(src_name), dd.lookup(dst_name)
        for entry, name in ((se, src_name), (de, dst_name)):
            if entry is None:
                raise NoSuchFileError(f"{os.fsdecode(name)}: no such file or directory")
        sino, dino = se.ino, de.ino
        if (src_parent, src_name) == (dst_parent, dst_name) or sino == dino:
            return
        smode, dmode = self.inode_mode(sino), self.inode_mode(dino)
        if (is_dir(smode) and self._is_ancestor(sino, dst_parent)) or (
            is_dir(dmode) and self._is_ancestor(dino, src_parent)
        ):
            raise InvalidArgumentError("cannot move a directory into itself")
        if se.file_type == de.file_type:
            extra = [(se.ino_addr, dino), (de.ino_addr, sino)]
        else:  # the file_type bytes must follow the inodes: new records for both names
            ns = sd.prepare(src_name, de.file_type)
            nd = _dir_module().Directory(self, dst_parent).prepare(dst_name, se.file_type)
            se = _dir_module().Directory(self, src_parent).lookup(src_name)
            de = _dir_module().Directory(self, dst_parent).lookup(dst_name)
            extra = [(ns.ino_addr, dino), (nd.ino_addr, sino), (se.ino_addr, 0), (de.ino_addr, 0)]
        images: dict[int, tuple[bytes, bytearray]] = {}
        if src_parent != dst_parent:
            delta = {src_parent: 0, dst_parent: 0}
            for ino, mode, old, new in ((sino, smode, src_parent, dst_parent), (dino, dmode, dst_parent, src_parent)):
                if is_dir(mode):
                    self._img_set(self._image(images, ino), "parent", new)
                    delta[old] -= 1
                    delta[new] += 1
            for d, n in delta.items():
                if n:
                    img = self._image(images, d)
                    self._img_set(img, "links_count", self._img_get(img, "links_count") + n)
        self._journal_images(images, extra)

    # ------------------------------------------------------------------ extended attributes
    def _xattrs(self, ino: int) -> dict[bytes, bytes]:
        if self.inode_mode(ino) == 0:
            raise NoSuchFileError(f"inode {ino} is not in use")
        xb = self._get(ino, "xattr_block")
        if not xb:
            return {}
        self.check_data_block(xb)
        bs = self.block_size
        return xa.parse_block(self.dev.view[xb * bs : xb * bs + bs], xb)

    def listxattr(self, ino: int) -> list[bytes]:
        return list(self._xattrs(ino))

    def getxattr(self, ino: int, name: Name) -> bytes:
        name = _name(name)
        attrs = self._xattrs(ino)
        if name not in attrs:
            raise NoSuchFileError(f"inode {ino} has no attribute {name!r}")
        return attrs[name]

    def setxattr(self, ino: int, name: Name, value: bytes) -> None:
        self._w()
        name = _name(name)
        xa.split_name(name)
        xa.check_value(name, bytes(value), is_dir=is_dir(self.inode_mode(ino)))
        attrs = self._xattrs(ino)
        attrs[name] = bytes(value)
        self._replace_xattrs(ino, attrs)

    def removexattr(self, ino: int, name: Name) -> None:
        self._w()
        name = _name(name)
        attrs = self._xattrs(ino)
        if name not in attrs:
            raise NoSuchFileError(f"inode {ino} has no attribute {name!r}")
        del attrs[name]
        self._replace_xattrs(ino, attrs)

    def set_all_xattrs(self, ino: int, attrs: dict[bytes, bytes]) -> None:
        """Replace the whole attribute set at once (populate: one block write, one transaction)."""
        self._w()
        attrs = {_name(k): bytes(v) for k, v in attrs.items()}
        for k, v in attrs.items():
            xa.check_value(k, v, is_dir=is_dir(self.inode_mode(ino)))
        self._replace_xattrs(ino, attrs)

    def _replace_xattrs(self, ino: int, attrs: dict[bytes, bytes]) -> None:
        """Copy-on-write: new block, barrier, pointer (and block count) swapped in a transaction, old freed."""
        old = self._get(ino, "xattr_block")
        new = 0
        if attrs:
            raw = xa.build_block(attrs, self.block_size)
            new = self.alloc.allocate_blocks(1, self._block_goal(ino))[0]
            self.write_block(new, raw)
            self.barrier()
        images: dict[int, tuple[bytes, bytearray]] = {}
        img = self._image(images, ino)
        self._img_set(img, "xattr_block", new)
        delta = (1 if new else 0) - (1 if old else 0)
        self._img_set(img, "blocks", self._img_get(img, "blocks") + delta)
        self._journal_images(images, [])
        if delta and self.quota is not None and quota_counted(ino):
            self.quota.charge(self._img_get(img, "uid"), self._img_get(img, "gid"), delta * self.block_size, 0)
        if old:
            self.alloc.free_block_list([old])
            self.barrier()
