"""Chooses the scan implementation: the Cython core or the pure-Python reference.

``NVFS_PURE=1`` in the environment forces the pure-Python path (CI runs the
suite that way once, so both stay correct).

Both backends provide the same functions with the same signatures and results
(see ``scan_pure`` for the reference semantics of each):

* ``siphash24(key, data) -> int`` and
  ``siphash24_bulk(key, buf, offsets, lengths) -> array('Q')``;
* bitmaps: ``popcount(buf, offset, nbytes, kernel=None)``,
  ``find_free(buf, offset, nbits, start, count, align=1)``,
  ``diff(buf_a, off_a, buf_b, off_b, nbits) -> array('Q')``;
* ``scan_inodes(buf, geo, *, use_bitmap=False, groups=None, threads=0) -> dict``;
* ``walk_blockmaps(buf, geo, inos, *, mark_metadata=True, threads=0) -> dict``;
* ``walk_directories(buf, geo, seed, dir_inos, owned=None, *, threads=0) -> dict``;
* ``link_counts(children, n_inodes) -> memoryview('I')``;
* ``verify_arrays(buf, geo, scan, blockmap, dirs) -> (Mismatch, array('Q'))``: the
  cross-checks of fsck's bulk fast path over the three scans' results;
* fsck's fast path, which keeps no per-file record: ``check_inode_groups(buf, geo, groups,
  owned, inuse, table, *, tables=None, threads=0, release=False) -> dict | None`` (each in-use inode read once:
  scan, fields, block map and block count, link count into a uint32 table),
  ``check_directories(buf, geo, seed, dir_inos, owned, table, *, threads=1, release=False) -> dict | None`` (walk, page
  slack and names counted against the table, directory by directory),
  ``tally_entries(table, entry_ino, file_type, n_inodes) -> int`` and
  ``unsettled_links(table, inuse, n_inodes) -> int``;
* fsck's group headers: ``differing_spans(buf, offsets, expected, *, fd=-1, threads=1)``,
  ``group_summaries_match(buf, geo, owned, inuse, dirs_per_group, counters, *, fd=-1, threads=1)``,
  ``group_counters_agree(buf, geo, counters, *, fd=-1, threads=1)`` (:class:`CounterCheck`) and
  ``seek_holes(fd, starts, length, *, threads=1)``: each group's few header blocks, pread from
  ``fd`` when given (no mapped page kept resident);
* mkfs -d: ``copy_files(out_fd, paths, starts, sizes, offsets, block_size) -> (i, errno, what)``
  (pieces of files into the image, zero-padded to blocks; the compiled core releases the GIL);
* CPU and persistence: ``cpu_features()``, ``popcount_kernels()``,
  ``flush_range(buf, offset, length)``, ``sfence()``, ``nt_zero(buf, offset, length)``.

Every problem list is three parallel arrays ``prob_ino``, ``prob_where``,
``prob_code``: the inode concerned, a device byte address (see
:class:`Problem` for what it points at) and a :class:`Problem` code.
"""

from __future__ import annotations

import os
from enum import IntEnum
from types import ModuleType

_backend: ModuleType | None = None


class Problem(IntEnum):
    """What the scans report.  ``where`` is always a device byte address.

    Inode problems (``scan_inodes``): ``where`` = address of the inode.
    Pointer problems (``walk_blockmaps``, ``walk_directories``): ``where`` =
    address of the 8-byte pointer word (inode field, indirect slot, radix
    slot, root word or page ``next`` field), so a repair can store 0 there.
    Page problems: ``where`` = address of the page.  Entry problems:
    ``where`` = address of the directory record.
    """

    # scan_inodes
    ILLEGAL_MODE = 1  # file type bits are not a known type
    UNKNOWN_FLAGS = 2  # flags outside format.INODE_FLAGS_KNOWN
    INLINE_NOT_SYMLINK = 3  # INODE_FLAG_INLINE on anything but a symlink
    INLINE_BAD_SIZE = 4  # inline symlink with size 0 or > INLINE_SYMLINK_MAX
    SIZE_TOO_LARGE = 5  # size beyond what 16 pointers can map
    RESERVED0_NONZERO = 6
    LINKS_ZERO = 7  # in use with no link (normal only on the orphan list)
    DIR_BAD_PARENT = 8  # parent 0, out of range, or root's parent not itself
    DIR_BAD_BANK = 9  # dir_bank not 0 or 1
    SPECIAL_HAS_DATA = 10  # device/fifo/socket with a size or block pointers
    # walk_blockmaps / walk_directories: pointers
    BLOCK_OUT_OF_RANGE = 20  # >= blocks_count or outside the mapping
    BLOCK_IN_METADATA = 21  # Geometry.is_metadata_block
    BLOCK_SHARED = 22  # claimed twice (blockmaps: every claimant reported)
    BLOCK_PAST_EOF = 23  # whole subtree maps file blocks past EOF: not claimed
    XATTR_OUT_OF_RANGE = 24
    XATTR_IN_METADATA = 25
    XATTR_SHARED = 26
    INDIRECT_ALL_ZERO = 27  # an indirect block holding no pointer (spec/checking.md 7.6): claimed, not descended
    # walk_directories: pages, nodes, entries
    NOT_A_DIRECTORY = 30  # where = inode address
    PAGE_BAD_MAGIC = 31  # page not descended
    PAGE_BAD_DEPTH = 32
    PAGE_BAD_PREFIX = 33
    PAGE_BAD_SLOTS = 34  # slots pointing to the page not the aligned 2**(L*b+b-d) run
    PAGE_BAD_DIR_INO = 35
    PAGE_BAD_NEXT = 36  # ``next`` set below depth 64
    NODE_TOO_DEEP = 37  # radix node at a level that consumes no hash bit
    ENTRY_BAD_HASH = 40  # stored hash != SipHash(seed, name)
    ENTRY_WRONG_PAGE = 41  # hash does not match the page's place in the tree
    ENTRY_BAD_REC_LEN = 42  # rec_len != dir_entry_rec_len(name_len) or past the page: rest not parsed
    ENTRY_BAD_NAME = 43  # empty, '/' or NUL
    ENTRY_DOT_NAME = 44  # '.' or '..' stored as a name
    ENTRY_DUPLICATE = 45  # same name earlier in the same directory
    ENTRY_BAD_INO = 46  # child inode number 1 or beyond inodes_count: entry not listed


class Mismatch(IntEnum):
    """First disagreement ``verify_arrays`` found between the scans' arrays (checked in this order)."""

    NONE = 0  # consistent
    DIR_LIST = 1  # directories of dir_ino not a subsequence of the in-use inodes, or counts lengths wrong
    BLOCK_COUNT = 2  # inode ``blocks`` != blocks owned (block map + xattr + directory pages and nodes)
    DIR_SIZE = 3  # directory size != (pages + nodes) * block_size
    INODE_FIELDS = 4  # next_orphan set, nsec >= 10**9, parent/dir_bank/rdev where the type has none,
    #                   device numbers out of range, directory pointers past block[1]
    ENTRY_INO = 5  # entry names a reserved inode, the root or one past inodes_count
    ENTRY_TYPE = 6  # entry file type != its target's mode type, or the target is not in use
    PAGE_RESIDUE = 7  # page with live entries: header reserved bytes or bytes after the last record
    DIR_NAMES = 8  # a directory named twice, not named by its parent, or the root's parent not itself
    UNREACHABLE = 9  # a parent-pointer cycle (some directories do not reach the root)
    LINKS = 10  # link count != entries naming it (files) or 2 + subdirectories (directories)


class CounterCheck(IntEnum):
    """Why ``group_counters_agree`` stopped at a group (fsck's clean-flag shortcut)."""

    AGREE = 0  # every group's counters agree with its bitmaps
    DAMAGED = 1  # the counters block's magic differs (or its span cannot be read)
    OTHER_GROUP = 2  # it names another group
    STRAY = 3  # bytes past the structure are not zero
    PAST_END = 4  # a short last group's block bitmap has free bits past its end
    DISAGREE = 5  # free blocks or free inodes differ from the bitmaps' clear bits


def backend() -> ModuleType:
    """The module that implements the fast-scan functions."""
    global _backend
    if _backend is None:
        _backend = _load()
    return _backend


def using_compiled() -> bool:
    return backend().__name__.endswith("_fastscan")


def _load() -> ModuleType:
    if os.environ.get("NVFS_PURE") != "1":
        try:
            from nvfs_tools import _fastscan

            return _fastscan
        except ImportError:
            pass
    from nvfs_tools import scan_pure

    return scan_pure
