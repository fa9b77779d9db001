"""Store/barrier recorder and crash-state replayer (the crash test NVFS's author used).

NVFS has no journal for most operations: correctness after power loss rests
entirely on the order of 8-byte stores and barriers given in
``spec/operations.md``.  This module makes that order testable:

* :class:`RecordingDevice` wraps an open :class:`~nvfs_tools.device.Device`
  (a proxy, so ``device.py`` stays untouched) and logs every write and every
  barrier the library, fsck or debugfs makes.  Writes are kept as aligned
  8-byte *granules*: the failure-atomic unit of persistent memory.
* :class:`CrashLog` holds the image as it was when recording started plus the
  events, split into *epochs* (the writes between two barriers).
* :class:`CrashLog.crash_image` rebuilds what the media could hold after a
  power cut: every epoch before the cut is durable, and of the epoch in
  flight any subset of granules persisted, each granule holding one of the
  values it was given in that epoch (stores to one word are never seen out of
  order, but different words persist in any order).  :func:`cut_points`
  enumerates cuts at every barrier, in-order prefixes (what SIGKILL leaves on
  a page-cache mapping) and random reorder/drop states, reproducibly from a
  seed.

:func:`recording` runs code with every ``Device`` opened by fsck's runner
replaced by a recording one (for fsck's own repairs); :func:`record_volume`
opens a :class:`~nvfs_tools.volume.Volume` over a recording device.

``fail_after=N`` makes the N-th write raise :class:`SimulatedCrash` before it
reaches the media: an in-process stand-in for killing the program there.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

GRANULE = 8


class SimulatedCrash(BaseException):
    """Raised by a recording device at its ``fail_after``-th write (BaseException: nothing may catch it)."""


@dataclass
class Epoch:
    """The writes between two barriers: ``(granule address, 8 bytes)`` in program order, and op markers."""

    writes: list[tuple[int, bytes]] = field(default_factory=list)
    #: index into ``writes`` at which an operation marker was placed, and the marker
    marks: list[tuple[int, Any]] = field(default_factory=list)


class CrashLog:
    """The base image and every recorded epoch; builds crash images.

    ``epochs[i]`` holds the writes after barrier ``i - 1`` and before barrier
    ``i``; the last epoch is closed by the end of the recording (close flushes).
    """

    def __init__(self, base: bytes) -> None:
        self.base = bytes(base)
        self.epochs: list[Epoch] = [Epoch()]
        self.writes = 0
        self.barriers = 0

    # -- recording -----------------------------------------------------------------------------
    def record(self, offset: int, length: int, view: Any) -> None:
        """Log a write of ``length`` bytes at ``offset``; ``view`` is the live media after it."""
        if length <= 0:
            return
        start = offset - offset % GRANULE
        end = offset + length
        end += -end % GRANULE
        end = min(end, len(view))
        data = bytes(view[start:end])
        ep = self.epochs[-1].writes
        for pos in range(0, len(data), GRANULE):
            ep.append((start + pos, data[pos : pos + GRANULE]))
        self.writes += 1

    def barrier(self) -> None:
        self.barriers += 1
        self.epochs.append(Epoch())

    def mark(self, marker: Any) -> None:
        """Remember that ``marker`` (e.g. ("begin", op index)) happened here."""
        ep = self.epochs[-1]
        ep.marks.append((len(ep.writes), marker))

    # -- replay ----------------------------------------------------------------------------------
    def durable(self, epoch: int) -> bytearray:
        """The media after every epoch before ``epoch`` persisted completely."""
        img = bytearray(self.base)
        for ep in self.epochs[:epoch]:
            apply_writes(img, ep.writes)
        return img

    def final(self) -> bytearray:
        return self.durable(len(self.epochs))

    def marker_epochs(self) -> list[tuple[int, Any]]:
        """``(epoch index, marker)`` for every marker, in order."""
        return [(i, m) for i, ep in enumerate(self.epochs) for _, m in ep.marks]

    def crash_image(self, cut: Cut, durable: bytearray | None = None) -> bytearray:
        """The media after power loss at ``cut`` (``durable`` = :meth:`durable` of its epoch, to save work)."""
        img = bytearray(durable) if durable is not None else self.durable(cut.epoch)
        if cut.epoch < len(self.epochs):
            apply_writes(img, partial_writes(self.epochs[cut.epoch].writes, cut))
        return img


def apply_writes(img: bytearray, writes: list[tuple[int, bytes]]) -> None:
    for addr, data in writes:
        img[addr : addr + GRANULE] = data


@dataclass(frozen=True)
class Cut:
    """One crash state: all epochs before ``epoch`` durable; of epoch ``epoch``:

    ``kind`` ``barrier``: nothing; ``prefix``: the first ``prefix`` granule
    writes in order; ``random``: a random reorder/drop chosen by ``seed``.
    """

    epoch: int
    kind: str
    prefix: int = 0
    seed: int = 0

    @property
    def case_id(self) -> str:
        if self.kind == "barrier":
            return f"b{self.epoch}"
        if self.kind == "prefix":
            return f"p{self.epoch}.{self.prefix}"
        return f"r{self.epoch}.{self.seed}"

    @staticmethod
    def parse(text: str) -> Cut:
        kind = {"b": "barrier", "p": "prefix", "r": "random"}[text[0]]
        if kind == "barrier":
            return Cut(int(text[1:]), kind)
        epoch, n = (int(x) for x in text[1:].split("."))
        return Cut(epoch, kind, prefix=n if kind == "prefix" else 0, seed=n if kind == "random" else 0)


def partial_writes(writes: list[tuple[int, bytes]], cut: Cut) -> list[tuple[int, bytes]]:
    """The granule values of one epoch that persisted in crash state ``cut``."""
    if cut.kind == "barrier":
        return []
    if cut.kind == "prefix":
        return writes[: cut.prefix]
    rng = random.Random(cut.seed)
    by_addr: dict[int, list[bytes]] = {}
    for addr, data in writes:
        by_addr.setdefault(addr, []).append(data)
    # A per-cut persistence probability makes "almost nothing" and "almost everything" both likely.
    keep = rng.choice((0.1, 0.5, 0.9, rng.random()))
    out = []
    for addr, values in by_addr.items():
        if rng.random() >= keep:
            continue
        # each word holds one of the values it went through in this epoch (never an older one after a newer)
        out.append((addr, values[rng.randrange(len(values))]))
    return out


def cut_points(log: CrashLog, *, seed: int, randoms_per_epoch: int = 2, prefixes_per_epoch: int = 1) -> list[Cut]:
    """Every barrier cut, plus random-reorder and in-order-prefix cuts inside each non-empty epoch."""
    rng = random.Random(seed)
    cuts: list[Cut] = []
    for i, ep in enumerate(log.epochs):
        cuts.append(Cut(i, "barrier"))
        if not ep.writes:
            continue
        for _ in range(prefixes_per_epoch):
            if len(ep.writes) > 1:
                cuts.append(Cut(i, "prefix", prefix=rng.randrange(1, len(ep.writes))))
        distinct = len({a for a, _ in ep.writes})
        if distinct > 1:
            for _ in range(randoms_per_epoch):
                cuts.append(Cut(i, "random", seed=rng.randrange(1 << 30)))
    cuts.append(Cut(len(log.epochs), "barrier"))  # everything persisted
    return sorted(set(cuts), key=lambda c: (c.epoch, c.kind, c.prefix, c.seed))


# ---------------------------------------------------------------------------------------------------
# The recording device
# ---------------------------------------------------------------------------------------------------


class RecordingDevice:
    """A :class:`Device` proxy that logs writes and barriers into a :class:`CrashLog`.

    ``fd`` reads as -1 so that bulk writers that would go around
    :meth:`write` with ``pwritev`` on the file descriptor (populate) take the
    recorded path instead; ``pwrite`` and ``zero_range`` are recorded writes.
    """

    def __init__(self, dev: Any, log: CrashLog | None = None, *, fail_after: int | None = None) -> None:
        object.__setattr__(self, "_dev", dev)
        object.__setattr__(self, "log", log if log is not None else CrashLog(bytes(dev.view)))
        object.__setattr__(self, "fail_after", fail_after)
        object.__setattr__(self, "write_count", 0)

    fd = -1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dev, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._dev, name, value)

    def write(self, offset: int, data: Any) -> None:
        count = self.write_count + 1
        object.__setattr__(self, "write_count", count)
        if self.fail_after is not None and count > self.fail_after:
            raise SimulatedCrash(f"simulated crash at write {count}")
        self._dev.write(offset, data)
        length = data.nbytes if isinstance(data, memoryview) else len(data)
        self.log.record(offset, length, self._dev.view)

    def pwrite(self, offset: int, data: Any) -> None:
        self.write(offset, data)

    def zero_range(self, offset: int, length: int) -> None:
        chunk = 1 << 20
        end = offset + length
        while offset < end:
            n = min(chunk, end - offset)
            self.write(offset, bytes(n))
            offset += n

    def barrier(self) -> None:
        self._dev.barrier()
        self.log.barrier()

    def mark(self, marker: Any) -> None:
        self.log.mark(marker)

    def close(self) -> None:
        self._dev.close()

    def __enter__(self) -> RecordingDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RecordingDevice {self._dev!r}: {self.log.writes} writes, {self.log.barriers} barriers>"


def record_volume(path: str, *, fail_after: int | None = None) -> Any:
    """A writable :class:`Volume` on ``path`` whose device records (``vol.dev.log``)."""
    from nvfs_tools.device import Device
    from nvfs_tools.volume import Volume

    dev = RecordingDevice(Device(path, writable=True), fail_after=fail_after)
    return Volume.from_device(dev)  # type: ignore[arg-type]


@contextlib.contextmanager
def recording(*, fail_after: int | None = None) -> Iterator[list[RecordingDevice]]:
    """Within the block, every device fsck's runner opens records; yields the list of them."""
    from nvfs_tools.check import runner
    from nvfs_tools.device import Device

    opened: list[RecordingDevice] = []
    original = runner._open

    def _open(device: str, options: Any) -> Any:
        dev = RecordingDevice(Device(device, writable=options.mode != "n"), fail_after=fail_after)
        opened.append(dev)
        return dev

    runner._open = _open
    try:
        yield opened
    finally:
        runner._open = original


def verify_log(log: CrashLog, final: bytes) -> str | None:
    """None when base + every recorded write equals ``final``; else where it differs.

    A difference means some code wrote around :meth:`Device.write` (through the
    mapping or the file descriptor): the crash replay would then be blind to it.
    """
    rebuilt = log.final()
    if rebuilt == final:
        return None
    for i in range(0, len(final), 4096):
        if rebuilt[i : i + 4096] != final[i : i + 4096]:
            return f"unrecorded write in bytes {i}..{i + 4095} (block {i // 4096})"
    return f"length differs: {len(rebuilt)} vs {len(final)}"
