"""The shared CLI helpers (nvfs_tools.cli) and how mkfs.nvfs reports failures."""

from __future__ import annotations

import click
import pytest
from test_mkfs_helpers import mkfs

from nvfs_tools import cli, layout
from nvfs_tools.errors import CorruptError, UsageError


@pytest.mark.parametrize(
    ("text", "value"),
    [("4096", 4096), ("1K", 1024), ("512M", 512 << 20), ("1G", 1 << 30), ("2TiB", 2 << 40), ("3gb", 3 << 30)],
)
def test_parse_size(text, value):
    assert cli.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "G", "1.5G", "-1G", "1X", "1 G B"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError, match="invalid size"):
        cli.parse_size(text)


def test_format_size():
    assert cli.format_size(1 << 30) == "1.0 GiB"
    assert cli.format_size(100) == "100 B"


def _command(exc):
    @click.command()
    def cmd():
        raise exc

    return cmd


def test_run_maps_errors_to_one_line(capsys):
    assert cli.run(_command(CorruptError("bad\nthing")), "tool", args=[]) == CorruptError.exit_code
    err = capsys.readouterr().err
    assert err == "tool: bad thing\n"
    assert cli.run(_command(CorruptError("x")), "tool", args=[], error_code=1) == 1
    assert cli.run(_command(UsageError("bad option")), "tool", args=[]) == 16


def test_run_interrupt_and_internal_error(capsys):
    assert cli.run(_command(KeyboardInterrupt()), "fsck.nvfs", args=[], interrupt_code=32) == 32
    assert cli.run(_command(RuntimeError("boom")), "tool", args=[]) == 8
    err = capsys.readouterr().err
    assert "tool: internal error: RuntimeError: boom" in err and "Traceback" not in err


def test_progress_is_off_without_a_terminal(capsys):
    bar = cli.progress(10, "x")
    bar.update(5)
    bar.close()
    assert capsys.readouterr().err == ""


def test_mkfs_interrupted_removes_the_image_it_created(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(layout, "make_filesystem", interrupted)
    img = tmp_path / "x.img"
    res = mkfs(img, "64M")
    assert res.code == 130 and "interrupted" in res.err
    assert not img.exists()


def test_mkfs_internal_error_is_one_line(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(layout, "make_filesystem", broken)
    res = mkfs(tmp_path / "x.img", "64M")
    assert res.code == 1 and "internal error" in res.err and res.err.count("\n") == 1
    assert not (tmp_path / "x.img").exists()


def test_random_uuid_is_version_4():
    import uuid

    from nvfs_tools.mkfs import random_uuid, uuid_text

    seen = set()
    for _ in range(50):
        raw = random_uuid()
        u = uuid.UUID(bytes=raw)
        assert u.version == 4 and u.variant == uuid.RFC_4122 and uuid_text(raw) == str(u)
        seen.add(raw)
    assert len(seen) == 50


# mkfs.nvfs parses ordinary command lines without click (nvfs_tools.mkfs.fast_parse); what it
# accepts must mean exactly what click would make of it, and everything else is left to click.
_SAME_AS_CLICK = [
    ["img"],
    ["img", "64M"],
    ["-F", "-q", "img"],
    ["-Fq", "img", "1G"],
    ["img", "-F", "1G", "-q"],
    ["-b", "8192", "-N", "100", "img"],
    ["-b8192", "-Lmy label", "img"],
    ["--block-size=8192", "--label", "x", "--uuid=clear", "img"],
    ["-O", "quota", "-O", "^xattr", "-E", "discard", "--extended=journal_slots=4", "img"],
    ["-L", "first", "-L", "second", "img"],
    ["-qFL", "lab", "img"],
    ["-d", "/tmp", "--root-directory", "/usr", "img"],
    ["--force", "--dry-run", "--verbose", "--quiet", "img"],
    ["-i", "4096", "--", "img", "1G"],
    ["-U", "", "img"],
]


@pytest.mark.parametrize("argv", _SAME_AS_CLICK)
def test_fast_parse_means_what_click_means(argv):
    from nvfs_tools import mkfs as mkfs_module

    fast = mkfs_module.fast_parse(argv)
    assert fast is not None, f"{argv} should be parsed without click"
    ctx = mkfs_module.click_command().make_context("mkfs.nvfs", list(argv))
    assert fast == ctx.params


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["-h"],
        ["-V"],
        ["--version"],
        ["-x", "img"],
        ["--bogus", "img"],
        ["img", "1G", "extra"],
        ["-b"],
        ["img", "-L"],
        ["--force=yes", "img"],
        ["-L", "-F", "img"],
        ["-Fz", "img"],
        ["--", "-img"],
    ],
)
def test_fast_parse_leaves_the_rest_to_click(argv):
    from nvfs_tools.mkfs import fast_parse

    assert fast_parse(argv) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-x", "img"], "No such option '-x'"),
        (["img", "1G", "extra"], "Got unexpected extra argument"),
        (["img", "-L"], "requires an argument"),
        ([], "Missing argument"),
    ],
)
def test_click_still_reports_usage_mistakes(argv, message):
    result = mkfs(*argv)
    assert result.code == 1
    assert message in result.err


def test_help_and_version_come_from_click():
    from nvfs_tools import __version__

    help_text = mkfs("--help")
    assert help_text.code == 0 and "-d, --root-directory DIR" in help_text.out and "Exit status" in help_text.out
    version = mkfs("-V")
    assert version.code == 0 and version.out.strip() == f"mkfs.nvfs, version {__version__}"


@pytest.mark.parametrize(
    ("body", "code", "stderr"),
    [
        ("return 3", 3, ""),
        ("return None", 0, ""),
        ("sys.exit(4)", 4, ""),
        ("sys.exit('mkfs.nvfs: bad')", 1, "mkfs.nvfs: bad\n"),
        ("return 256 + 2", 2, ""),
    ],
)
def test_exit_fast_keeps_the_code_and_every_byte_written(body, code, stderr):
    """exit_fast (the console scripts' exit) skips the interpreter's finalization -- an atexit handler
    does not run -- but the exit code is sys.exit's and buffered output reaches a pipe whole."""
    import os
    import subprocess
    import sys

    program = (
        "import atexit, sys\n"
        "from nvfs_tools.cli import exit_fast\n"
        "atexit.register(lambda: print('finalized'))\n"
        "def main():\n"
        "    sys.stdout.write('x' * 200000)\n"
        f"    {body}\n"
        "exit_fast(main)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered: exit_fast must flush it
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, env=env)
    assert (done.returncode, done.stdout, done.stderr) == (code, "x" * 200000, stderr)


def test_console_scripts_use_exit_fast():
    """mkfs.nvfs and fsck.nvfs (setup.cfg) enter through console_main, which ends with exit_fast."""
    import configparser
    from pathlib import Path

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    scripts = dict(line.split(" = ") for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines())
    assert scripts["mkfs.nvfs"] == "nvfs_tools.mkfs:console_main"
    assert scripts["fsck.nvfs"] == "nvfs_tools.fsck:console_main"


@pytest.mark.parametrize(
    ("redirect", "returned", "code"),
    [(">&-", 4, 4), (">&-", 0, 0), ("> /dev/full", 0, 120), ("> /dev/full", 4, 4), ("| true", 0, 0)],
)
def test_exit_fast_when_stdout_is_closed_full_or_gone(redirect, returned, code):
    """No traceback when the tool started without a stdout (`>&-`) or its reader left (EPIPE: the code
    stays); output lost on a full device turns success into 120, as the interpreter's own final flush
    does, and keeps a failure's code."""
    import os
    import shlex
    import subprocess
    import sys

    program = (
        "import sys\n"
        "from nvfs_tools.cli import exit_fast\n"
        "def main():\n"
        "    if sys.stdout is not None:\n"
        "        sys.stdout.write('x' * 100)\n"
        f"    return {returned}\n"
        "exit_fast(main)\n"
    )
    shell = f"{shlex.quote(sys.executable)} -c {shlex.quote(program)} {redirect}; echo $?"
    if redirect.startswith("|"):
        shell = f"set -o pipefail; {shlex.quote(sys.executable)} -c {shlex.quote(program)} | (sleep 0.2; true); echo $?"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # the output waits for the final flush
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60, env=env)
    assert done.stdout.split()[-1] == str(code)
    assert "Traceback" not in done.stderr
