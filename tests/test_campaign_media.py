"""Media errors: bad-block lists, what a bad range hits, the poisoned device, fsck over bad ranges.

Fast subset of campaigns/media_errors: two kinds of bad block through fsck in
a poisoned child process (a read of a bad page kills it, as poisoned pmem would).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaigns import media_errors as ME  # noqa: E402
from nvfs_tools import badblocks as BB  # noqa: E402
from nvfs_tools.device import Device, MediaError  # noqa: E402
from nvfs_tools.volume import Volume  # noqa: E402


def test_parse_both_formats():
    text = "# from sysfs\n8 2\n\n0x1000-0x1fff  # a page\n100-199\n"
    assert BB.parse(text) == [(100, 100), (4096, 4096)]  # sectors 8..9 lie inside 0x1000..0x1fff
    assert BB.parse("8 2\n10 2\n") == [(4096, 2048)]  # touching ranges merge


@pytest.mark.parametrize("bad", ["8", "8 x", "200-100", "8 0", "-5 2", "1 2 3"])
def test_parse_rejects_garbage(bad):
    with pytest.raises(BB.BadBlocksError, match="line 1"):
        BB.parse(bad + "\n")


def test_load_errors(tmp_path):
    with pytest.raises(BB.BadBlocksError, match="no such"):
        BB.load(str(tmp_path / "missing"))
    with pytest.raises(BB.BadBlocksError, match="directory"):
        BB.load(str(tmp_path))
    p = tmp_path / "bin"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BB.BadBlocksError):
        BB.load(str(p))


def test_format_roundtrip():
    ranges = [(4096, 512), (1 << 20, 4096)]
    assert BB.parse(BB.format_ranges(ranges)) == ranges


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    img = str(tmp_path_factory.mktemp("media") / "p.img")
    return img, ME.pristine_image(img), ME.plan(img)


def test_describe_names_owner_of_every_kind(pristine):
    img, _tree, cases = pristine
    kinds = {c.kind for c in cases}
    assert {"file data", "indirect block", "directory page", "xattr block", "inode table", "journal"} <= kinds
    with Volume.open(img) as vol:
        bs = vol.block_size
        for case in cases:
            ranges = [(case.block * bs + 100, 8)]
            BB.apply(vol.dev, ranges)
            hits = BB.describe(vol, ranges)
            vol.dev.badblocks = []
            assert [h.block for h in hits] == [case.block]
            text = hits[0].describe()
            if case.kind == "inode table":
                assert "inode table" in text and set(hits[0].inodes) == case.hit_inos
            elif case.hit_inos:
                assert set(hits[0].inodes) & case.hit_inos, text
                assert any(e in text for e in case.expect), text
            else:
                assert case.kind.split()[0] in text or case.kind == "free space" and "free space" in text, text


def test_device_read_refuses_bad_range(pristine):
    img, _tree, _cases = pristine
    with Device(img) as dev:
        BB.apply(dev, [(8192 + 10, 1)])
        dev.read(0, 8192)
        with pytest.raises(MediaError, match="bad media"):
            dev.read(8000, 500)


def test_poison_kills_a_reader(pristine, tmp_path):
    """The test device layer really makes the pages inaccessible (any path of access)."""
    img, _tree, _cases = pristine
    code = (
        "import sys; from nvfs_tools.device import Device; from nvfs_tools import badblocks as BB\n"
        f"dev = Device({img!r}); BB.poison(dev, [(3 * 4096 + 7, 1)])\n"
        "bytes(dev.view[0:4096]); print('first page fine', flush=True)\n"
        "bytes(dev.view[3 * 4096 : 3 * 4096 + 8]); print('NOT REACHED', flush=True)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "first page fine" in run.stdout and "NOT REACHED" not in run.stdout
    assert run.returncode < 0


@pytest.mark.parametrize("kind", ["file data", "inode table"])
def test_fsck_over_bad_range(pristine, tmp_path, kind):
    """fsck -fn / -fy with --badblocks: finishes without touching the range and names what it hits."""
    img, tree, cases = pristine
    case = next(c for c in cases if c.kind == kind)
    why = ME.run_case(case, img, tree, str(tmp_path))
    assert why is None, why


def test_describe_never_touches_the_bad_range(pristine):
    """describe_device() on a poisoned device (a child process: a touch would kill it) for every kind."""
    img, _tree, cases = pristine
    blocks = [c.block for c in cases if c.kind not in ("backup superblock", "inode table")]
    itable = next(c.block for c in cases if c.kind == "inode table")
    code = (
        "import sys; from nvfs_tools.device import Device; from nvfs_tools import badblocks as BB\n"
        f"dev = Device({img!r}); ranges = [(b * 4096 + 64, 8) for b in {blocks!r}]\n"
        "BB.poison(dev, ranges)\n"
        "hits = BB.describe_device(dev)\n"
        "print('\\n'.join(BB.report_lines(hits)))\n"
        f"print(BB.report_lines(BB.describe_device(dev, [({itable} * 4096, 4096)]))[0])\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert out.count("bad block ") == len(set(blocks)) + 1
    # /docs has a bad page too: big.bin (inode 14) is found as an owner, its name cannot be
    for word in ("inode table", "inode 14 (no name found)", "/xattr-file", "directory page", "radix node", "free"):
        assert word in out, out
