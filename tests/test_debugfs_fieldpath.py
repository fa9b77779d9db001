"""fieldpath: typed field paths, values, fuzz verbs and addresses, on schemas and real images."""

from __future__ import annotations

import random
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from nvfs_tools import annotate as an
from nvfs_tools import fieldpath as fp
from nvfs_tools import format as fmt
from nvfs_tools.device import Device

UUID = "12345678-1234-1234-1234-123456789abc"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    img = tmp_path_factory.mktemp("fieldpath") / "fp.img"
    subprocess.run(["mkfs.nvfs", "-q", "-U", UUID, str(img), "32M"], check=True, timeout=120)
    return img


@pytest.fixture
def image(pristine, tmp_path) -> Path:
    dst = tmp_path / "work.img"
    shutil.copyfile(pristine, dst)
    return dst


@pytest.mark.parametrize("name", list(fp.TYPES))
def test_leaves_tile_each_structure(name):
    """Leaves are in order, never overlap, and with unnamed gaps cover the whole structure."""
    for bs in (4096, 65536):
        leaves = fp.leaves(name, bs)
        size = fp.struct_size(name, bs)
        pos = 0
        for f in leaves:
            assert f.offset >= pos, f
            assert f.size > 0
            pos = f.offset + f.size
        assert pos == size
        assert len({f.path for f in leaves}) == len(leaves)


def test_top_level_offsets_agree_with_field_layout():
    for name, struct in fmt.STRUCTURES.items():
        layout = fmt.field_layout(struct)
        for fname, info in layout.items():
            fields = fp.resolve(name, fname)
            assert fields[0].offset == info.offset
            assert sum(f.size for f in fields) == info.size


def test_path_spellings_and_ranges():
    base = fmt.field_offset(fmt.Inode, "block")
    assert fp.resolve_one("inode", "block[3]").offset == base + 24
    assert fp.resolve_one("inode", "block.3") == fp.resolve_one("inode", "block[3]")
    assert fp.resolve_one("inode", "block[IND]").offset == base + 8 * fmt.N_DIRECT
    assert fp.resolve_one("inode", "block[5IND]").offset == base + 8 * (fmt.N_BLOCK_POINTERS - 1)
    assert [f.path for f in fp.resolve("inode", "block[2-4]")] == ["block[2]", "block[3]", "block[4]"]
    assert len(fp.resolve("inode", "block")) == fmt.N_BLOCK_POINTERS
    e = fp.resolve_one("journal_slot", "entries[2].value")
    assert e.offset == fmt.JOURNAL_SLOT_HEADER_SIZE + 2 * 16 + 8
    assert fp.resolve_one("jslot", "header.commit").offset == 0
    assert len(fp.resolve("indirect", "ptr", 4096)) == 512
    assert len(fp.resolve("radix_node", "slot", 8192)) == 1024
    with pytest.raises(fp.FieldPathError):
        fp.resolve("inode", "nosuch")
    with pytest.raises(fp.FieldPathError):
        fp.resolve_one("inode", "block")
    with pytest.raises(fp.FieldPathError):
        fp.get_type("nosuch")
    assert fp.get_type("sb").name == "superblock_static"


def test_values_parse_and_range_checks():
    links = fp.resolve_one("inode", "links_count")
    assert fp.parse_value(links, "0x10") == (16).to_bytes(4, "little")
    assert fp.parse_value(links, "4294967295") == b"\xff" * 4
    with pytest.raises(fp.FieldPathError):
        fp.parse_value(links, "4294967296")
    with pytest.raises(fp.FieldPathError):
        fp.parse_value(links, "-1")
    with pytest.raises(fp.FieldPathError):
        fp.parse_value(links, "many")
    mtime = fp.resolve_one("inode", "mtime")
    assert mtime.kind == "sint"
    assert fp.decode(mtime, fp.parse_value(mtime, "-5")) == -5
    label = fp.resolve_one("sb", "label")
    assert fp.parse_value(label, '"abc"') == b"abc".ljust(64, b"\0")
    assert fp.parse_value(label, "0x6162") == b"ab".ljust(64, b"\0")
    with pytest.raises(fp.FieldPathError):
        fp.parse_value(label, "x" * 65)
    uuid = fp.resolve_one("sb", "uuid")
    assert fp.parse_value(uuid, UUID) == bytes.fromhex(UUID.replace("-", ""))
    assert fp.format_value(uuid, fp.parse_value(uuid, UUID)) == UUID


@pytest.mark.parametrize(
    ("verb", "expected"),
    [
        ("zeroes", 0),
        ("ones", 0xFFFFFFFF),
        ("firstbit", 0x80000006),
        ("middlebit", 0x00010006),
        ("lastbit", 0x00000007),
        ("add", 0x00000007),
        ("sub", 0x00000005),
    ],
)
def test_fuzz_verbs(verb, expected):
    raw = (6).to_bytes(4, "little")
    assert int.from_bytes(fp.fuzz_value(raw, verb), "little") == expected


def test_fuzz_add_sub_wrap_and_random_is_reproducible():
    assert fp.fuzz_value(b"\xff\xff", "add") == b"\0\0"
    assert fp.fuzz_value(b"\0\0", "sub", amount=2) == b"\xfe\xff"
    a = fp.fuzz_value(b"\0" * 8, "random", random.Random(5))
    b = fp.fuzz_value(b"\0" * 8, "random", random.Random(5))
    assert a == b and a != b"\0" * 8
    for seed in range(50):  # random never returns the old value, even for one byte
        assert fp.fuzz_value(b"\x07", "random", random.Random(seed)) != b"\x07"
    with pytest.raises(fp.FieldPathError):
        fp.fuzz_value(b"\0", "explode")


def _ctx(dev):
    static = an.read_static(dev)
    geo = fmt.geometry_from_static(static)
    return geo, fp.AddressContext(geo, read_inode=lambda i: an.read_inode(dev, geo, i))


def test_addresses_on_a_real_image(pristine):
    with Device(str(pristine)) as dev:
        geo, ctx = _ctx(dev)
        bs = geo.block_size
        assert fp.address_of("inode", ["12"], ctx) == (geo.inode_offset(12), 1)
        assert fp.address_of("inode", ["<2>"], ctx) == (geo.inode_offset(2), 1)
        assert fp.address_of("inode", [], ctx) == (geo.inode_offset(fmt.ROOT_INO), 0)
        assert fp.address_of("sb", ["backup"], ctx) == (geo.backup_block * bs, 1)
        assert fp.address_of("dsb", [], ctx) == (fmt.SB_DYNAMIC_OFFSET, 0)
        assert fp.address_of("group", ["0"], ctx) == (geo.counters_block(0) * bs, 1)
        assert fp.address_of("jslot", ["3"], ctx) == (geo.journal_block * bs + 3 * 512, 1)
        assert fp.address_of("jentry", ["2:5"], ctx) == (geo.journal_block * bs + 2 * 512 + 16 + 5 * 16, 1)
        assert fp.address_of("dirent", ["300:64"], ctx) == (300 * bs + 64, 1)
        assert fp.address_of("indirect", ["@4096"], ctx) == (4096, 1)
        for bad in (["group", "99"], ["<0>"], ["99999999"], ["jslot"]):
            with pytest.raises(fp.FieldPathError):
                fp.address_of("inode" if bad[0].startswith("<") else "group", bad, ctx)
        with pytest.raises(fp.FieldPathError):
            fp.address_of("jslot", ["99"], ctx)
        with pytest.raises(fp.FieldPathError):
            fp.address_of("indirect", [], ctx)


def test_every_inode_field_can_be_fuzzed_and_only_it_changes(image):
    """Fuzzing touches exactly the field's bytes (the inode has no checksum)."""
    with Device(str(image), writable=True) as dev:
        geo, _ = _ctx(dev)
        addr = geo.inode_offset(fmt.ROOT_INO)
        rng = random.Random(1)
        for f in fp.leaves("inode", geo.block_size):
            for verb in fp.FUZZ_VERBS:
                before = bytearray(dev.read(0, 300 * geo.block_size))
                field, old, new = fp.fuzz_field(dev, geo, "inode", addr, f.path, verb, rng=rng)
                after = dev.read(0, 300 * geo.block_size)
                assert old == bytes(before[field.offset : field.offset + field.size])
                assert new == fp.fuzz_value(old, verb, random.Random(0)) or verb == "random"
                before[field.offset : field.offset + field.size] = new
                assert after == bytes(before), (f.path, verb)


def test_checksums_recomputed_unless_asked(image):
    with Device(str(image), writable=True) as dev:
        geo, _ = _ctx(dev)
        fp.fuzz_field(dev, geo, "sb", 0, "label", "ones")
        raw = dev.read(0, fmt.SB_STATIC_SIZE)
        assert fmt.sb_static_checksum(raw) == int.from_bytes(raw[-4:], "little")
        fp.fuzz_field(dev, geo, "sb", 0, "label", "zeroes", fix_checksums=False)
        raw = dev.read(0, fmt.SB_STATIC_SIZE)
        assert fmt.sb_static_checksum(raw) != int.from_bytes(raw[-4:], "little")
        # a journal slot: the checksum covers the entries its commit word counts
        base = geo.journal_block * geo.block_size
        fp.set_field(dev, geo, "jslot", base, "header.commit", str(fmt.journal_commit_word(3, 2)))
        fp.set_field(dev, geo, "jslot", base, "entries[1].value", "77")
        slot = dev.read(base, fmt.JOURNAL_SLOT_SIZE)
        assert int.from_bytes(slot[8:12], "little") == zlib.crc32(slot[16 : 16 + 32])
        # an xattr block written by hand: fixing one entry field recomputes the block CRC
        blk = 400
        hdr = fmt.XattrHeader.build({"checksum": 0, "count": 0, "used": fmt.XATTR_HEADER_SIZE})
        dev.write(blk * geo.block_size, hdr)
        fp.set_field(dev, geo, "xattr", blk * geo.block_size, "count", "1")
        data = dev.read(blk * geo.block_size, geo.block_size)
        assert int.from_bytes(data[4:8], "little") == an.xattr_block_checksum(data)


def test_collapse_runs_groups_equal_array_elements():
    leaves = fp.leaves("radix_node", 4096)
    page = (fmt.RADIX_PAGE_BIT | 77).to_bytes(8, "little")
    other = (fmt.RADIX_PAGE_BIT | 78).to_bytes(8, "little")
    values = [page] * 256 + [other] * 255 + [b"\0" * 8]
    runs = fp.collapse_runs(list(zip(leaves, values, strict=True)))
    labels = [fp.format_run(*r)[0] for r in runs]
    assert labels == ["slot[0]..slot[255]", "slot[256]..slot[510]", "slot[511]"]
