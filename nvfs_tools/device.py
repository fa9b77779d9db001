"""One way to reach an NVFS device: image file, block device or devdax.

Everything the tools store goes through :meth:`Device.write`, and every point
where earlier stores must be durable before later ones goes through
:meth:`Device.barrier`.  That single choke point is what makes the store
ordering of ``spec/`` enforceable and what the crash-consistency tests record.
"""

from __future__ import annotations

import mmap
import os
import stat

from nvfs_tools.errors import DeviceError


class Device:
    """A whole device (or image file) mapped into memory.

    ``view`` is a memoryview of the complete mapping (read-only when opened
    read-only), for zero-copy scans.
    """

    def __init__(self, path: str, *, writable: bool = False) -> None:
        self.path = path
        self.writable = writable
        flags = os.O_RDWR if writable else os.O_RDONLY
        try:
            self.fd = os.open(path, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            raise DeviceError(f"{path}: no such file or device") from None
        except PermissionError:
            raise DeviceError(f"{path}: permission denied") from None
        except OSError as exc:
            raise DeviceError(f"{path}: cannot open: {exc.strerror}") from None
        try:
            self.size = self._probe_size()
            if self.size == 0:
                raise DeviceError(f"{path}: device is empty (0 bytes)")
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            self.map = mmap.mmap(self.fd, self.size, mmap.MAP_SHARED, prot)
        except BaseException:
            os.close(self.fd)
            raise
        self.view = memoryview(self.map)
        if not writable:
            self.view = self.view.toreadonly()
        self._dirty = False

    def _probe_size(self) -> int:
        st = os.fstat(self.fd)
        if stat.S_ISREG(st.st_mode):
            return st.st_size
        if stat.S_ISBLK(st.st_mode):
            return os.lseek(self.fd, 0, os.SEEK_END)
        raise DeviceError(f"{self.path}: not a regular file or block device")

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at byte ``offset``."""
        if offset < 0 or offset + length > self.size:
            raise DeviceError(f"{self.path}: read of {length} bytes at {offset} is outside the device")
        return bytes(self.view[offset : offset + length])

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at byte ``offset`` (durable after the next barrier)."""
        if not self.writable:
            raise DeviceError(f"{self.path}: opened read-only")
        end = offset + len(data)
        if offset < 0 or end > self.size:
            raise DeviceError(f"{self.path}: write of {len(data)} bytes at {offset} is outside the device")
        self.view[offset:end] = data
        self._dirty = True

    def barrier(self) -> None:
        """Make every earlier store durable before any later one."""
        if self._dirty:
            self.map.flush()
            self._dirty = False

    def close(self) -> None:
        if getattr(self, "map", None) is not None:
            self.barrier() if self.writable else None
            self.view.release()
            self.map.close()
            self.map = None
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
