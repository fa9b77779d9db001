"""The fast-scan core: compiled and pure backends agree, and both tell the truth.

Images are built by the library (fsfactory / Volume), then scanned as they
are, and again after targeted or random damage.  Every result of the
compiled core is compared with the pure-Python reference; the reference is
itself checked against what the library wrote (counts, bitmaps, entries).
"""

from __future__ import annotations

import mmap
import os
import random
import subprocess
import sys
import tempfile
from array import array
from collections import Counter

import pytest
from fsfactory import make_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvfs_tools import format as F
from nvfs_tools import scan
from nvfs_tools import scan_pure as P
from nvfs_tools.namehash import siphash24_pure
from nvfs_tools.scan import Problem
from nvfs_tools.volume import Volume

try:
    from nvfs_tools import _fastscan as C
except ImportError:  # pure build: every test still runs on the reference
    C = None
#: The backends under test: the reference, plus the compiled core when built.
MODS = [P] + ([C] if C is not None else [])
#: What the library uses (NVFS_PURE=1 makes it the reference).
B = scan.backend()
needs_compiled = pytest.mark.skipif(C is None, reason="nvfs_tools._fastscan is not built")

ROOT = F.ROOT_INO
INODE = F.field_layout(F.Inode)
ENTRY = F.field_layout(F.DirEntryHeader)
PAGE = F.field_layout(F.DirPageHeader)
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def u64(buf, addr: int) -> int:
    return int.from_bytes(buf[addr : addr + 8], "little")


def put(buf, addr: int, value: int, size: int = 8) -> None:
    buf[addr : addr + size] = value.to_bytes(size, "little")


def same(a: dict, b: dict) -> None:
    """Assert two result dicts are identical, key by key (bitmaps compared as bytes)."""
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, mmap.mmap | memoryview) or isinstance(y, mmap.mmap | memoryview):
            assert bytes(x) == bytes(y), key
        else:
            assert x == y, key
            assert type(x) is type(y) and getattr(x, "typecode", None) == getattr(y, "typecode", None), key


def full_scan(mod, buf, geo, seed, threads=0):
    inodes = mod.scan_inodes(buf, geo, threads=threads)
    walk = mod.walk_blockmaps(buf, geo, inodes["ino"], threads=threads)
    dirs = mod.walk_directories(buf, geo, seed, inodes["dir_ino"], walk["owned"], threads=threads)
    return inodes, walk, dirs


def compare_backends(buf, geo, seed) -> tuple:
    ref = full_scan(P, buf, geo, seed)
    verdict = P.verify_arrays(buf, geo, *ref)
    fused_ref = fused(P, buf, geo, seed)
    for threads in (1, 2, 3) if C is not None else ():
        got = full_scan(C, buf, geo, seed, threads=threads)
        for a, b in zip(ref, got, strict=True):
            same(a, b)
        assert C.verify_arrays(buf, geo, *got) == verdict
        fused_got = fused(C, buf, geo, seed, threads=threads)
        assert (fused_got is None) == (fused_ref is None)
        if fused_ref is not None:
            same(fused_ref[0], fused_got[0])
            assert fused_ref[1:5] == fused_got[1:5]
            assert (fused_ref[5] is None) == (fused_got[5] is None)
            if fused_ref[5] is not None:
                same(fused_ref[5][0], fused_got[5][0])
                assert fused_ref[5][1:] == fused_got[5][1:]
    fused_agrees_with_scans(buf, geo, seed, ref, fused_ref)
    return ref


def fused(mod, buf, geo, seed, threads=0):
    """The fast path's one-pass inode check over every group, then the directories: (records, owned
    and inuse and the link table after the inode check, (first bad entry, table after tally_entries,
    first unsettled inode) over walk_directories' entries, check_directories' (result, owned, table)
    or None), or None when the inodes are not proven."""
    n = geo.inodes_count
    owned, inuse, table = bytearray(geo.group_count * geo.block_size), bytearray((n + 7) // 8), bytearray(4 * n + 4)
    found = mod.check_inode_groups(buf, geo, (0, geo.group_count), owned, inuse, table, threads=threads)
    copied = from_table_copies(mod, buf, geo)
    assert (copied is None) == (found is None)
    if found is None:
        return None
    same(copied[0], found)
    assert copied[1:] == (bytes(owned), bytes(inuse), bytes(table))
    claimed, counted = bytes(owned), bytes(table)
    dirs = mod.walk_directories(buf, geo, seed, found["dir_ino"], owned)
    bad = mod.tally_entries(table, dirs["entry_ino"], dirs["file_type"], n)
    tallied = (bad, bytes(table), mod.unsettled_links(table, inuse, n))
    owned, table = bytearray(claimed), bytearray(counted)
    checked = mod.check_directories(buf, geo, seed, found["dir_ino"], owned, table, threads=threads or 1)
    if checked is not None:
        checked = (checked, bytes(owned), bytes(table))
    return found, claimed, bytes(inuse), counted, tallied, checked


def from_table_copies(mod, buf, geo):
    """check_inode_groups reading the records from a copy of the inode tables (as the O_DIRECT path
    does): (records, owned, inuse, table) or None; it must match the mapping's result exactly."""
    n, size = geo.inodes_count, geo.inode_table_blocks * geo.block_size
    tables = b"".join(bytes(buf[geo.inode_table_block(g) * geo.block_size :][:size]) for g in range(geo.group_count))
    with pytest.raises(ValueError):
        mod.check_inode_groups(
            buf, geo, (0, geo.group_count), bytearray(1 << 20), bytearray(n), bytearray(4 * n + 4), tables=tables[:-1]
        )
    owned, inuse, table = bytearray(geo.group_count * geo.block_size), bytearray((n + 7) // 8), bytearray(4 * n + 4)
    found = mod.check_inode_groups(buf, geo, (0, geo.group_count), owned, inuse, table, tables=tables)
    return None if found is None else (found, bytes(owned), bytes(inuse), bytes(table))


def fused_agrees_with_scans(buf, geo, seed, ref, fused_ref) -> None:
    """check_inode_groups proves exactly what the separate scans would, and records the same facts."""
    inodes, walk, _dirs = ref
    bare = P.walk_blockmaps(buf, geo, inodes["ino"], mark_metadata=False)
    non_dirs = [
        (blocks, count, links)
        for mode, blocks, count, links in zip(
            inodes["mode"], inodes["blocks"], walk["counts"], inodes["links"], strict=True
        )
        if mode & F.S_IFMT != F.S_IFDIR
    ]
    expect = (
        not len(inodes["prob_code"])
        and not len(walk["prob_code"])
        and P.check_inode_fields(buf, geo, inodes["ino"], inodes["mode"]) < 0
        and all(blocks == count and links < 1 << 28 for blocks, count, links in non_dirs)
    )
    assert (fused_ref is not None) == expect
    if fused_ref is None:
        return
    found, owned, inuse, table = fused_ref[:4]
    assert found["used"] == len(inodes["ino"])
    assert found["dir_ino"] == inodes["dir_ino"] and found["dir_parent"] == inodes["dir_parent"]
    assert found["xattr_ino"] == inodes["xattr_ino"] and found["xattr_block"] == inodes["xattr_block"]
    assert inuse == bytes(inodes["inuse"])[: len(inuse)]
    assert owned == bytes(bare["owned"])[: len(owned)]
    odd = [
        (i, m)
        for i, m in zip(inodes["ino"], inodes["mode"], strict=True)
        if i < F.FIRST_INO or m & F.S_IFMT not in (F.S_IFREG, F.S_IFDIR)
    ]
    assert list(zip(found["odd_ino"], found["odd_mode"], strict=True)) == odd
    # check_directories: proven exactly when the walk, the pages and the tally are clean, same table
    dirs = P.walk_directories(buf, geo, seed, found["dir_ino"], bytearray(owned))
    (bad, tallied, _unsettled), checked = fused_ref[4], fused_ref[5]
    clean = not len(dirs["prob_code"]) and P.pages_clean(buf, geo, dirs["name_off"], dirs["name_len"]) and bad < 0
    assert (checked is not None) == clean
    if checked is not None:
        assert checked[2] == tallied and checked[0]["counts"] == dirs["counts"]
        named = [k for k, t in enumerate(dirs["file_type"]) if t == F.DT_DIR]
        assert list(checked[0]["entry_ino"]) == [dirs["entry_ino"][k] for k in named]
        assert list(checked[0]["entry_dir"]) == [dirs["entry_dir"][k] for k in named]


def problems(result) -> list[tuple[int, int, Problem]]:
    return [
        (i, w, Problem(c))
        for i, w, c in zip(result["prob_ino"], result["prob_where"], result["prob_code"], strict=True)
    ]


def files_of(vol) -> dict[str, int]:
    return {e.name.decode(): e.ino for e in vol.listdir(ROOT)}


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """A small image with every kind of inode, indirect trees 1..3 levels deep and a split directory.

    Built in /dev/shm when there is one: every barrier is an msync, slow on a disk.
    """
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        yield _populate(os.path.join(tmp, "fs.img"))


def _populate(path: str) -> str:
    path = make_image(path, 24 << 20)
    bs = 4096
    ppb = bs // 8
    with Volume.open(path, writable=True) as vol:
        f = vol.create(ROOT, "small", 0o644)
        vol.write(f, 0, os.urandom(3 * bs + 17))
        g = vol.create(ROOT, "ind1", 0o644)
        vol.write(g, (F.N_DIRECT + 5) * bs, b"one")
        h = vol.create(ROOT, "ind2", 0o644)
        vol.write(h, (F.N_DIRECT + ppb + 7) * bs, b"two")
        k = vol.create(ROOT, "ind3", 0o644)
        vol.write(k, (F.N_DIRECT + ppb + ppb * ppb + 3) * bs, b"three")
        for levels in (4, 5):  # the deepest trees: one data block under 4 and 5 indirect levels
            deep = vol.create(ROOT, f"ind{levels}", 0o644)
            vol.write(deep, (F.N_DIRECT + sum(ppb**k for k in range(1, levels)) + 3) * bs, b"deep")
        big = vol.create(ROOT, "dense", 0o600)
        vol.write(big, 0, os.urandom(40 * bs))
        d = vol.mkdir(ROOT, "many", 0o755)
        for i in range(700):
            vol.create(d, f"entry-{i:05d}", 0o644)
        small = vol.mkdir(ROOT, "few", 0o755)
        for name in ("alpha", "beta", "gamma"):
            vol.create(small, name, 0o644)
        vol.mkdir(small, "sub", 0o755)
        vol.symlink(ROOT, "short", "target")
        vol.symlink(ROOT, "long", "t" * 300)
        vol.mknod(ROOT, "null", F.S_IFCHR | 0o666, F.encode_rdev(1, 3))
        vol.mknod(ROOT, "fifo", F.S_IFIFO | 0o644, 0)
        vol.setxattr(f, b"user.colour", b"blue")
        vol.link(f, small, "hardlink")
    return path


@pytest.fixture
def image(populated):
    """A private, writable copy of the populated image as a bytearray, plus its volume facts."""
    with open(populated, "rb") as handle:
        buf = bytearray(handle.read())
    with Volume.open(populated) as vol:
        facts = {
            "geo": vol.geo,
            "seed": vol.hash_seed,
            "names": files_of(vol),
            "few": vol.lookup("/few"),
            "many": vol.lookup("/many"),
            "sub": vol.lookup("/few/sub"),
        }
    return buf, facts


# ---------------------------------------------------------------------------
# SipHash
# ---------------------------------------------------------------------------


@given(st.binary(min_size=16, max_size=16), st.binary(max_size=300))
def test_siphash_matches_reference(key, data):
    for mod in MODS:
        assert mod.siphash24(key, data) == siphash24_pure(key, data)


@given(st.binary(min_size=16, max_size=16), st.lists(st.binary(max_size=40), max_size=20))
def test_siphash_bulk_matches_single(key, names):
    buf = b"".join(names)
    offsets, lengths, pos = [], [], 0
    for name in names:
        offsets.append(pos)
        lengths.append(len(name))
        pos += len(name)
    expected = [siphash24_pure(key, n) for n in names]
    for mod in MODS:
        assert list(mod.siphash24_bulk(key, buf, offsets, lengths)) == expected


def test_siphash_rejects_bad_key_and_range():
    for mod in MODS:
        with pytest.raises(ValueError):
            mod.siphash24(b"short", b"x")
        with pytest.raises(ValueError):
            mod.siphash24_bulk(bytes(16), b"abc", [2], [5])


# ---------------------------------------------------------------------------
# Bitmaps
# ---------------------------------------------------------------------------


def naive_bits(data: bytes, nbits: int) -> list[int]:
    return [(data[i // 8] >> (i % 8)) & 1 for i in range(nbits)]


@given(st.binary(max_size=700), st.integers(0, 40), st.integers(0, 40))
def test_popcount_all_kernels(data, head, tail):
    nbytes = max(0, len(data) - head - tail)
    offset = min(head, len(data))
    expected = sum(bin(b).count("1") for b in data[offset : offset + nbytes])
    for mod in MODS:
        assert mod.popcount(data, offset, nbytes) == expected
        for kernel in mod.popcount_kernels():
            assert mod.popcount(data, offset, nbytes, kernel=kernel) == expected


@given(
    st.binary(min_size=1, max_size=64).map(lambda b: bytes(x & y for x, y in zip(b, b[1:] + b, strict=False))),
    st.integers(0, 520),
    st.integers(1, 40),
    st.sampled_from([1, 2, 4, 8, 64]),
)
def test_find_free_matches_naive(data, start, count, align):
    nbits = len(data) * 8 - (start % 5)
    bits = naive_bits(data, nbits)
    expected = -1
    for i in range(start, nbits - count + 1):
        if i % align == 0 and not any(bits[i : i + count]):
            expected = i
            break
    for mod in MODS:
        assert mod.find_free(data, 0, nbits, start, count, align) == expected


def test_find_free_long_runs_and_offset():
    bm = bytearray(b"\xff" * 4096)
    bm[4000:4010] = bytes(10)  # bits 32000..32079 free
    for mod in MODS:
        assert mod.find_free(bm, 0, 32768, 0, 80, 1) == 32000
        assert mod.find_free(bm, 0, 32768, 0, 81, 1) == -1
        assert mod.find_free(bm, 0, 32768, 0, 16, 64) == 32000
        assert mod.find_free(bm, 1000, 3096 * 8, 0, 8, 8) == 3000 * 8
        with pytest.raises(ValueError):
            mod.find_free(bm, 4000, 800, 0, 1, 1)


@given(st.binary(max_size=100), st.data())
def test_diff_matches_naive(a, data):
    b = data.draw(st.binary(min_size=len(a), max_size=len(a)))
    nbits = data.draw(st.integers(0, len(a) * 8))
    expected = [i for i, (x, y) in enumerate(zip(naive_bits(a, nbits), naive_bits(b, nbits), strict=True)) if x != y]
    shifted = b"\x55" + b
    for mod in MODS:
        assert list(mod.diff(a, 0, b, 0, nbits)) == expected
        assert list(mod.diff(a, 0, shifted, 1, nbits)) == expected


# ---------------------------------------------------------------------------
# Clean images: both backends agree and match what the library wrote
# ---------------------------------------------------------------------------


def test_clean_image_scans_agree_and_match_library(populated):
    with Volume.open(populated) as vol:
        geo, view = vol.geo, vol.dev.view
        inodes, walk, dirs = compare_backends(view, geo, vol.hash_seed)
        assert problems(inodes) == problems(walk) == problems(dirs) == []
        in_use = [ino for ino in range(1, geo.inodes_count + 1) if vol.read_inode(ino).mode]
        assert list(inodes["ino"]) == in_use
        for i, ino in enumerate(inodes["ino"]):
            node = vol.read_inode(ino)
            assert (inodes["mode"][i], inodes["links"][i], inodes["size"][i]) == (
                node.mode,
                node.links_count,
                node.size,
            )
            if node.mode & F.S_IFMT != F.S_IFDIR:
                assert walk["counts"][i] == node.blocks, ino
        for i, ino in enumerate(dirs and inodes["dir_ino"]):
            node = vol.read_inode(ino)
            assert dirs["counts"][i] + (1 if node.xattr_block else 0) == node.blocks
            assert node.size == dirs["counts"][i] * geo.block_size
        # The computed ownership (files + directories + metadata) is the on-media bitmap.
        bs = geo.block_size
        for g in range(geo.group_count):
            assert list(B.diff(view, geo.block_bitmap_block(g) * bs, walk["owned"], g * bs, geo.blocks_per_group)) == []
        # Entries are exactly what the library lists, and names hash as stored.
        listed = sorted((d, e.ino, e.name, e.file_type) for d in inodes["dir_ino"] for e in vol.listdir(d))
        found = sorted(
            (d, c, bytes(view[o : o + n]), t)
            for d, c, o, n, t in zip(
                dirs["entry_dir"], dirs["entry_ino"], dirs["name_off"], dirs["name_len"], dirs["file_type"], strict=True
            )
        )
        assert found == listed
        hashes = B.siphash24_bulk(vol.hash_seed, view, dirs["name_off"], dirs["name_len"])
        assert hashes == dirs["entry_hash"]
        # Link counts: entries per inode, plus subdirectories for directories.
        counts = B.link_counts(dirs["entry_ino"], geo.inodes_count)
        assert bytes(counts) == bytes(P.link_counts(dirs["entry_ino"], geo.inodes_count))
        expected = Counter(dirs["entry_ino"])
        for i, ino in enumerate(inodes["ino"]):
            assert counts[ino] == expected.get(ino, 0)
            if inodes["mode"][i] & F.S_IFMT == F.S_IFDIR:
                subdirs = sum(
                    1 for d, t in zip(dirs["entry_dir"], dirs["file_type"], strict=True) if d == ino and t == F.DT_DIR
                )
                assert inodes["links"][i] == 2 + subdirs
            elif ino >= F.FIRST_INO:
                assert inodes["links"][i] == counts[ino]


def test_group_ranges_partition_the_scan(tmp_path):
    path = make_image(tmp_path / "groups.img", 300 << 20, inode_count=2000)
    with open(path, "r+b") as handle:  # one raw in-use inode per group (scan_inodes needs no more)
        geo = F.compute_geometry(300 << 20, inode_count=2000)
        for g in range(geo.group_count):
            handle.seek(geo.inode_offset(g * geo.inodes_per_group + 5) + INODE["mode"].offset)
            handle.write((F.S_IFREG | 0o600).to_bytes(2, "little"))
    with Volume.open(path) as vol:
        geo = vol.geo
        assert geo.group_count >= 2
        for mod in MODS:
            whole = mod.scan_inodes(vol.dev.view, geo)
            parts = [mod.scan_inodes(vol.dev.view, geo, groups=(g, g + 1)) for g in range(geo.group_count)]
            joined = [ino for part in parts for ino in part["ino"]]
            assert joined == list(whole["ino"])
            assert {geo.group_of_inode(i) for i in joined} == set(range(geo.group_count))
            assert list(mod.scan_inodes(vol.dev.view, geo, groups=(1, 0))["ino"]) == []


def test_ownership_without_metadata_bits(populated):
    with Volume.open(populated) as vol:
        geo, view = vol.geo, vol.dev.view
        inos = B.scan_inodes(view, geo)["ino"]
        results = [mod.walk_blockmaps(view, geo, inos, mark_metadata=False) for mod in MODS]
        for other in results[1:]:
            same(results[0], other)
        bare, marked = results[0]["owned"], B.walk_blockmaps(view, geo, inos)["owned"]
        metadata = [
            b
            for b in range(geo.group_count * geo.blocks_per_group)
            if b >= geo.blocks_count or geo.is_metadata_block(b)
        ]
        assert all(not bare[b // 8] >> (b % 8) & 1 for b in metadata)
        assert all(marked[b // 8] >> (b % 8) & 1 for b in metadata)
        assert B.popcount(marked, 0, len(marked)) == B.popcount(bare, 0, len(bare)) + len(metadata)


def test_use_bitmap_scan_agrees_on_clean_image(populated):
    with Volume.open(populated) as vol:
        full = B.scan_inodes(vol.dev.view, vol.geo)
        for mod in MODS:
            marked = mod.scan_inodes(vol.dev.view, vol.geo, use_bitmap=True)
            same(full, marked)


# ---------------------------------------------------------------------------
# Targeted damage
# ---------------------------------------------------------------------------


def ptr_addr(geo, ino: int, index: int) -> int:
    return geo.inode_offset(ino) + INODE["block"].offset + 8 * index


def test_loop_in_indirect_tree_reports_every_claimant(image):
    buf, facts = image
    geo = facts["geo"]
    ino = facts["names"]["ind2"]
    root_addr = ptr_addr(geo, ino, F.N_DIRECT + 1)  # 2-level tree
    top = u64(buf, root_addr)
    put(buf, top * geo.block_size, top)  # slot 0 of the top indirect block points at itself
    inodes, walk, _ = compare_backends(buf, geo, facts["seed"])
    shared = [(i, w) for i, w, c in problems(walk) if c == Problem.BLOCK_SHARED]
    assert (ino, root_addr) in shared and (ino, top * geo.block_size) in shared


def test_pointers_out_of_range_metadata_and_shared(image):
    buf, facts = image
    geo = facts["geo"]
    small, dense = facts["names"]["small"], facts["names"]["dense"]
    put(buf, ptr_addr(geo, small, 1), geo.blocks_count + 5)
    put(buf, ptr_addr(geo, small, 2), geo.block_bitmap_block(0))
    stolen = u64(buf, ptr_addr(geo, dense, 4))
    put(buf, ptr_addr(geo, small, 0), stolen)
    _, walk, _ = compare_backends(buf, geo, facts["seed"])
    found = set(problems(walk))
    assert (small, ptr_addr(geo, small, 1), Problem.BLOCK_OUT_OF_RANGE) in found
    assert (small, ptr_addr(geo, small, 2), Problem.BLOCK_IN_METADATA) in found
    assert (small, ptr_addr(geo, small, 0), Problem.BLOCK_SHARED) in found
    assert (dense, ptr_addr(geo, dense, 4), Problem.BLOCK_SHARED) in found
    assert len(found) == 4


def test_blocks_past_eof_are_reported_and_not_owned(image):
    buf, facts = image
    geo = facts["geo"]
    dense = facts["names"]["dense"]
    put(buf, geo.inode_offset(dense) + INODE["size"].offset, 2 * geo.block_size)
    inodes, walk, _ = compare_backends(buf, geo, facts["seed"])
    eof = [w for i, w, c in problems(walk) if c == Problem.BLOCK_PAST_EOF and i == dense]
    assert ptr_addr(geo, dense, 2) in eof and ptr_addr(geo, dense, F.N_DIRECT) in eof
    index = list(inodes["ino"]).index(dense)
    assert walk["counts"][index] == 2
    third = u64(buf, ptr_addr(geo, dense, 2))
    assert not walk["owned"][third // 8] >> (third % 8) & 1


def indirect_pointers(buf, geo, ino: int) -> list[tuple[int, int]]:
    """(pointer word address, indirect block) of every indirect block below ``ino``'s ``block[]``, top-down."""
    ppb = geo.block_size // 8
    out: list[tuple[int, int]] = []

    def walk(addr: int, level: int) -> None:
        block = u64(buf, addr)
        if not block or level == 0:
            return
        out.append((addr, block))
        for i in range(ppb):
            walk(block * geo.block_size + 8 * i, level - 1)

    for k in range(F.N_INDIRECT):
        walk(ptr_addr(geo, ino, F.N_DIRECT + k), k + 1)
    return out


def test_all_zero_indirect_block_is_reported_and_not_descended(image):
    """spec/checking.md 7.6: an indirect block holding no pointer is a problem (claimed, reported once)."""
    buf, facts = image
    geo = facts["geo"]
    ino = facts["names"]["ind3"]
    (top_addr, top), *_ = indirect_pointers(buf, geo, ino)
    buf[top * geo.block_size : (top + 1) * geo.block_size] = bytes(geo.block_size)
    _, walk, _ = compare_backends(buf, geo, facts["seed"])
    assert problems(walk) == [(ino, top_addr, Problem.INDIRECT_ALL_ZERO)]
    assert walk["owned"][top // 8] >> (top % 8) & 1


@SLOW
@given(st.data())
def test_zeroed_indirect_blocks_agree(image, data):
    """Any set of indirect blocks zeroed: both backends report exactly the top-most zeroed ones."""
    pristine, facts = image
    buf = bytearray(pristine)  # examples must not see each other's damage
    geo = facts["geo"]
    trees = [(ino, indirect_pointers(buf, geo, ino)) for ino in sorted(facts["names"].values())]
    candidates = [blk for _, ptrs in trees for _, blk in ptrs]
    zeroed = set(data.draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=6, unique=True)))
    for blk in zeroed:
        buf[blk * geo.block_size : (blk + 1) * geo.block_size] = bytes(geo.block_size)
    _, walk, _ = compare_backends(buf, geo, facts["seed"])
    reached: set[tuple[int, int]] = set()
    for ino, ptrs in trees:  # a zeroed block hides every pointer below it
        hidden: set[int] = set()
        for addr, blk in ptrs:  # top-down: a pointer's own block comes before it
            home = addr // geo.block_size
            if home in zeroed or home in hidden:
                hidden.add(blk)
            elif blk in zeroed:
                reached.add((ino, addr))
    found = {(i, w) for i, w, c in problems(walk) if c == Problem.INDIRECT_ALL_ZERO}
    assert found == reached
    assert all(c == Problem.INDIRECT_ALL_ZERO for _, _, c in problems(walk))


def test_inode_field_problems(image):
    buf, facts = image
    geo = facts["geo"]
    names = facts["names"]
    base = {name: geo.inode_offset(ino) for name, ino in names.items()}
    put(buf, base["small"] + INODE["mode"].offset, 0o170644, 2)
    put(buf, base["ind1"] + INODE["flags"].offset, 0x8000 | F.INODE_FLAG_INLINE, 4)
    put(buf, base["ind2"] + INODE["reserved0"].offset, 7, 2)
    put(buf, base["ind3"] + INODE["size"].offset, (1 << 64) - 1)
    put(buf, base["few"] + INODE["parent"].offset, geo.inodes_count + 1)
    put(buf, base["many"] + INODE["dir_bank"].offset, 5)
    put(buf, base["null"] + INODE["block"].offset, 99)
    put(buf, base["dense"] + INODE["links_count"].offset, 0, 4)
    inodes, _, _ = compare_backends(buf, geo, facts["seed"])
    found = {(i, c) for i, w, c in problems(inodes)}
    assert (names["small"], Problem.ILLEGAL_MODE) in found
    assert (names["ind1"], Problem.UNKNOWN_FLAGS) in found and (names["ind1"], Problem.INLINE_NOT_SYMLINK) in found
    assert (names["ind2"], Problem.RESERVED0_NONZERO) in found
    assert (names["ind3"], Problem.SIZE_TOO_LARGE) in found
    assert (names["few"], Problem.DIR_BAD_PARENT) in found
    assert (names["many"], Problem.DIR_BAD_BANK) in found
    assert (names["null"], Problem.SPECIAL_HAS_DATA) in found
    assert (names["dense"], Problem.LINKS_ZERO) in found


def dir_records(buf, geo, dir_ino) -> list[int]:
    """Addresses of the live records of a one-page directory."""
    root = u64(buf, ptr_addr(geo, dir_ino, u64(buf, geo.inode_offset(dir_ino) + INODE["dir_bank"].offset)))
    assert root & F.RADIX_PAGE_BIT
    page = (root & F.RADIX_BLOCK_MASK) * geo.block_size
    out, off = [], F.DIR_PAGE_HEADER_SIZE
    while off + F.DIR_ENTRY_HEADER_SIZE <= geo.block_size:
        rec_len = int.from_bytes(buf[page + off + ENTRY["rec_len"].offset :][:2], "little")
        if not rec_len:
            break
        if u64(buf, page + off):
            out.append(page + off)
        off += rec_len
    return out


def rename_record(buf, rec: int, name: bytes, seed: bytes) -> None:
    start = rec + F.DIR_ENTRY_HEADER_SIZE
    buf[start : start + len(name)] = name
    put(buf, rec + ENTRY["hash"].offset, siphash24_pure(seed, name))


def _damage_for(kind: str, buf, facts) -> None:
    """One targeted inconsistency that no scan reports but ``verify_arrays`` must."""
    geo, names = facts["geo"], facts["names"]
    bs = geo.block_size
    dense, small = geo.inode_offset(names["dense"]), geo.inode_offset(names["small"])
    few_recs = dir_records(buf, geo, facts["few"])
    if kind == "BLOCK_COUNT":
        put(buf, dense + INODE["blocks"].offset, u64(buf, dense + INODE["blocks"].offset) + 1)
    elif kind == "DIR_SIZE":
        many = geo.inode_offset(facts["many"])
        put(buf, many + INODE["size"].offset, u64(buf, many + INODE["size"].offset) + bs)
    elif kind == "INODE_FIELDS":
        put(buf, dense + INODE["rdev"].offset, 5)
    elif kind == "INODE_FIELDS_NSEC":
        put(buf, small + INODE["mtime_nsec"].offset, 10**9, 4)
    elif kind == "ENTRY_INO":
        put(buf, few_recs[0] + ENTRY["ino"].offset, F.ROOT_INO + 1)
    elif kind == "ENTRY_TYPE":
        put(buf, few_recs[0] + ENTRY["file_type"].offset, F.DT_FIFO, ENTRY["file_type"].size)
    elif kind == "PAGE_RESIDUE":
        page_end = (few_recs[0] // bs + 1) * bs
        buf[page_end - 1] = 0x5A
    elif kind == "DIR_NAMES":
        sub = geo.inode_offset(facts["sub"])
        put(buf, sub + INODE["parent"].offset, facts["many"])
    elif kind == "LINKS":
        put(buf, small + INODE["links_count"].offset, 3, 4)


@pytest.mark.parametrize(
    "kind",
    [
        "NONE",
        "BLOCK_COUNT",
        "DIR_SIZE",
        "INODE_FIELDS",
        "INODE_FIELDS_NSEC",
        "ENTRY_INO",
        "ENTRY_TYPE",
        "PAGE_RESIDUE",
        "DIR_NAMES",
        "LINKS",
    ],
)
def test_verify_arrays_finds_each_mismatch(image, kind):
    """Each cross-check of the fast path's kernel, on damage the scans themselves do not report."""
    buf, facts = image
    _damage_for(kind, buf, facts)
    inodes, walk, dirs = compare_backends(buf, facts["geo"], facts["seed"])  # also: both backends agree
    assert not len(inodes["prob_code"]) and not len(walk["prob_code"]) and not len(dirs["prob_code"])
    verdict, per_group = P.verify_arrays(buf, facts["geo"], inodes, walk, dirs)
    assert verdict == scan.Mismatch[kind.removesuffix("_NSEC")]
    bad = [mod.check_inode_fields(buf, facts["geo"], inodes["ino"], inodes["mode"]) for mod in MODS]
    assert len(set(bad)) == 1 and (bad[0] >= 0) == kind.startswith("INODE_FIELDS")
    if kind.startswith("INODE_FIELDS"):
        assert inodes["ino"][bad[0]] == facts["names"]["dense" if kind == "INODE_FIELDS" else "small"]
        skipped = [mod.verify_arrays(buf, facts["geo"], inodes, walk, dirs, fields=False)[0] for mod in MODS]
        assert skipped == [scan.Mismatch.NONE] * len(MODS)
    clean = [mod.pages_clean(buf, facts["geo"], dirs["name_off"], dirs["name_len"]) for mod in MODS]
    assert clean == [kind != "PAGE_RESIDUE"] * len(MODS)
    if kind == "PAGE_RESIDUE":
        skipped = [mod.verify_arrays(buf, facts["geo"], inodes, walk, dirs, pages=False)[0] for mod in MODS]
        assert skipped == [scan.Mismatch.NONE] * len(MODS)
    # the fast path's one-pass check catches what lies in inodes and link counts (the rest: the dirs' verify)
    proof = fused(P, buf, facts["geo"], facts["seed"])
    caught = proof is None or proof[4][0] >= 0 or proof[4][2] != 0
    assert caught == (kind in ("BLOCK_COUNT", "INODE_FIELDS", "INODE_FIELDS_NSEC", "ENTRY_INO", "ENTRY_TYPE", "LINKS"))
    if proof is not None:
        assert (proof[5] is None) == (kind in ("ENTRY_INO", "ENTRY_TYPE", "PAGE_RESIDUE"))
    if kind == "NONE":
        assert sum(per_group) == len(inodes["dir_ino"]) == 5  # root, lost+found, many, few, few/sub
    else:
        assert not any(per_group)


@given(st.binary(max_size=300), st.data())
def test_merge_bits_ors_and_reports_overlap(a, data):
    b = data.draw(st.binary(min_size=len(a), max_size=len(a)))
    off = data.draw(st.integers(0, len(a)))
    n = data.draw(st.integers(0, len(a) - off))
    want = bytearray(a)
    want[off : off + n] = bytes(x | y for x, y in zip(a[off : off + n], b[off : off + n], strict=True))
    overlap = any(x & y for x, y in zip(a[off : off + n], b[off : off + n], strict=True))
    for mod in MODS:
        dst = bytearray(a)
        assert mod.merge_bits(dst, b, off, n) == overlap
        assert dst == want
        with pytest.raises(ValueError):
            mod.merge_bits(bytearray(a), b, off, len(a) - off + 1)


@given(st.integers(11, 80), st.data())
def test_tally_entries_and_unsettled_links_agree(n, data):
    """Random link tables, entries and in-use bitmaps: same verdicts and same table left behind."""
    values = st.integers(0, 3).map(lambda k: k << 4) | st.integers(0, (1 << 32) - 1)  # few names, or any
    start = data.draw(st.lists(values, min_size=n + 1, max_size=n + 1))
    start = [v & ~15 | data.draw(st.sampled_from([0, F.DT_REG, F.DT_DIR, F.DT_LNK])) for v in start]
    entries = data.draw(st.lists(st.integers(0, n + 2), max_size=40))
    types = bytes(data.draw(st.sampled_from([F.DT_REG, F.DT_DIR, F.DT_LNK])) for _ in entries)
    inuse = data.draw(st.binary(min_size=(n + 7) // 8, max_size=(n + 7) // 8))
    results = []
    for mod in MODS:
        table = array("I", start)
        bad = mod.tally_entries(table, array("Q", entries), array("B", types), n)
        results.append((bad, table.tobytes(), mod.unsettled_links(table, inuse, n)))
        with pytest.raises(ValueError):
            mod.tally_entries(array("I", start[:-1]), array("Q", entries), array("B", types), n)
    assert len(set(results)) == 1
    bad, _table, unsettled = results[0]
    first_bad = next(
        (k for k, e in enumerate(entries) if not F.FIRST_INO <= e <= n or start[e] & 15 != types[k]),
        -1,
    )
    assert first_bad == -1 or 0 <= bad <= first_bad  # a name count used up may fail earlier, never later
    assert unsettled == 0 or (
        F.FIRST_INO <= unsettled <= n and inuse[(unsettled - 1) >> 3] >> ((unsettled - 1) & 7) & 1
    )


def test_directory_entry_problems(image):
    buf, facts = image
    geo, seed, few = facts["geo"], facts["seed"], facts["few"]
    recs = dir_records(buf, geo, few)
    assert len(recs) == 5

    def name_of(rec):
        n = buf[rec + ENTRY["name_len"].offset]
        return bytes(buf[rec + F.DIR_ENTRY_HEADER_SIZE : rec + F.DIR_ENTRY_HEADER_SIZE + n])

    names = [name_of(r) for r in recs]
    five = [r for r, n in zip(recs, names, strict=True) if len(n) == 5]  # alpha, gamma
    rename_record(buf, five[1], name_of(five[0]), seed)
    four = [r for r, n in zip(recs, names, strict=True) if n == b"beta"][0]
    rename_record(buf, four, b"a/bc", seed)
    three = [r for r, n in zip(recs, names, strict=True) if n == b"sub"][0]
    put(buf, three + ENTRY["hash"].offset, 12345)
    hard = [r for r, n in zip(recs, names, strict=True) if n == b"hardlink"][0]
    put(buf, hard, geo.inodes_count + 3)
    _, _, dirs = compare_backends(buf, geo, seed)
    found = {(w, c) for i, w, c in problems(dirs) if i == few}
    assert found == {
        (max(five), Problem.ENTRY_DUPLICATE),
        (four, Problem.ENTRY_BAD_NAME),
        (three, Problem.ENTRY_BAD_HASH),
        (hard, Problem.ENTRY_BAD_INO),
    }
    assert sorted(dirs["entry_ino"]) == sorted(x for x in dirs["entry_ino"] if x <= geo.inodes_count)


def test_directory_structure_problems(image):
    buf, facts = image
    geo, seed, many, few = facts["geo"], facts["seed"], facts["many"], facts["few"]
    bank_many = u64(buf, geo.inode_offset(many) + INODE["dir_bank"].offset)
    root = u64(buf, ptr_addr(geo, many, bank_many))
    assert root and not root & F.RADIX_PAGE_BIT, "700 names need a radix node"
    node = root * geo.block_size
    slots = [u64(buf, node + 8 * i) for i in range(geo.block_size // 8)]
    used = [i for i, w in enumerate(slots) if w]
    # A slot of the node points back at the node: the block is reached twice.
    put(buf, node + 8 * used[0], root)
    # The few-directory's page loses its magic.
    bank_few = u64(buf, geo.inode_offset(few) + INODE["dir_bank"].offset)
    page = (u64(buf, ptr_addr(geo, few, bank_few)) & F.RADIX_BLOCK_MASK) * geo.block_size
    buf[page : page + 4] = b"XXXX"
    _, _, dirs = compare_backends(buf, geo, seed)
    found = set(problems(dirs))
    assert (many, node + 8 * used[0], Problem.BLOCK_SHARED) in found
    assert (few, page, Problem.PAGE_BAD_MAGIC) in found
    assert not any(d == few for d in dirs["entry_dir"])


def test_directory_page_header_problems(image):
    buf, facts = image
    geo, seed, many = facts["geo"], facts["seed"], facts["many"]
    bank = u64(buf, geo.inode_offset(many) + INODE["dir_bank"].offset)
    node = u64(buf, ptr_addr(geo, many, bank)) * geo.block_size
    words = [u64(buf, node + 8 * i) for i in range(geo.block_size // 8)]
    first = next(w for w in words if w & F.RADIX_PAGE_BIT)
    page = (first & F.RADIX_BLOCK_MASK) * geo.block_size
    put(buf, page + PAGE["depth"].offset, 70, 2)
    put(buf, page + PAGE["dir_ino"].offset, 3)
    put(buf, page + PAGE["next"].offset, 5)
    _, _, dirs = compare_backends(buf, geo, seed)
    codes = {c for i, w, c in problems(dirs) if w == page}
    assert {Problem.PAGE_BAD_DEPTH, Problem.PAGE_BAD_DIR_INO, Problem.PAGE_BAD_NEXT} <= codes


def test_not_a_directory_and_bad_arguments(image):
    buf, facts = image
    small = facts["names"]["small"]
    for mod in MODS:
        dirs = mod.walk_directories(buf, facts["geo"], facts["seed"], [small])
        assert problems(dirs) == [(small, facts["geo"].inode_offset(small), Problem.NOT_A_DIRECTORY)]
        with pytest.raises(ValueError):
            mod.walk_directories(buf, facts["geo"], facts["seed"], [small], bytearray(8))
        with pytest.raises(ValueError):
            mod.walk_directories(buf, facts["geo"], b"short seed", [small])


# ---------------------------------------------------------------------------
# Random damage and garbage: identical results, no crash, nothing read outside
# ---------------------------------------------------------------------------


def interesting_ranges(buf, facts) -> list[tuple[int, int]]:
    """Inode table of group 0 and every block the clean image owns."""
    geo = facts["geo"]
    bs = geo.block_size
    ranges = [(geo.inode_table_block(0) * bs, geo.inode_table_blocks * bs)]
    for b in range(geo.first_data_block(0), geo.blocks_count - 1):
        if buf[geo.block_bitmap_block(b // geo.blocks_per_group) * bs + (b % geo.blocks_per_group) // 8] >> (b % 8) & 1:
            ranges.append((b * bs, bs))
    return ranges


@SLOW
@given(st.data())
def test_random_byte_flips_agree(image, data):
    buf, facts = image
    ranges = interesting_ranges(buf, facts)
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(data.draw(st.integers(1, 60))):
        start, length = rng.choice(ranges)
        addr = start + rng.randrange(length)
        buf[addr] = rng.randrange(256) if rng.random() < 0.5 else buf[addr] ^ (1 << rng.randrange(8))
    compare_backends(buf, facts["geo"], facts["seed"])


@SLOW
@given(st.data())
def test_random_pointers_agree(image, data):
    """Block pointers and slot words rewritten to random, nearby, huge or self values."""
    buf, facts = image
    geo = facts["geo"]
    ranges = interesting_ranges(buf, facts)
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(data.draw(st.integers(1, 30))):
        start, length = rng.choice(ranges)
        addr = start + 8 * rng.randrange(length // 8)
        choice = rng.randrange(5)
        value = [
            rng.randrange(geo.blocks_count),
            addr // geo.block_size,
            (1 << 64) - 1 - rng.randrange(4),
            F.RADIX_PAGE_BIT | rng.randrange(geo.blocks_count),
            u64(buf, start + 8 * rng.randrange(length // 8)),
        ][choice]
        put(buf, addr, value)
    compare_backends(buf, facts["geo"], facts["seed"])


@SLOW
@given(st.integers(0, 2**32), st.sampled_from([0, 1, 7, 255]))
def test_garbage_blocks_agree(image, seed, density):
    """Whole blocks of garbage dropped on inodes, nodes, pages and indirect blocks."""
    buf, facts = image
    ranges = interesting_ranges(buf, facts)
    rng = random.Random(seed)
    block = bytes(rng.randrange(256) & (density or 255) for _ in range(4096))
    for _ in range(3):
        start, length = rng.choice(ranges)
        buf[start : start + min(length, 4096)] = block[: min(length, 4096)]
    compare_backends(buf, facts["geo"], facts["seed"])


@SLOW
@given(st.data())
def test_bitmap_guided_scan_agrees(image, data):
    """use_bitmap reads only marked inodes: flips in the inode bitmap and table, both backends alike."""
    buf, facts = image
    geo = facts["geo"]
    bs = geo.block_size
    ibm = geo.inode_bitmap_block(0) * bs
    table = geo.inode_table_block(0) * bs
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(data.draw(st.integers(1, 40))):
        if rng.random() < 0.5:
            buf[ibm + rng.randrange(geo.inodes_per_group // 8)] ^= 1 << rng.randrange(8)
        else:
            buf[table + rng.randrange(geo.inodes_per_group * F.INODE_SIZE)] = rng.randrange(256)
    if rng.random() < 0.3:
        buf[ibm : ibm + 64] = bytes(64)  # whole 64-bit words of clear bits are skipped
    results = [mod.scan_inodes(buf, geo, use_bitmap=True, threads=t) for mod in MODS for t in (1, 2)]
    for other in results[1:]:
        same(results[0], other)
    marked = {i + 1 for i in range(geo.inodes_per_group) if buf[ibm + i // 8] >> (i % 8) & 1}
    assert set(results[0]["ino"]) <= marked


def test_truncated_mapping_is_never_read_past(image):
    """A mapping shorter than the geometry claims: pointers beyond it are out of range."""
    buf, facts = image
    geo = facts["geo"]
    cut = bytes(buf[: (geo.first_data_block(0) + 40) * geo.block_size])
    ref = full_scan(P, cut, geo, facts["seed"])
    got = full_scan(B, cut, geo, facts["seed"], threads=2)
    for a, b in zip(ref, got, strict=True):
        same(a, b)
    assert Problem.BLOCK_OUT_OF_RANGE in {Problem(c) for c in ref[1]["prob_code"]} | {
        Problem(c) for c in ref[2]["prob_code"]
    }


def plausible_garbage(rng: random.Random, geo, size: int) -> bytearray:
    """Random words that look like pointers, slots, modes and pages often enough to be followed."""
    nb = geo.blocks_count
    words = []
    for _ in range(size // 8):
        r = rng.random()
        if r < 0.45:
            words.append(0)
        elif r < 0.7:
            words.append(rng.randrange(nb + 4))
        elif r < 0.8:
            words.append(F.RADIX_PAGE_BIT | rng.randrange(nb + 4))
        elif r < 0.9:
            words.append(rng.randrange(1 << 64))
        else:
            words.append(rng.randrange(300))
    buf = bytearray(b"".join(w.to_bytes(8, "little") for w in words))
    bs = geo.block_size
    types = [F.S_IFREG, F.S_IFDIR, F.S_IFLNK, F.S_IFCHR, F.S_IFIFO]
    for ino in range(1, geo.inodes_count + 1):
        if rng.random() < 0.6:
            base = geo.inode_offset(ino)
            put(buf, base + INODE["mode"].offset, rng.choice(types) | 0o644, 2)
            put(buf, base + INODE["size"].offset, rng.randrange(64 * bs))
            put(buf, base + INODE["dir_bank"].offset, rng.randrange(2))
    for block in rng.sample(range(geo.first_data_block(0), nb - 1), min(12, nb // 4)):
        page = block * bs
        buf[page : page + 4] = F.DIR_PAGE_MAGIC
        put(buf, page + PAGE["depth"].offset, rng.choice([0, 0, 1, 9, 64]), 2)
        put(buf, page + PAGE["prefix"].offset, rng.choice([0, 1 << 63]))
        put(buf, page + PAGE["next"].offset, rng.choice([0, 0, rng.randrange(nb)]))
        off = F.DIR_PAGE_HEADER_SIZE
        for _ in range(rng.randrange(6)):  # a few well-formed records with random names and inode numbers
            name = bytes(rng.choice(b"ab./\0") for _ in range(rng.randrange(1, 4)))
            rec_len = F.dir_entry_rec_len(len(name))
            put(buf, page + off, rng.randrange(geo.inodes_count + 3))
            put(buf, page + off + ENTRY["hash"].offset, rng.randrange(1 << 64))
            buf[page + off + ENTRY["name_len"].offset] = len(name)
            put(buf, page + off + ENTRY["rec_len"].offset, rec_len, 2)
            buf[page + off + F.DIR_ENTRY_HEADER_SIZE : page + off + F.DIR_ENTRY_HEADER_SIZE + len(name)] = name
            off += rec_len
        put(buf, page + off + ENTRY["rec_len"].offset, 0, 2)
    return buf


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([(1 << 20, 4096), (2 << 20, 8192)]))
def test_plausible_garbage_agrees(seed, shape):
    """A whole device of pointer-like garbage: both backends report the same, nothing crashes."""
    size, bs = shape
    geo = F.compute_geometry(size, bs)
    rng = random.Random(seed)
    buf = plausible_garbage(rng, geo, size)
    inodes = list(range(1, geo.inodes_count + 3))
    rng.shuffle(inodes)
    for mod in MODS:
        s = mod.scan_inodes(buf, geo)
        assert set(s["ino"]) <= set(range(1, geo.inodes_count + 1))
    ref = (P.walk_blockmaps(buf, geo, inodes), P.walk_directories(buf, geo, bytes(16), inodes))
    for threads in (1, 2) if C is not None else ():
        got = (
            C.walk_blockmaps(buf, geo, inodes, threads=threads),
            C.walk_directories(buf, geo, bytes(16), inodes, threads=threads),
        )
        for a, b in zip(ref, got, strict=True):
            same(a, b)
    same(P.scan_inodes(buf, geo), B.scan_inodes(buf, geo))


GUARDED_SCAN = """
import ctypes, mmap, random, sys
from nvfs_tools import _fastscan as C
from nvfs_tools.volume import Volume

path, cut, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with Volume.open(path) as vol:
    geo, hash_seed = vol.geo, vol.hash_seed
    data = bytearray(vol.dev.view[:cut])
rng = random.Random(seed)
for _ in range(200):  # pointers aimed at the last blocks, the guard and beyond
    addr = rng.randrange(geo.inode_table_block(0) * geo.block_size, cut - 8) & ~7
    data[addr : addr + 8] = (cut // geo.block_size - rng.randrange(3)).to_bytes(8, "little")
page = mmap.PAGESIZE
size = -(-cut // page) * page
m = mmap.mmap(-1, size + page)
m[size - cut : size] = data  # the data ends exactly where the guard page starts
libc = ctypes.CDLL(None, use_errno=True)
base = ctypes.addressof(ctypes.c_char.from_buffer(m))
assert libc.mprotect(ctypes.c_void_p(base + size), page, 0) == 0  # PROT_NONE: any read past the data faults
view = memoryview(m)[size - cut : size]
for threads in (1, 2):
    s = C.scan_inodes(view, geo, threads=threads)
    C.scan_inodes(view, geo, use_bitmap=True, threads=threads)
    w = C.walk_blockmaps(view, geo, s["ino"], threads=threads)
    C.walk_directories(view, geo, hash_seed, s["dir_ino"], w["owned"], threads=threads)
print("ok")
"""


@needs_compiled
@pytest.mark.parametrize("cut_blocks, extra", [(60, 0), (200, 1000), (1000, 8)])
def test_compiled_core_never_reads_past_the_mapping(populated, cut_blocks, extra):
    """The mapping ends at a PROT_NONE page (cut mid-table or mid-block): a single stray read would crash."""
    with Volume.open(populated) as vol:
        cut = (vol.geo.inode_table_block(0) + cut_blocks) * vol.geo.block_size + extra
    for seed in range(3):
        run = subprocess.run(
            [sys.executable, "-c", GUARDED_SCAN, populated, str(cut), str(seed)], capture_output=True, text=True
        )
        assert run.returncode == 0 and run.stdout.split() == ["ok"], run.stderr[-2000:]


# ---------------------------------------------------------------------------
# Link counts, CPU features and persistence primitives
# ---------------------------------------------------------------------------


@given(st.lists(st.integers(0, 70)), st.integers(0, 64))
def test_link_counts(children, n):
    expected = Counter(c for c in children if 0 < c <= n)
    for mod in MODS:
        counts = mod.link_counts(children, n)
        assert len(counts) == n + 1
        assert [counts[i] for i in range(n + 1)] == [expected.get(i, 0) for i in range(n + 1)]


@needs_compiled
def test_cpu_features_agree_with_proc_cpuinfo():
    compiled, reported = C.cpu_features(), P.cpu_features()
    for key in ("popcnt", "clflush", "clflushopt", "clwb", "sse2", "avx512vpopcntdq"):
        assert compiled[key] == reported[key], key
    assert ("popcnt" in C.popcount_kernels()) == compiled["popcnt"]
    assert ("avx512vpopcntdq" in C.popcount_kernels()) == compiled["avx512vpopcntdq"]
    expected = "clwb" if compiled["clwb"] else "clflushopt" if compiled["clflushopt"] else "clflush"
    assert C.flush_instruction() == expected
    assert P.flush_instruction() == "none"


def test_flush_and_nt_zero_on_a_shared_mapping(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"\xab" * 65536)
    with open(path, "r+b") as handle, mmap.mmap(handle.fileno(), 0) as m:
        for mod in MODS:
            mod.nt_zero(m, 4099, 10000)
            mod.flush_range(m, 0, 65536)
            mod.sfence()
            with pytest.raises(ValueError):
                mod.flush_range(m, 65000, 1000)
            with pytest.raises(ValueError):
                mod.nt_zero(m, -1, 10)
        m.flush()
    data = path.read_bytes()
    assert (
        data[:4099] == b"\xab" * 4099 and data[4099:14099] == bytes(10000) and data[14099:] == b"\xab" * (65536 - 14099)
    )


@needs_compiled
def test_nvfs_pure_selects_the_reference():
    code = "from nvfs_tools import scan, namehash; print(scan.backend().__name__, scan.using_compiled())"
    env = {**os.environ, "NVFS_PURE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["nvfs_tools.scan_pure", "False"]
    env.pop("NVFS_PURE")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["nvfs_tools._fastscan", "True"]


@pytest.mark.parametrize("read", ["map", "pread"])
def test_fast_path_table_reads_prove_and_refute(populated, tmp_path, monkeypatch, read):
    """fsck's fast path reading inode tables through the mapping or into its own buffer: a clean
    image is proven, the same image with one wrong block count is not."""
    from nvfs_tools.check import fastpath
    from nvfs_tools.check.image import Image
    from nvfs_tools.check.pass0_super import load_superblock
    from nvfs_tools.device import Device

    monkeypatch.setattr(fastpath, "TABLE_READ", read)
    path = str(tmp_path / "copy.img")
    with open(populated, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    verdicts = []
    for damage in (False, True):
        if damage:
            with Volume.open(path) as vol:
                addr = vol.geo.inode_offset(files_of(vol)["dense"]) + INODE["blocks"].offset
            with open(path, "r+b") as handle:
                handle.seek(addr)
                blocks = int.from_bytes(handle.read(8), "little")
                handle.seek(addr)
                handle.write((blocks + 1).to_bytes(8, "little"))
        with Device(path) as dev:
            static, raw, _reason, _off = load_superblock(dev, False)
            img = Image(dev, static, raw)
            verdicts.append(fastpath.verify(img, quota=False) is not None)
            del img
    assert verdicts == [True, False]


def test_inode_pass_threads_over_groups_agree(tmp_path):
    """check_inode_groups and check_directories split over threads (atomic claims and link counts)
    on an image with inodes in 4 groups and a file linked from directories that different threads
    walk: same records, bitmaps and link table as one thread and as the reference; a block claimed
    by inodes of two groups is caught whichever thread sees it second."""
    path = make_image(str(tmp_path / "spread.img"), 400 << 20)
    with Volume.open(path, writable=True) as vol:
        for i in range(3):
            d = vol.mkdir(ROOT, f"d{i}", 0o755)
            f = vol.create(d, "f", 0o644)
            vol.write(f, 0, b"x" * 3000)
            if i == 0:
                shared = f
            else:
                vol.link(shared, d, "shared")
    with open(path, "rb") as handle:
        buf = bytearray(handle.read())
    with Volume.open(path) as vol:
        geo, seed, files = vol.geo, vol.hash_seed, [vol.lookup(f"/d{i}/f") for i in range(3)]
    assert len({geo.group_of_inode(f) for f in files}) == 3
    runs = [fused(mod, buf, geo, seed, threads=t) for mod, t in [(P, 0)] + [(C, t) for t in (1, 2, 4) if C]]
    assert runs[0] is not None and runs[0][5] is not None
    for got in runs[1:]:
        same(runs[0][0], got[0])
        assert got[1:5] == runs[0][1:5]
        same(runs[0][5][0], got[5][0])
        assert got[5][1:] == runs[0][5][1:]
    # the second file's first pointer now names the first file's block: a block shared across groups
    first = u64(buf, geo.inode_offset(files[0]) + INODE["block"].offset)
    put(buf, geo.inode_offset(files[1]) + INODE["block"].offset, first)
    n = geo.inodes_count
    for mod, t in [(P, 0)] + [(C, t) for t in (1, 2, 4) if C]:
        owned, inuse, table = bytearray(geo.group_count * geo.block_size), bytearray(n), bytearray(4 * n + 4)
        assert mod.check_inode_groups(buf, geo, (0, geo.group_count), owned, inuse, table, threads=t) is None


# ---------------------------------------------------------------------------
# group headers: fsck pass 0's static copies, the bulk pass 5's bitmaps and counters
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grouped():
    """A sparse image of three groups (the last one short, holding the backup copy) with files and
    directories, as the library writes them; in /dev/shm when there is one."""
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        path = make_image(os.path.join(tmp, "fs.img"), (2 << 27) + (40 << 20), inode_count=3 * 1024)
        with Volume.open(path, writable=True) as vol:
            for i in range(3):
                d = vol.mkdir(ROOT, f"d{i}", 0o755)
                f = vol.create(d, "data", 0o644)
                vol.write(f, 0, os.urandom(5 * 4096 + 100))
        yield path


@pytest.fixture(scope="module")
def grouped_found(grouped):
    with Volume.open(grouped) as vol:
        return _found_by_bitmaps(vol.dev.view, vol.geo)


def _found_by_bitmaps(view, geo):
    """The checker's inputs of group_summaries_match as the library's own bitmaps and counters state them
    (metadata bits left out of the ownership map, reserved inodes out of the in-use map)."""
    bs, bpg, ipg = geo.block_size, geo.blocks_per_group, geo.inodes_per_group
    owned, inuse = bytearray(geo.group_count * bs), bytearray(geo.group_count * ipg // 8)
    dirs = array("Q")
    used_dirs = F.field_layout(F.PLAIN["GroupCounters"])["used_dirs"]
    for g in range(geo.group_count):
        bitmap = view[geo.block_bitmap_block(g) * bs :][:bs]
        for i in range(bpg):
            block = g * bpg + i
            if bitmap[i // 8] >> (i % 8) & 1 and block < geo.blocks_count and not geo.is_metadata_block(block):
                owned[block // 8] |= 1 << (block % 8)
        ibm = view[geo.inode_bitmap_block(g) * bs :][: ipg // 8]
        for i in range(ipg):
            if ibm[i // 8] >> (i % 8) & 1 and g * ipg + i + 1 >= F.FIRST_INO:
                inuse[(g * ipg + i) // 8] |= 1 << (i % 8)
        at = geo.counters_block(g) * bs + used_dirs.offset
        dirs.append(int.from_bytes(view[at : at + used_dirs.size], "little"))
    return owned, inuse, dirs


def _counters_template(bs):
    head = F.PLAIN["GroupCounters"].build(dict.fromkeys(("group", "free_blocks", "free_inodes", "used_dirs"), 0))
    return head + bytes(bs - len(head))


def test_group_summaries_match_a_clean_image(grouped, grouped_found):
    owned, inuse, dirs = grouped_found
    with Volume.open(grouped) as vol:
        geo, view, fd = vol.geo, vol.dev.view, vol.dev.fd
        assert geo.group_count == 3 and geo.group_end(2) - geo.group_start(2) < geo.blocks_per_group
        totals = (vol.dyn.free_blocks, vol.dyn.free_inodes)
        template = _counters_template(geo.block_size)
        for mod in MODS:
            for reader, threads in ((-1, 1), (fd, 1), (fd, 2), (-1, 3)):
                answer = mod.group_summaries_match(view, geo, owned, inuse, dirs, template, fd=reader, threads=threads)
                assert answer == totals
        assert all(
            mod.group_summaries_match(view[: geo.group_start(2) * geo.block_size], geo, owned, inuse, dirs, template)
            is None
            for mod in MODS
        )
        assert all(mod.group_summaries_match(view, geo, owned[:-1], inuse, dirs, template) is None for mod in MODS)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_group_summaries_agree_on_damage(grouped, grouped_found, data):
    """Damage in a header (bitmap, counters, inode bitmap: in the file, seen through the descriptor and
    the mapping) or in the checker's inputs: every backend and both readers give the same answer, and
    any changed header byte is a difference."""
    with Volume.open(grouped) as vol:
        geo = vol.geo
    owned, inuse, dirs = (bytearray(x) if i < 2 else array("Q", x) for i, x in enumerate(grouped_found))
    bs = geo.block_size
    g = data.draw(st.integers(0, geo.group_count - 1))
    start = geo.block_bitmap_block(g) * bs
    span = (geo.inode_bitmap_block(g) + geo.inode_bitmap_blocks) * bs - start
    where = data.draw(st.sampled_from(["header", "owned", "inuse", "dirs"]))
    at = data.draw(st.integers(0, {"header": span, "owned": len(owned), "inuse": len(inuse), "dirs": 3}[where] - 1))
    flip = data.draw(st.integers(1, 255))
    template = _counters_template(bs)
    fd = os.open(grouped, os.O_RDWR)
    try:
        old = os.pread(fd, 1, start + at)
        if where == "header":
            os.pwrite(fd, bytes([old[0] ^ flip]), start + at)
        elif where == "owned":
            owned[at] ^= flip
        elif where == "inuse":
            inuse[at] ^= flip
        else:
            dirs[at] ^= flip
        with open(grouped, "rb") as handle, mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ) as m:
            view = memoryview(m)
            answers = {
                mod.group_summaries_match(view, geo, owned, inuse, dirs, template, fd=reader, threads=threads)
                for mod in MODS
                for reader, threads in ((-1, 1), (fd, 1), (fd, 3))
            }
            view.release()
    finally:
        os.pwrite(fd, old, start + at)
        os.close(fd)
    assert len(answers) == 1
    if where == "header":
        assert answers == {None}


@given(st.binary(max_size=200), st.lists(st.integers(0, 220), max_size=30), st.binary(min_size=1, max_size=12))
def test_differing_spans_matches_naive(buf, offsets, expected):
    naive = [
        i
        for i, off in enumerate(offsets)
        if off + len(expected) > len(buf) or buf[off : off + len(expected)] != expected
    ]
    with tempfile.TemporaryFile() as handle:
        handle.write(buf)
        handle.flush()
        for mod in MODS:
            assert list(mod.differing_spans(buf, offsets, expected)) == naive
            assert list(mod.differing_spans(buf, offsets, expected, threads=3)) == naive
            assert list(mod.differing_spans(b"", offsets, expected, fd=handle.fileno(), threads=2)) == naive


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 63), max_size=12), st.lists(st.integers(0, 70), max_size=25), st.integers(1, 5))
def test_seek_holes_matches_seek_data(written, ranges, pages):
    """Ranges of a sparse file (pages 0..63 some written): hole when SEEK_DATA from the range's start
    finds nothing before its end, whatever the backend and the number of threads."""
    page = mmap.PAGESIZE
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryFile(dir=shm) as handle:
        fd = handle.fileno()
        os.ftruncate(fd, 64 * page)
        for p in written:
            os.pwrite(fd, b"x", p * page + 5)
        starts = sorted(r * page for r in ranges)

        def data_from(start):
            try:
                return os.lseek(fd, start, os.SEEK_DATA)
            except OSError:
                return 1 << 63

        naive = [int(data_from(s) >= s + pages * page) for s in starts]
        for mod in MODS:
            for threads in (1, 2, 3):
                assert list(mod.seek_holes(fd, starts, pages * page, threads=threads)) == naive


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_group_counters_agree_on_damage(grouped, data):
    """The clean-flag shortcut's check: on the library's image every group agrees and the free counts
    are the superblock's; after a random byte change in a group's bitmaps or counters every backend,
    reader and thread count names the same group and reason (a flip in the counted bits or the
    counters block is never AGREE)."""
    with Volume.open(grouped) as vol:
        geo = vol.geo
        totals = (vol.dyn.free_blocks, vol.dyn.free_inodes)
    bs = geo.block_size
    template = _counters_template(bs)
    g = data.draw(st.integers(0, geo.group_count - 1))
    start = geo.block_bitmap_block(g) * bs
    span = (geo.inode_bitmap_block(g) + geo.inode_bitmap_blocks) * bs - start
    at = data.draw(st.integers(-1, span - 1))  # -1: no damage
    flip = data.draw(st.integers(1, 255))
    fd = os.open(grouped, os.O_RDWR)
    old = os.pread(fd, 1, start + max(at, 0))
    try:
        if at >= 0:
            os.pwrite(fd, bytes([old[0] ^ flip]), start + at)
        with open(grouped, "rb") as handle, mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ) as m:
            view = memoryview(m)
            answers = {
                tuple(mod.group_counters_agree(view, geo, template, fd=reader, threads=threads))
                for mod in MODS
                for reader, threads in ((-1, 1), (fd, 1), (fd, 2), (-1, 3))
            }
            view.release()
    finally:
        os.pwrite(fd, old, start + max(at, 0))
        os.close(fd)
    assert len(answers) == 1, answers
    (answer,) = answers
    if at < 0:
        assert answer == (scan.CounterCheck.AGREE, 0, 0, *totals)
    else:
        dirs = F.field_layout(F.PLAIN["GroupCounters"])["used_dirs"]
        in_counters = bs <= at < 2 * bs and not dirs.offset <= at - bs < dirs.offset + dirs.size  # not judged here
        counted_inode = 2 * bs <= at < 2 * bs + geo.inodes_per_group // 8
        if at < bs or in_counters or counted_inode:
            assert answer[0] != scan.CounterCheck.AGREE and answer[1] == g


def _resident_bytes(path: str) -> int:
    """Resident bytes of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                inside = line.rstrip().endswith(path)
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total


@needs_compiled
def test_check_inode_groups_release_drops_table_pages_and_changes_nothing(tmp_path):
    """With ``release`` each thread drops its share of the tables from a shared mapping: same answer, and
    the tables are no longer resident (fsck's bound on memory); without it they stay mapped."""
    img = make_image(tmp_path / "img", 96 << 20, inode_count=48 * 1024)  # 12 MiB of inode tables
    with Volume.open(img, writable=True) as vol:
        sub = vol.mkdir(ROOT, "d", 0o755)
        vol.write(vol.create(sub, "f", 0o644), 0, b"x" * 100_000)
    geo = Volume.open(img).geo
    table_bytes = geo.group_count * geo.inode_table_blocks * geo.block_size
    path = os.path.realpath(img)
    answers = []
    for release in (False, True):
        with open(img, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            n = geo.inodes_count
            owned, inuse, table = bytearray(geo.blocks_count // 8 + 1), bytearray(n // 8 + 1), bytearray(4 * n + 4)
            found = C.check_inode_groups(m, geo, (0, geo.group_count), owned, inuse, table, threads=2, release=release)
            resident = _resident_bytes(path)
            answers.append((found, bytes(owned), bytes(inuse), bytes(table)))
            if release:
                assert resident < table_bytes // 8
            else:
                assert resident >= table_bytes
    assert answers[0] == answers[1] and answers[0][0] is not None


@needs_compiled
def test_workers_are_kept_and_raise_the_jobs_errors():
    """_run_parallel hands jobs to threads kept between calls, runs the first share itself, raises the first
    failure, and a call made while another thread holds the workers still runs (on threads of its own)."""
    import threading

    class Job:
        def __init__(self, fail=False, wait=None):
            self.fail, self.wait, self.thread = fail, wait, None

        def run(self):
            self.thread = threading.current_thread()
            if self.wait is not None:
                self.wait.wait(10)
            if self.fail:
                raise ValueError("job failed")

    jobs = [Job(), Job(), Job()]
    C._run_parallel(jobs)
    first_workers = {j.thread for j in jobs[1:]}
    assert jobs[0].thread is threading.current_thread() and threading.current_thread() not in first_workers
    jobs = [Job(), Job(), Job()]
    C._run_parallel(jobs)
    assert {j.thread for j in jobs[1:]} == first_workers  # the same threads, not new ones
    with pytest.raises(ValueError, match="job failed"):
        C._run_parallel([Job(), Job(fail=True)])
    release = threading.Event()
    holder = threading.Thread(target=C._run_parallel, args=([Job(), Job(wait=release)],))
    holder.start()
    try:
        other = [Job(), Job()]
        C._run_parallel(other)  # the workers are busy: threads of its own, not a deadlock
        assert other[1].thread not in first_workers
    finally:
        release.set()
        holder.join(10)
    assert not holder.is_alive()


_PEAK_SCRIPT = """
import mmap, sys
from nvfs_tools import _fastscan as C
from nvfs_tools.volume import Volume
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM"))
img, release = sys.argv[1], sys.argv[2] == "1"
geo = Volume.open(img).geo
n = geo.inodes_count
owned, inuse, table = bytearray(geo.blocks_count // 8 + 1), bytearray(n // 8 + 1), bytearray(4 * n + 4)
with open(img, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
    before = hwm()
    found = C.check_inode_groups(m, geo, (0, geo.group_count), owned, inuse, table, threads=2, release=release)
    assert found is not None
    print(hwm() - before)
"""


@needs_compiled
def test_release_bounds_what_indirect_blocks_map(tmp_path):
    """A file's indirect block read through the mapping maps its neighbours too (fault-around): over a tree
    of files just past the direct blocks that is most of the data.  With ``release`` the pages around the
    indirect blocks read are dropped as the scan goes, so the peak stays small."""
    src = tmp_path / "src"
    src.mkdir()
    body = os.urandom((F.N_DIRECT + 1) * 4096)  # one indirect block each
    for i in range(1500):
        (src / f"f{i:04}").write_bytes(body)
    img = tmp_path / "img"
    mkfs = [sys.executable, "-m", "nvfs_tools.mkfs", "-q", "-F", "-N", "4096", "-d", str(src), str(img), "160M"]
    subprocess.run(mkfs, check=True)
    grown = {}
    for release in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(img), release], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        grown[release] = int(out.stdout)
    assert grown["1"] < 16 << 20 and grown["1"] * 3 < grown["0"], grown
