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
