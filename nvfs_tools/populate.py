"""Copy a host directory tree into a freshly made NVFS volume (``mkfs.nvfs -d DIR``).

Two passes, so that a tree that does not fit is refused before anything is
written:

1. **Walk** the source once, breadth first, chunks of directories at a time
   through the scan backend's ``scan_dirs`` (readdir, ``fstatat`` and whether
   each entry lists xattrs -- ``listxattrat`` on the open directory where the
   kernel has it, else ``llistxattr`` -- on a directory opened with
   ``O_NOATIME``; compiled, or
   :func:`_scan_dir_pure`): it also adds up the *simple* files -- one link,
   no holes, no xattrs, at most one indirect block: most of a real tree --
   so that only the other entries are looked at in Python: read symlink
   targets and xattrs, find the data extents of files that have holes
   (``SEEK_DATA``/``SEEK_HOLE``, only for files whose allocated size is below
   their length), and count the inodes and blocks the image will need (data,
   indirect blocks, symlink blocks, xattr blocks, directory pages and radix
   nodes: exactly, but that the root and lost+found mkfs made are counted as
   if new).  If the device is too small the run stops with
   "needs N blocks / N inodes, device has M blocks / M inodes free".
2. **Write**: one block allocation for the small files of every directory
   (each directory's share consecutive), then one source directory at a
   time: inode numbers for its new children in one bitmap update; with the
   copy thread (unordered devices) and without quota, its simple files
   through the backend's ``write_simple`` (inode image packed, indirect block
   built, contents queued for the copy thread, see :class:`_Copier`), the
   rest here; xattr blocks written directly (a fresh inode needs no
   journal); inodes stored in runs of consecutive numbers, its subdirectories'
   inodes (empty) among them; then the directory itself once its children
   are stored: a directory whose records fit one page gets that page (the
   same bytes ``Directory.build`` writes, built by the backend's
   ``dir_page``), then its root word; a bigger one goes through
   ``Directory.build``.  Quota usage of what was written raw is charged at
   the end.

Nothing in a filesystem being made is live until mkfs succeeds, and mkfs
writes unordered (barriers cost nothing there), but on an ordered device a
crash during populate leaves every visible object complete: a directory's
children (data, inodes, subdirectory inodes) come before a barrier, then its
page, a barrier and its root word (campaigns/crash_replay.py replays every
crash state of a populate; tests/test_campaign_crash.py).  A source file that cannot be
read raises :class:`SourceError` naming it; mkfs then fails with a non-zero
exit code and never reports success for a half-populated image.

Metadata decisions (documented in spec/ by the lead):
- ``ctime`` cannot be set on a host, but the image *can* store anything: the
  image keeps the source's ctime (as mke2fs -d does), so a round trip through
  an image loses nothing; ``btime`` (creation in this filesystem) is the time
  the populate ran.
- the root directory takes the source directory's mode, times and xattrs; its
  owner is ``root_owner`` when given, else left as mkfs made it (mkfs applies
  ``-E root_owner``; like today's mke2fs its default is 0:0, not the source's
  owner, so that an image does not depend on who built the tree).
- with ``SOURCE_DATE_EPOCH`` set (reproducible images), btime is that epoch,
  generations come from a generator seeded by the hash seed, and entries are
  written in name order, so the same tree gives the same image.
- a source entry named ``lost+found`` at the top that is a directory is merged
  into the lost+found mkfs made (its metadata applied); anything else by that
  name there is an error.
- hard links are found by (st_dev, st_ino) and kept as links; the link count
  is the number of names inside the copied tree.
"""

from __future__ import annotations

import errno
import gc
import os
import random
import re
import stat
import struct
import sys
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable

from nvfs_tools import directory as _directory
from nvfs_tools import dirwalk as _dirwalk
from nvfs_tools import format as fmt
from nvfs_tools import namehash
from nvfs_tools import xattr as xa
from nvfs_tools.errors import DeviceError, FileExistsError_, NoSpaceError, NvfsError
from nvfs_tools.layout import source_date_epoch
from nvfs_tools.record import Fields

ProgressFn = Callable[[int, int], None]

_O_NOATIME = getattr(os, "O_NOATIME", 0)
#: What os.fsencode encodes names with (scandir on a directory fd gives str names).
_FS_ENCODING, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
_DIR_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY | os.O_NOFOLLOW
_NS = 1_000_000_000
_HUGE_BYTES = 2 << 20
#: Longest run of a file copied with one read and write (bounds the buffer of huge files), in bytes.
_RUN_BYTES = 8 << 20
#: Small files handed to the copy thread at a time (each hand-over costs the thread a GIL round trip).
_COPY_BATCH = 512
#: The first hand-over's size: the copy thread starts as soon as there is work instead of after the
#: writer has queued _COPY_BATCH files (/usr/include: ~11 ms into the write phase); each next batch
#: doubles up to _COPY_BATCH.
_COPY_FIRST_BATCH = 32
#: GIL switch interval (s) while the copy thread runs (see _Copier).
_COPY_SWITCH_INTERVAL = 0.0002


class SourceError(NvfsError):
    """A source file or directory could not be read; the image is incomplete."""


# ---------------------------------------------------------------------------
# The inode as one struct, derived from format.Inode (no layout restated)
# ---------------------------------------------------------------------------


def _struct_format(schema: fmt.PlainStruct) -> tuple[str, list[str]]:
    """A ``struct`` format string and field names (``block[i]`` for arrays) for a flat plain schema."""
    fmt_chars = ["<"]
    names: list[str] = []
    for sub in schema.subcons:
        if sub.kind not in ("int", "array"):
            raise TypeError(f"unsupported field {sub.name!r} ({sub.kind}) in inode schema")
        fmt_chars.append(sub.code)
        if sub.kind == "array":
            names.extend(f"{sub.name}[{i}]" for i in range(sub.count))
        else:
            names.append(sub.name)
    return "".join(fmt_chars), names


_INODE_FORMAT, _INODE_FIELDS = _struct_format(fmt.PLAIN["Inode"])
INODE_STRUCT = struct.Struct(_INODE_FORMAT)
assert INODE_STRUCT.size == fmt.INODE_SIZE, "format.Inode is not a flat 256-byte struct"
_FIELD_INDEX = {name: i for i, name in enumerate(_INODE_FIELDS)}
_EXPECTED_ORDER = (
    "mode reserved0 flags uid gid links_count generation size blocks atime mtime ctime btime "
    "atime_nsec mtime_nsec ctime_nsec btime_nsec parent xattr_block next_orphan rdev dir_bank"
).split()
_U64 = struct.Struct("<Q")
_ZERO_PTRS = (0,) * fmt.N_BLOCK_POINTERS
_S_IFMT, _S_IFDIR, _S_IFREG, _S_IFLNK = fmt.S_IFMT, fmt.S_IFDIR, fmt.S_IFREG, fmt.S_IFLNK
#: file type bits of a mode -> directory entry file type
_DT = fmt.MODE_TO_DT


#: rec_len(n) == (_REC_FIXED + n) & ~7; checked against format.dir_entry_rec_len below.
_REC_FIXED = fmt.DIR_ENTRY_HEADER_SIZE + fmt.DIR_ENTRY_ALIGN - 1
_MAX_REC = fmt.dir_entry_rec_len(fmt.MAX_NAME_LEN)
assert all((_REC_FIXED + n) & ~7 == fmt.dir_entry_rec_len(n) for n in range(1, 256))


def _owner_and_blocks(raw: bytes) -> tuple[int, int, int]:
    fields = INODE_STRUCT.unpack(raw)
    return fields[_FIELD_INDEX["uid"]], fields[_FIELD_INDEX["gid"]], fields[_FIELD_INDEX["blocks"]]


_NOT_FULL = re.compile(rb"[^\xff]")
_NOT_ZERO = re.compile(rb"[^\x00]")
_XATTR_OFF = fmt.field_offset(fmt.PLAIN["Inode"], "xattr_block")
_BLOCKS_OFF = fmt.field_offset(fmt.PLAIN["Inode"], "blocks")
_SIZE_OFF = fmt.field_offset(fmt.PLAIN["Inode"], "size")
_BLOCK0_OFF = fmt.field_offset(fmt.PLAIN["Inode"], "block")
#: size and blocks, next to each other: one store for a one-page directory
_SIZE_BLOCKS = struct.Struct("<QQ")
assert _BLOCKS_OFF == _SIZE_OFF + 8 and fmt.field_layout(fmt.PLAIN["Inode"])["blocks"].size == 8
assert _INODE_FIELDS[: len(_EXPECTED_ORDER)] == _EXPECTED_ORDER, "inode field order changed: update pack_inode"


def pack_inode(
    mode: int,
    uid: int,
    gid: int,
    links: int,
    generation: int,
    size: int,
    blocks: int,
    times: tuple[int, int, int, int],
    *,
    flags: int = 0,
    parent: int = 0,
    rdev: int = 0,
    pointers: tuple[int, ...] | list[int] = (0,) * fmt.N_BLOCK_POINTERS,
) -> bytes:
    """One 256-byte inode; ``times`` are (atime, mtime, ctime, btime) in nanoseconds."""
    a, an = divmod(times[0], _NS)
    m, mn = divmod(times[1], _NS)
    c, cn = divmod(times[2], _NS)
    b, bn = divmod(times[3], _NS)
    return INODE_STRUCT.pack(
        mode, 0, flags, uid, gid, links, generation, size, blocks, a, m, c, b, an, mn, cn, bn,
        parent, 0, 0, rdev, 0, *pointers,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


class PopulateStats(Fields):
    """What a populate copied and what it cost (``hard_links``: names beyond the first of an inode)."""

    _fields = (
        "files", "directories", "symlinks", "specials", "hard_links", "xattrs", "data_bytes", "inodes_needed",
        "blocks_needed", "walk_seconds", "write_seconds",
    )  # fmt: skip

    def __init__(self) -> None:
        self.files = self.directories = self.symlinks = self.specials = self.hard_links = self.xattrs = 0
        self.data_bytes = self.inodes_needed = self.blocks_needed = 0
        self.walk_seconds = self.write_seconds = 0.0


# ---------------------------------------------------------------------------
# Pass 1: walk
# ---------------------------------------------------------------------------


class _Dir:
    """One source directory: its path, its stat and its children."""

    __slots__ = (
        "path",
        "st",
        "names",
        "meta",
        "simple",
        "nsimple",
        "extra",
        "ino",
        "subdirs",
        "xattrs",
        "parent_ino",
        "merge",
        "fresh",
        "pool",
        "single",
        "blocks",
    )

    def __init__(self, path: bytes, st: os.stat_result) -> None:
        self.path = path
        self.st = st
        self.names: list[bytes] = []
        #: per child, one row of META_FIELDS (see _scan_dir_pure)
        self.meta = array("q")
        #: per child, 1 when it is a *simple* file (written by the core's write_simple)
        self.simple = bytearray()
        self.nsimple = 0
        #: child index -> its _Dir, or a symlink target (bytes); nothing for other children
        self.extra: dict[int, object] = {}
        self.subdirs: list[_Dir] = []
        self.xattrs: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self.ino = 0
        self.parent_ino = 0
        self.merge = False
        #: non-directory inodes whose first name (in walk order) is in this directory
        self.fresh = 0
        #: blocks those inodes take from the directory's one allocation (all but files over _HUGE_BYTES)
        self.pool = 0
        #: a new directory whose records fit one page (written by populate, not by Directory.build)
        self.single = False
        #: its share of the tree's one block allocation (reversed: pop() hands them out in ascending order)
        self.blocks: list[int] = []


def open_noatime(path: bytes, flags: int, dir_fd: int | None = None) -> int:
    """``os.open`` with O_NOATIME (reading a source tree must not change its access times), retried
    without it when the kernel refuses it (O_NOATIME needs the file's owner or CAP_FOWNER)."""
    try:
        return os.open(path, flags | _O_NOATIME, dir_fd=dir_fd)
    except PermissionError:
        if not _O_NOATIME:
            raise
        return os.open(path, flags, dir_fd=dir_fd)


def _open_dir(path: bytes) -> int:
    return open_noatime(path, _DIR_FLAGS)


def _open_file(name: bytes, dir_fd: int, path: bytes) -> int:
    try:
        return open_noatime(name, _READ_FLAGS, dir_fd)
    except OSError as exc:
        raise SourceError(f"{os.fsdecode(path)}: cannot open: {exc.strerror}") from None


def _checked_xattrs(path: bytes, bs: int, is_dir: bool) -> list[tuple[bytes, bytes]]:
    """The xattrs of ``path``, verified as the library verifies a set (size, ACL form) and to fit the image's
    one xattr block: they are written raw later, and a refusal must name the source file."""
    xattrs = _read_xattrs(path)
    if xattrs:
        try:
            for name, value in xattrs:
                xa.check_value(name, value, is_dir=is_dir)
            xa.build_block(dict(xattrs), bs)
        except NvfsError as exc:
            raise SourceError(f"{os.fsdecode(path)}: extended attributes cannot be stored: {exc}") from None
    return xattrs


def _read_xattrs(path: bytes) -> list[tuple[bytes, bytes]]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise SourceError(f"{os.fsdecode(path)}: cannot list xattrs: {exc.strerror}") from None
    out = []
    for name in names:
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                continue
            raise SourceError(f"{os.fsdecode(path)}: cannot read xattr {name}: {exc.strerror}") from None
        out.append((os.fsencode(name), value))
    return out


def _data_extents(name: bytes, dir_fd: int, path: bytes, size: int) -> list[tuple[int, int]]:
    """Data ranges (start, end) of a file that may have holes."""
    fd = _open_file(name, dir_fd, path)
    try:
        extents = []
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break
                if exc.errno == errno.EINVAL:  # no SEEK_DATA support: all data
                    return [(0, size)]
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if end > start:
                extents.append((start, end))
            pos = end
        return extents
    except OSError as exc:
        raise SourceError(f"{os.fsdecode(path)}: cannot map holes: {exc.strerror}") from None
    finally:
        os.close(fd)


def _extent_blocks(extents: list[tuple[int, int]], bs: int) -> list[int]:
    """Sorted file block indexes that hold data."""
    blocks: list[int] = []
    last = -1
    for start, end in extents:
        first = max(start // bs, last + 1)
        stop = -(-end // bs)
        blocks.extend(range(first, stop))
        if stop:
            last = stop - 1
    return blocks


def indirect_blocks_dense(nblocks: int, p: int) -> int:
    """Indirect blocks needed to map file blocks 0..nblocks-1."""
    rest = nblocks - fmt.N_DIRECT
    total = 0
    level = 1
    while rest > 0 and level <= fmt.N_INDIRECT:
        k = min(rest, p**level)
        total += sum(-(-k // p**d) for d in range(1, level + 1))
        rest -= p**level
        level += 1
    return total


def indirect_blocks_sparse(fblocks: list[int], p: int) -> int:
    """Indirect blocks needed to map the given sorted file block indexes."""
    total = 0
    for d in range(1, fmt.N_INDIRECT + 1):
        seen: set[tuple[int, int]] = set()
        for fb in fblocks:
            if fb < fmt.N_DIRECT:
                continue
            index, path = fmt.block_path(fb, p * 8)
            level = index - fmt.N_DIRECT + 1
            if d <= level:
                # the node at depth d-1 below the root of tree `index` is keyed by the first d-1 slots
                seen.add((index, tuple(path[: d - 1])))
        total += len(seen)
    return total


class _Plan:
    """Everything the walk learned: directories in order and the space they need."""

    def __init__(self) -> None:
        self.dirs: list[_Dir] = []
        self.inodes = 0
        self.blocks = 0
        self.entries = 0
        self.links: dict[tuple[int, int], int] = {}  # (dev, ino) -> names in the tree
        self.sparse: dict[tuple[int, int], list[int]] = {}  # (dev, ino) -> data file blocks
        self.xattrs: dict[tuple[int, int], list[tuple[bytes, bytes]]] = {}  # non-directories


#: Directories the walk scans with one backend call (a level of the tree is cut into such chunks):
#: after each, the preallocator hears what has been counted so far.  Told only once per level, it
#: had allocated 93 of /usr/include's 131 MiB when the walk ended (most of the tree is one level),
#: and the copy paid for allocating the rest.
_SCAN_CHUNK = 32


def _walk(
    source: bytes,
    bs: int,
    dir_blocks: Callable[[list[bytes]], int],
    on_counted: Callable[[int], None] | None = None,
    by_name: bool = False,
) -> _Plan:
    """Pass 1: every directory breadth first, with the exact inodes and blocks the copy needs
    (``on_counted(blocks)`` after each chunk of :data:`_SCAN_CHUNK` directories: the blocks counted so
    far).  ``by_name``: each directory's entries in name order instead of the host's readdir order
    (reproducible images: then the directories, the inode numbers and the blocks come in an order the
    host cannot change)."""
    plan = _Plan()
    p = bs // 8
    try:
        root_st = os.stat(source)
    except OSError as exc:
        raise SourceError(f"{os.fsdecode(source)}: {exc.strerror}") from None
    if not stat.S_ISDIR(root_st.st_mode):
        raise SourceError(f"{os.fsdecode(source)}: not a directory")
    root = _Dir(source, root_st)
    plan.dirs.append(root)
    backend = _Backend()
    simple_max = _simple_max(bs)
    i = 0
    while i < len(plan.dirs):
        chunk = plan.dirs[i : i + _SCAN_CHUNK]  # in breadth-first order: found by earlier chunks
        for d, scanned in zip(chunk, backend.scan_dirs([d.path for d in chunk], bs, simple_max), strict=True):
            i += 1
            if by_name:
                scanned = _by_name(scanned)
            _walk_dir(d, plan, bs, p, scanned)
            d.xattrs[b""] = _checked_xattrs(d.path, bs, True)
            if d.xattrs[b""]:
                plan.blocks += 1
            plan.blocks += dir_blocks(d.names)
            if d is not root:
                plan.inodes += 1
        if on_counted is not None:
            on_counted(plan.blocks)
    plan.entries = sum(len(d.names) for d in plan.dirs)
    return plan


def _by_name(scanned: tuple) -> tuple:
    """A scan_dir answer with its entries in name order."""
    names, meta, simple, *rest = scanned
    order = sorted(range(len(names)), key=names.__getitem__)
    if order == list(range(len(names))):
        return scanned
    rows = array("q")
    for i in order:
        rows.extend(meta[i * _NF : (i + 1) * _NF])
    return ([names[i] for i in order], rows, bytearray(simple[i] for i in order), *rest)


def _walk_dir(d: _Dir, plan: _Plan, bs: int, p: int, scanned: tuple) -> None:
    """Read link targets and xattrs of ``d``'s entries and add up the space they need.

    ``scanned`` is the backend's ``scan_dir`` answer: every entry lstat'ed,
    and the *simple* files (one link, dense, at most one indirect block, no
    xattrs: most of a tree) already added up; only the others are looked at
    here, one by one.
    """
    names, meta, simple, simple_blocks, err, what, bad_name = scanned
    if err:
        raise _scan_error(d.path, bad_name, err, what)
    d.names, d.meta, d.simple = names, meta, simple
    d.nsimple = nsimple = simple.count(1)
    blocks, inodes, fresh, huge = simple_blocks, nsimple, nsimple, 0
    links = plan.links
    prefix = d.path + b"/"
    dfd = -1
    try:
        for i in _others(simple):
            name = names[i]
            path = prefix + name
            st = _Stat(meta, i)
            kind = st.st_mode & _S_IFMT
            if kind == _S_IFDIR:
                d.extra[i] = sub = _Dir(path, st)
                d.subdirs.append(sub)
                plan.dirs.append(sub)
                continue
            if dfd < 0:
                dfd = _open_dir_or_fail(d.path)
            target = None
            if kind == _S_IFLNK:
                try:
                    d.extra[i] = target = os.readlink(name, dir_fd=dfd)
                except OSError as exc:
                    raise SourceError(f"{os.fsdecode(path)}: cannot read link: {exc.strerror}") from None
            key = (st.st_dev, st.st_ino)
            seen = links.get(key)
            if seen is not None:
                links[key] = seen + 1
                continue
            links[key] = 1
            inodes += 1
            fresh += 1
            if kind == _S_IFREG and st.st_size > _HUGE_BYTES:  # allocated on its own, not from d.pool
                huge += _entry_blocks(name, dfd, path, st, bs, p, plan)
            elif target is not None:
                blocks += _symlink_blocks(target, bs)
            else:
                blocks += _entry_blocks(name, dfd, path, st, bs, p, plan)
            if st.xattr:
                xattrs = _checked_xattrs(path, bs, False)
                if xattrs:
                    plan.xattrs[key] = xattrs
                    blocks += 1
    finally:
        if dfd >= 0:
            os.close(dfd)
    plan.blocks += blocks + huge
    plan.inodes += inodes
    d.fresh += fresh
    d.pool += blocks


def _simple_max(bs: int) -> int:
    """Largest simple file: one indirect block at most, and not a huge file (those are allocated on their own)."""
    return min(_HUGE_BYTES, (fmt.N_DIRECT + bs // 8) * bs)


def _others(simple: bytearray) -> list[int]:
    """Indexes of the entries that are not simple files."""
    return [i for i, s in enumerate(simple) if not s]


def _open_dir_or_fail(path: bytes) -> int:
    try:
        return _open_dir(path)
    except OSError as exc:
        raise SourceError(f"{os.fsdecode(path)}: cannot open directory: {exc.strerror}") from None


def _scan_error(path: bytes, name: bytes, err: int, what: int) -> SourceError:
    """The error for a failed scan_dir answer (what: 0 open, 1 read the directory, 2 lstat ``name``, 3 a time
    of ``name`` outside what the walk's nanosecond counts hold)."""
    reason = os.strerror(err)
    if what == 2:
        return SourceError(f"{os.fsdecode(path + b'/' + name)}: cannot stat: {reason}")
    if what == 3:
        return SourceError(f"{os.fsdecode(path + b'/' + name)}: a timestamp outside the years 1677-2262 (not copied)")
    doing = "cannot open directory" if what == 0 else "cannot read directory"
    return SourceError(f"{os.fsdecode(path)}: {doing}: {reason}")


#: What scan_dir gives per source entry, one row of ``meta`` (the compiled core declares the same tuple
#: as POPULATE_META_FIELDS; it is used only when the two agree).  ``xattr``: 1 when a non-directory lists
#: extended attributes or cannot list them.
META_FIELDS = (
    "mode", "uid", "gid", "nlink", "size", "blocks", "dev", "ino", "atime_ns", "mtime_ns", "ctime_ns", "rdev",
    "xattr",
)  # fmt: skip
_NF = len(META_FIELDS)
_INO_WRAP = 1 << 64
#: Times are kept as signed 64-bit nanosecond counts (the years 1677 to 2262); an entry with another is refused.
_TIME_LIMIT = 1 << 63


class _Stat:
    """One row of a directory's ``meta`` under os.stat_result's names (for the entries that are not simple)."""

    __slots__ = (
        "st_mode", "st_uid", "st_gid", "st_nlink", "st_size", "st_blocks", "st_dev", "st_ino", "st_atime_ns",
        "st_mtime_ns", "st_ctime_ns", "st_rdev", "xattr",
    )  # fmt: skip

    def __init__(self, meta: array, i: int) -> None:
        (
            self.st_mode, self.st_uid, self.st_gid, self.st_nlink, self.st_size, self.st_blocks, self.st_dev,
            self.st_ino, self.st_atime_ns, self.st_mtime_ns, self.st_ctime_ns, self.st_rdev, self.xattr,
        ) = meta[i * _NF : (i + 1) * _NF]  # fmt: skip


assert _Stat.__slots__ == tuple(f if f == "xattr" else "st_" + f for f in META_FIELDS), "_Stat is out of step"


def _scan_dir_pure(
    path: bytes, block_size: int, simple_max: int
) -> tuple[list[bytes], array, bytearray, int, int, int, bytes]:
    """lstat every entry of directory ``path``: the reference of the compiled ``populate_scan_dir``.

    Returns ``(names, meta, simple, simple_blocks, err, what, bad_name)``: the entry names (readdir
    order), one row of :data:`META_FIELDS` per entry in ``meta``, ``simple[i]`` 1 for a regular file
    with one link, no holes, at most ``simple_max`` bytes and no xattrs, and the blocks of those (data,
    and one indirect block past the direct ones); on
    failure ``err`` is the errno and ``what`` 0 (open), 1 (read the directory) or 2 (lstat ``bad_name``).
    """
    names: list[bytes] = []
    meta = array("q")
    simple = bytearray()
    try:
        dfd = _open_dir(path)
    except OSError as exc:
        return names, meta, simple, 0, exc.errno or 0, 0, b""
    simple_blocks = 0
    prefix = path + b"/"
    try:
        try:
            entries = list(os.scandir(dfd))
        except OSError as exc:
            return names, meta, simple, 0, exc.errno or 0, 1, b""
        for entry in entries:
            name = entry.name.encode(_FS_ENCODING, _FS_ERRORS)
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                return names, meta, simple, simple_blocks, exc.errno or 0, 2, name
            mode, size, nlink = st.st_mode, st.st_size, st.st_nlink
            xattr = 0
            if mode & _S_IFMT != _S_IFDIR:
                try:
                    xattr = 1 if os.listxattr(prefix + name, follow_symlinks=False) else 0
                except OSError:
                    xattr = 1  # the caller reads them and reports the error (or finds ENOTSUP)
            ino = st.st_ino if st.st_ino < _INO_WRAP >> 1 else st.st_ino - _INO_WRAP  # as the C int64 holds it
            if not all(-_TIME_LIMIT <= t < _TIME_LIMIT for t in (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)):
                return names, meta, simple, simple_blocks, errno.EOVERFLOW, 3, name
            meta.extend((
                mode, st.st_uid, st.st_gid, nlink, size, st.st_blocks, st.st_dev, ino, st.st_atime_ns,
                st.st_mtime_ns, st.st_ctime_ns, st.st_rdev, xattr,
            ))  # fmt: skip
            is_simple = (
                mode & _S_IFMT == _S_IFREG and nlink == 1 and size <= simple_max and st.st_blocks * 512 >= size
                and not xattr
            )  # fmt: skip
            if is_simple:
                n = -(-size // block_size)
                simple_blocks += n + (n > fmt.N_DIRECT)
            names.append(name)
            simple.append(is_simple)
        return names, meta, simple, simple_blocks, 0, 0, b""
    finally:
        os.close(dfd)


def _entry_blocks(name: bytes, dfd: int, path: bytes, st: os.stat_result, bs: int, p: int, plan: _Plan) -> int:
    """Data plus indirect blocks a non-directory needs; records hole maps."""
    mode = st.st_mode
    size = st.st_size
    if stat.S_ISREG(mode):
        if size == 0:
            return 0
        if st.st_blocks * 512 >= size:
            n = -(-size // bs)
            return n + indirect_blocks_dense(n, p)
        fblocks = _extent_blocks(_data_extents(name, dfd, path, size), bs)
        plan.sparse[(st.st_dev, st.st_ino)] = fblocks
        return len(fblocks) + indirect_blocks_sparse(fblocks, p)
    return 0


def _symlink_blocks(target: bytes, bs: int) -> int:
    """Data blocks of a symlink: none when the target fits inline in the inode."""
    return 0 if len(target) <= fmt.INLINE_SYMLINK_MAX else -(-len(target) // bs)


# ---------------------------------------------------------------------------
# Pass 2: write
# ---------------------------------------------------------------------------


def _write_simple_pure(
    names: list[bytes],
    meta: array,
    simple: bytearray,
    prefix: bytes,
    supply: list[int],
    pool: list[int],
    gens: bytes,
    btime_ns: int,
    block_size: int,
    entries: list[tuple[bytes, int, int]],
    pending: list[tuple[int, bytes]],
    copy_paths: list[bytes],
    copy_starts: list[int],
    copy_sizes: list[int],
    copy_offsets: list[int],
    block_writes: list[tuple[int, bytes]],
) -> tuple[int, int, list[int]]:
    """Inodes and copy orders for a directory's simple files: the reference of the compiled
    ``populate_write_simple``.

    Each simple entry ``i``, in order, takes the next generation of ``gens``
    (uint32, little-endian); then, when its data blocks are the next
    consecutive ones at the end of ``pool`` (and, past the direct blocks, one
    more pool block is there for its indirect block), the last inode number of
    ``supply`` and those blocks: ``(name, ino, DT_REG)`` goes to ``entries``,
    ``(ino, inode bytes)`` to ``pending``, a copy order (path, 0, size, device
    offset) to the ``copy_*`` lists, ``(device offset, indirect block)`` to
    ``block_writes``.  Otherwise ``i`` is returned in ``deferred`` for the
    general path.  Returns ``(files, data_bytes, deferred)``.
    """
    generations = struct.unpack(f"<{len(gens) // 4}I", gens)
    b, bn = divmod(btime_ns, _NS)
    pack = INODE_STRUCT.pack
    dt_reg = _DT[_S_IFREG]
    files = data_bytes = k = 0
    deferred: list[int] = []
    for i, is_simple in enumerate(simple):
        if not is_simple:
            continue
        gen = generations[k]
        k += 1
        mode, uid, gid, _nlink, size, _blocks, _dev, _ino, atime, mtime, ctime, _rdev, _xattr = meta[
            i * _NF : (i + 1) * _NF
        ]
        n = -(-size // block_size)
        nind = 1 if n > fmt.N_DIRECT else 0
        if n > fmt.N_DIRECT + block_size // 8:
            raise ValueError("a simple file needs at most one indirect block")
        if n and (len(pool) < n + nind or pool[-n] != pool[-1] + n - 1):
            deferred.append(i)
            continue
        ino = supply.pop()
        entries.append((names[i], ino, dt_reg))
        first = 0
        ptrs = list(_ZERO_PTRS)
        if n:
            first = pool[-1]
            ptrs[: min(n, fmt.N_DIRECT)] = range(first, first + min(n, fmt.N_DIRECT))
            if nind:
                ptrs[fmt.N_DIRECT] = pool[-n - 1]
                slots = block_size // 8
                indirect = struct.pack(
                    f"<{slots}Q", *range(first + fmt.N_DIRECT, first + n), *[0] * (slots + fmt.N_DIRECT - n)
                )
                block_writes.append((ptrs[fmt.N_DIRECT] * block_size, indirect))
            del pool[-n - nind :]
            copy_paths.append(prefix + names[i])
            copy_starts.append(0)
            copy_sizes.append(size)
            copy_offsets.append(first * block_size)
        a, an = divmod(atime, _NS)
        m, mn = divmod(mtime, _NS)
        c, cn = divmod(ctime, _NS)
        pending.append((ino, pack(
            mode, 0, 0, uid, gid, 1, gen, size, n + nind, a, m, c, b, an, mn, cn, bn, 0, 0, 0, 0, 0, *ptrs,
        )))  # fmt: skip
        files += 1
        data_bytes += size
    return files, data_bytes, deferred


def _dir_page_pure(
    entries: list[tuple[bytes, int, int]], seed: bytes, hashes: list[int] | None, dir_ino: int, block_size: int
) -> bytes:
    """The page of a directory whose ``(name, ino, file_type)`` records fit one page: the reference of the
    compiled ``populate_dir_page``.  Header at depth 0, records by (hash, name); ``hashes`` None: the
    names' hashes under ``seed``."""
    if hashes is None:
        hashes = _directory.hash_names(seed, [e[0] for e in entries])
    buf = bytearray(block_size)
    _dirwalk.PAGE_HEADER.pack_into(buf, 0, fmt.DIR_PAGE_MAGIC, 0, 0, 0, dir_ino, 0)
    off = fmt.DIR_PAGE_HEADER_SIZE
    pack = _dirwalk.ENTRY_HEADER.pack_into
    ehdr = fmt.DIR_ENTRY_HEADER_SIZE
    for h, (name, ino, ft) in sorted(zip(hashes, entries, strict=True)):  # by hash, then name
        n = len(name)
        rl = (_REC_FIXED + n) & ~7
        if off + rl > block_size:
            raise ValueError("the records do not fit one page")
        pack(buf, off, ino, h, n, ft, rl)
        buf[off + ehdr : off + ehdr + n] = name
        off += rl
    return bytes(buf)


def _take_bits_pure(bm: bytearray, nbits: int, start_byte: int, count: int, first: int) -> tuple[list[int], int, int]:
    """Mark up to ``count`` clear bits of bitmap ``bm`` (``nbits`` valid bits): the reference of the
    compiled ``populate_take_bits``.

    Searches from byte ``start_byte``, then from byte 0; a clear byte is taken
    whole (eight bits) while eight or more are wanted, other bytes bit by bit.
    Returns ``first`` + each bit index in the order taken and the byte range
    ``lo:hi`` that changed (-1, -1 when nothing was taken).
    """
    nbytes = len(bm)
    got: list[int] = []
    lo = hi = -1
    for start in (start_byte, 0):
        pos = start
        while len(got) < count:
            m = _NOT_FULL.search(bm, pos)
            if m is None:
                break
            i = m.start()
            lo = i if lo < 0 else min(lo, i)
            need = count - len(got)
            if bm[i] == 0 and need >= 8:
                z = _NOT_ZERO.search(bm, i)
                run = min((z.start() if z else nbytes) - i, need // 8)
                got.extend(range(first + i * 8, first + (i + run) * 8))
                bm[i : i + run] = b"\xff" * run
                pos = i + run
            else:
                byte = bm[i]
                for bit in range(8):
                    if not byte >> bit & 1 and i * 8 + bit < nbits and len(got) < count:
                        byte |= 1 << bit
                        got.append(first + i * 8 + bit)
                bm[i] = byte
                pos = i + 1
            hi = max(hi, pos)
        if len(got) == count:
            break
    return got, lo, hi


def _scan_dirs_pure(paths: list[bytes], block_size: int, simple_max: int) -> list[tuple]:
    """:func:`_scan_dir_pure` of every path: the reference of the compiled ``populate_scan_dirs``."""
    return [_scan_dir_pure(path, block_size, simple_max) for path in paths]


class _Backend:
    """The per-entry loops of mkfs -d: the scan backend's, or their pure references when it has none that
    match."""

    __slots__ = ("scan_dirs", "write_simple", "dir_page", "take_bits")

    def __init__(self) -> None:
        from nvfs_tools import scan

        core = scan.backend()
        if getattr(core, "POPULATE_META_FIELDS", None) == META_FIELDS:
            self.scan_dirs, self.write_simple = core.populate_scan_dirs, core.populate_write_simple
            self.dir_page, self.take_bits = core.populate_dir_page, core.populate_take_bits
        else:
            self.scan_dirs, self.write_simple = _scan_dirs_pure, _write_simple_pure
            self.dir_page, self.take_bits = _dir_page_pure, _take_bits_pure


def _shorten_switch_interval() -> float:
    """Let a helper thread have the GIL within :data:`_COPY_SWITCH_INTERVAL` of asking; returns the
    interval to restore."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, _COPY_SWITCH_INTERVAL))
    return previous


class _Preallocator:
    """Allocates the image file's data area on a thread while the walk runs.

    The walk keeps one CPU busy with system calls on the source tree; meanwhile
    this thread has the host filesystem allocate the blocks the copy will fill
    (:meth:`Device.preallocate <nvfs_tools.device.Device.preallocate>`), group by
    group from the first data block, where the allocator hands them out, never
    more than the walk has counted so far (so a tree of small files does not
    allocate a large image).  In tmpfs that takes page allocation off the copy
    (measured on /usr/include: 20 ms of a 170 ms run).  Best effort: it stops at
    the first refusal, and :meth:`finish` (after the walk) stops it before
    anything is written.
    """

    #: fallocate calls of at most this many bytes: the thread checks for finish() between them.
    CHUNK = 4 << 20

    def __init__(self, dev, geo: fmt.Geometry) -> None:
        import threading

        self.dev = dev
        self.geo = geo
        self.wanted = 0
        self.stopped = False
        self.cond = threading.Condition()
        self.switch_interval = _shorten_switch_interval()
        self.thread = threading.Thread(target=self._run, name="nvfs-populate-prealloc", daemon=True)
        self.thread.start()

    @classmethod
    def start(cls, vol) -> _Preallocator | None:
        """A running preallocator for an image file (None for devices: nothing to allocate)."""
        dev = vol.dev
        if getattr(dev, "kind", None) != "file" or getattr(dev, "dax", False) or not hasattr(dev, "preallocate"):
            return None
        return cls(dev, vol.geo)

    def want(self, blocks: int) -> None:
        """The walk has counted ``blocks`` blocks so far: allocate that much of the data area."""
        with self.cond:
            self.wanted = blocks * self.geo.block_size
            self.cond.notify()

    def finish(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()
        self.thread.join()
        sys.setswitchinterval(self.switch_interval)

    def _run(self) -> None:
        geo, bs = self.geo, self.geo.block_size
        done = 0
        for g in range(geo.group_count):  # each group's data area (not on the caller's thread: 8192 on 1 TiB)
            at, hi = geo.first_data_block(g) * bs, geo.group_end(g) * bs
            while at < hi:
                with self.cond:
                    while not self.stopped and done >= self.wanted:
                        self.cond.wait()
                    if self.stopped:
                        return
                    length = min(self.CHUNK, hi - at, self.wanted - done)
                if not self.dev.preallocate(at, length):
                    return
                at += length
                done += length


class _Copier:
    """Copies file contents into the image on a thread of its own.

    The writer queues each file, or each run of consecutive blocks of a bigger
    one (path, file offset, length, device byte offset), instead of reading
    it, and hands them over in batches; the thread runs
    ``copy_files`` of the scan backend, which in the compiled core works with
    the GIL released, so the reads and writes of file contents (most of the
    system time of a ``-d`` run) overlap with the metadata the writer builds.
    The destination blocks are the writer's alone, so nothing else touches
    them; :meth:`finish` copies what is still queued on the calling thread
    too (at the end of a run the copy thread is usually still busy and the
    writer would only wait), waits for the copies before the final barrier
    and raises the first failure with the path concerned.
    """

    def __init__(self, out_fd: int, block_size: int) -> None:
        import threading
        from queue import SimpleQueue

        # copy_files moves the file position (sendfile writes at it): a descriptor of its own
        self.image_fd = out_fd
        try:
            self.out_fd = os.open(f"/proc/self/fd/{out_fd}", os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            self.out_fd = os.dup(out_fd)  # shares the position, which nothing else uses while populating
        self.block_size = block_size
        # Between batches the thread needs the GIL for a moment; with the default 5 ms switch
        # interval it waits that long each time while the writer runs Python (measured: 25-55 ms
        # of waiting at the end of a /usr/include run, ~8 ms with this).  Restored by finish().
        self.switch_interval = _shorten_switch_interval()
        self.queue: SimpleQueue = SimpleQueue()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="nvfs-populate-copy", daemon=True)
        self.thread.start()

    def submit(self, paths: list[bytes], starts: list[int], sizes: list[int], offsets: list[int]) -> None:
        self.queue.put((paths, starts, sizes, offsets))

    def _copy(self, fd: int, batch: tuple) -> None:
        """copy_files of one batch through ``fd``; its failure (the first one only) kept for finish()."""
        from nvfs_tools import scan

        try:
            i, err, what = scan.backend().copy_files(fd, *batch, self.block_size)
        except BaseException as exc:  # handed to finish(), which raises it in the main thread
            failure: BaseException | None = exc
        else:
            failure = _copy_error(batch[0][i], err, what) if i >= 0 else None
        if failure is not None and self.failure is None:
            self.failure = failure

    def _run(self) -> None:
        while (batch := self.queue.get()) is not None:
            if self.failure is None:  # else drain: the run has failed
                self._copy(self.out_fd, batch)

    def _help(self) -> None:
        """Copy the batches still queued on this thread, with a descriptor of its own, while the copy
        thread finishes the one it has (nothing to do when none is queued or the run has failed)."""
        from queue import Empty

        fd = -1
        try:
            while self.failure is None:
                try:
                    batch = self.queue.get_nowait()
                except Empty:
                    return
                if fd < 0:
                    try:
                        fd = os.open(f"/proc/self/fd/{self.image_fd}", os.O_WRONLY | os.O_CLOEXEC)
                    except OSError:  # no private file position here: leave the batch to the copy thread
                        self.submit(*batch)
                        return
                self._copy(fd, batch)
        finally:
            if fd >= 0:
                os.close(fd)

    def finish(self, raise_failure: bool = True) -> None:
        """Wait for every queued copy, helping with them (or, with ``raise_failure`` False, skip the rest);
        raise the first failure."""
        if not raise_failure and self.failure is None:
            self.failure = InterruptedError("populate failed")  # the thread skips what is still queued
        try:
            self._help()
        except BaseException as exc:  # the copy thread must still be stopped
            if self.failure is None:
                self.failure = exc
        self.queue.put(None)
        self.thread.join()
        os.close(self.out_fd)
        sys.setswitchinterval(self.switch_interval)
        failure, self.failure = self.failure, None
        if failure is not None and raise_failure:
            raise failure


def _copy_error(path: bytes, err: int, what: int) -> NvfsError:
    """The error for a failed copy_files answer: which file, what failed (0 open, 1 read, 2 write)."""
    reason = os.strerror(err)
    if what == 0:
        return SourceError(f"{os.fsdecode(path)}: cannot open: {reason}")
    if what == 1:
        return SourceError(f"{os.fsdecode(path)}: read error: {reason}")
    return DeviceError(f"write error on the image (copying {os.fsdecode(path)}): {reason}")


class _Writer:
    """Writes the planned tree into the volume."""

    def __init__(self, vol, plan: _Plan, stats: PopulateStats, progress: ProgressFn | None, epoch: int | None) -> None:
        from nvfs_tools.directory import Directory

        self.vol = vol
        self.Directory = Directory
        self.plan = plan
        self.stats = stats
        self.progress = progress
        self.geo = vol.geo
        self.bs = vol.block_size
        self.p = self.bs // 8
        self.dev = vol.dev
        self.view = vol.dev.view
        self.run_blocks = max(1, _RUN_BYTES // self.bs)
        self.pending: list[tuple[int, bytes]] = []
        self.usage: dict[tuple[int, int], list[int]] | None = {} if getattr(vol, "quota", None) is not None else None
        self.copy_paths: list[bytes] = []
        self.copy_batch = _COPY_FIRST_BATCH  # files queued before the next hand-over
        self.copy_starts: list[int] = []
        self.copy_sizes: list[int] = []
        self.copy_offsets: list[int] = []
        backend = _Backend()
        self.write_simple, self.dir_page, self.take_bits = backend.write_simple, backend.dir_page, backend.take_bits
        self.inos: dict[tuple[int, int], int] = {}
        self.now = time.time_ns() if epoch is None else epoch * _NS
        self.rng = random.Random(vol.hash_seed if epoch is not None else None)
        self.done = 0
        self.next_report = 0
        self.copier = self._start_copier()  # last: nothing after it can fail and leave the thread running

    def _start_copier(self) -> _Copier | None:
        """The copy thread, for an unordered image file or block device (the thread writes through a
        descriptor of its own, so an ordered device's barriers could not order its stores before the
        page that names the file; devdax and devices with known bad ranges go through Device.write:
        the mapping, media checks)."""
        dev = self.vol.dev
        fd = getattr(dev, "fd", -1)
        if getattr(dev, "dax", False) or getattr(dev, "badblocks", None) or not getattr(dev, "unordered", False):
            return None
        return _Copier(fd, self.bs) if isinstance(fd, int) and fd >= 0 else None

    # -- allocation -------------------------------------------------------
    def _inodes(self, count: int, goal_group: int | None, dirs: int = 0) -> list[int]:
        """``count`` inode numbers near ``goal_group`` in one take, the last ``dirs`` of them for directories."""
        self.vol._w()
        return self.vol.alloc.take_inodes(count, goal_group, dirs, self.take_bits)

    def _blocks(self, count: int, goal: int | None = None, huge: bool = False) -> list[int]:
        if count == 0:
            return []
        return self.vol.allocate_blocks(count, goal, huge)

    # -- inodes -----------------------------------------------------------
    def _times(self, st: os.stat_result) -> tuple[int, int, int, int]:
        return (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, self.now)

    def _write_inode(self, ino: int, raw: bytes) -> None:
        """Queue a new inode's image; with quota on, its usage is added up per (uid, gid)."""
        self.pending.append((ino, raw))
        if self.usage is not None:
            uid, gid, blocks = _owner_and_blocks(raw)
            use = self.usage.setdefault((uid, gid), [0, 0])
            use[0] += blocks * self.bs
            use[1] += 1

    def charge_quota(self) -> None:
        """Charge what the raw inode writes used (directory pages are charged by Directory itself)."""
        if self.usage is None:
            return
        for (uid, gid), (nbytes, inodes) in sorted(self.usage.items()):
            self.vol.quota.charge(uid, gid, nbytes, inodes)
        self.usage = {}

    def _flush_inodes(self) -> None:
        """Write the queued inode images, consecutive inode numbers in one store."""
        pending = sorted(self.pending)
        self.pending = []
        ipg = self.geo.inodes_per_group
        i = 0
        n = len(pending)
        while i < n:
            first = pending[i][0]
            last_of_group = ((first - 1) // ipg + 1) * ipg  # a run stops at its inode table's end
            j, ino = i + 1, first
            while j < n and pending[j][0] == ino + 1 <= last_of_group:
                j, ino = j + 1, ino + 1
            self.dev.write(self.geo.inode_offset(first), b"".join(raw for _ino, raw in pending[i:j]))
            i = j

    # -- data -------------------------------------------------------------
    def _copy_runs(self, fd: int, path: bytes, fblocks: list[int] | range, dblocks: list[int], size: int) -> None:
        """Copy file blocks ``fblocks`` to device blocks ``dblocks``, one contiguous run at a time
        (``fd`` -1: queued for the copy thread; else read here and stored through the device)."""
        bs, longest = self.bs, self.run_blocks
        n = len(dblocks)
        i = 0
        while i < n:
            j = i + 1
            while j < n and dblocks[j] == dblocks[j - 1] + 1 and fblocks[j] == fblocks[j - 1] + 1 and j - i < longest:
                j += 1
            foff = fblocks[i] * bs
            length = (j - i) * bs
            if fd < 0:  # the copy thread reads it (see _Copier)
                self._queue_copy(path, foff, min(length, size - foff), dblocks[i] * bs)
                i = j
                continue
            try:
                data = os.pread(fd, min(length, size - foff), foff)
            except OSError as exc:
                raise SourceError(f"{os.fsdecode(path)}: read error: {exc.strerror}") from None
            self._put(dblocks[i] * bs, data, length)
            i = j

    def _put(self, offset: int, data: bytes, length: int) -> None:
        """Store ``data`` at device byte ``offset``, zero-padded to ``length`` (no copy thread)."""
        pad = length - len(data)
        self.dev.write(offset, data + bytes(pad) if pad else data)

    def _map(self, fblocks: list[int] | range, dblocks: list[int], ind: list[int]) -> list[int]:
        """The 16 block pointers for a file; writes its indirect blocks (taken from ``ind``)."""
        ptrs = [0] * fmt.N_BLOCK_POINTERS
        n = len(fblocks)
        k = bisect_left(fblocks, fmt.N_DIRECT)
        for i in range(k):
            ptrs[fblocks[i]] = dblocks[i]
        p = self.p
        base = fmt.N_DIRECT
        lo = k
        for level in range(1, fmt.N_INDIRECT + 1):
            if lo >= n:
                break
            span = p**level
            hi = bisect_left(fblocks, base + span, lo, n)
            if hi > lo:
                ptrs[fmt.N_DIRECT + level - 1] = self._subtree(level, base, fblocks, dblocks, lo, hi, ind)
            lo = hi
            base += span
        return ptrs

    def _subtree(self, level: int, base: int, fb, db, lo: int, hi: int, ind: list[int]) -> int:
        p = self.p
        node = ind.pop()
        ptrs = array("Q", bytes(8 * p))
        if level == 1:
            if fb[hi - 1] - fb[lo] == hi - lo - 1:
                start = fb[lo] - base
                ptrs[start : start + hi - lo] = array("Q", db[lo:hi])
            else:
                for i in range(lo, hi):
                    ptrs[fb[i] - base] = db[i]
        else:
            child = p ** (level - 1)
            i = lo
            while i < hi:
                c = (fb[i] - base) // child
                cbase = base + c * child
                j = bisect_left(fb, cbase + child, i, hi)
                ptrs[c] = self._subtree(level - 1, cbase, fb, db, i, j, ind)
                i = j
        self.dev.write(node * self.bs, ptrs.tobytes())
        return node

    # -- one directory ----------------------------------------------------
    def reserve_blocks(self, dirs: list[_Dir]) -> None:
        """One allocation for every directory's pool: the data, indirect, symlink and xattr blocks of its
        new small files (``d.pool``, counted by the walk) and its own page when it has only one; each
        directory gets its consecutive share in ``d.blocks`` (one allocator call instead of one per
        directory)."""
        for d in dirs:
            d.single = not d.merge and _fits_one_page(d.names, self.bs)
        blocks = self._blocks(sum(d.pool + d.single for d in dirs))
        pos = 0
        for d in dirs:
            end = pos + d.pool + d.single
            d.blocks = blocks[pos:end]
            d.blocks.reverse()
            pos = end

    def _take_inodes_and_pool(self, d: _Dir) -> tuple[list[int], list[int]]:
        """Inode numbers for ``d``'s new non-directories (popped in order) and its subdirectories, and
        its pool of blocks (see :meth:`reserve_blocks`)."""
        group = self.geo.group_of_inode(d.ino)
        new_dirs = [sub for sub in d.subdirs if not sub.ino]
        # inodes first met in this directory (counted by the walk), then its new subdirectories, in one take
        supply = self._inodes(d.fresh + len(new_dirs), group, dirs=len(new_dirs))
        for sub, ino in zip(new_dirs, supply[d.fresh :], strict=True):
            sub.ino = ino
        del supply[d.fresh :]
        supply.reverse()
        for sub in d.subdirs:
            sub.parent_ino = d.ino
        pool, d.blocks = d.blocks, []
        return supply, pool

    def write_dir(self, d: _Dir) -> None:
        """Write every child of ``d`` (files completely, subdirectory inodes), then build ``d``."""
        if d.merge and d.ino != fmt.ROOT_INO:
            self._merge_dir_inode(d, d.st.st_uid, d.st.st_gid)
        supply, pool = self._take_inodes_and_pool(d)
        entries = self._write_children(d, supply, pool)
        if d.ino == fmt.ROOT_INO and fmt.LOST_FOUND_NAME in d.names:  # mkfs made it, and named it
            entries = [e for e in entries if e[0] != fmt.LOST_FOUND_NAME]
        self._commit_dir(d, entries, pool)
        self.done += len(d.names)
        if self.progress is not None and self.done >= self.next_report:
            self.progress(self.done, self.plan.entries)
            self.next_report = self.done + 4096

    def _write_children(self, d: _Dir, supply: list[int], pool: list[int]) -> list[tuple[bytes, int, int]]:
        """Every child of ``d`` but its subdirectories written (inodes queued in ``self.pending``, contents
        stored or queued); returns ``d``'s entries.

        The simple files (most of a tree) go through the backend's
        ``write_simple`` -- inode packed, contents queued for the copy thread
        (:class:`_Copier`) -- and only the rest, and simple files whose blocks
        are not consecutive in the pool, through :meth:`_write_child`.
        """
        entries: list[tuple[bytes, int, int]] = []
        add = entries.append
        inos, stats = self.inos, self.stats
        if self.usage is None and self.copier is not None and d.nsimple:
            block_writes: list[tuple[int, bytes]] = []
            files, data_bytes, deferred = self.write_simple(
                d.names, d.meta, d.simple, d.path + b"/", supply, pool, self.rng.randbytes(4 * d.nsimple), self.now,
                self.bs, entries, self.pending, self.copy_paths, self.copy_starts, self.copy_sizes, self.copy_offsets,
                block_writes,
            )  # fmt: skip
            for offset, block in block_writes:  # indirect blocks
                self.dev.write(offset, block)
            stats.files += files
            stats.data_bytes += data_bytes
            others = sorted(_others(d.simple) + deferred) if deferred else _others(d.simple)
        else:
            others = range(len(d.names))
        dfd = _open_dir_or_fail(d.path) if self.copier is None else -1  # the copy thread opens files by path
        try:
            for i in others:
                name, st, extra = d.names[i], _Stat(d.meta, i), d.extra.get(i)
                kind = st.st_mode & _S_IFMT
                if kind == _S_IFDIR:
                    add((name, extra.ino, fmt.DT_DIR))  # type: ignore[attr-defined]
                    continue
                key = (st.st_dev, st.st_ino)
                ino = inos.get(key)
                if ino is not None:
                    stats.hard_links += 1
                    add((name, ino, _DT[kind]))
                    continue
                ino = inos[key] = supply.pop()
                add((name, ino, _DT[kind]))
                self._write_child(d, dfd, name, st, ino, extra, pool)
        finally:
            if dfd >= 0:
                os.close(dfd)
        return entries

    def _commit_dir(self, d: _Dir, entries: list[tuple[bytes, int, int]], pool: list[int]) -> None:
        """The store order of a directory (spec/operations.md; the crash campaign replays it): its
        subdirectories' inodes (empty: their own pages come when they are visited) and every queued child
        inode, a barrier, then ``d``'s pages and root word (:meth:`_build`)."""
        for sub in d.subdirs:
            if not sub.merge:
                self._new_dir_inode(sub)
        if len(self.copy_paths) >= self.copy_batch:
            self.submit_copies()
            self.copy_batch = min(2 * self.copy_batch, _COPY_BATCH)
        self._flush_inodes()
        self.vol.barrier()
        self._build(d, entries, pool)

    def submit_copies(self) -> None:
        """Hand the small files queued so far to the copy thread (raising its failure, if it has had
        one, instead of writing the rest of the tree first)."""
        if self.copier is not None and self.copier.failure is not None:
            raise self.copier.failure  # _write stops the thread
        if self.copy_paths and self.copier is not None:
            self.copier.submit(self.copy_paths, self.copy_starts, self.copy_sizes, self.copy_offsets)
            self.copy_paths, self.copy_starts, self.copy_sizes, self.copy_offsets = [], [], [], []

    def _queue_copy(self, path: bytes, start: int, size: int, offset: int) -> None:
        """Have the copy thread put ``size`` bytes of ``path`` from ``start`` at device byte ``offset``."""
        self.copy_paths.append(path)
        self.copy_starts.append(start)
        self.copy_sizes.append(size)
        self.copy_offsets.append(offset)

    def _write_child(self, d: _Dir, dfd: int, name: bytes, st, ino: int, extra, pool: list[int]) -> None:
        mode = st.st_mode
        links = self.plan.links.get((st.st_dev, st.st_ino), 1)  # simple files (one link) are not in plan.links
        if stat.S_ISREG(mode):
            raw = self._regular(name, dfd, d.path + b"/" + name, st, links, pool)
            self.stats.files += 1
            self.stats.data_bytes += st.st_size
        elif stat.S_ISLNK(mode):
            raw = self._symlink(extra, st, links, pool)
            self.stats.symlinks += 1
        else:
            rdev = fmt.encode_rdev(os.major(st.st_rdev), os.minor(st.st_rdev)) if st.st_rdev else 0
            gen = self.rng.getrandbits(32)
            raw = pack_inode(mode, st.st_uid, st.st_gid, links, gen, 0, 0, self._times(st), rdev=rdev)
            self.stats.specials += 1
        xattrs = self.plan.xattrs.get((st.st_dev, st.st_ino))
        if xattrs:
            raw = self._with_xattrs(raw, xattrs, pool.pop())
        self._write_inode(ino, raw)

    def _regular(self, name: bytes, dfd: int, path: bytes, st: os.stat_result, links: int, pool: list[int]) -> bytes:
        size = st.st_size
        bs = self.bs
        ptrs: list[int] | tuple[int, ...] = (0,) * fmt.N_BLOCK_POINTERS
        owned = 0
        n = -(-size // bs)
        if 0 < n <= fmt.N_DIRECT and len(pool) >= n and pool[-n] == pool[-1] + n - 1 and st.st_blocks * 512 >= size:
            # the common case: a small dense file in consecutive pool blocks: one read, direct pointers only
            first = pool[-1]
            del pool[-n:]
            if self.copier is not None:
                self._queue_copy(path, 0, size, first * bs)
            else:
                fd = _open_file(name, dfd, path)
                try:
                    data = os.pread(fd, size, 0)
                except OSError as exc:
                    raise SourceError(f"{os.fsdecode(path)}: read error: {exc.strerror}") from None
                finally:
                    os.close(fd)
                self._put(first * bs, data, n * bs)
            ptrs = [*range(first, first + n), *_ZERO_PTRS[n:]]
            owned = n
        elif size:
            key = (st.st_dev, st.st_ino)
            sparse = self.plan.sparse.get(key)
            fblocks: list[int] | range = sparse if sparse is not None else range(-(-size // bs))
            nind = (
                indirect_blocks_sparse(sparse, self.p)
                if sparse is not None
                else indirect_blocks_dense(len(fblocks), self.p)
            )
            if size <= _HUGE_BYTES:
                dblocks = [pool.pop() for _ in range(len(fblocks))]
                ind = [pool.pop() for _ in range(nind)]
            else:
                dblocks = self._blocks(len(fblocks), None, True)
                ind = self._blocks(nind)
            owned = len(dblocks) + len(ind)
            if dblocks and self.copier is not None:
                self._copy_runs(-1, path, fblocks, dblocks, size)
            elif dblocks:
                fd = _open_file(name, dfd, path)
                try:
                    self._copy_runs(fd, path, fblocks, dblocks, size)
                finally:
                    os.close(fd)
            ind.reverse()
            ptrs = self._map(fblocks, dblocks, ind)
        return pack_inode(
            st.st_mode, st.st_uid, st.st_gid, links, self.rng.getrandbits(32), size, owned, self._times(st),
            pointers=ptrs,
        )  # fmt: skip

    def _symlink(self, target: bytes, st: os.stat_result, links: int, pool: list[int]) -> bytes:
        size = len(target)
        if size <= fmt.INLINE_SYMLINK_MAX:
            ptrs = struct.unpack(f"<{fmt.N_BLOCK_POINTERS}Q", target.ljust(fmt.INLINE_SYMLINK_MAX, b"\0"))
            return pack_inode(
                st.st_mode, st.st_uid, st.st_gid, links, self.rng.getrandbits(32), size, 0, self._times(st),
                flags=fmt.INODE_FLAG_INLINE, pointers=ptrs,
            )  # fmt: skip
        nblocks = -(-size // self.bs)
        blocks = [pool.pop() for _ in range(nblocks)]
        padded = target.ljust(nblocks * self.bs, b"\0")
        for i, blk in enumerate(blocks):
            self.dev.write(blk * self.bs, padded[i * self.bs : (i + 1) * self.bs])
        ptrs = blocks + [0] * (fmt.N_BLOCK_POINTERS - nblocks)
        return pack_inode(
            st.st_mode, st.st_uid, st.st_gid, links, self.rng.getrandbits(32), size, nblocks, self._times(st),
            pointers=ptrs,
        )  # fmt: skip

    def _with_xattrs(self, raw: bytes, xattrs: list[tuple[bytes, bytes]], block: int) -> bytes:
        """Write the xattr block and return the inode image pointing at it (fresh inode, no journal needed)."""
        self.dev.write(block * self.bs, xa.build_block(dict(xattrs), self.bs))
        self.stats.xattrs += len(xattrs)
        img = bytearray(raw)
        _U64.pack_into(img, _XATTR_OFF, block)
        _U64.pack_into(img, _BLOCKS_OFF, _U64.unpack_from(img, _BLOCKS_OFF)[0] + 1)
        return bytes(img)

    def _merge_dir_inode(self, d: _Dir, uid: int | None, gid: int | None) -> None:
        """Root or lost+found: made by mkfs; keep its blocks, take the source's metadata."""
        st = d.st
        a, an = divmod(st.st_atime_ns, _NS)
        m, mn = divmod(st.st_mtime_ns, _NS)
        c, cn = divmod(st.st_ctime_ns, _NS)
        self.vol.set_inode_fields(d.ino, mode=st.st_mode, atime=a, atime_nsec=an)
        if uid is not None and gid is not None:
            self.vol.set_inode_fields(d.ino, uid=uid, gid=gid)
        self.vol.set_inode_fields(d.ino, mtime=m, mtime_nsec=mn, ctime=c, ctime_nsec=cn)
        xattrs = d.xattrs.get(b"")
        if xattrs:
            self.vol.set_all_xattrs(d.ino, dict(xattrs))
            self.stats.xattrs += len(xattrs)
        self.stats.directories += 1

    def _new_dir_inode(self, d: _Dir) -> None:
        """A new directory's inode, complete but empty (its pages come when it is visited)."""
        st = d.st
        gen = self.rng.getrandbits(32)
        raw = pack_inode(
            st.st_mode, st.st_uid, st.st_gid, 2 + len(d.subdirs), gen, 0, 0, self._times(st), parent=d.parent_ino
        )
        xattrs = d.xattrs.get(b"")
        if xattrs:
            raw = self._with_xattrs(raw, xattrs, self._blocks(1)[0])
        self._write_inode(d.ino, raw)
        self.stats.directories += 1

    def _build(self, d: _Dir, entries: list[tuple[bytes, int, int]], pool: list[int]) -> None:
        """Give directory ``d`` its entries, now that every child inode is stored.

        A directory whose records fit one page gets that page written here (the
        same bytes as ``Directory.build``), then its root word stored, as
        ``Directory.build`` orders it; bigger ones go through ``Directory.build``.
        (The order matters on an ordered device: a crash during populate must
        leave every visible object complete -- campaigns/crash_replay.py.)
        """
        if d.merge:
            self._merge_entries(d, entries)
            return
        if d.single:
            page = pool.pop()
            self._write_page(d.ino, entries, page)
            self.vol.barrier()
            base = self.geo.inode_offset(d.ino)
            self.vol.store_u64(base + _BLOCK0_OFF, page | fmt.RADIX_PAGE_BIT)
            self.vol.barrier()  # the root word, then size and blocks (spec/operations.md 4.5)
            blocks = 2 if d.xattrs.get(b"") else 1
            if self.usage is None:
                self.dev.write(base + _SIZE_OFF, _SIZE_BLOCKS.pack(self.bs, blocks))
            else:  # set_inode_fields charges the page to the owner's quota
                self.vol.set_inode_fields(d.ino, size=self.bs, blocks=blocks)
        elif entries:
            self.Directory.build(self.vol, d.ino, entries)
        if pool:
            raise AssertionError(f"{len(pool)} planned blocks unused in {os.fsdecode(d.path)}")

    def _write_page(self, dir_ino: int, entries: list[tuple[bytes, int, int]], block: int) -> None:
        """The one page of a small directory (depth 0, directly under the root word), as Directory.build writes it
        (records by hash, then by name where hashes tie: only a test's hash makes ties)."""
        seed = self.vol.hash_seed
        hashes = None
        if namehash.name_hash is not _directory._DEFAULT_NAME_HASH:  # a test's hash: the core knows only SipHash
            hashes = _directory.hash_names(seed, [e[0] for e in entries])
        self.dev.write(block * self.bs, self.dir_page(entries, seed, hashes, dir_ino, self.bs))

    def _merge_entries(self, d: _Dir, entries: list[tuple[bytes, int, int]]) -> None:
        """Add ``entries`` to a directory mkfs made (root, lost+found): its link count is raised first, so
        that it is never lower than 2 + the subdirectories it names (spec/operations.md 3.2)."""
        directory = self.Directory(self.vol, d.ino)
        for name, _ino, _ftype in entries:
            if directory.lookup(name) is not None:
                raise FileExistsError_(f"{os.fsdecode(d.path + b'/' + name)}: already exists in the new filesystem")
        subdirs = len(d.subdirs)
        if d.ino == fmt.ROOT_INO and fmt.LOST_FOUND_NAME not in d.names:
            subdirs += 1  # the lost+found mkfs made
        self.vol.set_inode_fields(d.ino, links_count=2 + subdirs)
        self.vol.barrier()
        for name, ino, ftype in entries:
            directory.add(name, ino, ftype)


# ---------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------


def _fits_one_page(names: list[bytes], block_size: int) -> bool:
    """True when a non-empty directory's records fit one page: then it is that page alone (depth 0, no radix
    node), written by the writer itself (``_build``), and its names need no hashing to count it."""
    if not names:
        return False
    room = block_size - fmt.DIR_PAGE_HEADER_SIZE
    if len(names) * _MAX_REC <= room:
        return True
    total = 0
    for n in names:
        total += (_REC_FIXED + len(n)) & ~7
        if total > room:
            return False
    return True


def _dir_blocks_fn(vol) -> Callable[[list[bytes]], int]:
    """Blocks (pages + radix nodes) a fresh directory with these names takes (directory.blocks_needed,
    without hashing the names of a directory that fits one page)."""
    from nvfs_tools.directory import blocks_needed

    def exact(names: list[bytes]) -> int:
        if not names:
            return 0
        if _fits_one_page(names, vol.block_size):
            return 1
        return blocks_needed(vol.block_size, vol.hash_seed, names)

    return exact


def populate(
    vol,
    source_dir: str | bytes,
    *,
    root_owner: tuple[int, int] | None = None,
    progress: ProgressFn | None = None,
) -> PopulateStats:
    """Copy the tree at ``source_dir`` into the root of the freshly made ``vol``.

    ``root_owner`` is (uid, gid) for the root directory (default: leave the
    owner mkfs gave it).  Raises :class:`SourceError` when a source entry cannot be
    read and :class:`NoSpaceError` (before writing anything) when the tree
    does not fit.
    """
    stats = PopulateStats()
    # realpath: the source itself may be a symlink (directories are opened with O_NOFOLLOW)
    source = os.path.realpath(os.fsencode(source_dir))
    uid, gid = root_owner if root_owner is not None else (None, None)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of small objects, no cycles: the collector only costs time
    try:
        t0 = time.perf_counter()
        epoch = source_date_epoch()
        prealloc = _Preallocator.start(vol)
        try:
            plan = _walk(
                source, vol.block_size, _dir_blocks_fn(vol), prealloc.want if prealloc else None, epoch is not None
            )
        finally:
            if prealloc is not None:
                prealloc.finish()
        stats.walk_seconds = time.perf_counter() - t0
        stats.inodes_needed = plan.inodes
        stats.blocks_needed = plan.blocks
        _check_space(vol, plan)
        t1 = time.perf_counter()
        _write(vol, plan, stats, progress, uid, gid, epoch)
        vol.barrier()
        stats.write_seconds = time.perf_counter() - t1
    finally:
        if gc_was_enabled:
            gc.enable()
    return stats


def _check_space(vol, plan: _Plan) -> None:
    dyn = vol.dyn
    if plan.blocks > dyn.free_blocks or plan.inodes > dyn.free_inodes:
        raise NoSpaceError(
            f"the source tree needs {plan.blocks} blocks / {plan.inodes} inodes, "
            f"the device has {dyn.free_blocks} blocks / {dyn.free_inodes} inodes free "
            f"({plan.blocks * vol.block_size} bytes needed, {dyn.free_blocks * vol.block_size} free)"
        )


def _write(
    vol,
    plan: _Plan,
    stats: PopulateStats,
    progress: ProgressFn | None,
    uid: int | None,
    gid: int | None,
    epoch: int | None,
) -> None:
    writer = _Writer(vol, plan, stats, progress, epoch)
    root = plan.dirs[0]
    root.ino = root.parent_ino = fmt.ROOT_INO
    root.merge = True
    try:
        _prepare_lost_found(vol, root)
        writer._merge_dir_inode(root, uid, gid)
        writer.reserve_blocks(plan.dirs)
        for d in plan.dirs:
            writer.write_dir(d)
        writer.submit_copies()
    except BaseException:
        if writer.copier is not None:
            writer.copier.finish(raise_failure=False)  # stop the thread; the first error is the one to report
        raise
    if writer.copier is not None:
        writer.copier.finish()  # every file copied, or the first copy failure raised
    writer.charge_quota()
    if progress is not None:
        progress(plan.entries, plan.entries)


def _prepare_lost_found(vol, root: _Dir) -> None:
    """A top-level source ``lost+found`` directory is merged into the one mkfs made."""
    if fmt.LOST_FOUND_NAME not in root.names:
        return
    i = root.names.index(fmt.LOST_FOUND_NAME)
    if not stat.S_ISDIR(_Stat(root.meta, i).st_mode):
        raise FileExistsError_(f"{os.fsdecode(root.path)}/lost+found: not a directory, but mkfs made lost+found")
    sub = root.extra[i]
    assert isinstance(sub, _Dir)
    sub.ino = vol.static.lost_found_ino
    sub.merge = True
