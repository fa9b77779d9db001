"""Per-field fuzzing (the xfstests cycle): every field of every structure on a pristine image, every verb.

Targets on a pristine populated image (campaigns.common.populate_sample):
static and dynamic superblock, group counters, one inode of every file type
(regular small / with an indirect block / sparse, directory with a page and
with a radix node, inline and long symlink, FIFO, character and block device,
socket, a file with an xattr block, the root, lost+found), an indirect block,
a radix node, a directory page header, a live directory entry, an xattr header
and entry, a journal slot and its header; with ``--quota`` also a quota record.

For each (target, field, verb) on a fresh copy of the image, through
nvfs_tools.fieldpath (the same code as ``debugfs -w -R "fuzz ..."``; covering
checksums are recomputed so the damage reaches the checks behind them):

* ``fsck -n`` must exit 4 unless spec/checking.md's unjudged table lists the
  field and change (then exit 0 is a *survivor*), and must not write;
* ``fsck -y`` exits 1 (0 if there was nothing to fix), never 4/8 or a traceback;
* a second ``fsck -fn`` exits 0 with no finding;
* every file the damage did not touch reads back identical (content, type,
  owner, size, xattrs).

    python -m campaigns.fuzz_fields [--targets REGEX] [--verbs v1,v2] [--all-slots]
    python -m campaigns.fuzz_fields --case 'inode.big:block[11]:zeroes' -v
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sys
import zlib
from dataclasses import dataclass, field

from campaigns import common as C
from campaigns import unjudged as U
from nvfs_tools import fieldpath as fp
from nvfs_tools import format as fmt
from nvfs_tools.device import Device
from nvfs_tools.volume import Volume

VERBS = fp.FUZZ_VERBS


@dataclass
class Target:
    """One structure instance on the pristine image."""

    label: str
    type_name: str
    addr: int
    state: U.ObjectState
    touched: set[bytes] = field(default_factory=set)  # paths (and everything below) the damage may affect
    touched_inos: set[int] = field(default_factory=set)
    paths: list[str] | None = None  # fields to fuzz (None: every leaf)


@dataclass
class Pristine:
    image: str
    tree: C.Tree
    targets: list[Target]
    block_size: int
    quota: bool


def _below(tree: C.Tree, ino: int) -> set[bytes]:
    return {p for p, nd in tree.items() if nd.ino == ino}


def build_pristine(work_dir: str, quota: bool = False) -> Pristine:
    image = os.path.join(work_dir, "pristine.img")
    C.make_fs(image, quota=quota)
    with Volume.open(image, writable=True) as vol:
        inos = C.populate_sample(vol)
    tree = C.snapshot(image)
    targets: list[Target] = []
    with Volume.open(image) as vol:
        geo, bs = vol.geo, vol.block_size
        everything = {b"/"}
        targets.append(Target("sb", "superblock_static", 0, U.ObjectState("superblock_static", quota=quota)))
        targets.append(Target("dsb", "superblock_dynamic", fmt.SB_DYNAMIC_OFFSET, U.ObjectState("superblock_dynamic")))
        targets.append(Target("gc0", "group_counters", geo.counters_block(0) * bs, U.ObjectState("group_counters")))
        named = dict(inos)
        named["root"] = fmt.ROOT_INO
        named["lost+found"] = vol.static.lost_found_ino
        for label, ino in named.items():
            raw = vol.read_inode(ino)
            ftype = raw.mode & fmt.S_IFMT
            st = U.ObjectState(
                "inode",
                ftype=ftype,
                inline=bool(raw.flags & fmt.INODE_FLAG_INLINE),
                dir_bank=raw.dir_bank,
                quota=quota,
            )
            if st.inline:
                st.extra["size"] = raw.size
            if ftype == fmt.S_IFREG:  # for the "decrease within the last mapped block" rows
                st.extra["last_fblock"] = max((f for f, _b in vol.file_blocks(ino)), default=-1)
                st.extra["block_size"] = bs
            if ftype == fmt.S_IFDIR:
                st.extra["roots_equal"] = raw.block[0] == raw.block[1]
            paths = _below(tree, ino)
            touched = everything if ino == fmt.ROOT_INO else paths
            targets.append(Target(f"inode.{label}", "inode", geo.inode_offset(ino), st, set(touched), {ino}))
        big = vol.read_inode(inos["big"])
        targets.append(
            Target(
                "indirect",
                "indirect",
                big.block[fmt.N_DIRECT] * bs,
                U.ObjectState("indirect"),
                _below(tree, inos["big"]),
                {inos["big"]},
            )
        )
        many = vol.read_inode(inos["many"])
        root_word = many.block[many.dir_bank]
        many_paths = _below(tree, inos["many"])
        if root_word and not root_word & fmt.RADIX_PAGE_BIT:
            targets.append(
                Target(
                    "radix",
                    "radix_node",
                    (root_word & fmt.RADIX_BLOCK_MASK) * bs,
                    U.ObjectState("radix_node"),
                    set(many_paths),
                    {inos["many"]},
                )
            )
        docs = vol.read_inode(inos["dir"])
        page = docs.block[docs.dir_bank] & fmt.RADIX_BLOCK_MASK
        docs_paths = _below(tree, inos["dir"])
        targets.append(
            Target("dirpage", "dir_page_header", page * bs, U.ObjectState("dir_page_header"), set(docs_paths))
        )
        targets.append(
            Target(
                "dirent",
                "dir_entry_header",
                page * bs + fmt.DIR_PAGE_HEADER_SIZE,
                U.ObjectState("dir_entry_header"),
                set(docs_paths),
            )
        )
        xf = vol.read_inode(inos["xattr"])
        xpaths = _below(tree, inos["xattr"])
        targets.append(
            Target("xattr", "xattr_header", xf.xattr_block * bs, U.ObjectState("xattr_header"), xpaths, {inos["xattr"]})
        )
        xblock = vol.read_block(xf.xattr_block)
        entry = fmt.XATTR_HEADER_SIZE  # the fuzzed entry: the block's first
        nlen = xblock[entry + fmt.field_offset(fmt.XattrEntryHeader, "name_len")]
        suffix = bytes(xblock[entry + fmt.XATTR_ENTRY_HEADER_SIZE :][:nlen])
        first = fmt.XATTR_PREFIXES[xblock[entry + fmt.field_offset(fmt.XattrEntryHeader, "name_index")]] + suffix
        xstate = U.ObjectState("xattr_entry_header")
        vlen = int.from_bytes(xblock[entry + fmt.field_offset(fmt.XattrEntryHeader, "value_len") :][:4], "little")
        xstate.extra.update(
            index=xblock[entry + fmt.field_offset(fmt.XattrEntryHeader, "name_index")],
            value=bytes(xblock[entry + fmt.XATTR_ENTRY_HEADER_SIZE + nlen :][:vlen]),
            suffix=suffix,
            other_names=set(vol.listxattr(inos["xattr"])) - {first},
            is_dir=xf.mode & fmt.S_IFMT == fmt.S_IFDIR,
        )
        targets.append(
            Target(
                "xentry",
                "xattr_entry_header",
                xf.xattr_block * bs + fmt.XATTR_HEADER_SIZE,
                xstate,
                xpaths,
                {inos["xattr"]},
            )
        )
        jbase = geo.journal_block * bs
        targets.append(Target("jslot", "journal_slot", jbase, U.ObjectState("journal_slot")))
        targets.append(Target("jheader", "journal_slot_header", jbase, U.ObjectState("journal_slot_header")))
        if quota:
            q = vol.read_inode(fmt.USR_QUOTA_INO)
            if q.block[0]:
                targets.append(Target("quota.user0", "quota_record", q.block[0] * bs, U.ObjectState("quota_record")))
        return Pristine(image, tree, targets, bs, quota)


def fields_of(t: Target, bs: int, all_slots: bool, image: str) -> list[fp.Field]:
    """Leaves to fuzz; of the two 512-slot pointer arrays only used slots and a few empty ones unless ``all_slots``."""
    leaves = fp.leaves(t.type_name, bs)
    if t.type_name not in ("indirect", "radix_node") or all_slots:
        return leaves
    with Device(image) as dev:
        raw = dev.read(t.addr, bs)
    used = [f for f in leaves if raw[f.offset : f.offset + 8] != bytes(8)]
    empty = [f for f in leaves if raw[f.offset : f.offset + 8] == bytes(8)]
    pick = empty[:1] + empty[-1:] + empty[len(empty) // 2 : len(empty) // 2 + 1]
    return sorted(set(used + pick), key=lambda f: f.offset)


def case_rng(case_id: str) -> random.Random:
    return random.Random(zlib.crc32(case_id.encode()))


@dataclass
class Outcome:
    detected: bool = False
    repaired: bool = False
    survivor: bool = False
    noop: bool = False
    refused: bool = False
    failure: str | None = None


def run_case(p: Pristine, t: Target, f: fp.Field, verb: str, image: str, rows: list[U.Row]) -> Outcome:
    case_id = f"{t.label}:{f.path}:{verb}"
    C.copy_image(p.image, image)
    with Device(image, writable=True) as dev:
        geo = fmt.geometry_from_static(fmt.SuperblockStatic.parse(dev.read(0, fmt.SB_STATIC_SIZE)))
        area_old = dev.read(t.addr + fmt.field_offset(fmt.Inode, "block"), 128) if t.type_name == "inode" else b""
        field_, old, new = fp.fuzz_field(dev, geo, t.type_name, t.addr, f.path, verb, rng=case_rng(case_id))
        area_new = dev.read(t.addr + fmt.field_offset(fmt.Inode, "block"), 128) if t.type_name == "inode" else b""
    if old == new:
        return Outcome(noop=True)  # e.g. zeroes of a zero field: nothing changed, nothing to find
    t.state.extra.update(area_old=area_old, area_new=area_new, fuzzed=f.path)
    row = U.unjudged(rows, t.state, f.path, old, new)
    out = Outcome()
    first = C.fsck(image, "n", force=True)  # opens the device read-only: it cannot write
    if first.crashed:
        out.failure = f"fsck -n raised: {C.first_lines(first.output)}"
        return out
    refusal = _refusal(t, f.path, new)
    if refusal:
        return _check_refusal(refusal, first, image)
    if first.code == 4:
        out.detected = True
    elif first.code == 0 and row is not None:
        out.survivor = True
    else:
        detail = f"old {old.hex()} new {new.hex()}"
        out.failure = f"fsck -n exit {first.code} ({detail}): {C.first_lines(first.output, 3)}"
        return out
    repair = C.fsck(image, "y", force=True)
    if repair.crashed or repair.code not in ((1, 0) if not out.detected else (1,)):
        out.failure = f"fsck -y exit {repair.code}: {C.first_lines(repair.output)}"
        return out
    out.repaired = repair.code == 1
    again = C.fsck(image, "n", force=True)
    if again.code != 0 or again.findings:
        out.failure = f"second fsck -fn exit {again.code}: {C.first_lines(again.output)}"
        return out
    why = compare_untouched(p, t, image)
    if why:
        out.failure = why
    return out


_UNKNOWN_FEATURES = {
    "feature_incompat": ~fmt.FEATURE_INCOMPAT_KNOWN,
    "feature_ro_compat": ~fmt.FEATURE_RO_COMPAT_KNOWN,
}


def _refusal(t: Target, path: str, new: bytes) -> str | None:
    """spec/checking.md 1.2: unknown incompat features are refused (exit 8, nothing written); unknown
    ro_compat features allow only a read-only check (``-y`` exits 8).  A single-group image has one
    copy besides the primary, which cannot overrule a primary with a good checksum (1.7)."""
    if t.type_name != "superblock_static" or path not in _UNKNOWN_FEATURES:
        return None
    if not int.from_bytes(new, "little") & _UNKNOWN_FEATURES[path] & 0xFFFFFFFF:
        return None
    return path


def _check_refusal(kind: str, first: C.FsckRun, image: str) -> Outcome:
    out = Outcome(refused=True)
    if kind == "feature_incompat":
        if first.code != 8:
            out.failure = f"unknown incompat feature: fsck -n exit {first.code}, spec says refuse (8)"
        return out
    before = C.digest(image)
    repair = C.fsck(image, "y", force=True)
    if repair.code != 8 or C.digest(image) != before:
        out.failure = f"unknown ro_compat feature: fsck -y exit {repair.code} (spec: 8, nothing written)"
    return out


def _untouched(p: Pristine, t: Target, path: bytes) -> bool:
    if b"/" in t.touched:
        return False
    if p.tree[path].ino in t.touched_inos:
        return False
    return not any(path == x or path.startswith(x + b"/") for x in t.touched)


def compare_untouched(p: Pristine, t: Target, image: str) -> str | None:
    try:
        got = C.snapshot(image)
    except Exception as exc:  # noqa: BLE001
        return f"tree unreadable after repair: {type(exc).__name__}: {exc}"
    bad = []
    for path, node in p.tree.items():
        if not _untouched(p, t, path):
            continue
        g = got.get(path)
        if g is None:
            bad.append(f"{path!r} lost")
        elif g.without("nlink") != node.without("nlink"):
            fields = [k for k in node.__dataclass_fields__ if k != "nlink" and getattr(g, k) != getattr(node, k)]
            bad.append(f"{path!r} changed ({', '.join(fields)})")
        if len(bad) > 3:
            break
    return "untouched files differ: " + "; ".join(bad) if bad else None


def campaign(args: argparse.Namespace) -> C.Summary:
    summary = C.Summary("fuzz_fields" + (" (quota)" if args.quota else ""))
    work_dir = C.scratch_dir("fuzz-")
    rows = U.load_rows()
    try:
        p = build_pristine(work_dir, quota=args.quota)
        image = os.path.join(work_dir, "case.img")
        cases = list(plan(p, args))
        if args.sample and len(cases) > args.sample:
            cases = sorted(random.Random(args.seed).sample(cases, args.sample), key=lambda c: c[3])
        for t, f, verb, case_id in cases:
            summary.cases += 1
            out = run_case(p, t, f, verb, image, rows)
            summary.detections += out.detected
            summary.repairs += out.repaired
            summary.survivors += out.survivor
            summary.extra["no-ops"] = summary.extra.get("no-ops", 0) + out.noop
            summary.extra["refusals"] = summary.extra.get("refusals", 0) + out.refused
            if out.failure:
                summary.fail(case_id, out.failure)
                if args.verbose:
                    print(f"{case_id}: {out.failure}")
            elif args.verbose and args.case:
                print(f"{case_id}: ok (detected {out.detected}, repaired {out.repaired}, survivor {out.survivor})")
    finally:
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"images kept in {work_dir}")
    return summary


def plan(p: Pristine, args: argparse.Namespace):
    verbs = args.verbs.split(",") if args.verbs else list(VERBS)
    only = None
    if args.case:
        m = re.fullmatch(r"([^:]+):(.+):([a-z]+)", args.case)
        if not m:
            raise SystemExit(f"bad --case {args.case!r}: want LABEL:FIELD:VERB")
        only = m.groups()
    for t in p.targets:
        if args.targets and not re.search(args.targets, t.label):
            continue
        if only and t.label != only[0]:
            continue
        for f in fields_of(t, p.block_size, args.all_slots, p.image):
            if only and f.path != only[1]:
                continue
            for verb in verbs:
                if only and verb != only[2]:
                    continue
                yield t, f, verb, f"{t.label}:{f.path}:{verb}"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="campaigns.fuzz_fields", description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", help="regex on target labels (sb, dsb, gc0, inode.big, indirect, radix, ...)")
    ap.add_argument("--verbs", help=f"comma-separated subset of {','.join(VERBS)}")
    ap.add_argument("--case", help="replay one case LABEL:FIELD:VERB")
    ap.add_argument("--all-slots", action="store_true", help="fuzz all 512 slots of pointer blocks")
    ap.add_argument("--quota", action="store_true", help="image with the quota feature (adds quota records)")
    ap.add_argument("--sample", type=int, default=0, help="run a random sample of N cases")
    ap.add_argument("--seed", type=int, default=0, help="seed of --sample")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    summary = campaign(args)
    extra = " --quota" if args.quota else ""
    print(summary.table(replay=f"python -m campaigns.fuzz_fields{extra} --case '{{case}}' -v"))
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(main())
