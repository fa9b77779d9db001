"""Random damage to the populated image: fsck never crashes, -n never writes, -y converges in two runs.

A fast subset for the suite; issue 7's campaigns run the long sweeps.
"""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fcases"))
import base  # noqa: E402

from nvfs_tools.check import Options, check  # noqa: E402
from nvfs_tools.volume import Volume  # noqa: E402


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fsckfuzz") / "base.img")
    base.build_base(path)
    with Volume.open(path) as vol:
        geo = vol.geo
    targets = [0]
    for g in range(geo.group_count):
        targets += list(range(geo.group_start(g) + 1, geo.inode_table_block(g) + 20))
    data = geo.first_data_block(1)
    return path, targets, list(range(data, data + 400))


def _damage(path: str, rnd: random.Random, targets: list[int], data: list[int]) -> None:
    with open(path, "r+b") as f:
        for _ in range(rnd.choice([1, 3, 10, 40])):
            f.seek(rnd.choice(targets) * 4096 + rnd.randrange(4096))
            f.write(bytes([rnd.randrange(256)]))
        for _ in range(rnd.choice([0, 1, 3])):
            f.seek(rnd.choice(data) * 4096 + rnd.randrange(4096))
            f.write(rnd.randbytes(rnd.choice([1, 8, 64])))
        if rnd.random() < 0.2:
            f.seek(rnd.choice(targets) * 4096)
            f.write(bytes(4096))


@pytest.mark.parametrize("seed", range(16))
def test_random_damage_converges(pristine, seed, tmp_path):
    src, targets, data = pristine
    img = str(tmp_path / "img")
    base.copy_image(src, img)
    _damage(img, random.Random(seed), targets, data)
    before = base.digest(img)
    rn = check(img, Options(mode="n", force=True), out=io.StringIO())
    assert base.digest(img) == before
    assert rn.exit_code() in (0, 4, 8)
    r1 = check(img, Options(mode="y", force=True), out=io.StringIO())
    if r1.error:  # nothing usable to check (both superblocks gone): operational error, nothing written
        assert r1.exit_code() == 8 and open(img, "rb").read() == before
        return
    assert r1.exit_code() in (0, 1)
    check(img, Options(mode="y", force=True), out=io.StringIO())
    r3 = check(img, Options(mode="n", force=True), out=io.StringIO())
    assert r3.exit_code() == 0, [f.message for f in r3.findings]
