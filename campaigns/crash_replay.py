"""Crash-consistency campaign: record the library's stores and barriers, replay every crash state.

For each seed: build a populated image, then run a random sequence of
operations (create, mkdir, symlink, mknod, write/extend/hole, truncate
shrink/grow, unlink, link, rename in place / across / over a file / of a
directory, xattr set/replace/remove, setattr, rmdir, and populate of a host
tree into a fresh filesystem) on it through a recording device, snapshotting
the visible tree after each operation.  Then for every cut (every barrier,
an in-order prefix and random reorder/drop states of every epoch) build the
crash image and require:

* ``fsck -y`` exits 0 or 1 (no traceback, nothing left uncorrected);
* ``fsck -fn`` afterwards exits 0 with no finding;
* the visible tree (outside /lost+found) equals the tree before the operation
  in flight or after it; a data write may also show, per 8-byte word, old or
  new bytes and the old or new size (writes are not atomic, as in ext2);
  populate may show any subset of its tree, each visible object complete.

Operations that completed before the cut must be intact and nothing else may
have changed: both follow from the tree comparison.

    python -m campaigns.crash_replay [--seeds N] [--first S] [--ops N] [--randoms K]
    python -m campaigns.crash_replay --seed S --case CUT -v     # replay one case
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from campaigns import common as C
from nvfs_tools import crashsim
from nvfs_tools import format as fmt
from nvfs_tools.volume import Volume

ROOT = fmt.ROOT_INO


@dataclass
class Op:
    label: str
    apply: Callable[[Volume], None]
    kind: str = "exact"  # "exact", "write" (path in ``path``) or "populate"
    path: bytes = b""


@dataclass
class Recording:
    log: crashsim.CrashLog
    ops: list[Op]
    states: list[C.Tree]  # states[k] = tree after the first k operations
    op_epochs: list[tuple[int, int]] = field(default_factory=list)  # (begin epoch, end epoch)


# ---------------------------------------------------------------------------------------------------
# Random operations
# ---------------------------------------------------------------------------------------------------


def _parent(path: bytes) -> tuple[bytes, bytes]:
    head, _, name = path.rpartition(b"/")
    return head or b"/", name


def _ino(vol: Volume, path: bytes) -> int:
    return vol.lookup(path)


def random_op(vol: Volume, tree: C.Tree, rng: random.Random, n: int) -> Op:
    """One operation valid on the current tree (names are unique per step ``n``)."""
    bs = vol.block_size
    dirs = [b"/"] + sorted(p for p, nd in tree.items() if nd.mode & fmt.S_IFMT == fmt.S_IFDIR)
    dirs = [d for d in dirs if d != b"/lost+found"]
    files = sorted(p for p, nd in tree.items() if nd.mode & fmt.S_IFMT == fmt.S_IFREG)
    empty_dirs = [
        d for d in dirs if d != b"/" and not any(p.startswith(d + b"/") for p in tree) and d != b"/lost+found"
    ]
    xfiles = [p for p in files if tree[p].xattrs]
    name = b"n%03d-%d" % (n, rng.randrange(1000))
    d = rng.choice(dirs)
    t = (1_700_001_000 + n, n)

    def at(dirpath: bytes) -> int:
        return ROOT if dirpath == b"/" else _ino(vol, dirpath)

    def join(dirpath: bytes, nm: bytes) -> bytes:
        return (b"" if dirpath == b"/" else dirpath) + b"/" + nm

    kinds = ["create", "create_empty", "mkdir", "symlink", "mknod", "split"]
    if files:
        kinds += ["append", "overwrite", "hole", "bigwrite", "shrink", "grow", "unlink", "link", "rename"]
        kinds += ["rename_over", "xattr_set", "setattr", "rename_dir_file"]
    if xfiles:
        kinds += ["xattr_replace", "xattr_remove"]
    if empty_dirs:
        kinds += ["rmdir", "rename_dir"]
    kind = rng.choice(kinds)
    f = rng.choice(files) if files else b""
    if kind == "create":
        size = rng.choice((1, 100, bs - 1, bs + 1, 3 * bs, 14 * bs + 5))
        data = C.content(f"c{n}", size)
        return Op(f"create {join(d, name)!r} ({size} B)", lambda v: v.create(at(d), name, 0o640, times=t, data=data))
    if kind == "split":  # a page of "many" overflows sooner or later: page splits, new radix nodes
        return Op(
            f"create in /many {name!r}", lambda v: v.create(at(b"/many"), name + b"-" + b"s" * 40, 0o644, times=t)
        )
    if kind == "create_empty":
        return Op(f"create {join(d, name)!r} (empty)", lambda v: v.create(at(d), name, 0o600, times=t))
    if kind == "mkdir":
        return Op(f"mkdir {join(d, name)!r}", lambda v: v.mkdir(at(d), name, 0o750, times=t))
    if kind == "symlink":
        target = b"t" * rng.choice((5, 128, 129, 700))
        return Op(f"symlink {join(d, name)!r} ({len(target)} B)", lambda v: v.symlink(at(d), name, target, times=t))
    if kind == "mknod":
        mode = rng.choice((fmt.S_IFIFO | 0o600, fmt.S_IFCHR | 0o600, fmt.S_IFSOCK | 0o600))
        return Op(f"mknod {join(d, name)!r}", lambda v: v.mknod(at(d), name, mode, fmt.encode_rdev(4, n), times=t))
    if kind in ("append", "overwrite", "hole", "bigwrite"):
        size = tree[f].size
        if kind == "append":
            off, ln = size, rng.choice((10, bs, 2 * bs + 3))
        elif kind == "overwrite":
            off, ln = rng.randrange(0, max(size, 1)), rng.choice((8, 100, bs + 17))
        elif kind == "hole":
            off, ln = size + rng.choice((3 * bs, 20 * bs)) + 11, 50
        else:
            off, ln = rng.randrange(0, 4 * bs), 13 * bs + 1
        data = C.content(f"w{n}", ln)
        return Op(f"write {f!r} @{off} +{ln}", lambda v: v.write(_ino(v, f), off, data), kind="write", path=f)
    if kind == "shrink":
        new = rng.randrange(0, max(tree[f].size, 1))
        return Op(f"truncate {f!r} to {new}", lambda v: v.truncate(_ino(v, f), new))
    if kind == "grow":
        new = tree[f].size + rng.choice((1, bs, 30 * bs))
        return Op(f"truncate {f!r} to {new}", lambda v: v.truncate(_ino(v, f), new))
    if kind == "unlink":
        pd, nm = _parent(f)
        return Op(f"unlink {f!r}", lambda v: v.unlink(at(pd), nm))
    if kind == "link":
        return Op(f"link {f!r} -> {join(d, name)!r}", lambda v: v.link(_ino(v, f), at(d), name))
    if kind == "rename":
        pd, nm = _parent(f)
        return Op(f"rename {f!r} -> {join(d, name)!r}", lambda v: v.rename(at(pd), nm, at(d), name))
    if kind == "rename_over":
        g = rng.choice(files)
        if g == f or tree[g].ino == tree[f].ino:
            return random_op(vol, tree, rng, n)
        pf, nf = _parent(f)
        pg, ng = _parent(g)
        return Op(f"rename {f!r} over {g!r}", lambda v: v.rename(at(pf), nf, at(pg), ng))
    if kind == "rename_dir_file":  # a file over nothing into another directory, via a long name
        pd, nm = _parent(f)
        long = name + b"-" + b"L" * 200
        return Op(f"rename {f!r} -> {join(d, long)!r}", lambda v: v.rename(at(pd), nm, at(d), long))
    if kind == "rename_dir":
        src = rng.choice(empty_dirs)
        dst = rng.choice([x for x in dirs if not (x + b"/").startswith(src + b"/")] or [b"/"])
        ps, ns = _parent(src)
        return Op(f"rename dir {src!r} -> {join(dst, name)!r}", lambda v: v.rename(at(ps), ns, at(dst), name))
    if kind == "rmdir":
        src = rng.choice(empty_dirs)
        ps, ns = _parent(src)
        return Op(f"rmdir {src!r}", lambda v: v.rmdir(at(ps), ns))
    if kind == "xattr_set":
        value = C.content(f"x{n}", rng.choice((5, 300)))
        return Op(f"setxattr {f!r} user.{name!r}", lambda v: v.setxattr(_ino(v, f), b"user." + name, value))
    if kind == "xattr_replace":
        g = rng.choice(xfiles)
        xn = tree[g].xattrs[0][0]
        value = C.content(f"r{n}", 64)
        return Op(f"replace xattr {xn!r} of {g!r}", lambda v: v.setxattr(_ino(v, g), xn, value))
    if kind == "xattr_remove":
        g = rng.choice(xfiles)
        xn = tree[g].xattrs[-1][0]
        return Op(f"remove xattr {xn!r} of {g!r}", lambda v: v.removexattr(_ino(v, g), xn))
    if kind == "setattr":
        return Op(
            f"setattr {f!r}",
            lambda v: v.setattr(_ino(v, f), mode=0o600 + n % 64, uid=n, gid=n + 1, mtime=t, ctime=t),
        )
    raise AssertionError(kind)


# ---------------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------------


def build_base(path: str, seed: int) -> None:
    C.make_fs(path)
    with Volume.open(path, writable=True) as vol:
        C.populate_sample(vol)


def record_ops(work: str, ops_count: int, seed: int) -> Recording:
    """Run ``ops_count`` random operations on ``work`` through a recording device."""
    rng = random.Random(seed)
    vol = crashsim.record_volume(work)
    log = vol.dev.log
    states = [_snap(work)]
    ops: list[Op] = []
    spans = []
    try:
        for n in range(ops_count):
            op = random_op(vol, states[-1], rng, n)
            begin = len(log.epochs) - 1
            vol.dev.mark(("begin", n))
            op.apply(vol)
            vol.barrier()
            vol.dev.mark(("end", n))
            spans.append((begin, len(log.epochs) - 1))
            ops.append(op)
            states.append(_snap(work))
    finally:
        vol.close()
    return Recording(log, ops, states, spans)


def record_populate(work: str, source: str) -> Recording:
    from nvfs_tools.populate import populate

    vol = crashsim.record_volume(work)
    log = vol.dev.log
    states = [_snap(work)]
    try:
        vol.dev.mark(("begin", 0))
        populate(vol, source, root_owner=(0, 0))
        vol.barrier()
        vol.dev.mark(("end", 0))
        spans = [(0, len(log.epochs) - 1)]
    finally:
        vol.close()
    states.append(_snap(work))
    return Recording(log, [Op(f"populate {source}", lambda v: None, kind="populate")], states, spans)


def _snap(path: str) -> C.Tree:
    tree = C.snapshot(path)
    lf = b"/" + fmt.LOST_FOUND_NAME
    if lf in tree:  # fsck may reconnect leftovers there: its link count is not the operations' business
        tree[lf] = tree[lf].without("nlink")
    return tree


# ---------------------------------------------------------------------------------------------------
# Checking one crash state
# ---------------------------------------------------------------------------------------------------


def _in_flight(rec: Recording, epoch: int) -> tuple[int, int | None]:
    """(operations complete at a cut in ``epoch``, index of the one in flight or None)."""
    done = sum(1 for _, end in rec.op_epochs if end <= epoch)
    if done < len(rec.op_epochs) and rec.op_epochs[done][0] <= epoch:
        return done, done
    return done, None


def _write_mix_ok(got: C.Node, old: C.Node, new: C.Node) -> bool:
    """A data write torn at 8-byte granularity, with the old or the new size."""
    if got.size not in (old.size, new.size) or len(got.data) != got.size:
        return False
    if got.without("size", "data") != new.without("size", "data"):
        return False
    length = max(old.size, new.size)
    a = old.data.ljust(length, b"\0")
    b = new.data.ljust(length, b"\0")
    g = got.data
    for i in range(0, len(g), 8):
        piece = g[i : i + 8]
        if piece != a[i : i + len(piece)] and piece != b[i : i + len(piece)]:
            return False
    return True


def tree_ok(rec: Recording, epoch: int, got: C.Tree) -> str | None:
    done, flight = _in_flight(rec, epoch)
    before = rec.states[done]
    if got == before:
        return None
    if flight is None:
        return f"after {done} complete operations: " + "; ".join(C.tree_diff(before, got))
    after = rec.states[done + 1]
    if got == after:
        return None
    op = rec.ops[flight]
    if op.kind == "write":
        others = {p: nd for p, nd in got.items() if p != op.path}
        want = {p: nd for p, nd in after.items() if p != op.path}
        if others == want and op.path in got and _write_mix_ok(got[op.path], before[op.path], after[op.path]):
            return None
    if op.kind == "populate":
        bad = [p for p, nd in got.items() if p not in after or _pop_norm(after[p]) != _pop_norm(nd)]
        if not bad:
            return None
        return f"during {op.label}: {bad[:3]!r} not as populated"
    return f"during op {flight} ({op.label}): matches neither before nor after: " + "; ".join(C.tree_diff(after, got))


def _pop_norm(nd: C.Node) -> C.Node:
    if nd.mode & fmt.S_IFMT == fmt.S_IFDIR:
        return nd.without("nlink", "times")
    return nd.without("nlink")


def check_cut(
    rec: Recording, cut: crashsim.Cut, image: str, durable: bytearray | None = None, force: bool = False
) -> str | None:
    """None when crash state ``cut`` recovers correctly; else why not.

    The first run is a plain ``fsck -y`` (what a boot script runs): a crash
    image must never look clean.  ``force`` adds ``-f`` to it.
    """
    C.write_image(image, rec.log.crash_image(cut, durable))
    first = C.fsck(image, "y", force=force)
    if first.crashed or first.code not in (0, 1):
        return f"fsck -y exit {first.code}: {C.first_lines(first.output)}"
    second = C.fsck(image, "n", force=True)
    if second.code != 0 or second.findings:
        return f"second fsck -fn exit {second.code}: {C.first_lines(second.output)}"
    try:
        got = _snap(image)
    except Exception as exc:  # noqa: BLE001
        return f"tree unreadable after repair: {type(exc).__name__}: {exc}"
    return tree_ok(rec, cut.epoch, got)


def run_recording(rec: Recording, work_dir: str, summary: C.Summary, seed: int, args: argparse.Namespace) -> None:
    cuts = crashsim.cut_points(rec.log, seed=seed, randoms_per_epoch=args.randoms, prefixes_per_epoch=args.prefixes)
    if args.case:
        cuts = [crashsim.Cut.parse(args.case)]
    if args.max_cuts and len(cuts) > args.max_cuts:
        cuts = sorted(random.Random(seed).sample(cuts, args.max_cuts), key=lambda c: c.epoch)
    image = os.path.join(work_dir, "crash.img")
    durable_epoch, durable = 0, bytearray(rec.log.base)
    for cut in cuts:
        while durable_epoch < min(cut.epoch, len(rec.log.epochs)):
            crashsim.apply_writes(durable, rec.log.epochs[durable_epoch].writes)
            durable_epoch += 1
        summary.cases += 1
        why = check_cut(rec, cut, image, durable, force=args.force)
        if why is None:
            summary.repairs += 1
        else:
            summary.fail(f"--seed {seed} --case {cut.case_id}{' --populate' if args.populate else ''}", why)
            if args.verbose:
                print(f"seed {seed} cut {cut.case_id}: {why}")
                kept = os.path.join(work_dir, f"fail-{seed}-{cut.case_id}.img")
                C.write_image(kept, rec.log.crash_image(cut))
                print(f"  crash image kept at {kept}")


def campaign(args: argparse.Namespace) -> C.Summary:
    summary = C.Summary("crash_replay" + (" (populate)" if args.populate else ""))
    work_dir = C.scratch_dir("crash-")
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    try:
        for seed in seeds:
            work = os.path.join(work_dir, "work.img")
            if args.populate:
                from nvfs_tools import hosttree

                src = os.path.join(work_dir, "src")
                shutil.rmtree(src, ignore_errors=True)
                if seed % 2:
                    hosttree.make_small_files_tree(src, 30 + seed % 20, 4)
                else:  # every kind of object: symlinks, devices, hard links, holes, xattrs
                    hosttree.make_full_tree(src)
                C.make_fs(work)
                rec = record_populate(work, src)
            else:
                build_base(work, seed)
                rec = record_ops(work, args.ops, seed)
            unrecorded = crashsim.verify_log(rec.log, C.read_image(work))
            if unrecorded:
                summary.fail(f"--seed {seed}", unrecorded)
                continue
            summary.extra["epochs"] = summary.extra.get("epochs", 0) + len(rec.log.epochs)
            summary.extra["ops"] = summary.extra.get("ops", 0) + len(rec.ops)
            if args.verbose and args.case:
                for i, op in enumerate(rec.ops):
                    print(f"op {i}: epochs {rec.op_epochs[i]}: {op.label}")
            run_recording(rec, work_dir, summary, seed, args)
    finally:
        if not args.verbose:
            shutil.rmtree(work_dir, ignore_errors=True)
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="campaigns.crash_replay", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=20, help="number of seeds (operation sequences)")
    p.add_argument("--first", type=int, default=0, help="first seed")
    p.add_argument("--seed", type=int, help="run only this seed")
    p.add_argument("--case", help="run only this cut of --seed (b<epoch>, p<epoch>.<n>, r<epoch>.<seed>)")
    p.add_argument("--ops", type=int, default=25, help="operations per seed")
    p.add_argument("--randoms", type=int, default=2, help="random reorder/drop states per epoch")
    p.add_argument("--prefixes", type=int, default=1, help="in-order prefix states per epoch")
    p.add_argument("--max-cuts", type=int, default=0, help="sample at most this many cuts per seed (0: all)")
    p.add_argument("--populate", action="store_true", help="record populate of a host tree instead")
    p.add_argument("-f", "--force", action="store_true", help="first repair run with -f (skip the clean-flag shortcut)")
    p.add_argument("-v", "--verbose", action="store_true", help="print failures as found, keep images")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    summary = campaign(args)
    print(summary.table(replay="python -m campaigns.crash_replay {case} -v"))
    print(f"crash states checked: {summary.cases}")
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
