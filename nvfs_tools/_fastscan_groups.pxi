# Included at the end of _fastscan.pyx: kernels over the few header blocks of every group, for fsck's
# pass 0 (static superblock copies) and its bulk pass 5 (bitmaps and counters).  A 1 TiB device has
# 8192 groups: read through the mapping, each header costs a page fault and a page-table page and
# stays resident (128 MiB); given a descriptor, these kernels pread each span into one scratch buffer
# instead.  Semantics and documentation: scan_pure.differing_spans / group_summaries_match.

from libc.string cimport memcmp

cdef extern from *:
    void nv_setbits(uint8_t *bm, uint64_t first, uint64_t end) nogil

cdef nv_field _GC_MAGIC, _GC_GROUP, _GC_FREE_BLOCKS, _GC_FREE_INODES, _GC_USED_DIRS
cdef uint64_t _GC_USED  # bytes of the counters block the structure uses (the rest must be zero)


cdef _init_group_layout():
    global _GC_MAGIC, _GC_GROUP, _GC_FREE_BLOCKS, _GC_FREE_INODES, _GC_USED_DIRS, _GC_USED
    counters = F.field_layout(F.PLAIN["GroupCounters"])
    _GC_MAGIC = _fld(counters, "magic")
    _GC_GROUP = _fld(counters, "group")
    _GC_FREE_BLOCKS = _fld(counters, "free_blocks")
    _GC_FREE_INODES = _fld(counters, "free_inodes")
    _GC_USED_DIRS = _fld(counters, "used_dirs")
    _GC_USED = F.PLAIN["GroupCounters"].sizeof()


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


cdef class _SpansJob:
    """One thread's share of differing_spans' offsets: their differing indexes go to ``hits`` from its
    own first slot on (the share's start), ``found`` of them."""
    cdef const uint8_t *base
    cdef const uint8_t *want
    cdef const uint64_t *offs
    cdef uint64_t *hits
    cdef uint64_t length, n, i0, i1, found
    cdef int fd
    cdef uint8_t *scratch

    def __dealloc__(self):
        PyMem_Free(self.scratch)

    def run(self):
        cdef uint64_t i
        cdef const uint8_t *at
        with nogil:
            for i in range(self.i0, self.i1):
                if (not _read_span(self.base, self.length, self.fd, self.offs[i], self.n, self.scratch, &at)
                        or (self.n != 0 and memcmp(at, self.want, self.n) != 0)):
                    self.hits[self.i0 + self.found] = i
                    self.found += 1


def differing_spans(buf, offsets, expected, *, int fd=-1, int threads=1):
    """Indexes of the spans that differ from ``expected`` (see scan_pure.differing_spans); the offsets
    are split between ``threads`` (0: one per CPU)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef const uint8_t[::1] want = _ro(expected)
    cdef carray.array items = _u64_array(offsets)
    cdef uint64_t count = len(items), k, j
    cdef carray.array out = carray.clone(array("Q"), count, zero=False)
    cdef uint64_t *hits = <uint64_t *>out.data.as_voidptr
    cdef int nt = _threads(threads, count)
    cdef _SpansJob job
    jobs = []
    for k in range(<uint64_t>nt):
        job = _SpansJob()
        job.base, job.length, job.fd = _ro_ptr(mv), mv.shape[0], fd
        job.want, job.n = _ro_ptr(want), want.shape[0]
        job.offs, job.hits = <const uint64_t *>items.data.as_voidptr, hits
        job.i0, job.i1 = count * k // nt, count * (k + 1) // nt
        job.scratch = <uint8_t *>PyMem_Malloc(job.n if job.n else 1)
        if job.scratch == NULL:
            raise MemoryError()
        jobs.append(job)
    _run_parallel(jobs)
    cdef uint64_t found = 0
    for job in jobs:  # the shares' hits, in order, to the front
        for j in range(job.found):
            hits[found + j] = hits[job.i0 + j]
        found += job.found
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


cdef struct nv_gctx:
    const uint8_t *base
    const uint8_t *owned
    const uint8_t *inuse
    const uint8_t *template
    const uint64_t *dirs
    uint64_t length, bs, bpg, ipg, ibytes, ibm_bytes, blocks_count
    uint64_t lo, bb_at, c_at, ib_at, span, step, meta0, meta1, reserved
    int fd
    volatile int *stop


cdef bint _groups_match(const nv_gctx *c, uint64_t g0, uint64_t g1, uint8_t *scratch, uint64_t *free_blocks,
                        uint64_t *free_inodes) noexcept nogil:
    """group_summaries_match over groups [g0, g1): 1 and the free counts added up, or 0 at the first
    difference (or once another share has found one: ``stop``)."""
    cdef uint64_t bs = c.bs, bpg = c.bpg, g, start, valid, free_b, free_i
    cdef uint8_t *want_b = scratch + c.span
    cdef uint8_t *want_c = want_b + bs
    cdef uint8_t *want_i = want_c + bs
    cdef const uint8_t *at
    for g in range(g0, g1):
        if c.stop[0] or not _read_span(c.base, c.length, c.fd, c.lo + g * c.step, c.span, scratch, &at):
            return 0
        start = g * bpg
        memcpy(want_b, c.owned + g * bs, bs)
        nv_setbits(want_b, 0, c.meta0 if g == 0 else c.meta1)
        valid = 0 if c.blocks_count <= start else min(c.blocks_count - start, bpg)
        nv_setbits(want_b, valid, bpg)
        if c.blocks_count and start <= c.blocks_count - 1 < start + bpg:
            nv_setbits(want_b, c.blocks_count - 1 - start, c.blocks_count - start)
        if memcmp(at + c.bb_at, want_b, bs):
            return 0
        memcpy(want_i, c.inuse + g * c.ibytes, c.ibytes)
        memset(want_i + c.ibytes, 0xFF, c.ibm_bytes - c.ibytes)
        if g == 0:
            nv_setbits(want_i, 0, c.reserved)
        if memcmp(at + c.ib_at, want_i, c.ibm_bytes):
            return 0
        free_b = bpg - nv_pop_best(want_b, bs)
        free_i = c.ipg - nv_pop_best(want_i, c.ibytes)
        memcpy(want_c, c.template, bs)
        if not (_put_field(want_c, _GC_GROUP, g) and _put_field(want_c, _GC_FREE_BLOCKS, free_b)
                and _put_field(want_c, _GC_FREE_INODES, free_i) and _put_field(want_c, _GC_USED_DIRS, c.dirs[g])):
            return 0
        if memcmp(at + c.c_at, want_c, bs):
            return 0
        free_blocks[0] += free_b
        free_inodes[0] += free_i
    return 1


cdef class _GroupsJob:
    """One thread's share of group_summaries_match's groups, with its own read buffer."""
    cdef nv_gctx c
    cdef uint64_t g0, g1, free_blocks, free_inodes
    cdef bint same
    cdef uint8_t *scratch

    def __dealloc__(self):
        PyMem_Free(self.scratch)

    def run(self):
        with nogil:
            self.same = _groups_match(&self.c, self.g0, self.g1, self.scratch, &self.free_blocks, &self.free_inodes)
            if not self.same:
                self.c.stop[0] = 1


def group_summaries_match(buf, geo, owned, inuse, dirs_per_group, counters, *, int fd=-1, int threads=1):
    """(free blocks, free inodes) when every group's bitmaps and counters are as the checker found, else
    None (see scan_pure.group_summaries_match); groups split between ``threads`` (0: one per CPU)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef const uint8_t[::1] own = _ro(owned)
    cdef const uint8_t[::1] use = _ro(inuse)
    cdef const uint8_t[::1] tpl = _ro(counters)
    cdef nv_gctx c
    cdef uint64_t groups = geo.group_count
    c.bs, c.ipg, c.bpg = geo.block_size, geo.inodes_per_group, geo.blocks_per_group
    c.blocks_count, c.ibytes, c.ibm_bytes = geo.blocks_count, c.ipg // 8, geo.inode_bitmap_blocks * c.bs
    areas = _group_areas(geo) if geo.group_count >= 1 else None
    if areas is None or c.ipg % 8 or c.bpg != 8 * c.bs or c.ibm_bytes < c.ibytes or <uint64_t>tpl.shape[0] != c.bs:
        return None
    if <uint64_t>own.shape[0] < groups * c.bs or <uint64_t>use.shape[0] < groups * c.ibytes:
        return None
    if <uint64_t>len(dirs_per_group) < groups:
        return None
    cdef carray.array dirs = _u64_array(dirs_per_group)
    cdef volatile int stop = 0
    c.lo, c.bb_at, c.c_at, c.ib_at, c.span, c.step = areas
    c.meta0, c.meta1 = min(geo.metadata_blocks(0), c.bpg), min(geo.metadata_blocks(1), c.bpg)
    c.reserved = min(F.FIRST_INO - 1, c.ipg)
    c.base, c.length, c.fd, c.stop = _ro_ptr(mv), mv.shape[0], fd, &stop
    c.owned, c.inuse, c.template = _ro_ptr(own), _ro_ptr(use), _ro_ptr(tpl)
    c.dirs = <const uint64_t *>dirs.data.as_voidptr
    cdef int nt = _threads(threads, groups)
    cdef int k
    cdef _GroupsJob job
    jobs = []
    for k in range(nt):
        job = _GroupsJob()
        job.c = c
        job.g0, job.g1 = groups * k // nt, groups * (k + 1) // nt
        job.scratch = <uint8_t *>PyMem_Malloc(c.span + 2 * c.bs + c.ibm_bytes)
        if job.scratch == NULL:
            raise MemoryError()
        jobs.append(job)
    _run_parallel(jobs)
    if not all((<_GroupsJob>j).same for j in jobs):
        return None
    return sum((<_GroupsJob>j).free_blocks for j in jobs), sum((<_GroupsJob>j).free_inodes for j in jobs)


cdef extern from "<unistd.h>" nogil:
    enum: SEEK_DATA
cdef extern from "<errno.h>" nogil:
    enum: ENXIO
cdef extern from "<stdint.h>" nogil:
    const int64_t INT64_MAX


cdef class _HolesJob:
    """One thread's share of seek_holes' ranges, with its own SEEK_DATA cursor."""
    cdef const uint64_t *starts
    cdef uint8_t *out
    cdef uint64_t length, i0, i1
    cdef int fd
    cdef bint unsupported

    def run(self):
        cdef uint64_t i
        cdef int64_t data = -1, got
        with nogil:
            for i in range(self.i0, self.i1):
                if data < <int64_t>self.starts[i]:
                    got = c_lseek(self.fd, <int64_t>self.starts[i], SEEK_DATA)
                    if got < 0 and errno != ENXIO:
                        self.unsupported = 1
                        break
                    data = got if got >= 0 else INT64_MAX
                self.out[i] = data >= <int64_t>(self.starts[i] + self.length)


def seek_holes(int fd, starts, Py_ssize_t length, *, int threads=1):
    """Which ranges are holes of the file (see scan_pure.seek_holes); ``starts`` split between ``threads``."""
    cdef carray.array items = _u64_array(starts)
    cdef uint64_t count = len(items), k
    cdef carray.array out = carray.clone(array("B"), count, zero=True)
    if count == 0:
        return out
    cdef int nt = _threads(threads, count)
    cdef _HolesJob job
    jobs = []
    for k in range(<uint64_t>nt):
        job = _HolesJob()
        job.starts, job.out = <const uint64_t *>items.data.as_voidptr, <uint8_t *>out.data.as_voidptr
        job.fd, job.length = fd, length
        job.i0, job.i1 = count * k // nt, count * (k + 1) // nt
        jobs.append(job)
    _run_parallel(jobs)
    if any((<_HolesJob>j).unsupported for j in jobs):
        return carray.clone(array("B"), count, zero=True)
    return out


from nvfs_tools.scan import CounterCheck

cdef int _CC_DAMAGED = CounterCheck.DAMAGED, _CC_OTHER_GROUP = CounterCheck.OTHER_GROUP
cdef int _CC_STRAY = CounterCheck.STRAY, _CC_PAST_END = CounterCheck.PAST_END, _CC_DISAGREE = CounterCheck.DISAGREE


cdef inline uint64_t _get_field(const uint8_t *block, nv_field f) noexcept nogil:
    return nv_ld(block + f.off, f.size)  # the core's little-endian load


cdef inline uint64_t _zero_bits(const uint8_t *p, uint64_t nbits) noexcept nogil:
    """Clear bits among the first ``nbits`` of ``p``."""
    cdef uint64_t ones = nv_pop_best(p, nbits >> 3)
    cdef uint8_t last
    if nbits & 7:
        last = p[nbits >> 3] & <uint8_t>((1u << (nbits & 7)) - 1)
        ones += nv_pop_best(&last, 1)
    return nbits - ones


cdef class _CountersJob:
    """One thread's share of group_counters_agree's groups: stops at its first disagreement."""
    cdef nv_gctx c
    cdef uint64_t g0, g1, free_blocks, free_inodes, group, value
    cdef int reason
    cdef uint8_t *scratch

    def __dealloc__(self):
        PyMem_Free(self.scratch)

    def run(self):
        cdef uint64_t g, valid, free_b, free_i, i
        cdef const uint8_t *at
        cdef const uint8_t *block
        with nogil:
            for g in range(self.g0, self.g1):
                self.group = g
                if not _read_span(self.c.base, self.c.length, self.c.fd, self.c.lo + g * self.c.step, self.c.span,
                                  self.scratch, &at):
                    self.reason = _CC_DAMAGED
                    break
                block = at + self.c.c_at
                if memcmp(block + _GC_MAGIC.off, self.c.template + _GC_MAGIC.off, _GC_MAGIC.size):
                    self.reason = _CC_DAMAGED
                    break
                if _get_field(block, _GC_GROUP) != g:
                    self.reason, self.value = _CC_OTHER_GROUP, _get_field(block, _GC_GROUP)
                    break
                for i in range(_GC_USED, self.c.bs):
                    if block[i]:
                        self.reason = _CC_STRAY
                        break
                if self.reason:
                    break
                valid = 0 if self.c.blocks_count <= g * self.c.bpg else min(self.c.blocks_count - g * self.c.bpg, self.c.bpg)
                free_b = _zero_bits(at + self.c.bb_at, valid)
                if _zero_bits(at + self.c.bb_at, self.c.bpg) != free_b:
                    self.reason = _CC_PAST_END
                    break
                free_i = _zero_bits(at + self.c.ib_at, self.c.ipg)
                if _get_field(block, _GC_FREE_BLOCKS) != free_b or _get_field(block, _GC_FREE_INODES) != free_i:
                    self.reason = _CC_DISAGREE
                    break
                self.free_blocks += free_b
                self.free_inodes += free_i


def group_counters_agree(buf, geo, counters, *, int fd=-1, int threads=1):
    """Whether every group's counters agree with its bitmaps (see scan_pure.group_counters_agree)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef const uint8_t[::1] tpl = _ro(counters)
    cdef nv_gctx c
    cdef uint64_t groups = geo.group_count
    c.bs, c.ipg, c.bpg, c.blocks_count = geo.block_size, geo.inodes_per_group, geo.blocks_per_group, geo.blocks_count
    c.ibm_bytes = geo.inode_bitmap_blocks * c.bs
    areas = _group_areas(geo) if geo.group_count >= 1 else None
    if areas is None or c.bpg != 8 * c.bs or c.ibm_bytes * 8 < c.ipg or <uint64_t>tpl.shape[0] != c.bs:
        return None
    c.lo, c.bb_at, c.c_at, c.ib_at, c.span, c.step = areas
    c.base, c.length, c.fd, c.template = _ro_ptr(mv), mv.shape[0], fd, _ro_ptr(tpl)
    cdef int nt = _threads(threads, groups)
    cdef int k
    cdef _CountersJob job
    jobs = []
    for k in range(nt):
        job = _CountersJob()
        job.c = c
        job.g0, job.g1 = groups * k // nt, groups * (k + 1) // nt
        job.scratch = <uint8_t *>PyMem_Malloc(c.span if c.span else 1)
        if job.scratch == NULL:
            raise MemoryError()
        jobs.append(job)
    _run_parallel(jobs)
    cdef uint64_t free_blocks = 0, free_inodes = 0
    for job in jobs:  # the first share (in group order) that disagrees names the group
        if job.reason:
            return CounterCheck(job.reason), job.group, job.value, 0, 0
        free_blocks += job.free_blocks
        free_inodes += job.free_inodes
    return CounterCheck.AGREE, 0, 0, free_blocks, free_inodes
