"""format.py: geometry at its edges, block routing, the static superblock, field layouts.

Geometry results are checked against the rules spec/format.md section 2 states
(invariants and boundary searches), not against numbers copied from a run, so a
change to compute_geometry that breaks a rule fails here with the rule named.
"""

from __future__ import annotations

import random
import zlib

import construct
import pytest

from nvfs_tools import format as fmt

KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
LEGAL_BLOCK_SIZES = [1 << shift for shift in range(12, 21)]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def wanted_inodes(device_bytes: int, bs: int, ratio: int = fmt.DEFAULT_INODE_RATIO) -> int:
    return max((device_bytes // bs) * bs // ratio, fmt.FIRST_INO + 5)


def group_metadata(geo: fmt.Geometry, group: int) -> int:
    """Metadata blocks of ``group`` as spec/format.md 2.2 defines them."""
    size = 3 + geo.inode_bitmap_blocks + geo.inode_table_blocks
    return size + (geo.journal_blocks if group == 0 else 0)


def check_geometry(geo: fmt.Geometry, device_bytes: int, wanted: int, journal_slots: int = 8) -> None:
    """Every rule of spec/format.md 2.2-2.4 that a geometry must satisfy."""
    bs = geo.block_size
    ipb = bs // fmt.INODE_SIZE
    assert geo.blocks_count == device_bytes // bs
    assert geo.blocks_per_group == 8 * bs
    assert geo.group_count >= 1
    assert (geo.group_count - 1) * geo.blocks_per_group < geo.blocks_count
    # inodes: equal per group, whole inode-table blocks, the fewest that hold `wanted`
    per_group = ceil_div(wanted, geo.group_count)
    assert geo.inodes_per_group % ipb == 0
    assert per_group <= geo.inodes_per_group < per_group + ipb
    assert geo.inodes_count == geo.inodes_per_group * geo.group_count >= wanted
    assert geo.inode_table_blocks * ipb == geo.inodes_per_group
    assert geo.inode_bitmap_blocks == ceil_div(geo.inodes_per_group, 8 * bs)
    assert geo.journal_blocks == ceil_div(journal_slots * fmt.JOURNAL_SLOT_SIZE, bs)
    assert geo.journal_block == 3 + geo.inode_bitmap_blocks + geo.inode_table_blocks
    assert geo.backup_block == geo.blocks_count - 1
    for g in range(geo.group_count):
        start = geo.group_start(g)
        assert geo.block_bitmap_block(g) == start + 1
        assert geo.counters_block(g) == start + 2
        assert geo.inode_bitmap_block(g) == start + 3
        assert geo.inode_table_block(g) == start + 3 + geo.inode_bitmap_blocks
        assert geo.metadata_blocks(g) == group_metadata(geo, g)
        usable = geo.group_end(g) - geo.first_data_block(g)
        if start <= geo.backup_block < geo.group_end(g):
            usable -= 1
        assert usable >= fmt.MIN_GROUP_DATA_BLOCKS, f"group {g} has only {usable} data blocks"


def check_maximal(geo: fmt.Geometry, device_bytes: int, wanted: int) -> None:
    """A tail past the last group is too short to be one more group (spec 2.3 step 3)."""
    bs, bpg = geo.block_size, geo.blocks_per_group
    tail_start = geo.group_count * bpg
    if tail_start >= geo.blocks_count:
        return
    more = geo.group_count + 1
    ipg = ceil_div(ceil_div(wanted, more), bs // fmt.INODE_SIZE) * (bs // fmt.INODE_SIZE)
    metadata = 3 + ceil_div(ipg, 8 * bs) + ipg * fmt.INODE_SIZE // bs
    tail = geo.blocks_count - tail_start - 1  # minus the backup block, which is in the tail
    assert tail < metadata + fmt.MIN_GROUP_DATA_BLOCKS, f"a group of {tail} blocks was dropped but would fit"


def data_blocks_brute(geo: fmt.Geometry) -> int:
    return sum(1 for block in range(geo.blocks_count) if not geo.is_metadata_block(block))


# ---------------------------------------------------------------------------
# Geometry at the edges
# ---------------------------------------------------------------------------


def smallest_device(bs: int, ratio: int) -> int:
    """Smallest whole-block device size compute_geometry accepts (by search)."""
    blocks = 1
    while True:
        try:
            fmt.compute_geometry(blocks * bs, bs, inode_ratio=ratio)
            return blocks
        except fmt.GeometryError:
            blocks += 1


@pytest.mark.parametrize("bs", LEGAL_BLOCK_SIZES)
def test_smallest_device_every_block_size(bs):
    ratio = fmt.DEFAULT_INODE_RATIO
    blocks = smallest_device(bs, ratio)
    geo = fmt.compute_geometry(blocks * bs, bs, inode_ratio=ratio)
    check_geometry(geo, blocks * bs, wanted_inodes(blocks * bs, bs, ratio))
    # exactly the 16 data blocks the spec requires, plus the backup block
    assert geo.group_count == 1
    assert geo.data_blocks == fmt.MIN_GROUP_DATA_BLOCKS == data_blocks_brute(geo)
    assert blocks == geo.metadata_blocks(0) + fmt.MIN_GROUP_DATA_BLOCKS + 1
    with pytest.raises(fmt.GeometryError):
        fmt.compute_geometry(blocks * bs - 1, bs, inode_ratio=ratio)


def test_smallest_device_default_is_what_spec_says():
    """spec/format.md 2.3: 23 blocks (94208 bytes) at 4 KiB with the default ratio."""
    geo = fmt.compute_geometry(23 * 4096)
    assert geo.group_count == 1 and geo.data_blocks == 16
    with pytest.raises(fmt.GeometryError, match="too small"):
        fmt.compute_geometry(23 * 4096 - 1)
    with pytest.raises(fmt.GeometryError):
        fmt.compute_geometry(0)


def test_partial_bytes_past_last_block_ignored():
    geo = fmt.compute_geometry(64 * MIB + 4095)
    assert geo.blocks_count == 64 * MIB // 4096
    assert geo == fmt.compute_geometry(64 * MIB)


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_around_group_boundary(delta):
    bs = 4096
    bpg = 8 * bs
    blocks = 2 * bpg + delta
    geo = fmt.compute_geometry(blocks * bs)
    wanted = wanted_inodes(blocks * bs, bs)
    check_geometry(geo, blocks * bs, wanted)
    check_maximal(geo, blocks * bs, wanted)
    assert geo.group_count == 2
    assert geo.is_metadata_block(geo.backup_block)
    if delta <= 0:  # the backup block is the last block of group 1, a short group when delta = -1
        assert geo.group_end(1) == blocks
        assert geo.data_blocks == geo.group_end(1) - geo.first_data_block(1) - 1 + bpg - geo.first_data_block(0)
    else:  # one block past: a one-block tail that holds only the backup
        assert geo.group_end(1) == 2 * bpg
        assert geo.group_of_block(geo.backup_block) == 2
        assert geo.data_blocks == 2 * bpg - geo.first_data_block(0) - geo.metadata_blocks(1)
    assert geo.data_blocks == data_blocks_brute(geo)


@pytest.mark.parametrize("bs", [4096, 65536])
def test_short_last_group_kept_or_dropped(bs):
    """Find the exact tail length at which a second group appears; it is metadata + 16 + backup."""
    bpg = 8 * bs
    tail = 1
    while fmt.compute_geometry((bpg + tail) * bs, bs, inode_ratio=fmt.DEFAULT_INODE_RATIO).group_count == 1:
        tail += 1
        assert tail < bpg
    kept = fmt.compute_geometry((bpg + tail) * bs, bs, inode_ratio=fmt.DEFAULT_INODE_RATIO)
    dropped = fmt.compute_geometry((bpg + tail - 1) * bs, bs, inode_ratio=fmt.DEFAULT_INODE_RATIO)
    assert kept.group_count == 2 and dropped.group_count == 1
    assert tail == kept.metadata_blocks(1) + fmt.MIN_GROUP_DATA_BLOCKS + 1
    assert kept.group_end(1) - kept.first_data_block(1) - 1 == fmt.MIN_GROUP_DATA_BLOCKS
    # the dropped tail is unused: none of it is a data block, the backup sits at its end
    assert all(dropped.is_metadata_block(b) for b in range(bpg, dropped.blocks_count))
    assert dropped.backup_block == bpg + tail - 2
    for geo, blocks in ((kept, bpg + tail), (dropped, bpg + tail - 1)):
        wanted = wanted_inodes(blocks * bs, bs, fmt.DEFAULT_INODE_RATIO)
        check_geometry(geo, blocks * bs, wanted)
        check_maximal(geo, blocks * bs, wanted)
        if bs == 4096:
            assert geo.data_blocks == data_blocks_brute(geo)


def test_many_groups():
    bs = 4096
    blocks = 1000 * 8 * bs + 12345
    geo = fmt.compute_geometry(blocks * bs)
    wanted = wanted_inodes(blocks * bs, bs)
    check_geometry(geo, blocks * bs, wanted)
    check_maximal(geo, blocks * bs, wanted)
    assert geo.group_count == 1001


def test_one_tebibyte():
    geo = fmt.compute_geometry(TIB)
    wanted = wanted_inodes(TIB, 4096)
    check_geometry(geo, TIB, wanted)
    assert geo.group_count == TIB // (128 * MIB)
    assert geo.inodes_count == TIB // fmt.DEFAULT_INODE_RATIO
    assert geo.inode_offset(geo.inodes_count) + fmt.INODE_SIZE <= geo.first_data_block(geo.group_count - 1) * 4096
    expected_data = geo.blocks_count - sum(geo.metadata_blocks(g) for g in range(geo.group_count)) - 1
    assert geo.data_blocks == expected_data


@pytest.mark.parametrize("bs", LEGAL_BLOCK_SIZES)
def test_every_block_size_multi_group(bs):
    ratio = fmt.DEFAULT_INODE_RATIO
    blocks = 2 * 8 * bs + 8 * bs // 2  # two and a half groups
    geo = fmt.compute_geometry(blocks * bs, bs, inode_ratio=ratio)
    wanted = wanted_inodes(blocks * bs, bs, ratio)
    check_geometry(geo, blocks * bs, wanted)
    check_maximal(geo, blocks * bs, wanted)
    assert geo.group_count == 3
    assert fmt.radix_bits(bs) == (bs // 8).bit_length() - 1 == bs.bit_length() - 4


@pytest.mark.parametrize("bs", [0, 1, 512, 2048, 3000, 4095, 4097, 6144, 12288, 2 * MIB, 4 * MIB, -4096])
def test_illegal_block_sizes(bs):
    with pytest.raises(fmt.GeometryError, match="block size"):
        fmt.compute_geometry(GIB, bs)


@pytest.mark.parametrize("bs", [4096, 8192, fmt.MAX_BLOCK_SIZE])
def test_inode_ratio_range(bs):
    fmt.compute_geometry(16 * GIB, bs, inode_ratio=fmt.MIN_INODE_RATIO)
    fmt.compute_geometry(16 * GIB, bs, inode_ratio=fmt.MAX_INODE_RATIO)
    fmt.compute_geometry(16 * GIB, bs, inode_ratio=fmt.DEFAULT_INODE_RATIO)  # default works at every size
    for ratio in (fmt.MIN_INODE_RATIO - 1, fmt.MAX_INODE_RATIO + 1):
        with pytest.raises(fmt.GeometryError, match="bytes-per-inode"):
            fmt.compute_geometry(GIB, bs, inode_ratio=ratio)


def test_inode_count_option():
    geo = fmt.compute_geometry(GIB, inode_count=100_000)
    check_geometry(geo, GIB, 100_000)
    small = fmt.compute_geometry(GIB, inode_count=1)
    check_geometry(small, GIB, fmt.FIRST_INO + 5)
    assert small.inodes_per_group == 4096 // fmt.INODE_SIZE
    with pytest.raises(fmt.GeometryError, match="inodes per group"):
        fmt.compute_geometry(GIB, inode_count=GIB // 16)


def test_journal_slots_range():
    assert fmt.compute_geometry(GIB, journal_slots=1).journal_blocks == 1
    geo = fmt.compute_geometry(GIB, journal_slots=1024)
    assert geo.journal_blocks == 1024 * 512 // 4096
    assert geo.first_data_block(0) == geo.journal_block + geo.journal_blocks
    assert geo.first_data_block(1) == geo.group_start(1) + geo.metadata_blocks(1)
    for slots in (0, 1025):
        with pytest.raises(fmt.GeometryError, match="journal slots"):
            fmt.compute_geometry(GIB, journal_slots=slots)


def test_group_zero_must_hold_journal():
    """Inode tables that nearly fill every group: the journal decides whether group 0 still fits."""
    bpg = 8 * 4096
    per_group = (bpg - 60) * (4096 // fmt.INODE_SIZE)
    wanted = 2 * per_group
    geo = fmt.compute_geometry(2 * 128 * MIB, journal_slots=1, inode_count=wanted)
    check_geometry(geo, 2 * 128 * MIB, wanted, journal_slots=1)
    assert geo.group_count == 2 and geo.inodes_per_group == per_group
    assert bpg - geo.first_data_block(0) >= fmt.MIN_GROUP_DATA_BLOCKS
    # 1024 slots take 128 blocks more in group 0, which no longer fits: the inode count is refused
    with pytest.raises(fmt.GeometryError):
        fmt.compute_geometry(2 * 128 * MIB, journal_slots=1024, inode_count=wanted)


def test_inode_offset_range_and_placement():
    geo = fmt.compute_geometry(3 * 128 * MIB + 40 * MIB)
    bs, ipg = geo.block_size, geo.inodes_per_group
    for bad in (0, -1, geo.inodes_count + 1):
        with pytest.raises(ValueError):
            geo.inode_offset(bad)
    offsets = set()
    for g in range(geo.group_count):
        first, last = g * ipg + 1, (g + 1) * ipg
        assert geo.group_of_inode(first) == geo.group_of_inode(last) == g
        assert geo.inode_offset(first) == geo.inode_table_block(g) * bs
        assert geo.inode_offset(last) + fmt.INODE_SIZE == (geo.inode_table_block(g) + geo.inode_table_blocks) * bs
        assert geo.inode_offset(last) - geo.inode_offset(first) == (ipg - 1) * fmt.INODE_SIZE
        offsets.update(geo.inode_offset(i) for i in (first, first + 1, last))
        assert geo.is_metadata_block(geo.inode_offset(last) // bs)
    assert len(offsets) == 3 * geo.group_count


def test_geometry_roundtrip_through_static():
    geo = fmt.compute_geometry(5 * 128 * MIB + 7 * MIB, 8192, journal_slots=20)
    raw = fmt.build_static_superblock(static_fields(geo))
    assert fmt.geometry_from_static(fmt.SuperblockStatic.parse(raw)) == geo


# ---------------------------------------------------------------------------
# block_path
# ---------------------------------------------------------------------------


def reference_path(file_block: int, bs: int) -> tuple[int, list[int]]:
    """Straightforward routing: subtract each level's span, then write the rest in base P."""
    if file_block < fmt.N_DIRECT:
        return file_block, []
    p = bs // 8
    rest = file_block - fmt.N_DIRECT
    level = 1
    while rest >= p**level:
        rest -= p**level
        level += 1
        if level > fmt.N_INDIRECT:
            raise ValueError
    digits = []
    for _ in range(level):
        rest, digit = divmod(rest, p)
        digits.append(digit)
    return fmt.N_DIRECT + level - 1, digits[::-1]


def path_to_block(pointer: int, indexes: list[int], bs: int) -> int:
    """Inverse of block_path."""
    if pointer < fmt.N_DIRECT:
        assert indexes == []
        return pointer
    p = bs // 8
    level = pointer - fmt.N_DIRECT + 1
    assert len(indexes) == level
    base = fmt.N_DIRECT + sum(p**lv for lv in range(1, level))
    return base + sum(ix * p ** (level - 1 - depth) for depth, ix in enumerate(indexes))


def boundaries(bs: int) -> list[int]:
    p = bs // 8
    points = [0, 1, fmt.N_DIRECT - 1]
    start = fmt.N_DIRECT
    for level in range(1, fmt.N_INDIRECT + 1):
        end = start + p**level
        points += [start, start + 1, start + p - 1, start + p, end - p, end - 2, end - 1]
        start = end
    return [b for b in points if 0 <= b < start]


@pytest.mark.parametrize("bs", [4096, 8192, 1 << 20])
def test_block_path_at_every_boundary(bs):
    for file_block in boundaries(bs):
        path = fmt.block_path(file_block, bs)
        assert path == reference_path(file_block, bs), f"file block {file_block}"
        assert path_to_block(*path, bs) == file_block
        assert all(0 <= ix < bs // 8 for ix in path[1])


@pytest.mark.parametrize("bs", [4096, 1 << 20])
def test_block_path_beyond_last_block(bs):
    last = fmt.max_file_blocks(bs) - 1
    assert fmt.block_path(last, bs) == (fmt.N_BLOCK_POINTERS - 1, [bs // 8 - 1] * fmt.N_INDIRECT)
    with pytest.raises(ValueError):
        fmt.block_path(last + 1, bs)


def test_block_path_random_and_consecutive():
    rng = random.Random(2)
    bs = 4096
    top = fmt.max_file_blocks(bs)
    for _ in range(2000):
        exp = rng.randrange(1, top.bit_length())
        file_block = rng.randrange(0, min(top, 1 << exp))
        path = fmt.block_path(file_block, bs)
        assert path == reference_path(file_block, bs)
        assert path_to_block(*path, bs) == file_block
    # consecutive blocks give consecutive paths (pointer, then indexes, in order)
    previous = None
    for file_block in range(fmt.N_DIRECT + 512 - 3, fmt.N_DIRECT + 512 + 512 * 2 + 3):
        current = fmt.block_path(file_block, bs)
        if previous is not None:
            assert (previous[0], previous[1]) < (current[0], current[1]) or previous[0] < current[0]
        previous = current


def test_max_file_blocks_matches_background():
    """background: 2 levels map 1 GiB, 5 levels 128 PiB at 4 KiB."""
    p = 512
    assert p**2 * 4096 == GIB
    assert fmt.max_file_blocks(4096) == fmt.N_DIRECT + sum(p**lv for lv in range(1, 6))
    assert p**5 * 4096 == 128 * (1 << 50)


# ---------------------------------------------------------------------------
# Static superblock
# ---------------------------------------------------------------------------


def static_fields(geo: fmt.Geometry) -> dict:
    return {
        "version": fmt.FORMAT_VERSION,
        "feature_compat": fmt.FEATURE_COMPAT_XATTR,
        "feature_incompat": 0,
        "feature_ro_compat": 0,
        "log_block_size": geo.block_size.bit_length() - 1,
        "inode_size": fmt.INODE_SIZE,
        "blocks_count": geo.blocks_count,
        "blocks_per_group": geo.blocks_per_group,
        "inodes_per_group": geo.inodes_per_group,
        "group_count": geo.group_count,
        "inodes_count": geo.inodes_count,
        "root_ino": fmt.ROOT_INO,
        "lost_found_ino": fmt.FIRST_INO,
        "first_ino": fmt.FIRST_INO,
        "journal_block": geo.journal_block,
        "journal_slots": geo.journal_slots,
        "journal_entries": fmt.JOURNAL_ENTRIES,
        "mkfs_time": 1_700_000_000,
        "mkfs_time_nsec": 123_456_789,
        "hash_version": fmt.HASH_SIPHASH24,
        "hash_seed": bytes(range(16)),
        "uuid": bytes(range(100, 116)),
        "label": b"scratch".ljust(64, b"\0"),
        "inode_bitmap_blocks": geo.inode_bitmap_blocks,
        "inode_table_blocks": geo.inode_table_blocks,
        "journal_blocks": geo.journal_blocks,
    }


def test_static_superblock_build_and_checksum():
    geo = fmt.compute_geometry(GIB)
    raw = fmt.build_static_superblock(static_fields(geo))
    assert len(raw) == fmt.SB_STATIC_SIZE
    assert raw[:8] == fmt.MAGIC
    stored = int.from_bytes(raw[2044:2048], "little")
    assert stored == zlib.crc32(raw[:2044]) == fmt.sb_static_checksum(raw)
    assert raw[fmt.field_offset(fmt.SuperblockStatic, "reserved") : 2044] == bytes(1808)
    parsed = fmt.SuperblockStatic.parse(raw)
    for name, value in static_fields(geo).items():
        assert parsed[name] == value, name
    assert fmt.block_size_of(parsed) == geo.block_size
    # any single damaged byte in 0..2043 is caught by the checksum
    rng = random.Random(7)
    for offset in [0, 8, 127, 2043, *rng.sample(range(2044), 50)]:
        damaged = bytearray(raw)
        damaged[offset] ^= 1 << rng.randrange(8)
        assert fmt.sb_static_checksum(bytes(damaged)) != stored, f"byte {offset}"


def test_static_superblock_rejects_bad_magic():
    raw = bytearray(fmt.build_static_superblock(static_fields(fmt.compute_geometry(GIB))))
    raw[1] ^= 0x20
    with pytest.raises(construct.ConstError):
        fmt.SuperblockStatic.parse(bytes(raw))


def test_crc32_is_the_zlib_polynomial():
    """spec/format.md 3.1 names the check value of the standard CRC-32."""
    assert zlib.crc32(b"123456789") == 0xCBF43926


# ---------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------


def test_sizes_the_spec_promises():
    assert fmt.SuperblockStatic.sizeof() == fmt.SB_STATIC_SIZE
    assert fmt.SuperblockDynamic.sizeof() == fmt.SB_DYNAMIC_SIZE
    assert fmt.SB_DYNAMIC_OFFSET + fmt.SB_DYNAMIC_SIZE == fmt.MIN_BLOCK_SIZE
    assert fmt.Inode.sizeof() == fmt.INODE_SIZE
    assert fmt.DirPageHeader.sizeof() == fmt.DIR_PAGE_HEADER_SIZE
    assert fmt.DirEntryHeader.sizeof() == fmt.DIR_ENTRY_HEADER_SIZE
    assert fmt.XattrHeader.sizeof() == fmt.XATTR_HEADER_SIZE
    assert fmt.XattrEntryHeader.sizeof() == fmt.XATTR_ENTRY_HEADER_SIZE
    assert fmt.JournalSlotHeader.sizeof() == fmt.JOURNAL_SLOT_HEADER_SIZE
    assert fmt.JournalSlot.sizeof() == fmt.JOURNAL_SLOT_SIZE
    assert fmt.QuotaRecord.sizeof() == fmt.QUOTA_RECORD_SIZE
    assert fmt.GroupCounters.sizeof() <= fmt.MIN_BLOCK_SIZE


def test_eight_byte_fields_are_aligned():
    """Every u64/s64 field can be changed by one aligned 8-byte store (spec/format.md 1)."""
    for key, struct in fmt.STRUCTURES.items():
        for field in fmt.field_layout(struct).values():
            if field.size == 8 or (field.size % 8 == 0 and field.name in ("block", "entries")):
                assert field.offset % 8 == 0, f"{key}.{field.name} at {field.offset}"
    assert fmt.DIR_PAGE_HEADER_SIZE % 8 == 0 and fmt.field_offset(fmt.DirEntryHeader, "ino") == 0


def sample_value(sub, rng: random.Random):
    """A distinctive value for one (possibly nested) construct field."""
    while isinstance(sub, construct.Renamed):
        sub = sub.subcon
    if isinstance(sub, construct.Const):
        return None
    if isinstance(sub, construct.Padded):
        return None
    if isinstance(sub, construct.FormatField):
        bits = 8 * sub.sizeof()
        signed = sub.fmtstr[-1].islower()
        return rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1)) if signed else rng.randrange(1 << bits)
    if isinstance(sub, construct.Bytes):
        return bytes(rng.randrange(256) for _ in range(sub.sizeof()))
    if isinstance(sub, construct.Array):
        return [sample_value(sub.subcon, rng) for _ in range(sub.count)]
    if isinstance(sub, construct.Struct):
        return {s.name: sample_value(s, rng) for s in sub.subcons if s.name and sample_value(s, rng) is not None}
    raise AssertionError(f"unexpected field {sub!r}")


@pytest.mark.parametrize("key", sorted(fmt.STRUCTURES))
def test_field_layout_agrees_with_construct(key):
    """Raw reads at field_layout offsets see exactly what construct builds there."""
    struct = fmt.STRUCTURES[key]
    rng = random.Random(key)
    values = {}
    for sub in struct.subcons:
        value = sample_value(sub, rng)
        if value is not None:
            values[sub.name] = value
    raw = struct.build(values)
    layout = fmt.field_layout(struct)
    assert len(raw) == struct.sizeof() == sum(f.size for f in layout.values())
    assert list(layout) == [s.name for s in struct.subcons]
    for sub in struct.subcons:
        field = layout[sub.name]
        assert fmt.field_offset(struct, sub.name) == field.offset
        chunk = raw[field.offset : field.offset + field.size]
        assert len(chunk) == field.size == sub.sizeof()
        if sub.name in values:
            assert chunk == sub.build(values[sub.name]), f"{key}.{sub.name}"
        else:  # constants and padding
            assert chunk == sub.build(None), f"{key}.{sub.name}"


# ---------------------------------------------------------------------------
# Small encodings
# ---------------------------------------------------------------------------


def test_dir_entry_rec_len():
    for name_len in range(1, fmt.MAX_NAME_LEN + 1):
        rec = fmt.dir_entry_rec_len(name_len)
        assert rec % fmt.DIR_ENTRY_ALIGN == 0
        assert fmt.DIR_ENTRY_HEADER_SIZE + name_len <= rec < fmt.DIR_ENTRY_HEADER_SIZE + name_len + 8
    assert fmt.dir_entry_rec_len(fmt.MAX_NAME_LEN) < 1 << 16


def test_xattr_entry_len():
    for name_len in (0, 1, 7, 255):
        for value_len in (0, 1, 8, 1000):
            length = fmt.xattr_entry_len(name_len, value_len)
            assert length % 8 == 0
            raw = fmt.XATTR_ENTRY_HEADER_SIZE + name_len + value_len
            assert raw <= length < raw + 8


def test_rdev_roundtrip():
    for major, minor in ((0, 0), (8, 1), (4095, (1 << 20) - 1), ((1 << 32) - 1, (1 << 32) - 1)):
        rdev = fmt.encode_rdev(major, minor)
        assert rdev == major << 32 | minor
        assert fmt.decode_rdev(rdev) == (major, minor)


def test_journal_commit_word():
    for seq, count in ((1, 1), (5, 16), ((1 << 56) - 1, 9)):
        word = fmt.journal_commit_word(seq, count)
        assert word >> 8 == seq and word & 0xFF == count and word < 1 << 64


def test_xattr_prefixes_cover_indexes():
    indexes = {getattr(fmt, n) for n in dir(fmt) if n.startswith("XATTR_INDEX_")}
    assert set(fmt.XATTR_PREFIXES) == indexes
    assert fmt.MODE_TO_DT.keys() == set(fmt.VALID_FILE_TYPES)


@pytest.mark.parametrize("size", [23 * 4096, 200 << 20, (1 << 30) + 12345 * 4096, 1 << 40])
def test_group_byte_offsets_are_each_groups_header_blocks(size):
    """The range fsck walks 8192 groups with is what the per-group methods say, group by group (one group,
    a partial last group, 1 TiB)."""
    geo = fmt.compute_geometry(size, 4096)
    for method in (geo.group_start, geo.block_bitmap_block, geo.counters_block, geo.inode_table_block):
        for first in (0, 1):
            got = geo.group_byte_offsets(method, first)
            assert list(got) == [method(g) * 4096 for g in range(first, geo.group_count)]
