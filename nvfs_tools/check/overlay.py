"""``fsck -n`` over a pending microjournal transaction (spec/checking.md 3.2).

A committed transaction is part of the filesystem: its stores are what the
writer decided, and ``fsck -y`` replays them before judging anything.  ``-n``
may not write, yet must judge the same filesystem, or every store of the
transaction would show up as a problem the replay would have made vanish.

:class:`ReplayOverlay` stands for the device with the replay applied in memory
only: a second mapping of the device in which the pages (or, on devdax, the
larger chunks the kernel insists on) holding the stored words are private
anonymous copies (check/media.py's shadow mapping).  The device itself is never
opened for writing and never changes; the rest of the mapping is shared, so
nothing is copied but those few pages.
"""

from __future__ import annotations

from typing import Any

from nvfs_tools.check import media
from nvfs_tools.errors import DeviceError

_WORD = 8


class ReplayOverlay:
    """The device (read-only) with the words a replay stores held in private memory."""

    def __init__(self, dev: Any, shadow: memoryview, chunks: list[tuple[int, int]] | None = None) -> None:
        self.dev = dev
        self._shadow = shadow
        self.view = shadow.toreadonly()
        self._chunks = chunks  # [start, end) of the private pages; None: unknown, all may be private

    @classmethod
    def over(cls, dev: Any, addrs: list[int]) -> ReplayOverlay | None:
        """An overlay able to take stores at ``addrs``; None when the device cannot be mapped privately."""
        spans = getattr(dev, "_spans", None)  # a MediaSafeDevice: its bad spans stay zero and unmapped
        bad = list(spans.bad) if spans is not None else []
        words = tuple((a, a + _WORD) for a in sorted(set(addrs)))
        made = media._shadow_view(dev, bad, media.GRANULES, words)
        return None if made is None else cls(dev, made[0], made[1])

    def private_over(self, offset: int, length: int) -> bool:
        """Whether replayed stores may make the view differ from the file in this range (Image.is_hole
        must not call a hole of the file a hole there)."""
        if self._chunks is None:
            return True
        return any(a < offset + length and offset < b for a, b in self._chunks)

    def store(self, addr: int, value: int) -> None:
        """One replayed 8-byte store, in memory only (a word in bad media stays unreadable zeros)."""
        is_bad = getattr(self.dev, "is_bad_range", None)
        if is_bad is not None and is_bad(addr, _WORD):
            return
        self._shadow[addr : addr + _WORD] = value.to_bytes(_WORD, "little")

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.dev.size:
            return self.dev.read(offset, length)  # the device's own out-of-range error
        return bytes(self.view[offset : offset + length])

    def write(self, offset: int, data: Any) -> None:
        raise DeviceError(f"{self.dev.path}: opened read-only")

    pwrite = write

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dev, name)
