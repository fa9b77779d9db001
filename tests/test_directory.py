"""Directories on real images: add/lookup/remove/iterate, splits, new levels, overflow chains,
compaction, the bulk builder, and crash states of every structural change.

Invariants are checked by an independent reader written here from spec/format.md (construct
parses, the spec's slot formula), not by the walker the library uses, so a shared mistake in
``dirwalk`` cannot hide itself.
"""

from __future__ import annotations

import os
import random
import struct
import sys

import pytest

from nvfs_tools import format as fmt
from nvfs_tools import namehash
from nvfs_tools.directory import Directory, blocks_needed, check_name
from nvfs_tools.dirwalk import walk_tree
from nvfs_tools.errors import (
    CorruptError,
    DirectoryNotEmptyError,
    FileExistsError_,
    InvalidArgumentError,
    NameTooLongError,
    NoSuchFileError,
    ReadOnlyError,
)
from nvfs_tools.volume import Volume

sys.path.insert(0, os.path.dirname(__file__))
from fsfactory import make_image  # noqa: E402

MASK64 = (1 << 64) - 1
PAGE_BIT = fmt.RADIX_PAGE_BIT


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------


def _image_dir(tmp_path):
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else str(tmp_path)


@pytest.fixture
def image_factory(tmp_path):
    made = []

    def make(size=64 << 20, block_size=4096):
        path = os.path.join(_image_dir(tmp_path), f"nvfs-dirtest-{os.getpid()}-{len(made)}-{random.random()}.img")
        made.append(path)
        return make_image(path, size, block_size=block_size)

    yield make
    for path in made:
        if os.path.exists(path):
            os.unlink(path)


@pytest.fixture
def vol(image_factory):
    v = Volume.open(image_factory(), writable=True)
    yield v
    v.close()


def new_dir(vol, name=b"d"):
    """A fresh empty directory made by the volume (real inode), and its Directory."""
    ino = vol.mkdir(fmt.ROOT_INO, name)
    return ino, Directory(vol, ino)


def names_for(count, stem=b"file", width=30):
    return [(stem + b"-%d-" % i).ljust(width, b"x") for i in range(count)]


# ---------------------------------------------------------------------------
# the independent checker
# ---------------------------------------------------------------------------


def spec_slot(h, level, bits):
    """spec 6.2: slot of hash h in a node of level L = ((h << L*b) mod 2**64) >> (64 - b)."""
    return ((h << (level * bits)) & MASK64) >> (64 - bits)


def leading(h, d):
    return 0 if d == 0 else h & ~((1 << (64 - d)) - 1) & MASK64


class Checked:
    def __init__(self):
        self.entries = {}  # name -> (ino, file_type)
        self.pages = {}  # block -> (depth, prefix, end, dead_bytes)
        self.nodes = set()
        self.refs = {}


# Layouts as spec/format.md tabulates them (restated on purpose: this reader is independent).
PAGE_HDR = struct.Struct("<4sHHQQQ")  # magic, depth, reserved0, prefix, dir_ino, next
ENTRY_HDR = struct.Struct("<QQBBH")  # ino, hash, name_len, file_type, rec_len
_HASH_MEMO: dict = {}


def spec_hash(seed, name):
    key = (namehash.name_hash, seed, name)
    h = _HASH_MEMO.get(key)
    if h is None:
        h = _HASH_MEMO[key] = namehash.name_hash(seed, name)
    return h


def check_tree(raw, geo, ino, seed, *, expect_owner=True, clean_tail=True):
    """Read directory ``ino`` from raw image bytes per spec/format.md and assert every rule.

    ``clean_tail=False`` allows crash residue (a torn, uncommitted record) after the used area.

    Returns a :class:`Checked` with the live entries, pages and nodes.
    """
    bs = geo.block_size
    bits = fmt.radix_bits(bs)
    ppb = bs // 8
    inode = fmt.Inode.parse(bytes(raw[geo.inode_offset(ino) : geo.inode_offset(ino) + fmt.INODE_SIZE]))
    assert inode.dir_bank in (0, 1)
    root = inode.block[inode.dir_bank]
    out = Checked()
    names_in: dict[int, set] = {}

    def block_bytes(b):
        assert 0 < b < geo.blocks_count and not geo.is_metadata_block(b), f"tree block {b} outside the data area"
        g = b // geo.blocks_per_group
        i = b - g * geo.blocks_per_group
        bm = geo.block_bitmap_block(g) * bs
        assert raw[bm + i // 8] >> (i % 8) & 1, f"tree block {b} is free in the bitmap"
        out.refs[b] = out.refs.get(b, 0) + 1
        assert out.refs[b] == 1, f"block {b} referenced twice"
        return bytes(raw[b * bs : (b + 1) * bs])

    def page_chain(block, depth_lo, depth_hi, path_bits, path_depth):
        head = None
        while block:
            data = block_bytes(block)
            magic, d, _r, prefix, owner, nxt = PAGE_HDR.unpack_from(data, 0)
            assert magic == fmt.DIR_PAGE_MAGIC
            assert depth_lo <= d <= depth_hi, f"page {block} depth {d} not in [{depth_lo}, {depth_hi}]"
            assert leading(prefix, d) == prefix
            assert leading(prefix, path_depth) == path_bits
            assert not expect_owner or owner == ino
            assert head is None or (d, prefix) == head
            assert nxt == 0 or d == 64
            head = (d, prefix)
            off, dead = fmt.DIR_PAGE_HEADER_SIZE, 0
            here = names_in[block] = set()
            while off + 20 <= bs:
                e_ino, e_hash, name_len, ftype, rec_len = ENTRY_HDR.unpack_from(data, off)
                if rec_len == 0:
                    break
                assert rec_len == (20 + name_len + 7) // 8 * 8 and off + rec_len <= bs
                name = data[off + 20 : off + 20 + name_len]
                if e_ino:
                    check_name(name)
                    assert e_hash == spec_hash(seed, name), name
                    assert leading(e_hash, d) == prefix
                    assert name not in out.entries, f"duplicate {name!r}"
                    out.entries[name] = (e_ino, ftype)
                    here.add(name)
                else:
                    dead += rec_len
                off += rec_len
            assert not clean_tail or not any(data[off:]), f"page {block}: bytes after the used area are not zero"
            out.pages[block] = (d, prefix, off, dead, nxt)
            block = nxt

    def node(block, level, path_bits):
        out.nodes.add(block)
        slots = struct.unpack(f"<{ppb}Q", block_bytes(block))
        lo, hi = level * bits, level * bits + bits
        s = 0
        while s < ppb:
            w = slots[s]
            if w == 0:
                s += 1
            elif w & PAGE_BIT:
                pb = w & fmt.RADIX_BLOCK_MASK
                _m, depth, _r, prefix, _o, _n = PAGE_HDR.unpack_from(raw, pb * bs)
                assert lo <= depth <= min(64, hi)
                run = 1 << (hi - depth)
                assert s % run == 0 and spec_slot(prefix, level, bits) == s, f"page {pb} at wrong slot {s}"
                assert all(x == w for x in slots[s : s + run]), f"page {pb} does not fill its run"
                page_chain(pb, lo, min(64, hi), path_bits, lo)
                s += run
            else:
                assert level + 1 <= 63 // bits
                child_bits = path_bits | (s << (64 - hi) if hi <= 64 else s >> (hi - 64))
                node(w, level + 1, child_bits)
                s += 1

    if root & PAGE_BIT:
        page_chain(root & fmt.RADIX_BLOCK_MASK, 0, 0, 0, 0)
    elif root:
        node(root, 0, 0)
    # Every live name is found through its own hash from the live root.
    for name in out.entries:
        h = spec_hash(seed, name)
        w, level = root, 0
        while w and not w & PAGE_BIT:
            w = struct.unpack_from("<Q", raw, w * bs + 8 * spec_slot(h, level, bits))[0]
            level += 1
        b, found = w & fmt.RADIX_BLOCK_MASK, False
        while b and not found:
            found = name in names_in[b]
            b = out.pages[b][4]
        assert found, f"{name!r} not reachable through its hash"
    return out


def check_dir(vol, d, expected=None, *, accounting=True):
    """check_tree on the live volume, plus the inode's size/blocks and the cache's accounting.

    ``accounting=False`` skips the cached dead-space figures, which raw stores made behind the
    directory's back (a rename's journal) leave behind until the page is next full.
    """
    raw = vol.dev.view
    got = check_tree(raw, vol.geo, d.ino, vol.hash_seed)
    if expected is not None:
        assert {n: i for n, (i, _t) in got.entries.items()} == expected
    inode = vol.read_inode(d.ino)
    tree_blocks = len(got.pages) + len(got.nodes)
    assert inode.size == tree_blocks * vol.block_size
    assert inode.blocks == tree_blocks
    assert sorted(d.owned_blocks()) == sorted(list(got.pages) + list(got.nodes))
    st = d._state()
    for block, (_d, _p, end, dead, _n) in got.pages.items():
        assert st.pages[block][3] == end, "cached free offset differs from the page"
        assert not accounting or st.pages[block][4] == dead, "cached dead bytes differ from the page"
    listed = {e.name: e.ino for e in d}
    assert listed == {n: i for n, (i, _t) in got.entries.items()}
    return got


# ---------------------------------------------------------------------------
# basic behaviour
# ---------------------------------------------------------------------------


def test_empty_directory(vol):
    ino, d = new_dir(vol)
    assert list(d) == []
    assert d.is_empty()
    assert d.lookup(b"x") is None
    assert d.owned_blocks() == []
    inode = vol.read_inode(ino)
    assert inode.size == 0 and inode.blocks == 0 and inode.block[0] == 0 and inode.block[1] == 0
    with pytest.raises(NoSuchFileError):
        d.remove(b"x")


@pytest.mark.parametrize("count", [1, 100])
def test_add_lookup_iterate_remove(vol, count):
    _ino, d = new_dir(vol)
    names = names_for(count)
    expected = {}
    for i, n in enumerate(names):
        e = d.add(n, 1000 + i, fmt.DT_REG)
        assert e.ino == 1000 + i and e.name == n
        assert struct.unpack_from("<Q", vol.dev.view, e.ino_addr)[0] == 1000 + i
        expected[n] = 1000 + i
    check_dir(vol, d, expected)
    for n, i in expected.items():
        e = d.lookup(n)
        assert e is not None and e.ino == i and e.file_type == fmt.DT_REG and e.name == n
        assert e.hash == namehash.name_hash(vol.hash_seed, n)
    with pytest.raises(FileExistsError_):
        d.add(names[0], 5, fmt.DT_REG)
    for n in names[::2]:
        old = d.remove(n)
        assert old.ino == expected.pop(n)
        assert d.lookup(n) is None
        with pytest.raises(NoSuchFileError):
            d.remove(n)
    check_dir(vol, d, expected)
    assert d.is_empty() == (not expected)
    # a removed name can come back, with another inode
    d.add(names[0], 77, fmt.DT_DIR)
    assert d.lookup(names[0]).ino == 77 and d.lookup(names[0]).file_type == fmt.DT_DIR


def test_name_edge_cases(vol):
    _ino, d = new_dir(vol)
    names = [
        b"a",
        b"Z" * 255,
        "héllo wörld ✓".encode(),
        "日本語のファイル名".encode(),
        b"\xff\xfe\x80raw",
        b"-",
        b"...",
    ]
    for i, n in enumerate(names):
        d.add(n, 50 + i, fmt.DT_LNK)
    d.add("strname", 99, fmt.DT_REG)
    for i, n in enumerate(names):
        assert d.lookup(n).ino == 50 + i
    assert d.lookup(b"strname").ino == 99
    check_dir(vol, d, {**{n: 50 + i for i, n in enumerate(names)}, b"strname": 99})
    vol.close()
    vol2 = Volume.open(vol.dev.path, writable=False)
    try:
        d2 = Directory(vol2, d.ino)
        assert {e.name for e in d2} == set(names) | {b"strname"}
        with pytest.raises(ReadOnlyError):
            d2.add(b"new", 5, fmt.DT_REG)
        with pytest.raises(ReadOnlyError):
            d2.remove(b"a")
        assert d2.lookup(b"a").ino == 50
    finally:
        vol2.close()


BAD_NAMES = [
    (b"", InvalidArgumentError),
    (b".", InvalidArgumentError),
    (b"..", InvalidArgumentError),
    (b"a/b", InvalidArgumentError),
    (b"/", InvalidArgumentError),
    (b"a\0b", InvalidArgumentError),
    (b"x" * 256, NameTooLongError),
    (b"y" * 1000, NameTooLongError),
]


@pytest.mark.parametrize("name,error", BAD_NAMES)
def test_invalid_names(vol, name, error):
    ino, d = new_dir(vol)
    with pytest.raises(error):
        d.add(name, 12, fmt.DT_REG)
    with pytest.raises(error):
        d.prepare(name, fmt.DT_REG)
    with pytest.raises(error):
        Directory.build(vol, ino, [(b"ok", 12, fmt.DT_REG), (name, 13, fmt.DT_REG)])
    assert list(d) == [] and d.owned_blocks() == []
    if error is NameTooLongError:
        with pytest.raises(NameTooLongError):
            d.lookup(name)
    else:
        assert d.lookup(name) is None


def test_invalid_inode_number(vol):
    _ino, d = new_dir(vol)
    with pytest.raises(InvalidArgumentError):
        d.add(b"zero", 0, fmt.DT_REG)


# ---------------------------------------------------------------------------
# growth: splits, new levels, invariants after every structural change
# ---------------------------------------------------------------------------


def test_incremental_10000_invariants_after_every_change(vol):
    _ino, d = new_dir(vol)
    names = names_for(10_000, width=24)
    expected = {}
    last_blocks = None
    changes = 0
    for i, n in enumerate(names):
        d.add(n, 20 + i, fmt.DT_REG)
        expected[n] = 20 + i
        key = (d._state().bank, d._state().root)
        if key != last_blocks:
            last_blocks = key
            changes += 1
            if i < 2500 or changes % 10 == 0:
                check_dir(vol, d, expected)
    assert changes > 100  # many splits happened
    got = check_dir(vol, d, expected)
    assert len(got.pages) > 64
    for n in random.Random(1).sample(names, 500):
        assert d.lookup(n).ino == expected[n]
    # remove half, then add new names: pages with dead records get compacted, not split
    for n in names[::2]:
        d.remove(n)
        del expected[n]
    got = check_dir(vol, d, expected)
    dead_before = sum(p[3] for p in got.pages.values())
    pages_before = len(got.pages)
    more = names_for(2000, stem=b"again", width=24)
    for i, n in enumerate(more):
        d.add(n, 50_000 + i, fmt.DT_REG)
        expected[n] = 50_000 + i
    got = check_dir(vol, d, expected)
    assert len(got.pages) == pages_before  # room came from compaction, not splits
    assert sum(p[3] for p in got.pages.values()) < dead_before


def test_bulk_build_100000(vol):
    ino, d = new_dir(vol)
    names = names_for(100_000, width=20)
    entries = [(n, 100 + i, fmt.DT_REG) for i, n in enumerate(names)]
    need = blocks_needed(vol.block_size, vol.hash_seed, names)
    free_before = vol.dyn.free_blocks
    Directory.build(vol, ino, entries)
    assert free_before - vol.dyn.free_blocks == need
    d = Directory(vol, ino)
    tree = walk_tree(vol.read_block, d._state().root, vol.block_size, vol.hash_seed, dir_ino=ino, check_hashes=False)
    assert tree.problems == []
    assert len(tree.entries) == 100_000
    inode = vol.read_inode(ino)
    assert inode.blocks == need and inode.size == need * vol.block_size
    rng = random.Random(5)
    for i in rng.sample(range(100_000), 2000):
        assert d.lookup(names[i]).ino == 100 + i
    assert sum(1 for _ in d) == 100_000
    # it keeps working incrementally: removals and additions
    for i in range(0, 100_000, 50):
        d.remove(names[i])
    for i in range(2000):
        d.add(b"late-%d" % i, 7, fmt.DT_REG)
    assert d.lookup(names[0]) is None and d.lookup(names[1]).ino == 101 and d.lookup(b"late-1999").ino == 7
    tree = walk_tree(vol.read_block, d._state().root, vol.block_size, vol.hash_seed, dir_ino=ino, check_hashes=False)
    assert tree.problems == [] and len(tree.entries) == 100_000 - 2000 + 2000


def test_build_equals_incremental(vol):
    names = names_for(3000, width=40) + [f"ünï-{i}" for i in range(200)]
    names = [n.encode() if isinstance(n, str) else n for n in names]
    entries = [(n, 10 + i, fmt.DT_REG if i % 3 else fmt.DT_DIR) for i, n in enumerate(names)]
    ino_a, a = new_dir(vol, b"a")
    ino_b, b = new_dir(vol, b"b")
    for n, i, t in entries:
        a.add(n, i, t)
    Directory.build(vol, ino_b, entries)
    b = Directory(vol, ino_b)
    got_a = check_dir(vol, a)
    got_b = check_dir(vol, b)
    assert got_a.entries == got_b.entries == {n: (i, t) for n, i, t in entries}
    # the built directory is at most as big as the incremental one
    assert len(got_b.pages) + len(got_b.nodes) <= len(got_a.pages) + len(got_a.nodes)
    # and behaves the same afterwards
    for n in names[:100]:
        a.remove(n)
        b.remove(n)
    for i in range(500):
        a.add(b"new%d" % i, 3, fmt.DT_REG)
        b.add(b"new%d" % i, 3, fmt.DT_REG)
    assert check_dir(vol, a).entries == check_dir(vol, b).entries


def test_build_rejects_duplicates_and_nonempty(vol):
    ino, d = new_dir(vol)
    with pytest.raises(FileExistsError_):
        Directory.build(vol, ino, [(b"a", 12, fmt.DT_REG), (b"a", 13, fmt.DT_REG)])
    d.add(b"x", 12, fmt.DT_REG)
    with pytest.raises(InvalidArgumentError):
        Directory.build(vol, ino, [(b"b", 12, fmt.DT_REG)])
    ino2, d2 = new_dir(vol, b"e")
    Directory.build(vol, ino2, [])
    assert list(d2) == [] and d2.owned_blocks() == []


@pytest.mark.parametrize("block_size", [8192, 65536])
def test_other_block_sizes(image_factory, block_size):
    with Volume.open(image_factory(64 << 20, block_size), writable=True) as vol:
        ino, d = new_dir(vol)
        count = 3000 if block_size == 8192 else 6000
        expected = {}
        for i, n in enumerate(names_for(count, width=60)):
            d.add(n, 40 + i, fmt.DT_REG)
            expected[n] = 40 + i
        got = check_dir(vol, d, expected)
        assert len(got.pages) > 4
        ino2, _ = new_dir(vol, b"built")
        Directory.build(vol, ino2, [(n, i, fmt.DT_REG) for n, i in expected.items()])
        assert check_dir(vol, Directory(vol, ino2), expected).entries == got.entries


# ---------------------------------------------------------------------------
# hash collisions: new node levels down to depth 64 and overflow chains
# ---------------------------------------------------------------------------


def hex_hash(seed, name):
    """Test hash: names that start with 16 hex digits hash to that value; others to SipHash."""
    try:
        return int(name[:16], 16)
    except ValueError:
        return namehash.siphash24_pure(seed, name)


def hname(h, tag, width=200):
    return (b"%016x-%s-" % (h, tag)).ljust(width, b"p")


@pytest.fixture
def hexhash(monkeypatch):
    monkeypatch.setattr(namehash, "name_hash", hex_hash)


def test_full_collisions_overflow_chain(vol, hexhash):
    ino, d = new_dir(vol)
    h = 0x0123456789ABCDEF
    names = [hname(h, b"%d" % i) for i in range(100)]  # 224-byte records: 18 per page
    expected = {}
    for i, n in enumerate(names):
        d.add(n, 300 + i, fmt.DT_REG)
        expected[n] = 300 + i
    got = check_dir(vol, d, expected)
    chain = [p for p in got.pages.values() if p[0] == 64]
    assert len(chain) >= 6  # 100 records of 224 bytes need 6 pages at depth 64
    assert len(got.nodes) == 63 // fmt.radix_bits(vol.block_size) + 1  # one node per level 0..7
    for n in names:
        assert d.lookup(n).ino == expected[n]
    # removing and re-adding reuses room inside the chain (compaction of chain pages)
    for n in names[10:40]:
        d.remove(n)
        del expected[n]
    for i in range(25):
        n = hname(h, b"re%d" % i)
        d.add(n, 900 + i, fmt.DT_REG)
        expected[n] = 900 + i
    got2 = check_dir(vol, d, expected)
    assert len(got2.pages) == len(got.pages)
    # other hashes still split around the chain
    for i in range(60):
        n = hname(h ^ (1 << (i % 64)), b"near%d" % i)
        d.add(n, 2000 + i, fmt.DT_REG)
        expected[n] = 2000 + i
    check_dir(vol, d, expected)
    # the bulk builder makes the same kind of chain
    ino2, _ = new_dir(vol, b"built")
    Directory.build(vol, ino2, [(n, i, fmt.DT_REG) for n, i in expected.items()])
    assert check_dir(vol, Directory(vol, ino2), expected).entries == check_dir(vol, d).entries
    assert blocks_needed(vol.block_size, vol.hash_seed, list(expected)) == len(Directory(vol, ino2).owned_blocks())


def test_split_leaves_empty_half_then_fills_hole(vol, hexhash):
    _ino, d = new_dir(vol)
    expected = {}
    # everything in the low half: a split leaves the high half empty (slots 0)
    for i in range(40):
        n = hname(i << 20, b"low%d" % i)
        d.add(n, 10 + i, fmt.DT_REG)
        expected[n] = 10 + i
    got = check_dir(vol, d, expected)
    root_slots = struct.unpack_from(f"<{vol.block_size // 8}Q", vol.read_block(d._state().root))
    assert 0 in root_slots  # holes exist
    n = hname(1 << 63, b"high")
    d.add(n, 99, fmt.DT_REG)  # lands in a hole: a new page fills that slot
    expected[n] = 99
    got = check_dir(vol, d, expected)
    assert (9, 1 << 63) in {(p[0], p[1]) for p in got.pages.values()}  # depth L*b+b, exactly that slot


# ---------------------------------------------------------------------------
# compaction, release, caching, rename-style commits, damage
# ---------------------------------------------------------------------------


def test_compaction_is_copy_on_write(vol, hexhash):
    _ino, d = new_dir(vol)
    names = [hname(random.Random(i).getrandbits(64), b"%d" % i) for i in range(18)]
    for i, n in enumerate(names):
        d.add(n, 10 + i, fmt.DT_REG)
    (page,) = d.owned_blocks()  # 18 records of 224 bytes fill the root page exactly
    for n in names[:5]:
        d.remove(n)
    bank = d._state().bank
    d.add(hname(7, b"new"), 5, fmt.DT_REG)
    (new_page,) = d.owned_blocks()
    assert new_page != page and d._state().bank == 1 - bank
    got = check_dir(vol, d, {**{n: 10 + i for i, n in enumerate(names) if i >= 5}, hname(7, b"new"): 5})
    assert got.pages[new_page][3] == 0  # dead space reclaimed


def test_release_frees_everything(vol):
    ino, d = new_dir(vol)
    free0 = vol.dyn.free_blocks
    names = names_for(2000)
    for i, n in enumerate(names):
        d.add(n, 5 + i, fmt.DT_REG)
    blocks = d.owned_blocks()
    assert vol.dyn.free_blocks == free0 - len(blocks)
    with pytest.raises(DirectoryNotEmptyError):
        d.release()
    for n in names:
        d.remove(n)
    assert d.is_empty()
    d.release()
    inode = vol.read_inode(ino)
    assert inode.block[0] == inode.block[1] == 0 and inode.size == 0 and inode.blocks == 0
    assert vol.dyn.free_blocks == free0
    assert list(d) == [] and d.owned_blocks() == []
    d.add(b"after", 3, fmt.DT_REG)
    assert d.lookup(b"after").ino == 3


def test_objects_share_cache_and_see_external_stores(vol):
    ino, a = new_dir(vol)
    b = Directory(vol, ino)
    for i in range(500):
        a.add(b"n%d" % i, 10 + i, fmt.DT_REG)
    assert b.lookup(b"n499").ino == 509
    b.add(b"fromb", 4, fmt.DT_REG)
    assert a.lookup(b"fromb").ino == 4
    with pytest.raises(FileExistsError_):
        a.add(b"fromb", 5, fmt.DT_REG)
    # rename-style: prepare, then commit with a raw store; clear another with a raw store
    e = a.prepare(b"renamed", fmt.DT_REG)
    assert e.ino == 0 and a.lookup(b"renamed") is None
    old = a.lookup(b"n7")
    vol.store_u64(e.ino_addr, old.ino)
    vol.store_u64(old.ino_addr, 0)
    vol.barrier()
    assert b.lookup(b"renamed").ino == 17 and b.lookup(b"n7") is None
    # prepare over an existing name keeps the old entry live until the caller's commit
    e2 = a.prepare(b"n8", fmt.DT_LNK)
    assert a.lookup(b"n8").ino == 18
    old8 = a.lookup(b"n8")
    vol.store_u64(e2.ino_addr, 18)
    vol.store_u64(old8.ino_addr, 0)
    assert a.lookup(b"n8").file_type == fmt.DT_LNK
    check_dir(vol, a, accounting=False)
    # a different volume object on the same image reads the same
    path = vol.dev.path
    vol.close()
    with Volume.open(path) as ro:
        names = {x.name for x in Directory(ro, ino)}
        assert b"renamed" in names and b"n7" not in names and len(names) == 501


def test_corrupt_directory_raises(vol):
    ino, d = new_dir(vol)
    for i in range(1000):
        d.add(b"c%d" % i, 10 + i, fmt.DT_REG)
    page = d.page_blocks()[1]
    vol.dev.write(page * vol.block_size, b"XXXX")
    vol.barrier()
    # a fresh volume object (no cache) notices the damage
    path = vol.dev.path
    vol.close()
    with Volume.open(path) as v2:
        with pytest.raises(CorruptError):
            Directory(v2, ino).lookup(b"c1")
        tree = walk_tree(v2.read_block, v2.read_inode(ino).block[v2.read_inode(ino).dir_bank], 4096, v2.hash_seed)
        assert any(p.kind == "bad-slots" or p.kind == "bad-magic" for p in tree.problems)


def test_walker_never_raises_or_loops_on_garbage(vol):
    ino, d = new_dir(vol)
    for i in range(400):
        d.add(b"g%d" % i, 10 + i, fmt.DT_REG)
    blocks = d.owned_blocks()
    st = d._state()
    bs = vol.block_size
    base = {b: bytearray(vol.read_block(b)) for b in blocks}
    rng = random.Random(42)
    kinds = set()
    for _trial in range(300):
        img = {b: bytearray(v) for b, v in base.items()}
        victim = rng.choice(blocks)
        for _ in range(rng.randint(1, 8)):
            off = rng.randrange(0, bs // 8) * 8
            choice = rng.random()
            if choice < 0.3:
                word = rng.choice(blocks) | (PAGE_BIT if rng.random() < 0.5 else 0)  # cycles, sharing
            elif choice < 0.5:
                word = rng.getrandbits(64)
            else:
                word = rng.getrandbits(64) & 0xFFFF
            struct.pack_into("<Q", img[victim], off, word)

        def read(b, img=img):
            if b in img:
                return bytes(img[b])
            if b > 10**7:
                raise ValueError("outside")
            return bytes(bs)

        tree = walk_tree(read, st.root, bs, vol.hash_seed, dir_ino=ino)
        kinds.update(p.kind for p in tree.problems)
        assert len(tree.pages) + len(tree.nodes) <= len(blocks) + 2 * bs // 8
    assert len(kinds) >= 4, kinds


# ---------------------------------------------------------------------------
# crash states: every store subset between barriers of structural changes
# ---------------------------------------------------------------------------


class Recorder:
    """Snapshots the whole image at every barrier (the durable states a crash can leave)."""

    def __init__(self, vol):
        self.vol = vol
        self.snaps: list[bytes] = []
        self._orig = vol.barrier

        def barrier():
            self._orig()
            self.snaps.append(bytes(vol.dev.view))

        vol.barrier = barrier

    def start(self):
        self.snaps = [bytes(self.vol.dev.view)]


def word_diff(a: bytes, b: bytes, bs: int) -> list[tuple[int, bytes]]:
    out = []
    for off in range(0, len(a), bs):
        if a[off : off + bs] != b[off : off + bs]:
            for w in range(off, off + bs, 8):
                if a[w : w + 8] != b[w : w + 8]:
                    out.append((w, b[w : w + 8]))
    return out


def crash_states(snaps, bs, rng, full):
    """Images a crash can leave: any subset of the 8-byte stores made between two barriers."""
    for before, after in zip(snaps, snaps[1:], strict=False):
        yield after
        if not full:
            continue
        words = word_diff(before, after, bs)
        if len(words) <= 1:
            continue
        by_block: dict[int, list] = {}
        for addr, val in words:
            by_block.setdefault(addr // bs, []).append((addr, val))
        groups = list(by_block.values())
        subsets = [[g] for g in groups] + [[x for x in groups if x is not g] for g in groups]
        for _ in range(4):
            subsets.append([[w] for w in words if rng.random() < 0.5])
        for subset in subsets:
            img = bytearray(before)
            for group in subset:
                for addr, val in group:
                    img[addr : addr + 8] = val
            yield bytes(img)


def test_crash_states_of_every_structural_change(image_factory, hexhash):
    vol = Volume.open(image_factory(4 << 20), writable=True)
    ino, d = new_dir(vol)
    rec = Recorder(vol)
    rng = random.Random(7)
    bs = vol.block_size
    expected: dict[bytes, int] = {}
    kinds = dict.fromkeys(["first-page", "root-split", "split", "new-level", "compact", "overflow", "hole"], 0)

    def classify(guess, before, st):
        root_before, pages_before, nodes_before = before
        if root_before == 0:
            return "first-page"
        if root_before & PAGE_BIT:
            return "root-split"
        if len(st.nodes) > nodes_before:
            return "new-level"
        if len(st.pages) == len(pages_before):
            return "compact"
        if st.root == root_before:
            return "overflow"
        return "hole" if guess == "hole" else "split"

    def op(guess, name, ino_=0, remove=False):
        old = dict(expected)
        st = d._state()
        before = (st.root, set(st.pages), len(st.nodes))
        rec.start()
        if remove:
            d.remove(name)
            del expected[name]
        else:
            d.add(name, ino_, fmt.DT_REG)
            expected[name] = ino_
        st = d._state()
        structural = st.root != before[0] or set(st.pages) != before[1]
        if structural:
            kinds[classify(guess, before, st)] += 1
        full = structural and len(rec.snaps) < 40
        for img in crash_states(rec.snaps, bs, rng, full):
            got = check_tree(img, vol.geo, ino, vol.hash_seed, clean_tail=False)
            live = {n: i for n, (i, _t) in got.entries.items()}
            assert live == old or live == expected, f"a crash during {guess} leaves neither old nor new entries"
            if structural and rng.random() < 0.1:
                continue_after_crash(img, live)
                kinds["continued"] = kinds.get("continued", 0) + 1
        check_dir(vol, d, expected)

    def continue_after_crash(img, live):
        """Open the crashed image and keep working: residue and leaked blocks must not matter."""
        path = vol.dev.path + ".crash"
        with open(path, "wb") as f:
            f.write(img)
        try:
            with Volume.open(path, writable=True) as v2:
                d2 = Directory(v2, ino)
                now = dict(live)
                for i in range(30):
                    n = hname(rng.getrandbits(64), b"after%d" % i)
                    d2.add(n, 7000 + i, fmt.DT_REG)
                    now[n] = 7000 + i
                for n in list(now)[:10]:
                    d2.remove(n)
                    del now[n]
                got = check_tree(v2.dev.view, v2.geo, ino, v2.hash_seed, clean_tail=False)
                assert {n: i for n, (i, _t) in got.entries.items()} == now
                assert {e.name: e.ino for e in d2} == now
        finally:
            os.unlink(path)

    # 1. a root page, filled and split into a level-0 node
    for i in range(19):
        op("fill", hname(rng.getrandbits(64), b"r%d" % i), 100 + i)
    # 2. names whose 12 leading bits are 0: one-sided splits (empty halves), then a level-1 node
    for i in range(60):
        op("split", hname(rng.getrandbits(52), b"s%d" % i), 200 + i)
    # 3. names that land on empty slots of the root node
    st = d._state()
    holes = [s for s, w in enumerate(st.nodes[st.root]) if w == 0]
    assert holes
    for k, s in enumerate(holes[:3]):
        op("hole", hname((s << 55) | rng.getrandbits(55), b"h%d" % k), 300 + k)
    # 4. empty most of one full page, then fill it again: it is compacted
    st = d._state()
    block = max(st.pages, key=lambda b: st.pages[b][3])
    depth, prefix = st.pages[block][0], st.pages[block][1]
    for e in [e for e in d if e.block == block][2:]:
        op("remove", e.name, remove=True)
    for i in range(40):
        if block not in d._state().pages:
            break
        low = rng.getrandbits(64 - depth) if depth < 64 else 0
        op("compact", hname(prefix | low, b"c%d" % i), 400 + i)
    # 5. one hash shared by many names: splits down to depth 64, then an overflow chain
    for i in range(40):
        op("overflow", hname(0x00000000000ABCDE, b"o%d" % i), 500 + i)
    vol.close()
    missing = [k for k, v in kinds.items() if v == 0]
    assert not missing, f"scenario did not exercise {missing}: {kinds}"
    assert kinds.get("continued", 0) >= 10, kinds


def test_torn_add_residue_is_harmless(vol):
    """A crash can leave name bytes of an uncommitted record past the used area; adds go on safely."""
    ino, d = new_dir(vol)
    for i in range(10):
        d.add(b"keep%d" % i, 10 + i, fmt.DT_REG)
    (page,) = d.page_blocks()
    end = d._state().pages[page][3]
    bs = vol.block_size
    # the torn record: its ino, hash and rec_len words never landed, the rest of a 255-byte name did
    residue = bytes(range(1, 256)) + b"\x07" * 40
    vol.dev.write(page * bs + end + 24, residue)
    vol.barrier()
    Directory.forget(vol, ino)
    d = Directory(vol, ino)
    expected = {b"keep%d" % i: 10 + i for i in range(10)}
    for i in range(60):  # short names: each add zeroes the header after its record
        d.add(b"n%d" % i, 100 + i, fmt.DT_REG)
        expected[b"n%d" % i] = 100 + i
        got = check_tree(vol.dev.view, vol.geo, ino, vol.hash_seed, clean_tail=False)
        assert {n: v for n, (v, _t) in got.entries.items()} == expected
    check_dir(vol, d, expected)  # the page has been split by now: the residue is gone


def test_walk_directory_and_forget(vol):
    from nvfs_tools.dirwalk import walk_directory

    ino, d = new_dir(vol)
    for i in range(700):
        d.add(b"w%d" % i, 10 + i, fmt.DT_REG)
    tree = walk_directory(vol, ino)
    assert tree.ok and len(tree.entries) == 700
    assert sorted(tree.blocks()) == sorted(d.owned_blocks())
    prefixes = [p.prefix for p in tree.pages]
    assert prefixes == sorted(prefixes)  # pages come in hash order
    # damage a page behind the cache's back: a lookup notices the mismatch and re-reads
    e = d.lookup(b"w5")
    vol.dev.write(e.block * vol.block_size + e.offset + 20, b"W")
    vol.barrier()
    tree = walk_directory(vol, ino)
    assert [p.kind for p in tree.problems] == ["bad-hash"]
    assert d.lookup(b"w5") is None and d.lookup(b"w6").ino == 16
    # a root word pointing into metadata is reported, not followed
    vol.store_u64(vol.inode_field_addr(ino, "block", d._state().bank), 3)
    assert walk_directory(vol, ino).problems[0].kind == "bad-root"


def test_write_tree_replaces_a_directory_by_bank_flip(vol):
    """fsck's rebuild: a tree written aside, its root stored in the inactive bank, one flip."""
    from nvfs_tools.directory import write_tree

    ino, d = new_dir(vol)
    for i in range(800):
        d.add(b"old%d" % i, 10 + i, fmt.DT_REG)
    old_blocks = d.owned_blocks()
    entries = [(b"new%d" % i, 20 + i, fmt.DT_DIR) for i in range(1500)]
    root, count = write_tree(vol, ino, entries)
    assert count == blocks_needed(vol.block_size, vol.hash_seed, [e[0] for e in entries])
    assert d.lookup(b"old1").ino == 11  # nothing points at the new tree yet
    bank = d._state().bank
    vol.store_u64(vol.inode_field_addr(ino, "block", 1 - bank), root)
    vol.barrier()
    vol.store_u64(vol.inode_field_addr(ino, "dir_bank"), 1 - bank)
    vol.barrier()
    for b in old_blocks:
        vol.free_block(b)
    vol.set_inode_fields(ino, size=count * vol.block_size, blocks=count)
    assert d.lookup(b"old1") is None and d.lookup(b"new7").ino == 27
    check_dir(vol, d, {n: i for n, i, _t in entries})
    with pytest.raises(FileExistsError_):
        write_tree(vol, ino, [(b"x", 3, 1), (b"x", 4, 1)])
