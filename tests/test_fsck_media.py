"""fsck.nvfs and bad media: the --badblocks option, the media-safe device, more kinds through a poisoned fsck."""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaigns import common as C  # noqa: E402
from campaigns import media_errors as ME  # noqa: E402
from nvfs_tools import badblocks as BB  # noqa: E402
from nvfs_tools.check import Options, check  # noqa: E402
from nvfs_tools.check.media import MediaSafeDevice, spans  # noqa: E402
from nvfs_tools.device import Device  # noqa: E402


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    img = str(tmp_path_factory.mktemp("fsckmedia") / "p.img")
    return img, ME.pristine_image(img), ME.plan(img)


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _fsck(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nvfs_tools.fsck", *args], capture_output=True, text=True, timeout=120)


def test_spans_round_out_and_merge():
    assert spans([(4096 + 10, 1), (8192, 1), (50000, 10)], 4096, 1 << 20) == [(4096, 12288), (49152, 53248)]
    assert spans([(1 << 20, 5)], 4096, 1 << 20) == []  # past the end: nothing


@pytest.mark.parametrize("content", ["7 1\nnot a range\n", None, "dir"])
def test_bad_list_is_an_operational_error(pristine, tmp_path, content):
    img, _tree, _cases = pristine
    work = str(tmp_path / "t.img")
    C.copy_image(img, work)
    bad = tmp_path / "bad.txt"
    if content == "dir":
        bad.mkdir()
    elif content is not None:
        bad.write_text(content)
    before = _digest(work)
    run = _fsck("-fy", "--badblocks", str(bad), work)
    assert run.returncode == 8, run
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr
    assert str(bad) in run.stderr
    assert _digest(work) == before


def test_badblocks_option_needs_a_file():
    run = _fsck("-n", "--badblocks")
    assert run.returncode == 16 and "--badblocks needs a FILE" in run.stderr


def test_safe_device_zeros_and_drops_writes(pristine, tmp_path):
    img, _tree, _cases = pristine
    work = str(tmp_path / "t.img")
    C.copy_image(img, work)
    with Device(work, writable=True) as dev:
        original = dev.read(0, 4 * 4096)
        BB.apply(dev, [(2 * 4096 + 100, 1)])
        safe = MediaSafeDevice(dev)
        assert safe.bad_blocks(4096) == {2}
        got = safe.read(4096, 3 * 4096)
        assert got[:4096] == original[4096:8192] and got[4096:8192] == bytes(4096)
        assert got[8192:] == original[12288:16384]
        assert struct.unpack_from("<Q", safe.view, 2 * 4096)[0] == 0  # a real buffer, zero there
        safe.write(2 * 4096 - 8, b"\x11" * 16)  # straddles into the bad block
        assert safe.read(2 * 4096 - 8, 8) == b"\x11" * 8
        dev.badblocks = []
        assert dev.read(2 * 4096, 8) == original[8192 : 8192 + 8]  # the bad half was never stored


def test_json_and_sysfs_list_merge(pristine, tmp_path, monkeypatch):
    """A list already on the device (as sysfs gives) and --badblocks ranges are both reported."""
    from nvfs_tools.check import runner

    img, _tree, cases = pristine
    work = str(tmp_path / "t.img")
    C.copy_image(img, work)
    data = next(c for c in cases if c.kind == "file data")
    xattr = next(c for c in cases if c.kind == "xattr block")
    real_open = runner._open

    def sysfs_open(device, options):  # noqa: ANN001, ANN202
        dev = real_open(device, options)
        dev.badblocks = [(data.block * 4096, 512)]
        return dev

    monkeypatch.setattr(runner, "_open", sysfs_open)
    out = io.StringIO()
    report = check(work, Options(mode="n", badblocks=((xattr.block * 4096 + 8, 8),)), out=out)
    media = [f for f in report.findings if f.code == "MEDIA_BAD_BLOCK"]
    assert sorted(f.details["block"] for f in media) == sorted([data.block, xattr.block])
    assert report.exit_code() == 4
    text = out.getvalue()
    assert "/xattr-file" in text and "bad media listed, check forced" in text


@pytest.mark.parametrize("kind", ["directory page", "xattr block", "block bitmap", "indirect block"])
def test_poisoned_fsck_more_kinds(pristine, tmp_path, kind):
    """As tests/test_campaign_media.py's subset, for the kinds it leaves to the campaign script."""
    img, tree, cases = pristine
    case = next(c for c in cases if c.kind == kind)
    why = ME.run_case(case, img, tree, str(tmp_path))
    assert why is None, why


def test_safe_device_big_granule_mirrors_writes(pristine, tmp_path):
    """The devdax-style overlay (a 2 MiB private chunk around the bad block) stays equal to the device."""
    img, _tree, _cases = pristine
    work = str(tmp_path / "t.img")
    C.copy_image(img, work)
    with Device(work, writable=True) as dev:
        original = dev.read(0, 2 << 20)
        BB.apply(dev, [(3 * 4096, 4096)])
        safe = MediaSafeDevice(dev, granules=(2 << 20,))
        assert safe.read(0, 2 << 20) == original[: 3 * 4096] + bytes(4096) + original[4 * 4096 :]
        safe.write(100 * 4096, b"new bytes")
        safe.zero_range(0, 8)
        assert safe.read(100 * 4096, 9) == b"new bytes" and safe.read(0, 8) == bytes(8)
        assert dev.read(100 * 4096, 9) == b"new bytes"


def test_repair_with_big_granule(pristine, tmp_path, monkeypatch):
    """A bad directory page repaired in-process with 2 MiB overlays: lost+found gets the children, then clean."""
    from nvfs_tools.check import media

    img, tree, cases = pristine
    case = next(c for c in cases if c.kind == "directory page")
    work = str(tmp_path / "t.img")
    C.copy_image(img, work)
    with Device(work, writable=True) as dev:
        dev.write(case.block * 4096, b"\xa5" * 4096)  # what the lost page may hold
    monkeypatch.setattr(media, "GRANULES", (2 << 20,))
    ranges = ((case.block * 4096, 4096),)
    out = io.StringIO()
    report = check(work, Options(mode="y", force=True, badblocks=ranges), out=out)
    assert report.exit_code() == 1, out.getvalue()
    assert any(f.code == "MEDIA_BAD_BLOCK" and "/docs" in f.details["where"] for f in report.findings)
    again = check(work, Options(mode="n", force=True), out=io.StringIO())
    assert again.exit_code() == 0 and not again.findings
    got = C.snapshot(work, skip_lost_found=False)
    lost = {nd.ino for p, nd in got.items() if p.startswith(b"/lost+found/")}
    docs_children = {nd.ino for p, nd in tree.items() if p.startswith(b"/docs/")}
    assert lost and lost <= docs_children


@pytest.mark.parametrize("kind", ["block bitmap", "inode table"])
def test_repairs_into_a_bad_block_are_dropped_and_left_unfixed(pristine, tmp_path, kind):
    """-y never stores into the bad block; what had to be stored there stays an uncorrected error (exit 4)."""
    img, _tree, cases = pristine
    case = next(c for c in cases if c.kind == kind)
    work = str(tmp_path / "t.img")
    C.copy_image(img, work)
    with Device(work) as dev:
        before = dev.read(case.block * 4096, 4096)
    out = io.StringIO()
    report = check(work, Options(mode="y", force=True, badblocks=((case.block * 4096 + 512, 512),)), out=out)
    assert report.exit_code() & 4, out.getvalue()
    media = [f for f in report.findings if f.code == "MEDIA_BAD_BLOCK"]
    assert [f.details["block"] for f in media] == [case.block] and not media[0].fixed
    assert "were dropped" in out.getvalue()
    with Device(work) as dev:
        assert dev.read(case.block * 4096, 4096) == before
