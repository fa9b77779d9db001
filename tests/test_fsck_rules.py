"""Focused tests of three checker rules: 7.6 (empty indirect blocks), 5.1 (the bad-blocks inode) and
3.2 (``fsck -n`` judges the filesystem as a pending journal replay would leave it)."""

from __future__ import annotations

import hashlib
import io
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


# -- rule 3.2: fsck -n judges the filesystem as the pending replay leaves it ---------------------
def _pending_link_store(path: str) -> tuple[int, int]:
    """Damage as f_journal_pending_n: readme's link count 3 on the media, a pending transaction storing 2."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "pending", Path(__file__).parent / "fcases/f_journal_pending_n/damage.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fs = base.Damage(path)
    mod.damage(fs)
    ino = fs.ino("/docs/readme.txt")
    return ino, fs.inode_addr(ino, "links_count")


@pytest.fixture(scope="module")
def base_image(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("rules") / "base.img")
    base.build_base(path)
    return path


@pytest.fixture
def image(base_image, scratch):
    dst = str(scratch / "img")
    base.copy_image(base_image, dst)
    return dst


def test_n_judges_after_the_replay_without_writing(image):
    ino, addr = _pending_link_store(image)
    before = content(image)
    code, codes, out = run(image, "n")
    assert (code, codes) == (4, ["JOURNAL_REPLAY"]), out
    assert "in memory only" in out
    assert content(image) == before
    assert u64(image, addr) & 0xFFFFFFFF == 3  # the media still holds the pre-replay count
    # the same media without the pending transaction: the link count is then a real problem
    fs = base.Damage(image)
    slot = fs.geo.journal_block * BS + 2 * fmt.JOURNAL_SLOT_SIZE
    fs.put(slot, 0)
    code, codes, out = run(image, "n")
    assert code == 4 and codes == ["LINK_COUNT"], out


def test_y_replays_then_a_second_run_is_clean(image):
    _, addr = _pending_link_store(image)
    code, codes, _ = run(image, "y")
    assert (code, codes) == (1, ["JOURNAL_REPLAY"])
    assert u64(image, addr) & 0xFFFFFFFF == 2
    assert run(image, "n")[:2] == (0, [])


def test_overlay_stores_stay_private(image):
    from nvfs_tools.check.overlay import ReplayOverlay
    from nvfs_tools.device import Device
    from nvfs_tools.errors import DeviceError

    with Device(image) as dev:
        addr = 4 * BS + 8
        old = dev.read(addr, 8)
        overlay = ReplayOverlay.over(dev, [addr])
        assert overlay is not None
        overlay.store(addr, 0x1122334455667788)
        assert overlay.read(addr, 8) == (0x1122334455667788).to_bytes(8, "little")
        assert bytes(overlay.view[addr - 8 : addr]) == dev.read(addr - 8, 8)  # the rest of the page is the device's
        assert dev.read(addr, 8) == old
        with pytest.raises(DeviceError):
            overlay.write(addr, b"x" * 8)
        del overlay
    with open(image, "rb") as handle:
        handle.seek(addr)
        assert handle.read(8) == old


def test_n_replays_in_memory_over_bad_media(image):
    """With bad media listed too: the overlay is built over the media-safe view; a store into bad media is dropped."""
    ino, addr = _pending_link_store(image)
    fs = base.Damage(image)
    data_block = fs.inode(fs.ino("/docs/five.bin")).block[0]
    before = content(image)
    out = io.StringIO()
    rep = check(image, Options(mode="n", force=True, badblocks=((data_block * BS, BS),)), out=out)
    codes = {f.code for f in rep.findings}
    assert codes == {"JOURNAL_REPLAY", "MEDIA_BAD_BLOCK"}, out.getvalue()
    table_block = addr // BS
    rep = check(image, Options(mode="n", force=True, badblocks=((table_block * BS, BS),)), out=io.StringIO())
    assert "JOURNAL_REPLAY" in {f.code for f in rep.findings} and rep.exit_code() == 4
    assert content(image) == before


# -- rule 5.1: the bad-blocks inode -----------------------------------------------------------------
def _free_blocks(path: str, count: int, goal: int | None = None) -> list[int]:
    """``count`` blocks the library would hand out next (taken and given back)."""
    with Volume.open(path, writable=True) as vol:
        blocks = vol.alloc.allocate_blocks(count, goal)
        vol.alloc.free_block_list(blocks)
    return blocks


def _listed(blocks: list[int]) -> tuple[tuple[int, int], ...]:
    return tuple((b * BS, BS) for b in blocks)


def _media_run(path: str, mode: str, blocks: list[int]) -> tuple[int, list[str], str]:
    out = io.StringIO()
    rep = check(path, Options(mode=mode, force=True, badblocks=_listed(blocks)), out=out)
    return rep.exit_code(), [f.code for f in rep.findings], out.getvalue()


def _bad_inode_blocks(path: str) -> tuple[list[int], int]:
    """(data blocks of inode 1 in file order, its size) through the library's block map."""
    from nvfs_tools import filemap

    with Volume.open(path) as vol:
        inode = vol.read_inode(fmt.BADBLOCKS_INO)
        assert inode.mode == fmt.S_IFREG and inode.links_count == 1
        n = inode.size // BS
        return [filemap.lookup_block(vol, list(inode.block), f) for f in range(n)], inode.size


def test_free_bad_blocks_are_recorded_and_a_second_run_is_clean(scratch):
    path = make_image(scratch / "b.img", 16 << 20)
    first = _free_blocks(path, 3)
    before = content(path)
    code, codes, _ = _media_run(path, "n", first)
    assert code == 4 and codes.count("MEDIA_BAD_FREE") == 1 and content(path) == before
    code, codes, _ = _media_run(path, "y", first)
    assert code == 1 and "MEDIA_BAD_FREE" in codes
    assert _bad_inode_blocks(path) == (first, 3 * BS)
    code, codes, out = _media_run(path, "y", first)  # the same list again: known, nothing to do
    assert (code, codes) == (0, []), out
    assert out.count("recorded in the bad-blocks inode (1)") == 3
    assert run(path, "n")[:2] == (0, [])
    # more bad blocks later: appended after the first three, through a new indirect block
    more = [b for b in _free_blocks(path, 14) if b not in first][:12]
    code, codes, out = _media_run(path, "y", first + more)
    assert code == 1 and codes.count("MEDIA_BAD_FREE") == 1, out
    assert _bad_inode_blocks(path) == (first + more, 15 * BS)
    assert run(path, "n")[:2] == (0, [])
    assert _media_run(path, "n", first + more)[:2] == (0, [])


def test_the_library_never_allocates_recorded_bad_blocks(scratch):
    path = make_image(scratch / "b.img", 8 << 20)
    bad = _free_blocks(path, 5)
    assert _media_run(path, "y", bad)[0] == 1
    taken: list[int] = []
    with Volume.open(path, writable=True) as vol:
        while True:  # every block the allocator has, one call at a time from the first data block on
            try:
                taken += vol.alloc.allocate_blocks(1, vol.geo.first_data_block(0))
            except Exception as exc:  # noqa: BLE001 - NoSpaceError ends the loop
                assert type(exc).__name__ == "NoSpaceError"
                break
        vol.alloc.free_block_list(taken)
    assert taken and not set(taken) & set(bad)
    assert run(path, "n")[:2] == (0, [])


def test_bad_blocks_inode_size_follows_its_map(scratch):
    """A size past the map never makes bad blocks fall free as "past EOF": the size is repaired."""
    path = make_image(scratch / "b.img", 16 << 20)
    bad = _free_blocks(path, 2)
    _media_run(path, "y", bad)
    base.Damage(path).set_inode(fmt.BADBLOCKS_INO, "size", BS)
    code, codes, out = run(path, "y")
    assert (code, codes) == (1, ["INODE_BAD_SIZE"]), out
    assert _bad_inode_blocks(path) == (bad, 2 * BS)
    assert run(path, "n")[:2] == (0, [])


def test_inode_1_of_another_type_is_cleared(scratch):
    path = make_image(scratch / "b.img", 16 << 20)
    base.Damage(path).set_inode(fmt.BADBLOCKS_INO, "mode", fmt.S_IFDIR)
    code, codes, _ = run(path, "y")
    assert code == 1 and "INODE_RESERVED" in codes
    assert run(path, "n")[:2] == (0, [])


def test_fast_path_leaves_a_bad_blocks_inode_to_the_detailed_passes(scratch):
    """The bulk path does not judge inode 1: it must say "not proven" (the detailed passes then find it clean)."""
    from nvfs_tools.check import fastpath
    from nvfs_tools.check.image import Image
    from nvfs_tools.check.pass0_super import load_superblock
    from nvfs_tools.device import Device

    path = make_image(scratch / "b.img", 16 << 20)
    _media_run(path, "y", _free_blocks(path, 2))
    with Device(path) as dev:
        static, raw, _reason, _off = load_superblock(dev, False)
        image = Image(dev, static, raw)
        proven = fastpath.verify(image, quota=False)
        del image
    assert proven is None
    assert run(path, "n")[:2] == (0, [])


def test_library_skips_listed_bad_media_and_fsck_records_what_it_left(scratch):
    """The allocator never hands out a block the device lists as bad; fsck with that list records it in inode 1."""
    from nvfs_tools import badblocks as bb
    from nvfs_tools.device import Device

    path = make_image(scratch / "b.img", 16 << 20)
    bad = _free_blocks(path, 12)[3:5]
    with Device(path, writable=True) as dev:
        bb.apply(dev, list(_listed(bad)))
        vol = Volume.from_device(dev)
        try:
            ino = vol.create(fmt.ROOT_INO, b"f", 0o644, data=b"d" * (10 * BS))
            inode = vol.read_inode(ino)
            mapped = [b for b in inode.block[: fmt.N_DIRECT] if b]
        finally:
            vol.close()
    assert len(mapped) == 10 and not set(mapped) & set(bad)
    code, codes, out = _media_run(path, "y", bad)
    assert code == 1 and "MEDIA_BAD_FREE" in codes and "BLOCK_BITMAP" not in codes, out
    assert _bad_inode_blocks(path) == (bad, 2 * BS)
    assert run(path, "n")[:2] == (0, [])
