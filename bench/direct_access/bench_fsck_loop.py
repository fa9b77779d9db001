#!/usr/bin/env python3
"""fsck's fast path on a loop device: inode tables through the mapping or by O_DIRECT, and readahead.

Attaches an NVFS image read-only to a loop device (default: bench/fsck's cached 1,000,000-file
image) and runs ``fastpath.verify`` (passes 1-5 of ``fsck.nvfs -fn``) with each way of reading,
alternating, cold (the loop device's page cache emptied with BLKFLSBUF + POSIX_FADV_DONTNEED
before every run) or warm:

* ``TABLE_READ``: ``map`` (inode tables through the device mapping, pages dropped per window)
  or ``direct`` (O_DIRECT reads of each window's tables into one reused buffer);
* ``DIR_ADVICE``: ``normal`` (faults read ahead around every directory page) or ``random``
  (MADV_RANDOM while directories are walked).

With ``--ext4 IMAGE`` it also times ``e2fsck -fn`` and ``fsck.nvfs -fn`` (the whole tools, with
their defaults) on loop devices of the two images, for scale.  Needs root (losetup).

    python bench/direct_access/bench_fsck_loop.py [--image IMG] [--ext4 IMG] [--runs 3] [--warm]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "direct_access"))
from bench_direct import drop_cache  # noqa: E402

DEFAULT_IMAGE = "/dev/shm/nvfs-bench-fsck/nvfs-1000000.img"
MODES = [("map", "normal"), ("map", "random"), ("direct", "normal"), ("direct", "random")]


def attach(image: str) -> str:
    return subprocess.run(
        ["losetup", "-r", "-f", "--show", image], check=True, capture_output=True, text=True
    ).stdout.strip()


def verify_once(loop: str, table_read: str, dir_advice: str) -> tuple[float, float, float]:
    """(wall, pass 1 seconds, pass 2 seconds) of one fast-path verification."""
    from nvfs_tools.check import fastpath
    from nvfs_tools.check.image import Image
    from nvfs_tools.check.pass0_super import load_superblock
    from nvfs_tools.device import Device

    fastpath.TABLE_READ, fastpath.DIR_ADVICE = table_read, dir_advice
    with Device(loop) as dev:
        static, raw, _reason, _off = load_superblock(dev, False)
        img = Image(dev, static, raw)
        t0 = time.perf_counter()
        result = fastpath.verify(img, quota=False)
        wall = time.perf_counter() - t0
        del img
        gc.collect()
    if result is None:
        sys.exit(f"bench: {loop} not proven consistent with {table_read}/{dir_advice}")
    return wall, result.stats[1]["seconds"], result.stats[2]["seconds"]


def tool_once(cmd: list[str], loop: str, cold: bool) -> float:
    if cold:
        drop_cache(loop)
    t0 = time.perf_counter()
    subprocess.run([*cmd, loop], capture_output=True, check=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default=DEFAULT_IMAGE)
    ap.add_argument("--ext4", help="an ext4 image with the same tree, to time e2fsck -fn beside fsck.nvfs -fn")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warm", action="store_true", help="keep the page cache between runs")
    args = ap.parse_args()
    print(f"load {os.getloadavg()[0]:.2f}, {'warm' if args.warm else 'cold'}, median of {args.runs}", flush=True)
    loops = [attach(args.image)]
    try:
        times: dict[tuple[str, str], list[tuple[float, float, float]]] = {mode: [] for mode in MODES}
        for _ in range(args.runs):
            for mode in MODES:
                if not args.warm:
                    drop_cache(loops[0])
                times[mode].append(verify_once(loops[0], *mode))
        for mode, runs in times.items():
            wall, p1, p2 = (statistics.median(r[i] for r in runs) for i in range(3))
            print(f"  tables {mode[0]:6s} directories {mode[1]:6s}: {wall:6.3f} s (pass 1 {p1:.3f}, pass 2 {p2:.3f})")
        if args.ext4:
            loops.append(attach(args.ext4))
            tools: dict[str, list[float]] = {"fsck.nvfs -fn": [], "e2fsck -fn": []}
            for _ in range(args.runs):
                tools["fsck.nvfs -fn"].append(tool_once(["fsck.nvfs", "-fn"], loops[0], not args.warm))
                tools["e2fsck -fn"].append(tool_once(["e2fsck", "-fn"], loops[1], not args.warm))
            for name, walls in tools.items():
                print(f"  {name:14s} (whole tool): {statistics.median(walls):6.3f} s")
    finally:
        for loop in loops:
            subprocess.run(["losetup", "-d", loop], check=False)


if __name__ == "__main__":
    main()
