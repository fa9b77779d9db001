"""Bad media for the checker: a device wrapper under which a bad block reads as zeros and is never written.

Persistent memory with an uncorrectable media error kills the reader (machine
check / SIGBUS) when the page is touched through the mapping.  Rather than
guard every read site of every pass, fsck runs over :class:`MediaSafeDevice`
when any bad range is known (``--badblocks FILE`` or the kernel's sysfs list):

* every read (``read``, ``view[...]``) of a span holding a bad block returns a
  private copy in which the bad blocks are zeros, assembled from the good parts
  only.  Zeros are what the passes already know how to judge: a zeroed inode
  table block holds free inodes, a zeroed directory page has no magic (the
  directory is rebuilt and its surviving children go to lost+found), a zeroed
  indirect block maps holes, zeroed bitmaps and counters are recomputed;
* every write skips the bad blocks (their contents are lost; storing through
  the mapping would fault as well), so repairs never copy data through them;
* :func:`is_bad` answers "is block B bad" for the allocator and the reports.

Bad byte ranges are rounded out to whole ``unit`` bytes (the filesystem block,
at least a page): a block with one bad sector is lost as a whole.
"""

from __future__ import annotations

import bisect
import mmap
from typing import Any

_PAGE = mmap.PAGESIZE


def spans(ranges: list[tuple[int, int]], unit: int, size: int) -> list[tuple[int, int]]:
    """Sorted, merged ``[start, end)`` byte spans covering ``ranges`` rounded out to ``unit``."""
    out: list[list[int]] = []
    for start, length in sorted(ranges):
        if length <= 0 or start >= size:
            continue
        lo = start - start % unit
        hi = min(size, -(-(start + length) // unit) * unit)
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(a, b) for a, b in out]


class _Spans:
    """Bad spans with overlap queries."""

    def __init__(self, bad: list[tuple[int, int]]) -> None:
        self.bad = bad
        self.starts = [a for a, _ in bad]

    def overlapping(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The bad spans clipped to ``[lo, hi)``."""
        i = max(0, bisect.bisect_right(self.starts, lo) - 1)
        out = []
        while i < len(self.bad) and self.bad[i][0] < hi:
            a, b = self.bad[i]
            if b > lo:
                out.append((max(a, lo), min(b, hi)))
            i += 1
        return out


class SafeView:
    """Stands for ``dev.view``: slices touching a bad span are zero-filled copies."""

    def __init__(self, view: memoryview, bad: _Spans) -> None:
        self._view = view
        self._bad = bad

    def __len__(self) -> int:
        return len(self._view)

    @property
    def nbytes(self) -> int:
        return self._view.nbytes

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            lo, hi, step = key.indices(len(self._view))
            if hi <= lo:
                return self._view[lo:lo]
            if step != 1:
                return memoryview(bytes(self[lo:hi]))[::step]
            holes = self._bad.overlapping(lo, hi)
            if not holes:
                return self._view[lo:hi]
            return memoryview(_assemble(self._view, lo, hi, holes))
        if key < 0:
            key += len(self._view)
        return 0 if self._bad.overlapping(key, key + 1) else self._view[key]

    def __setitem__(self, key: Any, data: Any) -> None:
        lo, hi, _ = key.indices(len(self._view)) if isinstance(key, slice) else (key, key + 1, 1)
        if not isinstance(key, slice):
            data = bytes([data])
        for a, b in _good_parts(lo, hi, self._bad.overlapping(lo, hi)):
            self._view[a:b] = memoryview(data)[a - lo : b - lo]

    def __getattr__(self, name: str) -> Any:  # cast() etc. on the whole mapping: only the fast path does that
        return getattr(self._view, name)


def _assemble(view: Any, lo: int, hi: int, holes: list[tuple[int, int]]) -> bytearray:
    buf = bytearray(hi - lo)
    for a, b in _good_parts(lo, hi, holes):
        buf[a - lo : b - lo] = view[a:b]
    return buf


def _good_parts(lo: int, hi: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    pos = lo
    for a, b in holes:
        if a > pos:
            out.append((pos, a))
        pos = max(pos, b)
    if pos < hi:
        out.append((pos, hi))
    return out


class MediaSafeDevice:
    """A :class:`~nvfs_tools.device.Device` whose bad blocks read as zeros and are never written."""

    def __init__(self, dev: Any, unit: int = _PAGE, granules: tuple[int, ...] | None = None) -> None:
        self.dev = dev
        self.granules = granules or GRANULES
        self.dropped: set[tuple[int, int]] = set()  # [start, end) bad spans a store into was dropped
        self.set_unit(unit)

    def set_unit(self, unit: int) -> None:
        """Round bad ranges out to ``unit`` bytes (the block size, once the superblock is known)."""
        self.unit = max(unit, _PAGE)
        self._spans = _Spans(spans(list(self.dev.badblocks), self.unit, self.dev.size))
        shadow = _shadow_view(self.dev, self._spans.bad, self.granules)
        self._chunks: _Spans | None = None
        if shadow is None:
            self.view = SafeView(self.dev.view, self._spans)
        else:
            self._shadow, chunks = shadow
            self._chunks = _Spans(chunks)
            self.view = self._shadow.toreadonly()

    def bad_blocks(self, block_size: int) -> set[int]:
        """Blocks of ``block_size`` bytes that lie in a bad span."""
        out: set[int] = set()
        for a, b in self._spans.bad:
            out.update(range(a // block_size, -(-b // block_size)))
        return out

    def private_over(self, offset: int, length: int) -> bool:
        """Whether the view may differ from the file in this range apart from reading zeros: never (the
        shadow's private chunks copy the file, bad blocks zeroed, and writes go to both), so a hole of
        the file reads as zeros here too (Image.is_hole)."""
        return False

    def is_bad_range(self, offset: int, length: int) -> bool:
        return bool(self._spans.overlapping(offset, offset + length))

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.dev.size:
            return self.dev.read(offset, length)  # the device's own out-of-range error
        return bytes(self.view[offset : offset + length])

    def write(self, offset: int, data: Any) -> None:
        data = memoryview(data).cast("B")
        end = offset + data.nbytes
        holes = self._spans.overlapping(offset, end)
        self.dropped.update(holes)
        for a, b in _good_parts(offset, end, holes):
            self.dev.write(a, data[a - offset : b - offset])
            self._mirror(a, data[a - offset : b - offset])

    def _mirror(self, offset: int, data: memoryview) -> None:
        """Keep the private overlay chunks of the shadow mapping equal to the device's good bytes."""
        if self._chunks is None:
            return
        end = offset + data.nbytes
        for a, b in self._chunks.overlapping(offset, end):
            self._shadow[a:b] = data[a - offset : b - offset]

    def pwrite(self, offset: int, data: Any) -> None:
        self.write(offset, data)

    def zero_range(self, offset: int, length: int) -> None:
        for a, b in _good_parts(offset, offset + length, self._spans.overlapping(offset, offset + length)):
            self.dev.zero_range(a, b - a)
            self._mirror(a, memoryview(bytes(b - a)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dev, name)


def _libc() -> Any:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


#: Overlay granules tried in turn: a page, then the alignments devdax may insist on to split its mapping.
GRANULES = (_PAGE, 2 << 20, 1 << 30)


def _shadow_view(
    dev: Any, bad: list[tuple[int, int]], granules: tuple[int, ...] = GRANULES, extra: tuple[tuple[int, int], ...] = ()
) -> tuple[memoryview, list[tuple[int, int]]] | None:
    """A second mapping of the device in which anonymous memory replaces the chunks holding bad spans.

    ``extra`` ``[start, end)`` spans get private chunks too, copied whole (``fsck -n`` replays a
    pending journal transaction into them: check/overlay.py).

    Returns (writable view, overlay chunks).  The view is a real buffer
    (struct.unpack_from, cast() and the library's Directory work on it) and sees
    every write made through the device's own mapping outside the chunks; the
    chunks are private copies of their good parts (bad blocks left zero), which
    :meth:`MediaSafeDevice.write` keeps up to date.  The bad pages of the device
    are never mapped here, so never touched.  The smallest granule the kernel
    accepts is used (devdax refuses to split its mapping at page granularity).
    None when the device cannot be mapped at all: :class:`SafeView` is used then.
    """
    import ctypes
    import weakref

    fd = getattr(dev, "fd", None)
    size = dev.size
    if fd is None or fd < 0 or size <= 0:
        return None
    libc = _libc()
    length = -(-size // _PAGE) * _PAGE
    failed = ctypes.c_void_p(-1).value
    rw = mmap.PROT_READ | mmap.PROT_WRITE
    anon = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x10  # MAP_FIXED
    for granule in granules:
        base = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if base in (None, failed):
            return None
        chunks = spans([(a, b - a) for a, b in [*bad, *extra]], granule, length)
        if all(libc.mmap(base + lo, hi - lo, rw, anon, -1, 0) == base + lo for lo, hi in chunks):
            break
        libc.munmap(base, length)
    else:
        return None
    array = (ctypes.c_char * size).from_address(base)
    weakref.finalize(array, libc.munmap, base, length)  # unmapped once no view of it is left
    view = memoryview(array).cast("B")
    holes = _Spans(bad)
    for lo, hi in chunks:
        hi = min(hi, size)
        for a, b in _good_parts(lo, hi, holes.overlapping(lo, hi)):
            view[a:b] = dev.view[a:b]
    return view, [(lo, min(hi, size)) for lo, hi in chunks]


def is_bad(image: Any, block: int) -> bool:
    """Whether ``block`` of the checked image lies in a bad range (never read or written by fsck)."""
    bad = getattr(image, "bad", None)
    return bool(bad) and block in bad
