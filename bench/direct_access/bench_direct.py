#!/usr/bin/env python3
"""How should fsck read an fsdax / loop block device: mmap, or O_DIRECT reads?

Creates a file in /dev/shm (default 4 GiB, filled with non-zero data), attaches
it to a loop device with losetup, and reads the whole device with each method,
cold (the block device's page cache emptied with BLKFLSBUF + POSIX_FADV_DONTNEED
before every run) and warm, counting the set bits with the compiled popcount so
every byte is really consumed and every method is checked to see the same data:

* ``mmap``: MAP_SHARED read-only mapping of the block device, scanned in place;
* ``mmap+SEQUENTIAL``, ``mmap+HUGEPAGE``, ``mmap+WILLNEED``, ``mmap+POPULATE``:
  the same with madvise hints (POPULATE = MADV_POPULATE_READ, Linux 5.14);
* ``odirect CHUNK``: O_DIRECT ``preadv`` of CHUNK-sized aligned pieces into one
  page-aligned anonymous buffer (mmap.mmap(-1, n)), scanned after each read;
* ``buffered CHUNK``: plain ``preadv`` (through the page cache), for reference;
* ``backing-file mmap``: the /dev/shm file itself mapped (no block layer): the
  memory-bandwidth ceiling, what a devdax mapping would give.

Needs root (losetup).  Run:  python bench/direct_access/bench_direct.py [--size-gib 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import fcntl
import mmap
import os
import statistics
import subprocess
import sys
import time

BLKFLSBUF = 0x1261
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)


def make_backing(path: str, size: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    pattern = bytes((i * 37 + 11) & 0xFF for i in range(1 << 20))
    with open(path, "wb") as handle:
        for _ in range(size >> 20):
            handle.write(pattern)


def drop_cache(dev: str) -> None:
    fd = os.open(dev, os.O_RDONLY)
    try:
        if dev.startswith("/dev/loop"):
            fcntl.ioctl(fd, BLKFLSBUF, 0)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def via_mmap(dev: str, size: int, advice: int | None, popcount) -> int:
    fd = os.open(dev, os.O_RDONLY)
    try:
        m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        if advice is not None:
            try:
                m.madvise(advice)
            except OSError as exc:
                print(f"  madvise({advice}) failed: {exc}", file=sys.stderr)
        return popcount(m, 0, size)
    finally:
        m.close()


def via_read(dev: str, size: int, chunk: int, direct: bool, popcount) -> int:
    fd = os.open(dev, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    buf = mmap.mmap(-1, chunk)  # page-aligned, as O_DIRECT requires
    total = 0
    try:
        offset = 0
        while offset < size:
            got = os.preadv(fd, [buf], offset)
            if got <= 0:
                raise OSError(f"short read at {offset}")
            total += popcount(buf, 0, got)
            offset += got
        return total
    finally:
        buf.close()
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backing", default="/dev/shm/nvfs-direct-access.img")
    parser.add_argument("--keep", action="store_true", help="keep the backing file")
    parser.add_argument("--only", nargs="*", help="run only these methods")
    args = parser.parse_args()
    from nvfs_tools import _fastscan as C

    size = int(args.size_gib * (1 << 30)) & ~((1 << 20) - 1)
    make_backing(args.backing, size)
    dev = subprocess.run(["losetup", "-f", "--show", args.backing], capture_output=True, text=True, check=True)
    dev = dev.stdout.strip()
    print(f"{size >> 20} MiB on {dev} (backing {args.backing}), runs={args.runs}, kernel {os.uname().release}")
    methods = {
        # Reference, not a block device: the backing memory mapped directly (what devdax gives).
        "backing-file mmap": lambda: via_mmap(args.backing, size, None, C.popcount),
        "mmap": lambda: via_mmap(dev, size, None, C.popcount),
        "mmap+SEQUENTIAL": lambda: via_mmap(dev, size, mmap.MADV_SEQUENTIAL, C.popcount),
        "mmap+HUGEPAGE": lambda: via_mmap(dev, size, mmap.MADV_HUGEPAGE, C.popcount),
        "mmap+WILLNEED": lambda: via_mmap(dev, size, mmap.MADV_WILLNEED, C.popcount),
        "mmap+POPULATE_READ": lambda: via_mmap(dev, size, MADV_POPULATE_READ, C.popcount),
    }
    for chunk_kib in (256, 1024, 4096, 16384, 65536):
        methods[f"odirect {chunk_kib} KiB"] = lambda c=chunk_kib << 10: via_read(dev, size, c, True, C.popcount)
    methods["buffered 4 MiB"] = lambda: via_read(dev, size, 4 << 20, False, C.popcount)
    if args.only:
        methods = {k: v for k, v in methods.items() if k in args.only}
    try:
        expected = None
        print(f"{'method':<22} {'cold median':>12} {'cold GiB/s':>10} {'warm median':>12} {'warm GiB/s':>10}")
        for name, fn in methods.items():
            cold, warm = [], []
            for _ in range(args.runs):
                drop_cache(dev)
                t0 = time.perf_counter()
                bits = fn()
                cold.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                fn()
                warm.append(time.perf_counter() - t0)
                if expected is None:
                    expected = bits
                assert bits == expected, f"{name} read different data"
            c, w = statistics.median(cold), statistics.median(warm)
            gib = size / (1 << 30)
            print(f"{name:<22} {c:>11.3f}s {gib / c:>10.2f} {w:>11.3f}s {gib / w:>10.2f}", flush=True)
    finally:
        drop_cache(dev)
        subprocess.run(["losetup", "-d", dev], check=False)
        if not args.keep:
            os.unlink(args.backing)


if __name__ == "__main__":
    main()
