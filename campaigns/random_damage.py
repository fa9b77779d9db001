"""Random-damage campaign (e2fuzz style): bytes flipped and blocks zeroed in metadata; fsck must converge.

Each round takes the pristine populated image and damages its metadata
blocks (superblock, bitmaps, counters, inode table, journal, directory pages
and radix nodes, indirect blocks, xattr blocks) in one of these ways, chosen
from the seed:

* ``flip``: a fraction of a percent up to a few percent of the bytes of a
  few random metadata blocks get random values;
* ``zero``: one or more whole metadata blocks zeroed;
* ``itable``: the whole inode table zeroed;
* ``block0``: block 0 zeroed (only the backup superblock can bring the
  filesystem back: ``fsck -y`` must find it by itself).

Then ``fsck -fy`` is run until it reports nothing to fix: it must never raise
or exit >= 8, the second run must already be the last one needed (exit 0),
and ``fsck -fn`` must then be clean.  After ``block0`` the root and every
file must come back identical (nothing else was damaged).

    python -m campaigns.random_damage [--rounds N] [--first S] [--mode MODE]
    python -m campaigns.random_damage --round S -v
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys

from campaigns import common as C
from nvfs_tools import format as fmt
from nvfs_tools.device import Device
from nvfs_tools.volume import Volume

MODES = ("flip", "zero", "itable", "block0")


def metadata_blocks(image: str) -> list[int]:
    """Every block holding metadata on the pristine image (fixed areas and owned tree blocks)."""
    with Volume.open(image) as vol:
        geo = vol.geo
        blocks = {0, geo.backup_block}
        for g in range(geo.group_count):
            blocks.update(range(geo.group_start(g) + (g == 0), geo.inode_table_block(g) + geo.inode_table_blocks))
        blocks.update(range(geo.journal_block, geo.journal_block + geo.journal_blocks))
        for ino in range(1, geo.inodes_count + 1):
            mode = vol.inode_mode(ino)
            if not mode:
                continue
            i = vol.read_inode(ino)
            if i.xattr_block:
                blocks.add(i.xattr_block)
            if mode & fmt.S_IFMT == fmt.S_IFDIR:
                blocks.update(vol.owned_blocks(ino))
            elif mode & fmt.S_IFMT == fmt.S_IFREG:
                for k in range(fmt.N_DIRECT, fmt.N_BLOCK_POINTERS):
                    if i.block[k]:
                        blocks.add(i.block[k])
    blocks.discard(0)
    return sorted(blocks) + [0]


def inflict(image: str, meta: list[int], rng: random.Random, mode: str) -> str:
    """Damage ``image``; returns a description for the report."""
    with Device(image, writable=True) as dev:
        geo = fmt.geometry_from_static(fmt.SuperblockStatic.parse(dev.read(0, fmt.SB_STATIC_SIZE)))
        bs = geo.block_size
        if mode == "block0":
            dev.write(0, bytes(bs))
            return "block 0 zeroed"
        if mode == "itable":
            dev.write(geo.inode_table_block(0) * bs, bytes(geo.inode_table_blocks * bs))
            return "inode table zeroed"
        candidates = [b for b in meta if b != 0]
        if mode == "zero":
            picked = rng.sample(candidates, rng.randint(1, 3))
            for b in picked:
                dev.write(b * bs, bytes(bs))
            return f"zeroed blocks {picked}"
        picked = rng.sample(candidates, rng.randint(1, 4))
        fraction = rng.choice((0.001, 0.005, 0.02, 0.05))
        for b in picked:
            for _ in range(max(1, int(bs * fraction))):
                off = b * bs + rng.randrange(bs)
                dev.write(off, bytes([rng.randrange(256)]))
        dev.barrier()
        return f"{fraction:.1%} of bytes of blocks {picked} randomised"


def run_round(pristine: str, tree: C.Tree, meta: list[int], seed: int, mode: str | None, work: str) -> tuple:
    rng = random.Random(seed)
    mode = mode or rng.choice(MODES)
    image = os.path.join(work, "round.img")
    C.copy_image(pristine, image)
    what = inflict(image, meta, rng, mode)
    runs = []
    for _ in range(3):
        r = C.fsck(image, "y", force=True)  # damage on a clean-marked image: only -f looks (as e2fuzz)
        runs.append(r.code)
        if r.crashed or r.code >= 8:
            return what, runs, f"fsck -y exit {r.code}: {C.first_lines(r.output)}"
        if r.code == 0:
            break
    if runs[-1] != 0 or len(runs) > 2:
        return what, runs, f"fsck -y did not converge in two runs (exit codes {runs})"
    final = C.fsck(image, "n", force=True)
    if final.code != 0 or final.findings:
        return what, runs, f"fsck -fn after convergence exit {final.code}: {C.first_lines(final.output)}"
    if mode == "block0":
        got = C.snapshot(image)
        if got != tree:
            return what, runs, "after restoring block 0: " + "; ".join(C.tree_diff(tree, got))
    return what, runs, None


def campaign(args: argparse.Namespace) -> C.Summary:
    summary = C.Summary("random_damage")
    work = C.scratch_dir("rdamage-")
    try:
        pristine = os.path.join(work, "pristine.img")
        C.make_fs(pristine)
        with Volume.open(pristine, writable=True) as vol:
            C.populate_sample(vol)
        tree = C.snapshot(pristine)
        meta = metadata_blocks(pristine)
        rounds = [args.round] if args.round is not None else range(args.first, args.first + args.rounds)
        for seed in rounds:
            summary.cases += 1
            what, runs, why = run_round(pristine, tree, meta, seed, args.mode, work)
            if runs and runs[0] in (1, 0):
                summary.detections += runs[0] == 1
                summary.repairs += runs[0] == 1
                summary.survivors += runs[0] == 0
            if why:
                summary.fail(f"--round {seed}" + (f" --mode {args.mode}" if args.mode else ""), f"{what}: {why}")
            if args.verbose:
                print(f"round {seed}: {what}: fsck -y exits {runs}{': ' + why if why else ''}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="campaigns.random_damage", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--round", type=int, help="run only this round")
    ap.add_argument("--mode", choices=MODES, help="only this kind of damage")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    summary = campaign(args)
    print(summary.table(replay="python -m campaigns.random_damage {case} -v"))
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
