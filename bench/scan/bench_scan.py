#!/usr/bin/env python3
"""Micro-benchmarks of the fast-scan core: compiled vs pure, 1 vs N threads.

Builds (once, cached in /dev/shm) an image holding 1,000,000 regular files of
one block each in 1,000 directories of 1,000 entries, then times
``scan_inodes``, ``walk_blockmaps``, ``walk_directories``, ``link_counts``,
``popcount`` and ``find_free`` over the mapping.  File inodes are written
straight into the inode tables (bitmaps and counters kept right) and the
directories with ``Directory.build``, so the build takes about a minute
rather than the hours a million ``Volume.create`` calls would.

    python bench/scan/bench_scan.py [--files N] [--pure] [--rebuild] [--image PATH]
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time

from nvfs_tools import format as F
from nvfs_tools import layout, scan_pure
from nvfs_tools.device import Device
from nvfs_tools.directory import Directory
from nvfs_tools.volume import Volume

INODE = F.field_layout(F.Inode)
SEED = bytes(range(16))


def build(path: str, files: int, per_dir: int) -> None:
    """An image with ``files`` one-block files spread over ``files // per_dir`` directories."""
    dirs = max(1, files // per_dir)
    inodes = files + dirs + 64
    size = max(4 << 30, inodes * 16384 + (2 << 30))
    if os.path.exists(path):
        os.unlink(path)
    with open(path, "wb") as handle:
        handle.truncate(size)
    geo = F.compute_geometry(size, inode_count=inodes)
    with Device(path, writable=True) as dev:
        layout.make_filesystem(dev, geo, uuid=os.urandom(16), hash_seed=SEED, mkfs_time=(0, 0), fresh=True)
    t0 = time.perf_counter()
    with Volume.open(path, writable=True) as vol:
        vol.mkdir(F.ROOT_INO, F.LOST_FOUND_NAME, 0o700)
        dir_inos = [vol.mkdir(F.ROOT_INO, f"d{i:04d}", 0o755) for i in range(dirs)]
        blocks = vol.allocate_blocks(files)
        file_inos = _raw_inodes(vol, files, blocks)
        for i, d in enumerate(dir_inos):
            chunk = file_inos[i * per_dir : (i + 1) * per_dir]
            Directory.build(vol, d, [(f"file-{k:07d}".encode(), ino, F.DT_REG) for k, ino in enumerate(chunk)])
    print(f"built {path}: {files} files in {dirs} directories in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


def _raw_inodes(vol: Volume, count: int, blocks: list[int]) -> list[int]:
    """Write ``count`` regular-file inodes directly into the free slots of the inode tables."""
    geo = vol.geo
    view = vol.dev.view
    mode_off = INODE["mode"].offset
    fields = struct.Struct("<H")
    links, size, nblocks, ptr = (INODE[n].offset for n in ("links_count", "size", "blocks", "block"))
    free = []
    ino = F.FIRST_INO
    while len(free) < count and ino <= geo.inodes_count:
        if fields.unpack_from(view, geo.inode_offset(ino) + mode_off)[0] == 0:
            free.append(ino)
        ino += 1
    if len(free) < count:
        raise SystemExit("not enough inodes")
    per_group: dict[int, int] = {}
    for ino, block in zip(free, blocks, strict=True):
        base = geo.inode_offset(ino)
        struct.pack_into("<H", view, base + mode_off, F.S_IFREG | 0o644)
        struct.pack_into("<I", view, base + links, 1)
        struct.pack_into("<Q", view, base + size, 100)
        struct.pack_into("<Q", view, base + nblocks, 1)
        struct.pack_into("<Q", view, base + ptr, block)
        group, index = divmod(ino - 1, geo.inodes_per_group)
        bit = geo.inode_bitmap_block(group) * geo.block_size + index // 8
        view[bit] |= 1 << (index % 8)
        per_group[group] = per_group.get(group, 0) + 1
    counters = F.field_layout(F.GroupCounters)["free_inodes"].offset
    for group, used in per_group.items():
        addr = geo.counters_block(group) * geo.block_size + counters
        struct.pack_into("<Q", view, addr, struct.unpack_from("<Q", view, addr)[0] - used)
    dyn = F.SB_DYNAMIC_OFFSET + F.field_layout(F.SuperblockDynamic)["free_inodes"].offset
    struct.pack_into("<Q", view, dyn, struct.unpack_from("<Q", view, dyn)[0] - count)
    vol.dev.barrier()
    return free


def timed(label: str, fn, per: int | None = None, unit: str = "inodes", repeat: int = 3):
    """Best wall time of ``repeat`` runs, and the process CPU time of that run (robust to a busy machine)."""
    best = (float("inf"), 0.0)
    result = None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best = min(best, (wall, cpu))
    wall, cpu = best
    rate = f"{per / wall:>14,.0f} {unit}/s" if per else ""
    print(f"{label:<44} {wall * 1000:>9.1f} ms wall {cpu * 1000:>9.1f} ms cpu {rate}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--per-dir", type=int, default=1000)
    parser.add_argument("--image", default=None)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--pure", action="store_true", help="also time the pure-Python reference (slow)")
    args = parser.parse_args()
    path = args.image or f"/dev/shm/nvfs-bench-scan-{args.files}.img"
    if args.rebuild or not os.path.exists(path):
        build(path, args.files, args.per_dir)
    try:
        from nvfs_tools import _fastscan as C
    except ImportError:
        raise SystemExit("nvfs_tools._fastscan is not built") from None
    with Volume.open(path) as vol:
        buf, geo = vol.dev.view, vol.geo
        print(f"image {path}: {geo.inodes_count:,} inode slots, {geo.group_count} groups, cpu {C.cpu_features()}")
        ncpu = os.cpu_count() or 1
        for threads in sorted({1, ncpu}):
            r = timed(
                f"scan_inodes (compiled, {threads} thr)",
                lambda t=threads: C.scan_inodes(buf, geo, threads=t),
                args.files,
            )
        n_inuse = len(r["ino"])
        timed("scan_inodes use_bitmap (compiled)", lambda: C.scan_inodes(buf, geo, use_bitmap=True), n_inuse)
        for threads in sorted({1, ncpu}):
            w = timed(
                f"walk_blockmaps (compiled, {threads} thr)",
                lambda t=threads: C.walk_blockmaps(buf, geo, r["ino"], threads=t),
                n_inuse,
            )
        for threads in sorted({1, ncpu}):
            d = timed(
                f"walk_directories (compiled, {threads} thr)",
                lambda t=threads: C.walk_directories(
                    buf, geo, vol.hash_seed, r["dir_ino"], bytearray(bytes(w["owned"])), threads=t
                ),
                len(r["dir_ino"]) and args.files,
                "entries",
            )
        timed(
            "link_counts (compiled)",
            lambda: C.link_counts(d["entry_ino"], geo.inodes_count),
            len(d["entry_ino"]),
            "entries",
        )
        assert not len(r["prob_code"]) and not len(w["prob_code"]) and not len(d["prob_code"])
        bitmap_bytes = geo.group_count * geo.block_size
        owned = bytes(w["owned"])
        for kernel in C.popcount_kernels():
            timed(
                f"popcount {kernel} ({bitmap_bytes >> 10} KiB x100)",
                lambda k=kernel: [C.popcount(owned, 0, bitmap_bytes, kernel=k) for _ in range(100)],
                bitmap_bytes * 100 >> 20,
                "MiB",
            )
        timed("find_free 2 MiB-aligned run of 512 blocks", lambda: C.find_free(owned, 0, len(owned) * 8, 0, 512, 512))
        if args.pure:
            pr = timed("scan_inodes (pure)", lambda: scan_pure.scan_inodes(buf, geo), args.files, repeat=1)
            assert pr["ino"] == r["ino"]
            timed("walk_blockmaps (pure)", lambda: scan_pure.walk_blockmaps(buf, geo, r["ino"]), n_inuse, repeat=1)
            timed(
                "walk_directories (pure)",
                lambda: scan_pure.walk_directories(buf, geo, vol.hash_seed, r["dir_ino"]),
                args.files,
                "entries",
                repeat=1,
            )


if __name__ == "__main__":
    main()
