"""Bad input for every tool: one clear line on stderr, the documented exit code, no traceback, nothing written.

Every tool (mkfs.nvfs, fsck.nvfs -n / -y, debugfs.nvfs read-only / -w) is run
as the installed console script on: a missing path, a FIFO, a /proc file, a
zero-length file, a truncated NVFS image, an ext4 image, a directory,
/dev/null, a mounted loop device, a read-only loop device (for the tools that
write) and absurd options.  Documented exit codes: mkfs 1 (docs/mkfs.md),
fsck 8 operational / 16 usage (docs/fsck.md), debugfs 8 cannot open / 16
usage (``debugfs.nvfs --help``).  Every file and device is hashed before and
after: bad input must never change a byte.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaigns import common as C  # noqa: E402

BIN = os.path.dirname(sys.executable)

#: tool -> (command line before the device, exit code for a device it cannot use)
TOOLS = {
    "mkfs": (["mkfs.nvfs", "-q"], 1),
    "fsck-n": (["fsck.nvfs", "-n"], 8),
    "fsck-y": (["fsck.nvfs", "-y"], 8),
    "debugfs": (["debugfs.nvfs", "-R", "stats"], 8),
    "debugfs-w": (["debugfs.nvfs", "-w", "-R", "stats"], 8),
}
WRITERS = ("mkfs", "fsck-y", "debugfs-w")
PROGS = {"mkfs": "mkfs.nvfs", "fsck-n": "fsck.nvfs", "fsck-y": "fsck.nvfs", "debugfs": "debugfs.nvfs"}


def _exe(name: str) -> str:
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else shutil.which(name) or name


def run(argv: list[str]) -> subprocess.CompletedProcess:
    cmd = [_exe(argv[0]), *argv[1:]]
    env = dict(os.environ, NVFS_NO_PROGRESS="1")
    env.pop("NVFS_DEBUG", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env)


def digest(path: str) -> str | None:
    if not os.path.exists(path) or os.path.isdir(path) or path.startswith("/proc") or path == "/dev/null":
        return None
    if Path(path).is_fifo():
        return "fifo"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def assert_refused(tool: str, target: str, res: subprocess.CompletedProcess, code: int) -> None:
    prog = PROGS.get(tool, tool.split("-")[0] + ".nvfs")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == code, f"{tool} {target}: exit {res.returncode}, want {code}; stderr {res.stderr!r}"
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert len(lines) == 1, f"{tool} {target}: want one line on stderr, got {lines!r}"
    assert lines[0].startswith(f"{prog}: "), lines[0]
    assert len(lines[0]) < 300


# ---------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    nvfs = C.make_fs(str(d / "good.img"))
    trunc = str(d / "truncated.img")
    shutil.copyfile(nvfs, trunc)
    os.truncate(trunc, 1 << 20)
    empty = str(d / "empty.img")
    open(empty, "wb").close()
    fifo = str(d / "fifo")
    os.mkfifo(fifo)
    ext4 = str(d / "ext4.img")
    with open(ext4, "wb") as f:
        f.truncate(8 << 20)
    mke2fs = shutil.which("mke2fs")
    if mke2fs:
        subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", ext4], check=True, capture_output=True)
    return {
        "missing": str(d / "no" / "such.img"),
        "fifo": fifo,
        "proc": "/proc/version",
        "empty": empty,
        "truncated": trunc,
        "ext4": ext4 if mke2fs else None,
        "directory": str(d),
        "devnull": "/dev/null",
        "nvfs": nvfs,
    }


# What each tool must do with each input: the tool's error code, except where the input is
# acceptable to that tool (an ext4 or truncated NVFS image is a valid mkfs target only with -F).
CASES = ["missing", "fifo", "proc", "empty", "truncated", "ext4", "directory", "devnull"]


@pytest.mark.parametrize("tool", list(TOOLS))
@pytest.mark.parametrize("what", CASES)
def test_unusable_device(inputs, tool, what):
    target = inputs[what]
    if target is None:
        pytest.skip("mke2fs is not installed")
    argv, code = TOOLS[tool]
    before = digest(target)
    if tool.startswith("debugfs") and what == "truncated":
        # debugfs exists to look at damaged images: it opens a truncated one with a one-line warning
        res = run([*argv, target])
        assert res.returncode in (0, 8) and "Traceback" not in res.stderr
        assert len(res.stderr.splitlines()) == 1 and "larger than" in res.stderr, res.stderr
        assert digest(target) == before
        return
    if tool == "mkfs" and what == "missing":
        # a size makes mkfs create the image: the missing parent directory must stop it
        res = run([*argv, target, "8M"])
    else:
        res = run([*argv, target])
    assert_refused(tool, what, res, code)
    assert digest(target) == before
    if what == "missing":
        assert not os.path.exists(os.path.dirname(target))


def test_nothing_written_to_foreign_filesystems(inputs):
    """mkfs without -F on an ext4 image or an NVFS image: refused, image byte-identical."""
    for what in ("ext4", "nvfs"):
        target = inputs[what]
        if target is None:
            continue
        before = digest(target)
        res = run(["mkfs.nvfs", "-q", target])
        assert_refused("mkfs", what, res, 1)
        assert digest(target) == before


ABSURD = [
    ("mkfs", ["-b", "3000"], 1),
    ("mkfs", ["-b", "2G"], 1),
    ("mkfs", ["-N", "-5"], 1),
    ("mkfs", ["-i", "1"], 1),
    ("mkfs", ["--bogus"], 1),
    ("mkfs", ["-O", "nonsense"], 1),
    ("mkfs", ["-E", "hash_seed=zz"], 1),
    ("fsck-n", ["-y"], 16),
    ("fsck-n", ["-C", "abc"], 16),
    ("fsck-n", ["--bogus"], 16),
    ("fsck-n", ["-Z"], 16),
    ("debugfs", ["-f", "/nonexistent"], 16),
    ("debugfs", ["--bogus"], 16),
]


@pytest.mark.parametrize("tool,extra,code", ABSURD, ids=[f"{t}{' '.join(e)}" for t, e, _ in ABSURD])
def test_absurd_options(inputs, tool, extra, code):
    argv, _ = TOOLS[tool]
    target = inputs["nvfs"]
    before = digest(target)
    res = run([argv[0], *extra, *argv[1:], target])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    prog = PROGS.get(tool, "debugfs.nvfs")
    if lines and lines[0].startswith("Usage: "):
        # click's usual report of an unknown option: usage, hint, then the one line that says what is wrong
        assert len(lines) == 3 and lines[2].startswith("Error: ") and prog in lines[0], lines
    else:
        # fsck(8) style: the message, then possibly the usage line
        assert 1 <= len(lines) <= 2 and lines[0].startswith(prog), lines
    assert digest(target) == before


def test_fsck_usage_errors(inputs):
    for argv in (["fsck.nvfs", "-n"], ["fsck.nvfs", "-n", inputs["nvfs"], inputs["nvfs"]]):
        res = run(argv)
        assert res.returncode == 16 and "Traceback" not in res.stderr
        assert res.stderr.startswith("fsck.nvfs: ")


# ---------------------------------------------------------------------------------------------------
# Loop devices
# ---------------------------------------------------------------------------------------------------


@contextmanager
def loop(path: str, *extra: str):
    if not shutil.which("losetup"):
        pytest.skip("losetup is not installed")
    done = subprocess.run(["losetup", "-f", "--show", *extra, path], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot attach a loop device: {done.stderr.strip()}")
    dev = done.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@pytest.mark.loopdev
def test_read_only_loop_device_for_writes(inputs, tmp_path):
    img = str(tmp_path / "ro.img")
    shutil.copyfile(inputs["nvfs"], img)
    before = digest(img)
    with loop(img, "-r") as dev:
        for tool in WRITERS:
            argv, code = TOOLS[tool]
            res = run([*argv, "-F", dev] if tool == "mkfs" else [*argv, dev])
            assert_refused(tool, "read-only loop", res, code)
        ok = run(["fsck.nvfs", "-n", dev])  # reading is fine
        assert ok.returncode == 0, ok.stdout + ok.stderr
    assert digest(img) == before


@pytest.mark.loopdev
def test_mounted_loop_device(inputs, tmp_path):
    if inputs["ext4"] is None:
        pytest.skip("mke2fs is not installed")
    img = str(tmp_path / "m.img")
    shutil.copyfile(inputs["ext4"], img)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with loop(img) as dev:
        done = subprocess.run(["mount", dev, str(mnt)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount {dev}: {done.stderr.strip()}")
        try:
            before = digest(dev)
            for tool in TOOLS:
                argv, code = TOOLS[tool]
                res = run([*argv, "-F", dev] if tool == "mkfs" else [*argv, dev])
                assert_refused(tool, "mounted loop", res, code)
            assert digest(dev) == before
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
