"""One way to reach an NVFS device: image file, block device or devdax.

Everything the tools store goes through :meth:`Device.write`, and every point
where earlier stores must be durable before later ones goes through
:meth:`Device.barrier`.  That single choke point is what makes the store
ordering of ``spec/`` enforceable and what the crash-consistency tests record.

Three kinds of device are handled:

``file``
    a regular image file; size from ``stat``.  When the file lives on a DAX
    filesystem the mapping succeeds with ``MAP_SYNC`` and is treated like
    devdax (cache-line flushes instead of ``msync``).
``block``
    ``/dev/pmemN``, loop devices, ...; size from ``BLKGETSIZE64``, opened
    ``O_EXCL`` when writing (held until :meth:`Device.close`), ``BLKROGET``
    checked.  The mapping goes through the page cache: barriers ``msync``.
``dax``
    ``/dev/daxX.Y`` character devices; size and mapping alignment from sysfs,
    mapped with ``MAP_SYNC``; barriers write back the dirty cache lines (CLWB,
    CLFLUSHOPT or CLFLUSH, chosen by the fast-scan core from CPUID) and fence,
    or do nothing when the region's ``persistence_domain`` is ``cpu_cache``.

Barriers flush only what was written since the previous barrier: writes are
recorded as a short list of dirty ranges.  The library issues a barrier for
nearly every 8-byte commit store, so flushing the whole map would be ruinous.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import struct
from collections.abc import Iterable

from nvfs_tools import probe
from nvfs_tools.errors import DeviceBusyError, DeviceError

PAGE_SIZE = mmap.PAGESIZE
CACHE_LINE = 64

# ioctl numbers from <linux/fs.h>.
BLKROGET = 0x125E
BLKGETSIZE64 = 0x80081272
BLKDISCARD = 0x1277
BLKZEROOUT = 0x127F
BLKSSZGET = 0x1268

MAP_SHARED_VALIDATE = 0x03
MAP_SYNC = 0x80000

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

#: Above this many recorded ranges, neighbours are merged (a barrier then
#: flushes a little more than needed, never less).
_MAX_DIRTY_RANGES = 64
#: Chunk used when zeroing has to be done by writing.
_ZERO_CHUNK = 1 << 20


class MediaError(DeviceError):
    """An access touches a range the device lists as bad (poisoned) media."""


def _sysfs(*parts: str) -> str:
    return os.path.join(probe.SYSFS, *parts)


def _read_sys(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _sys_dir(st: os.stat_result) -> str:
    """sysfs directory of the device node with stat ``st``."""
    kind = "char" if stat.S_ISCHR(st.st_mode) else "block"
    return _sysfs("dev", kind, f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")


def is_devdax(st: os.stat_result) -> bool:
    """True when the character device ``st`` is a device-DAX instance."""
    base = _sys_dir(st)
    subsystem = os.path.realpath(os.path.join(base, "subsystem"))
    return os.path.basename(subsystem) == "dax" or os.path.exists(os.path.join(base, "dax_region"))


def _dax_attr(st: os.stat_result, name: str) -> str | None:
    base = _sys_dir(st)
    for candidate in (os.path.join(base, name), os.path.join(base, "device", name)):
        value = _read_sys(candidate)
        if value is not None:
            return value
    return None


def find_upwards(start: str, name: str) -> str | None:
    """First ``name`` file in ``start`` (resolved) or one of its parents inside sysfs."""
    here = os.path.realpath(start)
    root = os.path.realpath(probe.SYSFS)
    while here.startswith(root) and here != root:
        candidate = os.path.join(here, name)
        if os.path.isfile(candidate):
            return candidate
        here = os.path.dirname(here)
    return None


def persistence_domain_of(sys_dir: str) -> str | None:
    """The nd region's ``persistence_domain`` above ``sys_dir`` (``cpu_cache``, ``memory_controller``)."""
    path = find_upwards(sys_dir, "persistence_domain")
    if path is None:
        return None
    return _read_sys(path) or None


def parse_badblocks(text: str, *, shift: int = 0, size: int | None = None) -> list[tuple[int, int]]:
    """Byte ranges ``(offset, length)`` from a sysfs ``badblocks`` file (``sector count`` lines, 512 B sectors).

    ``shift`` is subtracted from every offset (region -> device coordinates);
    ranges are clipped to ``[0, size)``.
    """
    ranges = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        start = int(parts[0]) * 512 - shift
        end = start + int(parts[1]) * 512
        if size is not None:
            start, end = max(start, 0), min(end, size)
        if end > start:
            ranges.append((start, end - start))
    return sorted(ranges)


def _libc_fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) with a mode (os.posix_fallocate cannot punch holes).

    The C library is the one the interpreter already links (``CDLL(None)``):
    ``ctypes.util.find_library`` would start several processes (ldconfig, gcc)
    to look for it, which costs more than a whole mkfs of a small device.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "fallocate"):  # a static or unusual interpreter: look the library up
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _fastscan_function(*names: str, compiled_only: bool = True):
    """A kernel of the fast-scan core by one of ``names``, or None.

    Cache flushes need the compiled core: the pure-Python stand-ins of
    ``flush_range``/``sfence`` cannot execute CLWB or SFENCE, so relying on
    them would silently lose durability; without the core, barriers ``msync``.
    """
    try:
        from nvfs_tools import scan

        mod = scan.backend()
        if compiled_only and not scan.using_compiled():
            return None
    except Exception:  # noqa: BLE001 - a broken optional core must not stop the tools
        return None
    for name in names:
        fn = getattr(mod, name, None)
        if fn is not None:
            return fn
    return None


class Device:
    """A whole device (or image file) mapped into memory.

    ``view`` is a memoryview of the complete mapping (read-only when opened
    read-only), for zero-copy scans.  ``kind`` is ``file``, ``block`` or
    ``dax``; ``dax`` is true for any direct (MAP_SYNC) mapping.
    ``badblocks`` lists bad media ranges ``(offset, length)`` in bytes.

    ``unordered=True`` is for a device whose contents are not live yet (mkfs,
    including ``mkfs -d``): barriers do nothing and :meth:`close` does one
    flush of everything.  That is safe because no reader may trust the device
    until mkfs reports success, which it does only after that final flush; a
    crash before it leaves a device mkfs simply has to be run on again.
    """

    def __init__(
        self,
        path: str,
        *,
        writable: bool = False,
        exclusive: bool | None = None,
        unordered: bool = False,
        allow_mounted: bool = False,
    ) -> None:
        self.path = path
        self.writable = writable
        self.unordered = unordered
        #: While true, :meth:`close` only flushes: mkfs hands the device to the
        #: library (whose ``close`` closes it) yet keeps its exclusive open.
        self.hold_open = False
        self.fd = -1
        self.map: mmap.mmap | None = None
        self.dax = False
        self.align = PAGE_SIZE
        self.persistence_domain: str | None = None
        self.badblocks: list[tuple[int, int]] = []
        self._dirty: list[list[int]] = []
        self._fd_written = False
        self._flush_range = None
        self._sfence = None
        st = self._stat(path)
        self.kind = self._kind(st)
        if writable and not allow_mounted:
            users = probe.find_users(path, st)
            if users:
                raise DeviceBusyError(f"{users[0]}; refusing to write to it")
        self._open(st, exclusive if exclusive is not None else writable)
        try:
            self._setup(st)
        except BaseException:
            self.close()
            raise

    # -- opening ------------------------------------------------------------

    @staticmethod
    def _stat(path: str) -> os.stat_result:
        try:
            return os.stat(path)
        except FileNotFoundError:
            raise DeviceError(f"{path}: no such file or device") from None
        except NotADirectoryError:
            raise DeviceError(f"{path}: no such file or device (a parent is not a directory)") from None
        except PermissionError:
            raise DeviceError(f"{path}: permission denied") from None
        except OSError as exc:
            raise DeviceError(f"{path}: cannot access: {exc.strerror}") from None

    def _kind(self, st: os.stat_result) -> str:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            return "file"
        if stat.S_ISBLK(mode):
            return "block"
        if stat.S_ISDIR(mode):
            raise DeviceError(f"{self.path}: is a directory, not a device or image file")
        if stat.S_ISCHR(mode):
            if is_devdax(st):
                return "dax"
            raise DeviceError(f"{self.path}: is a character device that is not a devdax (/dev/daxX.Y) device")
        raise DeviceError(f"{self.path}: not a regular file or device")

    def _open(self, st: os.stat_result, exclusive: bool) -> None:
        flags = (os.O_RDWR if self.writable else os.O_RDONLY) | os.O_CLOEXEC
        if exclusive and self.kind == "block":
            flags |= os.O_EXCL
        try:
            self.fd = os.open(self.path, flags)
        except FileNotFoundError:
            raise DeviceError(f"{self.path}: no such file or device") from None
        except PermissionError:
            raise DeviceError(f"{self.path}: permission denied") from None
        except OSError as exc:
            if exc.errno == errno.EROFS:
                raise DeviceError(f"{self.path}: read-only media, cannot open for writing") from None
            if exc.errno == errno.EBUSY:
                users = probe.find_users(self.path, st)
                why = users[0] if users else f"{self.path} is in use (held open exclusively by another program)"
                raise DeviceBusyError(why) from None
            if exc.errno in (errno.ENXIO, errno.ENODEV):
                raise DeviceError(f"{self.path}: no such device (no medium or not attached)") from None
            raise DeviceError(f"{self.path}: cannot open: {exc.strerror}") from None

    def _setup(self, st: os.stat_result) -> None:
        if self.kind == "block" and self.writable and self._block_readonly():
            raise DeviceError(f"{self.path}: read-only block device, cannot open for writing")
        self.size = self._probe_size(st)
        if self.size <= 0:
            raise DeviceError(f"{self.path}: device is empty (0 bytes)")
        self._map()
        self._sysfs_facts(st)
        if self.dax and self.persistence_domain != "cpu_cache":
            self._flush_range = _fastscan_function("flush_range")
            self._sfence = _fastscan_function("sfence")
            if self._flush_range is None and self.kind == "dax" and self.writable:
                # msync cannot help here: device-DAX has no fsync, and silent loss is not an option
                raise DeviceError(
                    f"{self.path}: writing to devdax needs CPU cache flushes from the compiled core "
                    "(nvfs_tools._fastscan), which is not available (NVFS_PURE=1 or build failed)"
                )
        elif self.dax:
            self._sfence = _fastscan_function("sfence")

    def _block_readonly(self) -> bool:
        try:
            buf = fcntl.ioctl(self.fd, BLKROGET, b"\0" * 4)
        except OSError:
            return False
        return struct.unpack("i", buf)[0] != 0

    def _probe_size(self, st: os.stat_result) -> int:
        if self.kind == "file":
            return os.fstat(self.fd).st_size
        if self.kind == "block":
            try:
                return struct.unpack("Q", fcntl.ioctl(self.fd, BLKGETSIZE64, b"\0" * 8))[0]
            except OSError:
                return os.lseek(self.fd, 0, os.SEEK_END)
        size = _dax_attr(st, "size")
        if size is None or not size.isdigit():
            raise DeviceError(f"{self.path}: cannot read the devdax size from sysfs")
        align = _dax_attr(st, "align")
        self.align = int(align) if align and align.isdigit() and int(align) > 0 else 2 << 20
        return int(size) // self.align * self.align

    def _map(self) -> None:
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if self.writable else 0)
        attempts = []
        if self.writable and self.kind in ("file", "dax"):
            attempts.append((MAP_SHARED_VALIDATE | MAP_SYNC, True))
        attempts.append((mmap.MAP_SHARED, self.kind == "dax"))
        last: OSError | None = None
        for flags, direct in attempts:
            try:
                self.map = mmap.mmap(self.fd, self.size, flags=flags, prot=prot)
            except OverflowError:
                raise DeviceError(
                    f"{self.path}: size {self.size} bytes does not fit this machine's addresses"
                ) from None
            except OSError as exc:
                last = exc
                continue
            self.dax = direct
            break
        if self.map is None:
            assert last is not None
            if last.errno in (errno.ENOMEM, errno.EOVERFLOW, errno.EINVAL):
                raise DeviceError(f"{self.path}: cannot map {self.size} bytes: {last.strerror}") from None
            raise DeviceError(f"{self.path}: cannot map the device: {last.strerror}") from None
        self.view = memoryview(self.map)
        if not self.writable:
            self.view = self.view.toreadonly()

    def _sysfs_facts(self, st: os.stat_result) -> None:
        """Persistence domain and media bad blocks, where sysfs has them."""
        if self.kind == "block":
            base = _sys_dir(st)
            self.persistence_domain = persistence_domain_of(base)
            text = _read_sys(os.path.join(base, "badblocks"))
            if text is None and os.path.exists(os.path.join(base, "partition")):
                start = _read_sys(os.path.join(base, "start")) or "0"
                text = _read_sys(os.path.join(base, "..", "badblocks"))
                shift = int(start) * 512 if start.isdigit() else 0
                self.badblocks = parse_badblocks(text or "", shift=shift, size=self.size)
            else:
                self.badblocks = parse_badblocks(text or "", size=self.size)
        elif self.kind == "dax":
            base = _sys_dir(st)
            self.persistence_domain = persistence_domain_of(base)
            region_bb = find_upwards(base, "badblocks")
            region_res = find_upwards(base, "resource")
            own_res = _dax_attr(st, "resource")
            if region_bb:
                shift = 0
                if own_res and region_res:
                    try:
                        region_dir = os.path.dirname(region_bb)
                        region_start = int(_read_sys(os.path.join(region_dir, "resource")) or "0", 0)
                        shift = int(own_res, 0) - region_start
                    except ValueError:
                        shift = 0
                self.badblocks = parse_badblocks(_read_sys(region_bb) or "", shift=shift, size=self.size)
        elif self.dax:
            self.persistence_domain = persistence_domain_of(
                _sysfs("dev", "block", f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
            )

    # -- access -------------------------------------------------------------

    def check_media(self, offset: int, length: int) -> None:
        """Raise :class:`MediaError` when ``[offset, offset+length)`` touches a listed bad range.

        Touching poisoned pmem through a mapping kills the process with SIGBUS;
        a clear error naming the range is what users need instead.
        """
        for start, count in self.badblocks:
            if start < offset + length and offset < start + count:
                raise MediaError(
                    f"{self.path}: bytes {offset}..{offset + length - 1} touch bad media "
                    f"(bad range {start}..{start + count - 1} listed by the kernel)"
                )

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at byte ``offset``."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise DeviceError(f"{self.path}: read of {length} bytes at {offset} is outside the device")
        if self.badblocks:
            self.check_media(offset, length)
        return bytes(self.view[offset : offset + length])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at byte ``offset`` (durable after the next barrier)."""
        if not self.writable:
            raise DeviceError(f"{self.path}: opened read-only")
        length = len(data) if not isinstance(data, memoryview) else data.nbytes
        end = offset + length
        if offset < 0 or end > self.size:
            raise DeviceError(f"{self.path}: write of {length} bytes at {offset} is outside the device")
        if self.badblocks:
            self.check_media(offset, length)
        self.view[offset:end] = data
        if not self.unordered or self.dax:  # DAX flushes only recorded ranges, even at the end
            self._note_dirty(offset, end)

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Like :meth:`write`, through ``pwrite(2)`` where the device allows it.

        For bulk writes to a huge device (mkfs of a 1 TiB image) this avoids a
        page fault per touched page of the mapping; the page cache is shared,
        so the mapping sees the data at once.  devdax has no ``write(2)``: the
        mapping is used there.
        """
        if self.dax:
            self.write(offset, data)
            return
        length = len(data) if not isinstance(data, memoryview) else data.nbytes
        if not self.writable:
            raise DeviceError(f"{self.path}: opened read-only")
        if offset < 0 or offset + length > self.size:
            raise DeviceError(f"{self.path}: write of {length} bytes at {offset} is outside the device")
        done = os.pwrite(self.fd, data, offset)
        if done != length:  # short writes happen only on signals or full media
            view = memoryview(data)[done:]
            while view.nbytes:
                done = os.pwrite(self.fd, view, offset + length - view.nbytes)
                view = view[done:]
        self._fd_written = True
        if not self.unordered or self.dax:  # DAX flushes only recorded ranges, even at the end
            self._note_dirty(offset, offset + length)

    def _note_dirty(self, start: int, end: int) -> None:
        grain = CACHE_LINE if self.dax else PAGE_SIZE
        start -= start % grain
        dirty = self._dirty
        if dirty:
            last = dirty[-1]
            if start <= last[1] and end >= last[0]:
                if start < last[0]:
                    last[0] = start
                if end > last[1]:
                    last[1] = end
                return
        dirty.append([start, end])
        if len(dirty) > _MAX_DIRTY_RANGES:
            self._dirty = self._coalesce(dirty, _MAX_DIRTY_RANGES // 2)

    @staticmethod
    def _coalesce(ranges: Iterable[list[int]], limit: int) -> list[list[int]]:
        """Sorted, merged ranges; the closest neighbours are joined until at most ``limit`` remain."""
        merged: list[list[int]] = []
        for start, end in sorted(ranges):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        while len(merged) > limit:
            gaps = sorted(range(len(merged) - 1), key=lambda i: merged[i + 1][0] - merged[i][1])
            i = gaps[0]
            merged[i][1] = merged[i + 1][1]
            del merged[i + 1]
        return merged

    def barrier(self) -> None:
        """Make every earlier store durable before any later one.

        Page-cache mappings: ``msync`` of the dirty ranges only.  Direct (DAX)
        mappings: cache-line write-back of the dirty ranges plus a fence, or
        just the fence when the platform flushes CPU caches on power loss.
        In ``unordered`` mode this does nothing (see the class docstring).
        """
        if self.unordered or not self._dirty:
            return
        ranges = self._coalesce(self._dirty, _MAX_DIRTY_RANGES)
        self._dirty = []
        self._flush(ranges)

    def _flush(self, ranges: list[list[int]]) -> None:
        if self.dax:
            if self.persistence_domain == "cpu_cache":
                if self._sfence is not None:
                    self._sfence()
                return
            if self._flush_range is not None:
                for start, end in ranges:
                    self._flush_range(self.view, start, min(end, self.size) - start)
                if self._sfence is not None:
                    self._sfence()
                return
        assert self.map is not None
        for start, end in ranges:
            start -= start % PAGE_SIZE
            self.map.flush(start, min(end, self.size) - start)

    def flush_all(self) -> None:
        """Make everything written so far durable.

        Page cache: ``msync`` of the whole map (the kernel visits only dirty
        pages) and ``fdatasync`` for ``pwrite``.  DAX: the recorded dirty
        ranges (kept even in unordered mode, since write-back instructions
        cost time per cache line of the range, dirty or not).
        """
        if self.map is None or not self.writable:
            return
        if self.dax:
            ranges = self._coalesce(self._dirty, _MAX_DIRTY_RANGES)
            self._dirty = []
            self._flush(ranges)
        else:
            self._dirty = []
            self.map.flush()
        if self._fd_written and self.kind != "dax":
            os.fdatasync(self.fd)
            self._fd_written = False

    # -- bulk helpers for mkfs ------------------------------------------------

    def zero_range(self, offset: int, length: int) -> None:
        """Make ``[offset, offset+length)`` read as zeros, as cheaply as the device allows.

        Image files: punch a hole (no data written, the file stays sparse).
        Block devices: ``BLKZEROOUT`` (the device zeroes, e.g. loop punches).
        devdax: non-temporal stores from the fast-scan core, else ``memset``.
        Falls back to writing zeros when the cheap way is not supported.
        """
        if length <= 0:
            return
        if offset < 0 or offset + length > self.size:
            raise DeviceError(f"{self.path}: zeroing {length} bytes at {offset} is outside the device")
        if self.kind == "file" and not self.dax:
            try:
                _libc_fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
                self._fd_written = True
                return
            except (OSError, AttributeError):
                pass
        elif self.kind == "block":
            try:
                fcntl.ioctl(self.fd, BLKZEROOUT, struct.pack("QQ", offset, length))
                return
            except OSError:
                pass
        elif self.dax:
            nt_zero = _fastscan_function("nt_zero")
            if nt_zero is not None:  # non-temporal stores + SFENCE: nothing left in the caches to flush
                nt_zero(self.view, offset, length)
                return
        self._write_zeros(offset, length)

    def preallocate(self, offset: int, length: int) -> bool:
        """Have an image file's host filesystem allocate ``[offset, offset+length)`` now (``fallocate``,
        size kept, contents unchanged); False when it cannot (not an image file, or not supported).

        mkfs -d does it on a thread for the data area it is about to fill, while the walk of the
        source tree keeps the other CPU busy: in tmpfs, allocating (and clearing) the pages is about
        half the cost of writing to a hole, and it then leaves the copy's critical path.
        """
        if self.kind != "file" or self.dax or length <= 0 or offset < 0 or offset + length > self.size:
            return False
        try:
            _libc_fallocate(self.fd, FALLOC_FL_KEEP_SIZE, offset, length)
        except (OSError, AttributeError):
            return False
        self._fd_written = True
        return True

    def _write_zeros(self, offset: int, length: int) -> None:
        zeros = bytes(min(length, _ZERO_CHUNK))
        end = offset + length
        while offset < end:
            n = min(len(zeros), end - offset)
            self.pwrite(offset, zeros[:n] if n < len(zeros) else zeros)
            offset += n

    def discard(self) -> bool:
        """Tell the device every block is unused (BLKDISCARD / hole punch); True when done.

        Only an optimisation for mkfs: afterwards the contents are unspecified,
        so callers still zero what must read as zero.
        """
        try:
            if self.kind == "block":
                fcntl.ioctl(self.fd, BLKDISCARD, struct.pack("QQ", 0, self.size))
                return True
            if self.kind == "file" and not self.dax:
                _libc_fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, self.size)
                return True
        except (OSError, AttributeError):
            return False
        return False

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        """Flush (everything in unordered mode, the dirty ranges otherwise) and release the device."""
        if self.hold_open:
            self.flush_all() if self.unordered else self.barrier()
            return
        if self.map is not None:
            try:
                if self.writable:
                    if self.unordered:
                        self.flush_all()
                    else:
                        self.barrier()
                        if self._fd_written:
                            os.fdatasync(self.fd)
            finally:
                self.view.release()
                self.map.close()
                self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "rw" if self.writable else "ro"
        return f"<Device {self.path} {self.kind} {getattr(self, 'size', '?')} bytes {mode}{' dax' if self.dax else ''}>"


def create_image(path: str, size: int) -> None:
    """Create a new sparse image file of ``size`` bytes (refuses to replace an existing file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise DeviceError(f"{path}: already exists") from None
    except FileNotFoundError:
        raise DeviceError(f"{path}: cannot create: parent directory does not exist") from None
    except PermissionError:
        raise DeviceError(f"{path}: cannot create: permission denied") from None
    except OSError as exc:
        raise DeviceError(f"{path}: cannot create: {exc.strerror}") from None
    try:
        os.ftruncate(fd, size)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise DeviceError(f"{path}: cannot make an image of {size} bytes: {exc.strerror}") from None
    os.close(fd)
