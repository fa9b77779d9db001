"""The NVFS checker behind fsck.nvfs (library half; the command line is nvfs_tools/fsck.py).

Public entry points::

    from nvfs_tools.check import Options, check
    report = check("/dev/shm/img", Options(mode="n", force=True))
    report.exit_code(); report.findings; report.to_json()

Passes: pass0_super (superblock, microjournal, orphan list), pass1_inodes
(inodes, block maps, shared blocks), pass2_dirs (directory trees and
entries), pass3_connect (root, lost+found, reachability), pass4_links (link
counts, unattached inodes), pass5_bitmaps (bitmaps, counters, totals).  Every
problem is a row of :mod:`nvfs_tools.check.problems`.
"""

from __future__ import annotations

from nvfs_tools.check.checker import Options
from nvfs_tools.check.runner import check

__all__ = ["Options", "check"]
