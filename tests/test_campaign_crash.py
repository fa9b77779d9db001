"""Crash consistency, fast subset of campaigns/crash_replay (the full sweep is the script).

The recorder must see every byte the library writes (else the replay is
blind), crash images must be built as the persistence model says, and every
sampled crash state of a random operation sequence must be repaired by fsck
to a clean filesystem whose visible tree is the one before or after the
operation in flight.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaigns import common as C  # noqa: E402
from campaigns import crash_replay as CR  # noqa: E402
from nvfs_tools import crashsim  # noqa: E402
from nvfs_tools import format as fmt  # noqa: E402
from nvfs_tools.volume import Volume  # noqa: E402


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("crash"))
    work = os.path.join(d, "work.img")
    CR.build_base(work, 1)
    rec = CR.record_ops(work, 8, seed=1)
    return d, work, rec


def test_recorder_sees_every_write(recorded):
    _d, work, rec = recorded
    assert rec.log.writes > 0 and rec.log.barriers > len(rec.ops)
    assert crashsim.verify_log(rec.log, C.read_image(work)) is None


def test_verify_log_notices_unrecorded_writes(recorded):
    _d, work, rec = recorded
    final = bytearray(C.read_image(work))
    final[4096 * 7 + 5] ^= 0xFF
    assert "block 7" in crashsim.verify_log(rec.log, bytes(final))


def test_crash_image_model(tmp_path):
    """Barrier cuts are exact prefixes; a random cut holds, per word, one value the word went through."""
    img = C.make_fs(str(tmp_path / "m.img"))
    vol = crashsim.record_volume(img)
    base = bytes(vol.dev.log.base)
    vol.store_u64(1 << 16, 1)
    vol.store_u64(1 << 16, 2)
    vol.store_u64((1 << 16) + 8, 3)
    vol.barrier()
    vol.store_u64((1 << 16) + 16, 4)
    log = vol.dev.log
    vol.close()
    word = lambda b, a: int.from_bytes(b[a : a + 8], "little")  # noqa: E731
    at_b0 = log.crash_image(crashsim.Cut(0, "barrier"))
    assert bytes(at_b0) == base
    at_b1 = log.crash_image(crashsim.Cut(1, "barrier"))
    assert (word(at_b1, 1 << 16), word(at_b1, (1 << 16) + 8), word(at_b1, (1 << 16) + 16)) == (2, 3, 0)
    seen = set()
    for seed in range(60):
        img_r = log.crash_image(crashsim.Cut(0, "random", seed=seed))
        seen.add((word(img_r, 1 << 16), word(img_r, (1 << 16) + 8)))
        assert word(img_r, (1 << 16) + 16) == 0  # the next epoch never leaks into this one
    assert {(0, 0), (2, 3)} <= seen and any(a == 1 for a, _ in seen)
    prefix = log.crash_image(crashsim.Cut(0, "prefix", prefix=1))
    assert word(prefix, 1 << 16) == 1 and word(prefix, (1 << 16) + 8) == 0


def test_fail_after_stops_before_the_write(tmp_path):
    img = C.make_fs(str(tmp_path / "f.img"))
    vol = crashsim.record_volume(img, fail_after=3)
    with pytest.raises(crashsim.SimulatedCrash):
        for i in range(10):
            vol.create(fmt.ROOT_INO, b"f%d" % i, 0o644)
    assert vol.dev.log.writes == 3
    vol.dev.close()


def _args(**kw) -> argparse.Namespace:
    defaults = dict(randoms=1, prefixes=1, case=None, max_cuts=0, populate=False, verbose=False, force=True)
    defaults.update(kw)
    return argparse.Namespace(**defaults)


def test_sampled_crash_states_recover(recorded):
    """Every barrier cut plus random reorder/prefix cuts of an 8-operation sequence (fsck -fy, then -fn)."""
    d, _work, rec = recorded
    summary = C.Summary("test")
    CR.run_recording(rec, d, summary, 1, _args(max_cuts=45))
    assert summary.cases >= 40
    assert not summary.failures, summary.table()


def test_crash_image_is_not_marked_clean(recorded):
    """spec/operations.md 10: a writable open clears CLEAN, so a plain `fsck -y` after a crash does a full check.

    Cut in the middle of the recorded operations, the superblock state must not
    say CLEAN (else fsck's clean shortcut skips a filesystem that needs repair).
    """
    _d, _work, rec = recorded
    mid = rec.op_epochs[len(rec.op_epochs) // 2][0] + 1
    image = rec.log.crash_image(crashsim.Cut(mid, "barrier"))
    off = fmt.SB_DYNAMIC_OFFSET + fmt.field_offset(fmt.SuperblockDynamic, "state")
    assert not image[off] & fmt.STATE_CLEAN


def test_populate_crash_states(tmp_path):
    from nvfs_tools import hosttree

    src = tmp_path / "src"
    hosttree.make_small_files_tree(str(src), 12, 3)
    work = C.make_fs(str(tmp_path / "p.img"))
    rec = CR.record_populate(work, str(src))
    assert crashsim.verify_log(rec.log, C.read_image(work)) is None
    summary = C.Summary("test")
    CR.run_recording(rec, str(tmp_path), summary, 2, _args(max_cuts=15, populate=True))
    assert summary.cases >= 10 and not summary.failures, summary.table()
    with Volume.open(work) as vol:  # the recorded run itself produced the whole tree
        assert len(list(vol.listdir(fmt.ROOT_INO))) > 1


def test_cut_ids_round_trip_and_cover_every_barrier(recorded):
    _d, _work, rec = recorded
    cuts = crashsim.cut_points(rec.log, seed=3)
    assert {c.epoch for c in cuts if c.kind == "barrier"} == set(range(len(rec.log.epochs) + 1))
    assert any(c.kind == "random" for c in cuts) and any(c.kind == "prefix" for c in cuts)
    for c in cuts:
        assert crashsim.Cut.parse(c.case_id) == c


def test_recording_patches_fsck_and_restores(tmp_path):
    from nvfs_tools.check import runner

    img = C.make_fs(str(tmp_path / "r.img"))
    original = runner._open
    with crashsim.recording() as opened:
        run = C.fsck(img, "y", force=True)
    assert runner._open is original
    assert run.code == 0 and len(opened) == 1
    # a clean filesystem: fsck -fy writes only its end-of-check superblock fields
    assert opened[0].log.writes >= 1
    assert crashsim.verify_log(opened[0].log, C.read_image(img)) is None
