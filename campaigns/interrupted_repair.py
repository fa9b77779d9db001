"""Interrupted-repair campaign: fsck -y cut short at any moment must leave a filesystem the next run repairs.

Per seed, a pristine populated image gets several random field damages (the
fuzz campaign's targets and verbs).  ``fsck -fy`` is then run on it through
the recording device (nvfs_tools.crashsim), and every crash state of that
repair (each barrier, an in-order prefix of each epoch = where a SIGKILL on
a page-cache mapping leaves the image, and random reorder/drop states = a
power cut) is rebuilt.  On each:

* plain ``fsck -y`` (no ``-f``: an interrupted repair must force itself) exits 0 or 1;
* ``fsck -fn`` then exits 0 with no finding;
* files the damage did not touch read back identical to the pristine image.

``--raise-at N`` stops N in-process runs with an exception at a random
write (nvfs_tools.crashsim ``fail_after``).  ``--kill N`` also runs
``fsck.nvfs -fy`` as a real process N times per seed, SIGKILLed after a
random delay.  Both then get the same three checks.

    python -m campaigns.interrupted_repair [--seeds N] [--damages K] [--kill N]
    python -m campaigns.interrupted_repair --seed S --case CUT -v
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time

from campaigns import common as C
from campaigns import fuzz_fields as FZ
from nvfs_tools import crashsim
from nvfs_tools import fieldpath as fp
from nvfs_tools import format as fmt
from nvfs_tools.device import Device


def damage(p: FZ.Pristine, image: str, seed: int, count: int) -> tuple[list[str], set[bytes], set[int]]:
    """Fuzz ``count`` random fields (never the static superblock); returns case ids and what they touch."""
    rng = random.Random(seed)
    targets = [t for t in p.targets if t.type_name != "superblock_static"]
    done, touched, inos = [], set(), set()
    with Device(image, writable=True) as dev:
        geo = fmt.geometry_from_static(fmt.SuperblockStatic.parse(dev.read(0, fmt.SB_STATIC_SIZE)))
        for _ in range(count):
            t = rng.choice(targets)
            f = rng.choice(FZ.fields_of(t, p.block_size, False, p.image))
            verb = rng.choice(FZ.VERBS)
            fp.fuzz_field(dev, geo, t.type_name, t.addr, f.path, verb, rng=rng)
            done.append(f"{t.label}:{f.path}:{verb}")
            touched |= t.touched
            inos |= t.touched_inos
    return done, touched, inos


def untouched_ok(p: FZ.Pristine, touched: set[bytes], inos: set[int], image: str) -> str | None:
    t = FZ.Target("multi", "inode", 0, None, touched, inos)  # type: ignore[arg-type]
    return FZ.compare_untouched(p, t, image)


def record_repair(image: str) -> tuple[crashsim.CrashLog | None, C.FsckRun]:
    with crashsim.recording() as opened:
        run = C.fsck(image, "y", force=True)
    return (opened[0].log if opened else None), run


def check_state(p: FZ.Pristine, image: str, touched: set[bytes], inos: set[int], damaged: bytes) -> str | None:
    """Re-run after an interruption.  Once any repair write persisted, a plain ``fsck -y`` must see
    that a repair was interrupted (``CHECKING``) and check fully; before that, the image is just the
    damaged one on a filesystem marked clean, which only ``-f`` examines (as the interrupted run did)."""
    touched_by_fsck = C.read_image(image) != damaged
    first = C.fsck(image, "y", force=not touched_by_fsck)
    if first.crashed or first.code not in (0, 1):
        return f"fsck -y exit {first.code}: {C.first_lines(first.output)}"
    again = C.fsck(image, "n", force=True)
    if again.code != 0 or again.findings:
        return f"then fsck -fn exit {again.code}: {C.first_lines(again.output)}"
    return untouched_ok(p, touched, inos, image)


def kill_runs(p: FZ.Pristine, damaged: str, work: str, n: int, rng: random.Random) -> list[tuple[str, str | None]]:
    """Real SIGKILLs of fsck.nvfs -fy after random delays."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = []
    for i in range(n):
        image = os.path.join(work, "kill.img")
        C.copy_image(damaged, image)
        delay = rng.uniform(0.05, 1.5)
        proc = subprocess.Popen(
            [sys.executable, "-m", "nvfs_tools.fsck", "-fy", image],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=root,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        out.append((f"kill{i}@{delay:.2f}s", image))
    return out


def raise_runs(damaged: str, work: str, writes: int, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """fsck -fy stopped in-process by an exception at its N-th device write (N random)."""
    out = []
    for _ in range(n):
        stop = rng.randint(1, max(writes, 1))
        image = os.path.join(work, "raise.img")
        C.copy_image(damaged, image)
        try:
            with crashsim.recording(fail_after=stop - 1):
                C.fsck(image, "y", force=True)
        except crashsim.SimulatedCrash:
            pass
        out.append((f"raise@write{stop}", image))
    return out


def campaign(args: argparse.Namespace) -> C.Summary:
    summary = C.Summary("interrupted_repair")
    work = C.scratch_dir("irepair-")
    try:
        p = FZ.build_pristine(work)
        seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
        for seed in seeds:
            damaged = os.path.join(work, "damaged.img")
            C.copy_image(p.image, damaged)
            ids, touched, inos = damage(p, damaged, seed, args.damages)
            recorded = os.path.join(work, "recorded.img")
            C.copy_image(damaged, recorded)
            log, run = record_repair(recorded)
            if args.verbose:
                print(f"seed {seed}: damage {ids}; fsck -fy exit {run.code}")
            if log is None or run.crashed or run.code not in (0, 1):
                summary.fail(f"--seed {seed}", f"uninterrupted fsck -fy exit {run.code}: {C.first_lines(run.output)}")
                continue
            damaged_bytes = C.read_image(damaged)
            whole = check_state(p, recorded, touched, inos, b"")
            if whole:
                summary.fail(f"--seed {seed}", f"uninterrupted repair does not converge: {whole}")
                continue
            if crashsim.verify_log(log, C.read_image(recorded)) is not None:
                summary.fail(f"--seed {seed}", "fsck wrote around the device (unrecorded write)")
                continue
            summary.extra["writes"] = summary.extra.get("writes", 0) + log.writes
            cuts = crashsim.cut_points(log, seed=seed, randoms_per_epoch=args.randoms)
            if args.case:
                cuts = [crashsim.Cut.parse(args.case)]
            elif args.max_cuts and len(cuts) > args.max_cuts:
                cuts = random.Random(seed).sample(cuts, args.max_cuts)
            image = os.path.join(work, "cut.img")
            for cut in cuts:
                summary.cases += 1
                C.write_image(image, log.crash_image(cut))
                why = check_state(p, image, touched, inos, damaged_bytes)
                if why:
                    summary.fail(f"--seed {seed} --case {cut.case_id}", why)
                    if args.verbose:
                        print(f"  cut {cut.case_id}: {why}")
                else:
                    summary.repairs += 1
            rng = random.Random(seed)
            stops = raise_runs(damaged, work, log.writes, args.raise_at, rng)
            for case_id, image in stops + kill_runs(p, damaged, work, args.kill, rng):
                summary.cases += 1
                why = check_state(p, image, touched, inos, damaged_bytes)
                if why:
                    summary.fail(f"--seed {seed} ({case_id})", why)
                else:
                    summary.repairs += 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="campaigns.interrupted_repair", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--case", help="one cut of --seed (b<epoch>, p<epoch>.<n>, r<epoch>.<seed>)")
    ap.add_argument("--damages", type=int, default=4, help="fields damaged per seed")
    ap.add_argument("--randoms", type=int, default=2, help="random reorder/drop states per epoch")
    ap.add_argument("--max-cuts", type=int, default=0, help="sample at most N cuts per seed")
    ap.add_argument("--kill", type=int, default=2, help="real SIGKILLed fsck processes per seed")
    ap.add_argument("--raise-at", type=int, default=2, help="in-process stops at a random N-th write per seed")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    summary = campaign(args)
    print(summary.table(replay="python -m campaigns.interrupted_repair {case} -v"))
    print(f"crash states of fsck's own repairs checked: {summary.cases}")
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
