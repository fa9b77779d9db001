"""The f_* corpus: each case damages the populated base image in one precise way.

Per case: ``fsck -n`` finds the damage and writes nothing (image hash
unchanged); ``fsck -y`` (first run) prints exactly ``expect.1`` and exits with
the case's code; a second ``fsck -fn`` is clean (exit 0); every file the
damage did not touch reads back byte-identical through the library.
A case may pin what ``fsck -n`` finds (``FINDINGS_N``, problem codes in order).
``FSCK_REGEN=1`` rewrites the expect.1 files (review the diff!).
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fcases"))
import base  # noqa: E402

from nvfs_tools.check import Options, check  # noqa: E402
from nvfs_tools.check.problems import PROBLEMS  # noqa: E402

CASES_DIR = Path(__file__).parent / "fcases"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "damage.py").exists())
DEV = "test.img"


@pytest.fixture(scope="session")
def base_image():
    tmp = tempfile.mkdtemp(prefix="fcases-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    path = os.path.join(tmp, "base.img")
    files = base.build_base(path)
    yield path, files
    shutil.rmtree(tmp, ignore_errors=True)


def load_case(name: str):
    spec = importlib.util.spec_from_file_location(f"fcase_{name}", CASES_DIR / name / "damage.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_fsck(path: str, mode: str, force: bool = True, **opts) -> tuple[int, str, object]:
    out = io.StringIO()
    report = check(path, Options(mode=mode, force=force, **opts), out=out)
    return report.exit_code(), out.getvalue().replace(path, DEV), report


digest = base.digest


def make_case(base_image, name: str, tmp_path: Path):
    src, files = base_image
    case = load_case(name)
    img = str(tmp_path / "test.img")
    base.copy_image(src, img)
    case.damage(base.Damage(img))
    return case, img, files


def filtered(text: str) -> str:
    """Output with what changes between runs removed (times)."""
    return re.sub(r"\d+\.\d+ s\b", "N s", text)


@pytest.mark.parametrize("name", CASES)
def test_case(base_image, name, tmp_path):
    case, img, files = make_case(base_image, name, tmp_path)
    opts = getattr(case, "OPTIONS", {})
    force = getattr(case, "FORCE", True)
    before = digest(img)
    code_n, out_n, report_n = run_fsck(img, "n", force, **opts)
    assert digest(img) == before, "fsck -n wrote to the image"
    assert code_n == getattr(case, "EXIT_N", 4), out_n
    if hasattr(case, "FINDINGS_N"):  # what -n must find, and nothing else
        assert [f.code for f in report_n.findings] == case.FINDINGS_N, out_n
    code1, out1, report = run_fsck(img, "y", force, **opts)
    expect = CASES_DIR / name / "expect.1"
    if os.environ.get("FSCK_REGEN") == "1":
        expect.write_text(filtered(out1) + f"Exit status is {code1}\n")
    assert filtered(out1) + f"Exit status is {code1}\n" == expect.read_text()
    assert code1 == getattr(case, "EXIT", 1)
    code2, out2, report2 = run_fsck(img, "n", True)
    assert code2 == 0 and not report2.findings, out2
    bad = base.read_back(img, files, set(getattr(case, "TOUCHED", ())))
    assert not bad, bad


@pytest.mark.parametrize("name", CASES)
def test_fast_path_never_passes_damage(base_image, name, tmp_path):
    """The bulk verification must say "not proven" on every damaged image (and prove the clean one)."""
    from nvfs_tools.check import fastpath
    from nvfs_tools.check.image import Image
    from nvfs_tools.check.pass0_super import load_superblock
    from nvfs_tools.device import Device

    case, img, _ = make_case(base_image, name, tmp_path)
    with Device(img) as dev:
        static, raw, _reason, _off = load_superblock(dev, False)
        image = Image(dev, static, raw)
        proven = fastpath.verify(image, quota=False) is not None
        del image
    report = check(img, Options(mode="n", force=True), out=io.StringIO())
    pass0 = any(PROBLEMS[f.code].pass_no == 0 for f in report.findings)
    if name == "f_clean" or getattr(case, "IMAGE_CLEAN", False):  # the trouble is only in the listed media
        assert proven
    elif not pass0:  # the bulk path runs only when pass 0 found nothing
        assert not proven


@pytest.mark.parametrize("name", ["f_clean", "f_dup_block", "f_bad_tree", "f_orphan_delete", "f_multi_damage"])
def test_case_pure_subprocess(base_image, name, tmp_path):
    """The same cases through the console script with the pure-Python scan backend."""
    case, img, files = make_case(base_image, name, tmp_path)
    env = dict(os.environ, NVFS_PURE="1")
    args = [sys.executable, "-m", "nvfs_tools.fsck", "-fy", img]
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    expect = (CASES_DIR / name / "expect.1").read_text()
    assert filtered(run.stdout.replace(img, DEV)) + f"Exit status is {run.returncode}\n" == expect, run.stderr
    again = subprocess.run([sys.executable, "-m", "nvfs_tools.fsck", "-fn", img], capture_output=True, env=env)
    assert again.returncode == 0
    assert b"Pass 5" in again.stdout
    assert not base.read_back(img, files, set(getattr(case, "TOUCHED", ())))
