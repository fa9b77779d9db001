"""Focused tests of three checker rules: 7.6 (empty indirect blocks), 5.1 (the bad-blocks inode) and
3.2 (``fsck -n`` judges the filesystem as a pending journal replay would leave it)."""

from __future__ import annotations

import hashlib
import io
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "fcases"))
import base  # noqa: E402
from fsfactory import make_image  # noqa: E402
from fsfactory import scratch as _scratch  # noqa: E402

from nvfs_tools import format as fmt  # noqa: E402
from nvfs_tools.check import Options, check  # noqa: E402
from nvfs_tools.volume import Volume  # noqa: E402

BS = 4096
PPB = BS // 8


@pytest.fixture
def scratch(tmp_path):
    yield from _scratch(tmp_path)


def run(path: str, mode: str) -> tuple[int, list[str], str]:
    out = io.StringIO()
    rep = check(path, Options(mode=mode, force=True), out=out)
    return rep.exit_code(), [f.code for f in rep.findings], out.getvalue()


def content(path: str) -> bytes:
    """The whole image (reading a tmpfs hole allocates a zero page, so base.digest's extents may move)."""
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).digest()


def u64(path: str, addr: int) -> int:
    return base.Damage(path).u64(addr)


# -- rule 7.6: no indirect block is all zero ------------------------------------------------------
def test_emptied_parents_go_in_the_same_run(scratch):
    """A zero level-1 block under a level-2 block that maps nothing else: both pointers cleared in one run."""
    path = make_image(scratch / "z.img", 32 << 20)
    with Volume.open(path, writable=True) as vol:
        ino = vol.create(fmt.ROOT_INO, b"deep", 0o644)
        vol.write(ino, (fmt.N_DIRECT + PPB + 3) * BS, b"under two levels")
        vol.write(ino, 0, b"head")
        top = vol.read_inode(ino).block[fmt.N_DIRECT + 1]
    leaf = u64(path, top * BS)
    base.Damage(path).write(leaf * BS, bytes(BS))
    before = content(path)
    code, codes, out = run(path, "n")
    assert code == 4 and codes.count("INODE_ZERO_INDIRECT") == 1 and "(/deep)" in out
    assert content(path) == before
    code, codes, out = run(path, "y")
    assert code == 1 and codes.count("INODE_ZERO_INDIRECT") == 2, out
    assert f"level-1 indirect block for {fmt.N_DIRECT + PPB} is block {leaf}" in out
    assert f"level-2 indirect block for {fmt.N_DIRECT + PPB} is block {top}" in out
    assert run(path, "n")[:2] == (0, [])
    with Volume.open(path) as vol:
        inode = vol.read_inode(ino)
        assert inode.block[fmt.N_DIRECT + 1] == 0 and inode.blocks == 1
        assert vol.read(ino, 0, 4) == b"head"
        assert not vol.read(ino, (fmt.N_DIRECT + PPB + 3) * BS, 16).strip(b"\0")


def test_a_cleared_bad_pointer_that_empties_its_block_frees_it_too(scratch):
    """The last pointer of an indirect block is out of range: cleared, and the block left empty goes as well."""
    path = make_image(scratch / "z.img", 32 << 20)
    with Volume.open(path, writable=True) as vol:
        ino = vol.create(fmt.ROOT_INO, b"one", 0o644)
        vol.write(ino, (fmt.N_DIRECT + 2) * BS, b"x")
        ind = vol.read_inode(ino).block[fmt.N_DIRECT]
        blocks_count = vol.geo.blocks_count
    base.Damage(path).put(ind * BS + 16, blocks_count + 9)
    code, codes, out = run(path, "y")
    assert code == 1 and "INODE_BAD_BLOCK" in codes and "INODE_ZERO_INDIRECT" in codes, out
    assert run(path, "n")[:2] == (0, [])
