"""Per-field fuzzing, fast subset of campaigns/fuzz_fields (the full sweep is the script).

One seeded random (field, verb) per target structure, plus fixed cases of the
kinds fsck most needs to get right (magics, checksums, block pointers, link
counts).  Each must be detected by ``fsck -n`` (or be listed as unjudged in
spec/checking.md), repaired by ``fsck -y``, clean on a second ``fsck -fn``, and
leave untouched files identical.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaigns import common as C  # noqa: E402
from campaigns import fuzz_fields as FZ  # noqa: E402
from campaigns import unjudged as U  # noqa: E402
from nvfs_tools import fieldpath as fp  # noqa: E402
from nvfs_tools import format as fmt  # noqa: E402

FIXED = [
    "sb:magic:lastbit",
    "sb:blocks_count:add",
    "dsb:free_blocks:sub",
    "dsb:orphan_head:random",
    "gc0:free_inodes:add",
    "inode.small:links_count:add",
    "inode.big:block[11]:random",
    "inode.dir:parent:random",
    "inode.many:size:sub",
    "indirect:ptr[0]:ones",
    "dirpage:magic:zeroes",
    "dirent:ino:add",
    "xattr:checksum:lastbit",
    "jheader:commit:random",
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return FZ.build_pristine(str(tmp_path_factory.mktemp("fuzz"))), U.load_rows()


def _cases(p: FZ.Pristine) -> list[tuple]:
    rng = random.Random(7)
    out = {}
    for t in p.targets:
        fields = FZ.fields_of(t, p.block_size, False, p.image)
        f = rng.choice(fields)
        verb = rng.choice(FZ.VERBS)
        out[f"{t.label}:{f.path}:{verb}"] = (t, f, verb)
    by_label = {t.label: t for t in p.targets}
    for case in FIXED:
        label, path, verb = case.split(":")
        t = by_label[label]
        out[case] = (t, fp.resolve_one(t.type_name, path, p.block_size), verb)
    return sorted(out.items())


def test_targets_cover_every_structure(pristine):
    p, _rows = pristine
    types = {t.type_name for t in p.targets}
    wanted = set(fmt.STRUCTURES) - {"quota_record", "journal_entry"}  # quota: --quota; entries via journal_slot
    assert wanted | {"indirect", "radix_node"} <= types
    kinds = {t.state.ftype for t in p.targets if t.type_name == "inode"}
    assert kinds == set(fmt.VALID_FILE_TYPES)


def test_unjudged_table_is_used(pristine):
    _p, rows = pristine
    st = U.ObjectState("inode", ftype=fmt.S_IFREG)
    assert U.unjudged(rows, st, "mtime", b"\0" * 8, b"\1" + b"\0" * 7)
    assert U.unjudged(rows, st, "size", (5).to_bytes(8, "little"), (6).to_bytes(8, "little"))
    assert not U.unjudged(rows, st, "size", (5).to_bytes(8, "little"), (4).to_bytes(8, "little"))
    assert not U.unjudged(rows, st, "mode", (0o100644).to_bytes(2, "little"), (0o040644).to_bytes(2, "little"))
    assert U.unjudged(rows, st, "mode", (0o100644).to_bytes(2, "little"), (0o100600).to_bytes(2, "little"))
    assert not U.unjudged(rows, st, "reserved0", b"\0\0", b"\1\0")


def test_fuzz_subset(pristine, tmp_path):
    p, rows = pristine
    image = str(tmp_path / "case.img")
    summary = C.Summary("fuzz subset")
    for case_id, (t, f, verb) in _cases(p):
        summary.cases += 1
        out = FZ.run_case(p, t, f, verb, image, rows)
        summary.detections += out.detected
        summary.survivors += out.survivor
        if out.failure:
            summary.fail(case_id, out.failure)
    assert summary.detections >= len(FIXED)
    assert not summary.failures, summary.table(replay="python -m campaigns.fuzz_fields --case '{case}' -v")


def test_campaign_cli_replays_one_case(capsys):
    assert FZ.main(["--case", "gc0:free_blocks:add"]) == 0
    out = capsys.readouterr().out
    assert "fuzz_fields" in out and "failures" in out
    args = FZ.parser().parse_args(["--case", "gc0:free_blocks:add"])
    assert isinstance(args, argparse.Namespace)
