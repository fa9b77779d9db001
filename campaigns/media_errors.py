"""Media-error campaign: bad ranges on a populated image, fsck must name what they hit and not touch them.

For each case a bad range is put on one kind of block (file data, indirect
block, directory page, radix node, xattr block, long-symlink block, inode
table, block/inode bitmap, counters, journal, backup superblock, free space)
and fsck runs in a child process whose device mapping has the bad pages made
inaccessible (nvfs_tools.badblocks.poison: any read kills the process, as a
machine check on poisoned pmem would).  fsck gets the list with
``--badblocks FILE``.  Required:

* ``fsck -fn`` and ``fsck -fy`` finish (no signal, no traceback, exit < 8);
* their output names what the range hits (the file's path or inode, or the
  metadata kind), as nvfs_tools.badblocks.describe finds it;
* after ``-y``, files the range does not hit read back identical.

The child is ``python -m campaigns.media_errors --child MODE IMAGE BADFILE``.

    python -m campaigns.media_errors [--case KIND] [-v]
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass

from campaigns import common as C
from nvfs_tools import badblocks as BB
from nvfs_tools import format as fmt
from nvfs_tools.volume import Volume


@dataclass
class Case:
    kind: str
    block: int
    expect: list[str]  # words fsck's output must contain (any one of them)
    hit_inos: set[int]


def plan(image: str) -> list[Case]:
    cases: list[Case] = []
    tree = C.snapshot(image)
    by_path = {p: nd.ino for p, nd in tree.items()}
    with Volume.open(image) as vol:
        geo, bs = vol.geo, vol.block_size

        def inode(path: bytes):
            return vol.read_inode(by_path[path])

        def file_case(kind: str, path: bytes, block: int) -> None:
            ino = by_path[path]
            names = [p.decode() for p, i in by_path.items() if i == ino]
            cases.append(Case(kind, block, [*names, f"inode {ino}"], {ino}))

        big = inode(b"/docs/big.bin")
        file_case("file data", b"/docs/big.bin", big.block[3])
        file_case("indirect block", b"/docs/big.bin", big.block[fmt.N_DIRECT])
        file_case("long symlink", b"/sym-long", inode(b"/sym-long").block[0])
        file_case("xattr block", b"/xattr-file", inode(b"/xattr-file").xattr_block)
        docs = inode(b"/docs")
        cases.append(
            Case(
                "directory page",
                docs.block[docs.dir_bank] & fmt.RADIX_BLOCK_MASK,
                ["/docs", f"inode {by_path[b'/docs']}", "directory"],
                {by_path[b"/docs"]} | {i for p, i in by_path.items() if p.startswith(b"/docs/")},
            )
        )
        many = inode(b"/many")
        word = many.block[many.dir_bank]
        if word and not word & fmt.RADIX_PAGE_BIT:
            cases.append(
                Case(
                    "radix node",
                    word & fmt.RADIX_BLOCK_MASK,
                    ["/many", f"inode {by_path[b'/many']}", "radix"],
                    {by_path[b"/many"]} | {i for p, i in by_path.items() if p.startswith(b"/many/")},
                )
            )
        it_block = geo.inode_offset(by_path[b"/docs/big.bin"]) // bs
        per = bs // fmt.INODE_SIZE
        first = (it_block - geo.inode_table_block(0)) * per + 1
        cases.append(Case("inode table", it_block, ["inode table"], set(range(first, first + per))))
        cases.append(Case("block bitmap", geo.block_bitmap_block(0), ["bitmap"], set()))
        cases.append(Case("inode bitmap", geo.inode_bitmap_block(0), ["bitmap"], set()))
        cases.append(Case("counters", geo.counters_block(0), ["counter"], set()))
        cases.append(Case("journal", geo.journal_block, ["journal"], set()))
        cases.append(Case("backup superblock", geo.backup_block, ["superblock"], set()))
        free = _free_block(vol)
        cases.append(Case("free space", free, [f"{free}", "free", "unused"], set()))
    return cases


def _free_block(vol: Volume) -> int:
    geo, bs = vol.geo, vol.block_size
    bm = vol.dev.read(geo.block_bitmap_block(0) * bs, bs)
    for b in range(geo.blocks_count - 2, geo.first_data_block(0), -1):
        if not bm[b // 8] >> (b % 8) & 1:
            return b
    raise RuntimeError("no free block")


def child(mode: str, image: str, badfile: str) -> int:
    """Run fsck with the bad pages of the mapping poisoned (see module doc)."""
    faulthandler.enable()
    from nvfs_tools import fsck as fsck_cli
    from nvfs_tools.check import runner
    from nvfs_tools.device import Device

    ranges = BB.load(badfile)

    def _open(device: str, options):  # noqa: ANN001, ANN202
        dev = Device(device, writable=options.mode != "n")
        BB.poison(dev, ranges)
        return dev

    runner._open = _open
    argv = [f"-f{mode}", image]
    if supports_badblocks_option():
        argv = ["--badblocks", badfile, *argv]
    return fsck_cli.main(argv)


def supports_badblocks_option() -> bool:
    from nvfs_tools import fsck as fsck_cli

    try:
        fsck_cli.parse_args(["--badblocks", "/dev/null", "-n", "x"])
    except Exception:  # noqa: BLE001 - the CLI's usage error type is private
        return False
    return True


def run_child(mode: str, image: str, badfile: str) -> subprocess.CompletedProcess:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [sys.executable, "-m", "campaigns.media_errors", "--child", mode, image, badfile]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, cwd=root)


def run_case(case: Case, pristine: str, pristine_tree: C.Tree, work_dir: str) -> str | None:
    image = os.path.join(work_dir, "media.img")
    C.copy_image(pristine, image)
    with Volume.open(pristine) as vol:
        bs = vol.block_size
    # one 512-byte sector in the middle of the block: the whole block is lost all the same
    ranges = [(case.block * bs + bs // 2, BB.SECTOR)]
    badfile = os.path.join(work_dir, "bad.txt")
    with open(badfile, "w") as fh:
        fh.write(BB.format_ranges(ranges))
    with Volume.open(image) as vol:
        BB.apply(vol.dev, ranges)
        hits = BB.describe(vol, ranges)
    if not hits or hits[0].block != case.block:
        return f"describe() found {hits!r}"
    found_inos = set(hits[0].inodes)
    if case.hit_inos and case.kind != "inode table" and not found_inos & case.hit_inos:
        return f"describe() says {hits[0].describe()}, expected an owner among {sorted(case.hit_inos)[:5]}"
    missing = "" if supports_badblocks_option() else "fsck.nvfs has no --badblocks FILE option; "
    why = _run_fsck(case, image, badfile)
    if missing or why:
        return missing + (why or "fsck survived without the list")
    got = C.snapshot(image) if case.kind not in ("inode table",) else None
    if got is not None:
        for path, node in pristine_tree.items():
            if node.ino in case.hit_inos or any(path.startswith(p + b"/") for p in _dirs_of(case, pristine_tree)):
                continue
            if got.get(path) is None or got[path].without("nlink") != node.without("nlink"):
                return f"untouched {path!r} changed or lost"
    return None


def _run_fsck(case: Case, image: str, badfile: str) -> str | None:
    for mode in ("n", "y"):
        run = run_child(mode, image, badfile)
        if run.returncode < 0:
            sig = signal.Signals(-run.returncode).name
            frames = [ln.strip() for ln in run.stderr.splitlines() if ln.strip().startswith("File ")]
            where = " | ".join(frames[:3]) or C.first_lines(run.stderr, 4)
            return f"fsck -f{mode} killed by {sig} (it touched the bad range): {where}"
        if "Traceback" in run.stderr or "internal error" in run.stderr or run.returncode >= 8:
            return f"fsck -f{mode} exit {run.returncode}: {C.first_lines(run.stderr or run.stdout)}"
        text = (run.stdout + run.stderr).lower()
        if not any(word.lower() in text for word in case.expect):
            return f"fsck -f{mode} output does not name what the bad range hits ({case.expect[0]})"
    return None


def _dirs_of(case: Case, tree: C.Tree) -> list[bytes]:
    return [p for p, nd in tree.items() if nd.ino in case.hit_inos and nd.mode & fmt.S_IFMT == fmt.S_IFDIR]


def pristine_image(image: str) -> C.Tree:
    """Make the campaign's sample filesystem at ``image`` and return its tree (what every case is compared with)."""
    C.make_fs(image)
    with Volume.open(image, writable=True) as vol:
        C.populate_sample(vol)
    return C.snapshot(image)


def campaign(args: argparse.Namespace) -> C.Summary:
    summary = C.Summary("media_errors")
    work_dir = C.scratch_dir("media-")
    try:
        pristine = os.path.join(work_dir, "pristine.img")
        tree = pristine_image(pristine)
        for case in plan(pristine):
            if args.case and case.kind != args.case:
                continue
            summary.cases += 1
            why = run_case(case, pristine, tree, work_dir)
            if why:
                summary.fail(case.kind, why)
                if args.verbose:
                    print(f"{case.kind} (block {case.block}): {why}")
            else:
                summary.detections += 1
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return child(*argv[1:4])
    ap = argparse.ArgumentParser(prog="campaigns.media_errors", description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", help="only this kind (e.g. 'file data', 'inode table')")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    summary = campaign(args)
    print(summary.table(replay="python -m campaigns.media_errors --case '{case}' -v"))
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
