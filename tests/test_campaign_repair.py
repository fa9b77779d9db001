"""Interrupted repair and random damage, fast subsets of campaigns/interrupted_repair and random_damage.

fsck's own repairs are recorded store by store; every sampled crash state of
a repair (and a real SIGKILLed fsck process) must be repaired by the next run;
randomly damaged metadata must converge in at most two ``fsck -fy`` runs, and
a zeroed block 0 must come back from the backup superblock with every file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaigns import interrupted_repair as IR  # noqa: E402
from campaigns import random_damage as RD  # noqa: E402


def _ir_args(**kw) -> argparse.Namespace:
    args = IR.parser().parse_args([])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_interrupted_repairs_recover():
    summary = IR.campaign(_ir_args(seeds=2, first=3, max_cuts=30, kill=1, randoms=1))
    assert summary.extra.get("writes", 0) > 0, "the recorded repairs wrote nothing: damage not found?"
    assert summary.cases >= 20
    assert not summary.failures, summary.table()


def test_random_damage_converges():
    args = RD.parser().parse_args(["--rounds", "16", "--first", "100"])
    summary = RD.campaign(args)
    assert summary.cases == 16 and summary.detections >= 8
    assert not summary.failures, summary.table()


def test_zeroed_block0_comes_back_from_backup():
    args = RD.parser().parse_args(["--rounds", "1", "--mode", "block0"])
    summary = RD.campaign(args)
    assert summary.repairs == 1 and not summary.failures, summary.table()


def test_zeroed_inode_table_converges():
    args = RD.parser().parse_args(["--rounds", "2", "--mode", "itable"])
    summary = RD.campaign(args)
    assert not summary.failures, summary.table()
