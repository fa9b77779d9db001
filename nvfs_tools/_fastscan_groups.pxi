# Included at the end of _fastscan.pyx: kernels over the few header blocks of every group, for fsck's
# pass 0 (static superblock copies) and its bulk pass 5 (bitmaps and counters).  A 1 TiB device has
# 8192 groups: read through the mapping, each header costs a page fault and a page-table page and
# stays resident (128 MiB); given a descriptor, these kernels pread each span into one scratch buffer
# instead.  Semantics and documentation: scan_pure.differing_spans / group_summaries_match.

from libc.string cimport memcmp

cdef extern from *:
    void nv_setbits(uint8_t *bm, uint64_t first, uint64_t end) nogil

cdef nv_field _GC_GROUP, _GC_FREE_BLOCKS, _GC_FREE_INODES, _GC_USED_DIRS


cdef _init_group_layout():
    global _GC_GROUP, _GC_FREE_BLOCKS, _GC_FREE_INODES, _GC_USED_DIRS
    counters = F.field_layout(F.PLAIN["GroupCounters"])
    _GC_GROUP = _fld(counters, "group")
    _GC_FREE_BLOCKS = _fld(counters, "free_blocks")
    _GC_FREE_INODES = _fld(counters, "free_inodes")
    _GC_USED_DIRS = _fld(counters, "used_dirs")


_init_group_layout()


cdef int _read_span(const uint8_t *base, uint64_t length, int fd, uint64_t off, uint64_t n, uint8_t *scratch,
                    const uint8_t **at) noexcept nogil:
    """Point ``at`` at ``n`` bytes at ``off``: inside the buffer (fd < 0) or pread into ``scratch``; 0 when
    they cannot all be read."""
    cdef int64_t got
    cdef uint64_t done = 0
    if fd < 0:
        if off > length or n > length - off:
            return 0
        at[0] = base + off
        return 1
    while done < n:
        got = c_pread(fd, scratch + done, n - done, <int64_t>(off + done))
        if got < 0 and errno == EINTR:
            continue
        if got <= 0:
            return 0
        done += <uint64_t>got
    at[0] = scratch
    return 1


cdef inline bint _put_field(uint8_t *block, nv_field f, uint64_t value) noexcept nogil:
    """Store ``value`` little-endian in field ``f``; 0 when it does not fit."""
    cdef uint64_t i
    if f.size < 8 and value >> (8 * f.size):
        return 0
    for i in range(f.size):
        block[f.off + i] = <uint8_t>(value >> (8 * i))
    return 1


def differing_spans(buf, offsets, expected, *, int fd=-1):
    """Indexes of the spans that differ from ``expected`` (see scan_pure.differing_spans)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef const uint8_t[::1] want = _ro(expected)
    cdef carray.array items = _u64_array(offsets)
    cdef Py_ssize_t count = len(items), i, found = 0
    cdef uint64_t n = want.shape[0]
    cdef const uint64_t *offs = <const uint64_t *>items.data.as_voidptr
    cdef const uint8_t *base = _ro_ptr(mv)
    cdef const uint8_t *w = _ro_ptr(want)
    cdef uint64_t length = mv.shape[0]
    cdef const uint8_t *at
    cdef carray.array out = carray.clone(array("Q"), count, zero=False)
    cdef uint64_t *hits = <uint64_t *>out.data.as_voidptr
    cdef uint8_t *scratch = <uint8_t *>PyMem_Malloc(n if n else 1)
    if scratch == NULL:
        raise MemoryError()
    try:
        with nogil:
            for i in range(count):
                if not _read_span(base, length, fd, offs[i], n, scratch, &at) or (n != 0 and memcmp(at, w, n) != 0):
                    hits[found] = i
                    found += 1
    finally:
        PyMem_Free(scratch)
    carray.resize(out, found)
    return out


cdef tuple _group_areas(geo):
    """See scan_pure._group_areas: (span start, block bitmap, counters and inode bitmap offsets in the span,
    span length, group stride) from the Geometry's own methods, or None."""
    bs, last = geo.block_size, geo.group_count - 1
    step = geo.blocks_per_group * bs
    areas = [geo.block_bitmap_block, geo.counters_block, geo.inode_bitmap_block]
    first = [area(0) * bs for area in areas]
    for area, at in zip(areas, first):
        if area(last) * bs != at + last * step:
            return None
    lo = min(first)
    hi = max(first[0] + bs, first[1] + bs, first[2] + geo.inode_bitmap_blocks * bs)
    return lo, first[0] - lo, first[1] - lo, first[2] - lo, hi - lo, step


def group_summaries_match(buf, geo, owned, inuse, dirs_per_group, counters, *, int fd=-1):
    """(free blocks, free inodes) when every group's bitmaps and counters are as the checker found, else
    None (see scan_pure.group_summaries_match)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef const uint8_t[::1] own = _ro(owned)
    cdef const uint8_t[::1] use = _ro(inuse)
    cdef const uint8_t[::1] tpl = _ro(counters)
    cdef uint64_t bs = geo.block_size, ipg = geo.inodes_per_group, bpg = geo.blocks_per_group
    cdef uint64_t groups = geo.group_count, blocks_count = geo.blocks_count
    cdef uint64_t ibytes = ipg // 8, ibm_bytes = geo.inode_bitmap_blocks * geo.block_size
    areas = _group_areas(geo) if geo.group_count >= 1 else None
    if areas is None or ipg % 8 or bpg != 8 * bs or ibm_bytes < ibytes or <uint64_t>tpl.shape[0] != bs:
        return None
    if <uint64_t>own.shape[0] < groups * bs or <uint64_t>use.shape[0] < groups * ibytes:
        return None
    if <uint64_t>len(dirs_per_group) < groups:
        return None
    cdef carray.array dirs_arr = _u64_array(dirs_per_group)
    cdef const uint64_t *dirs = <const uint64_t *>dirs_arr.data.as_voidptr
    cdef uint64_t lo = areas[0], bb_at = areas[1], c_at = areas[2], ib_at = areas[3], span = areas[4]
    cdef uint64_t step = areas[5]
    cdef uint64_t meta0 = min(geo.metadata_blocks(0), bpg), meta1 = min(geo.metadata_blocks(1), bpg)
    cdef uint64_t reserved = min(F.FIRST_INO - 1, ipg)
    cdef const uint8_t *base = _ro_ptr(mv)
    cdef const uint8_t *own_p = _ro_ptr(own)
    cdef const uint8_t *use_p = _ro_ptr(use)
    cdef const uint8_t *tpl_p = _ro_ptr(tpl)
    cdef uint64_t length = mv.shape[0]
    cdef uint8_t *scratch = <uint8_t *>PyMem_Malloc(span + 2 * bs + ibm_bytes)
    if scratch == NULL:
        raise MemoryError()
    cdef uint8_t *want_b = scratch + span
    cdef uint8_t *want_c = want_b + bs
    cdef uint8_t *want_i = want_c + bs
    cdef const uint8_t *at
    cdef uint64_t g, start, valid, free_b, free_i, total_b = 0, total_i = 0
    cdef bint same = True
    try:
        with nogil:
            for g in range(groups):
                if not _read_span(base, length, fd, lo + g * step, span, scratch, &at):
                    same = False
                    break
                start = g * bpg
                memcpy(want_b, own_p + g * bs, bs)
                nv_setbits(want_b, 0, meta0 if g == 0 else meta1)
                valid = 0 if blocks_count <= start else (blocks_count - start if blocks_count - start < bpg else bpg)
                nv_setbits(want_b, valid, bpg)
                if blocks_count and start <= blocks_count - 1 < start + bpg:
                    nv_setbits(want_b, blocks_count - 1 - start, blocks_count - start)
                if memcmp(at + bb_at, want_b, bs):
                    same = False
                    break
                memcpy(want_i, use_p + g * ibytes, ibytes)
                memset(want_i + ibytes, 0xFF, ibm_bytes - ibytes)
                if g == 0:
                    nv_setbits(want_i, 0, reserved)
                if memcmp(at + ib_at, want_i, ibm_bytes):
                    same = False
                    break
                free_b = bpg - nv_pop_best(want_b, bs)
                free_i = ipg - nv_pop_best(want_i, ibytes)
                memcpy(want_c, tpl_p, bs)
                if not (_put_field(want_c, _GC_GROUP, g) and _put_field(want_c, _GC_FREE_BLOCKS, free_b)
                        and _put_field(want_c, _GC_FREE_INODES, free_i) and _put_field(want_c, _GC_USED_DIRS, dirs[g])):
                    same = False
                    break
                if memcmp(at + c_at, want_c, bs):
                    same = False
                    break
                total_b += free_b
                total_i += free_i
    finally:
        PyMem_Free(scratch)
    return (total_b, total_i) if same else None
