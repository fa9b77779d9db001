# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled fast-scan core: the hot loops of fsck over the device mapping.

Same functions, signatures and results as :mod:`nvfs_tools.scan_pure` (the
reference that documents each one).  The kernels are plain C (below, verbatim)
run with the GIL released; every field offset and size they use is taken from
:func:`nvfs_tools.format.field_layout` at import and stored in C globals.
Every pointer read from the media is bounds-checked against the mapping, and
indirect trees, radix trees and overflow chains are walked at most once per
block (a block already claimed is not descended), so damaged input costs
bounded work and never reads outside the buffer.

Groups (for inode tables) and inode or directory lists are cut into
contiguous chunks handled by Python threads, each calling a nogil kernel.
Walks that claim blocks run in parallel first; if any block turns out to be
claimed twice, the parallel result is thrown away and the walk is redone in a
single thread so that which claimant comes first (and what is reported) is
the same as in the pure reference.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython cimport array as carray

import mmap
import os
from array import array

from nvfs_tools import format as F
from nvfs_tools.scan import Problem

cdef extern from *:
    """
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/mman.h>
    #include <unistd.h>
    #if defined(__x86_64__) || defined(__i386__)
    #define NV_X86 1
    #include <cpuid.h>
    #include <immintrin.h>
    #else
    #define NV_X86 0
    #endif

    /* ---------------- field layout, filled from format.field_layout at import ---------------- */
    typedef struct { uint32_t off, size; } nv_field;
    static const uint8_t nv_empty[8] = {0};
    static nv_field NV_I_MODE, NV_I_RES0, NV_I_FLAGS, NV_I_LINKS, NV_I_SIZE, NV_I_BLOCKS, NV_I_PARENT,
                    NV_I_XATTR, NV_I_BANK, NV_I_BLOCK;
    static nv_field NV_P_DEPTH, NV_P_PREFIX, NV_P_DIRINO, NV_P_NEXT;
    static nv_field NV_E_INO, NV_E_HASH, NV_E_NAMELEN, NV_E_FTYPE, NV_E_RECLEN;
    static uint64_t NV_INODE_SIZE, NV_N_DIRECT, NV_N_INDIRECT, NV_PTR_SIZE, NV_PAGE_HDR, NV_ENTRY_HDR,
                    NV_ENTRY_ALIGN, NV_INLINE_MAX, NV_FLAGS_KNOWN, NV_FLAG_INLINE, NV_ROOT_INO;
    static uint64_t NV_S_IFMT, NV_S_IFREG, NV_S_IFDIR, NV_S_IFLNK, NV_S_IFCHR, NV_S_IFBLK, NV_S_IFIFO, NV_S_IFSOCK;
    static uint64_t NV_PAGE_BIT, NV_BLOCK_MASK;
    static uint8_t NV_PAGE_MAGIC[4];
    /* problem codes */
    static uint64_t P_ILLEGAL_MODE, P_UNKNOWN_FLAGS, P_INLINE_NOT_SYMLINK, P_INLINE_BAD_SIZE, P_SIZE_TOO_LARGE,
        P_RESERVED0, P_LINKS_ZERO, P_DIR_BAD_PARENT, P_DIR_BAD_BANK, P_SPECIAL_HAS_DATA,
        P_B_RANGE, P_B_META, P_B_SHARED, P_B_EOF, P_B_ZERO_IND, P_X_RANGE, P_X_META, P_X_SHARED,
        P_NOT_DIR, P_PG_MAGIC, P_PG_DEPTH, P_PG_PREFIX, P_PG_SLOTS, P_PG_DIRINO, P_PG_NEXT, P_NODE_DEEP,
        P_E_HASH, P_E_WRONG_PAGE, P_E_RECLEN, P_E_NAME, P_E_DOT, P_E_DUP, P_E_INO;

    static inline uint64_t nv_ld(const uint8_t *p, uint32_t n) {
        uint64_t v = 0;
        switch (n) {
        case 1: return p[0];
        case 2: { uint16_t x; memcpy(&x, p, 2); v = x; break; }
        case 4: { uint32_t x; memcpy(&x, p, 4); v = x; break; }
        case 8: { memcpy(&v, p, 8); break; }
        default: for (uint32_t i = 0; i < n && i < 8; i++) v |= (uint64_t)p[i] << (8 * i); return v;
        }
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v) >> (64 - 8 * n);
    #endif
        return v;
    }
    static inline uint64_t nv_f(const uint8_t *base, nv_field f) { return nv_ld(base + f.off, f.size); }
    static inline uint64_t nv_u64(const uint8_t *p) { return nv_ld(p, 8); }

    /* ---------------- growable record vectors (w u64 per record) ---------------- */
    typedef struct { uint64_t *d; size_t n, cap; int w; int oom; } nv_vec;
    static void nv_vec_init(nv_vec *v, int w) { v->d = NULL; v->n = v->cap = 0; v->w = w; v->oom = 0; }
    static void nv_vec_free(nv_vec *v) { free(v->d); v->d = NULL; v->n = v->cap = 0; }
    static inline void nv_push(nv_vec *v, const uint64_t *rec) {
        if (v->n == v->cap) {
            size_t nc = v->cap ? v->cap * 2 : 256;
            uint64_t *p = (uint64_t *)realloc(v->d, nc * v->w * sizeof(uint64_t));
            if (!p) { v->oom = 1; return; }
            v->d = p; v->cap = nc;
        }
        memcpy(v->d + v->n * v->w, rec, v->w * sizeof(uint64_t));
        v->n++;
    }
    /* growable typed columns (1, 2, 4 or 8 bytes per value): entries cost what the arrays cost */
    typedef struct { uint8_t *d; size_t n, cap; int size; int oom; } nv_col;
    static void nv_col_init(nv_col *c, int size) { c->d = NULL; c->n = c->cap = 0; c->size = size; c->oom = 0; }
    static void nv_col_free(nv_col *c) { free(c->d); c->d = NULL; c->n = c->cap = 0; }
    static inline void nv_col_push(nv_col *c, uint64_t v) {
        if (c->n == c->cap) {
            size_t nc = c->cap ? c->cap * 2 : 1024;
            uint8_t *p = (uint8_t *)realloc(c->d, nc * c->size);
            if (!p) { c->oom = 1; return; }
            c->d = p; c->cap = nc;
        }
        switch (c->size) {
        case 1: c->d[c->n] = (uint8_t)v; break;
        case 2: ((uint16_t *)c->d)[c->n] = (uint16_t)v; break;
        case 4: ((uint32_t *)c->d)[c->n] = (uint32_t)v; break;
        default: ((uint64_t *)c->d)[c->n] = v; break;
        }
        c->n++;
    }
    enum { NV_C_DIR, NV_C_CHILD, NV_C_FTYPE, NV_C_HASH, NV_C_OFF, NV_C_LEN, NV_N_COLS };
    static inline void nv_prob(nv_vec *v, uint64_t ino, uint64_t where, uint64_t code) {
        uint64_t r[3] = {ino, where, code};
        nv_push(v, r);
    }

    /* ---------------- geometry ---------------- */
    typedef struct {
        const uint8_t *base; uint64_t len;
        uint64_t bs, blocks_count, bpg, ipg, groups, ibm_blocks, itable_blocks, journal_blocks, inodes_count;
        uint64_t block_limit;  /* min(blocks_count, whole blocks in the mapping) */
        int bpg_shift;         /* log2(bpg) when a power of two, else -1 */
        int bs_shift;          /* log2(bs) when a power of two, else -1 (no division per inode) */
    } nv_map;
    static inline uint64_t nv_meta_blocks(const nv_map *m, uint64_t g) {
        return 3 + m->ibm_blocks + m->itable_blocks + (g == 0 ? m->journal_blocks : 0);
    }
    static inline int nv_is_meta(const nv_map *m, uint64_t b) {
        if (b == m->blocks_count - 1) return 1;
        uint64_t g = m->bpg_shift >= 0 ? b >> m->bpg_shift : b / m->bpg;
        if (g >= m->groups) return 1;
        return b < g * m->bpg + nv_meta_blocks(m, g);
    }
    /* 0 = fine, else P_B_RANGE / P_B_META */
    static inline uint64_t nv_block_bad(const nv_map *m, uint64_t b) {
        if (b >= m->block_limit) return P_B_RANGE;
        if (nv_is_meta(m, b)) return P_B_META;
        return 0;
    }
    static inline uint64_t nv_itable_off(const nv_map *m, uint64_t g) {
        return (g * m->bpg + 3 + m->ibm_blocks) * m->bs;
    }
    static inline uint64_t nv_ibm_off(const nv_map *m, uint64_t g) { return (g * m->bpg + 3) * m->bs; }
    /* Drop from this process the mapped pages that lie wholly inside the inode-table bytes of slots
       [x0, x1) (MADV_DONTNEED: a shared mapping only loses its page-table entries, the file keeps the
       data).  A page shared with the neighbouring slots stays. */
    static void nv_release_slots(const nv_map *m, uint64_t x0, uint64_t x1) {
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uint64_t g = x0 / m->ipg;
        for (; g < m->groups && g * m->ipg < x1; g++) {
            uint64_t lo = x0 > g * m->ipg ? x0 - g * m->ipg : 0;
            uint64_t hi = x1 - g * m->ipg < m->ipg ? x1 - g * m->ipg : m->ipg;
            uint64_t t = nv_itable_off(m, g);
            if (t + hi * NV_INODE_SIZE > m->len) break;
            uintptr_t a = ((uintptr_t)(m->base + t + lo * NV_INODE_SIZE) + page - 1) & ~(page - 1);
            uintptr_t b = (uintptr_t)(m->base + t + hi * NV_INODE_SIZE) & ~(page - 1);
            if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
        }
    }
    /* byte address of inode ino, or UINT64_MAX when out of range / outside the mapping */
    static inline uint64_t nv_inode_addr(const nv_map *m, uint64_t ino) {
        if (ino < 1 || ino > m->inodes_count) return UINT64_MAX;
        uint64_t g = (ino - 1) / m->ipg, i = (ino - 1) % m->ipg;
        uint64_t a = nv_itable_off(m, g) + i * NV_INODE_SIZE;
        if (a + NV_INODE_SIZE > m->len || a + NV_INODE_SIZE < a) return UINT64_MAX;
        return a;
    }

    /* ---------------- SipHash-2-4 ---------------- */
    #define NV_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
    #define NV_SIPROUND do { v0 += v1; v1 = NV_ROTL(v1, 13); v1 ^= v0; v0 = NV_ROTL(v0, 32); \
        v2 += v3; v3 = NV_ROTL(v3, 16); v3 ^= v2; v0 += v3; v3 = NV_ROTL(v3, 21); v3 ^= v0; \
        v2 += v1; v1 = NV_ROTL(v1, 17); v1 ^= v2; v2 = NV_ROTL(v2, 32); } while (0)
    static uint64_t nv_siphash(uint64_t k0, uint64_t k1, const uint8_t *in, size_t len) {
        uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
        uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
        size_t full = len - len % 8;
        for (size_t i = 0; i < full; i += 8) {
            uint64_t m = nv_u64(in + i);
            v3 ^= m; NV_SIPROUND; NV_SIPROUND; v0 ^= m;
        }
        uint64_t b = (uint64_t)(len & 0xff) << 56;
        for (size_t i = 0; i < len % 8; i++) b |= (uint64_t)in[full + i] << (8 * i);
        v3 ^= b; NV_SIPROUND; NV_SIPROUND; v0 ^= b;
        v2 ^= 0xff; NV_SIPROUND; NV_SIPROUND; NV_SIPROUND; NV_SIPROUND;
        return v0 ^ v1 ^ v2 ^ v3;
    }

    /* ---------------- CPU features ---------------- */
    typedef struct { int popcnt, avx2, avx512f, vpopcntdq, clflush, clflushopt, clwb, sse2, os_avx512; } nv_cpu_t;
    static nv_cpu_t nv_cpu;
    static void nv_cpu_detect(void) {
        memset(&nv_cpu, 0, sizeof nv_cpu);
    #if NV_X86
        unsigned a, b, c, d;
        if (!__get_cpuid(1, &a, &b, &c, &d)) return;
        nv_cpu.popcnt = (c >> 23) & 1;
        nv_cpu.clflush = (d >> 19) & 1;
        nv_cpu.sse2 = (d >> 26) & 1;
        int osxsave = (c >> 27) & 1;
        uint64_t xcr0 = 0;
        if (osxsave) { uint32_t lo, hi; __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0)); xcr0 = ((uint64_t)hi << 32) | lo; }
        nv_cpu.os_avx512 = (xcr0 & 0xE6) == 0xE6;
        int os_avx = (xcr0 & 0x6) == 0x6;
        if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
            nv_cpu.avx2 = ((b >> 5) & 1) && os_avx;
            nv_cpu.avx512f = ((b >> 16) & 1) && nv_cpu.os_avx512;
            nv_cpu.clflushopt = (b >> 23) & 1;
            nv_cpu.clwb = (b >> 24) & 1;
            nv_cpu.vpopcntdq = ((c >> 14) & 1) && nv_cpu.avx512f;
        }
    #endif
    }

    /* ---------------- popcount kernels ---------------- */
    static uint64_t nv_pop_baseline(const uint8_t *p, uint64_t n) {
        uint64_t total = 0, i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t x; memcpy(&x, p + i, 8);
            x = x - ((x >> 1) & 0x5555555555555555ULL);
            x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
            x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
            total += (x * 0x0101010101010101ULL) >> 56;
        }
        for (; i < n; i++) { uint8_t x = p[i]; while (x) { total += x & 1; x >>= 1; } }
        return total;
    }
    #if NV_X86
    __attribute__((target("popcnt")))
    static uint64_t nv_pop_popcnt(const uint8_t *p, uint64_t n) {
        uint64_t t0 = 0, t1 = 0, t2 = 0, t3 = 0, i = 0;
        for (; i + 32 <= n; i += 32) {
            uint64_t a, b, c, d;
            memcpy(&a, p + i, 8); memcpy(&b, p + i + 8, 8); memcpy(&c, p + i + 16, 8); memcpy(&d, p + i + 24, 8);
            t0 += __builtin_popcountll(a); t1 += __builtin_popcountll(b);
            t2 += __builtin_popcountll(c); t3 += __builtin_popcountll(d);
        }
        for (; i + 8 <= n; i += 8) { uint64_t a; memcpy(&a, p + i, 8); t0 += __builtin_popcountll(a); }
        for (; i < n; i++) t1 += __builtin_popcount(p[i]);
        return t0 + t1 + t2 + t3;
    }
    __attribute__((target("avx512f,avx512vpopcntdq")))
    static uint64_t nv_pop_vpopcntdq(const uint8_t *p, uint64_t n) {
        __m512i acc = _mm512_setzero_si512();
        uint64_t i = 0, total = 0;
        for (; i + 64 <= n; i += 64)
            acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_loadu_si512((const void *)(p + i))));
        total = (uint64_t)_mm512_reduce_add_epi64(acc);
        for (; i < n; i++) total += __builtin_popcount(p[i]);
        return total;
    }
    #else
    static uint64_t nv_pop_popcnt(const uint8_t *p, uint64_t n) { return nv_pop_baseline(p, n); }
    static uint64_t nv_pop_vpopcntdq(const uint8_t *p, uint64_t n) { return nv_pop_baseline(p, n); }
    #endif
    typedef uint64_t (*nv_pop_fn)(const uint8_t *, uint64_t);
    static nv_pop_fn nv_pop_best = nv_pop_baseline;
    static nv_pop_fn nv_pop_kernel(int k) {
        return k == 2 ? nv_pop_vpopcntdq : k == 1 ? nv_pop_popcnt : nv_pop_baseline;
    }

    /* ---------------- persistence ---------------- */
    #if NV_X86
    __attribute__((target("clwb"))) static void nv_flush_clwb(const uint8_t *p, uint64_t n) {
        uintptr_t a = (uintptr_t)p & ~(uintptr_t)63, end = (uintptr_t)p + n;
        for (; a < end; a += 64) _mm_clwb((void *)a);
    }
    __attribute__((target("clflushopt"))) static void nv_flush_clflushopt(const uint8_t *p, uint64_t n) {
        uintptr_t a = (uintptr_t)p & ~(uintptr_t)63, end = (uintptr_t)p + n;
        for (; a < end; a += 64) _mm_clflushopt((void *)a);
    }
    static void nv_flush_clflush(const uint8_t *p, uint64_t n) {
        uintptr_t a = (uintptr_t)p & ~(uintptr_t)63, end = (uintptr_t)p + n;
        for (; a < end; a += 64) _mm_clflush((const void *)a);
    }
    static void nv_sfence(void) { _mm_sfence(); }
    static void nv_nt_zero(uint8_t *p, uint64_t n) {
        uint64_t i = 0;
        while (i < n && (((uintptr_t)(p + i)) & 7)) p[i++] = 0;
        for (; i + 8 <= n; i += 8) _mm_stream_si64((long long *)(p + i), 0);
        for (; i < n; i++) p[i] = 0;
        _mm_sfence();
    }
    #else
    static void nv_flush_clwb(const uint8_t *p, uint64_t n) { (void)p; (void)n; __sync_synchronize(); }
    static void nv_flush_clflushopt(const uint8_t *p, uint64_t n) { (void)p; (void)n; __sync_synchronize(); }
    static void nv_flush_clflush(const uint8_t *p, uint64_t n) { (void)p; (void)n; __sync_synchronize(); }
    static void nv_sfence(void) { __sync_synchronize(); }
    static void nv_nt_zero(uint8_t *p, uint64_t n) { memset(p, 0, n); __sync_synchronize(); }
    #endif
    static int nv_flush_kind = 0;  /* 3 clwb, 2 clflushopt, 1 clflush, 0 none */
    static void nv_flush(const uint8_t *p, uint64_t n) {
        if (nv_flush_kind == 3) nv_flush_clwb(p, n);
        else if (nv_flush_kind == 2) nv_flush_clflushopt(p, n);
        else if (nv_flush_kind == 1) nv_flush_clflush(p, n);
        nv_sfence();
    }

    /* ---------------- bitmaps ---------------- */
    static inline int nv_bit(const uint8_t *bm, uint64_t i) { return (bm[i >> 3] >> (i & 7)) & 1; }
    /* 64 bits of the bitmap starting at bit i (bits past nbits read as 0 up to the byte end) */
    static inline uint64_t nv_bits64(const uint8_t *bm, uint64_t nbytes, uint64_t i) {
        uint64_t byte = i >> 3, sh = i & 7, w = 0;
        if (byte + 9 <= nbytes) {
            memcpy(&w, bm + byte, 8);
            w = (w >> sh) | (sh ? ((uint64_t)bm[byte + 8] << (64 - sh)) : 0);
            return w;
        }
        for (uint64_t k = 0; k < 9 && byte + k < nbytes; k++) {
            uint64_t b = bm[byte + k];
            if (k == 0) w |= b >> sh; else if (8 * k - sh < 64) w |= b << (8 * k - sh);
        }
        return w;
    }
    /* first set bit in [from, to), or to */
    static uint64_t nv_first_set(const uint8_t *bm, uint64_t nbytes, uint64_t from, uint64_t to) {
        while (from < to) {
            uint64_t w = nv_bits64(bm, nbytes, from);
            uint64_t lim = to - from < 64 ? to - from : 64;
            if (lim < 64) w &= (1ULL << lim) - 1;
            if (w) return from + __builtin_ctzll(w);
            from += lim;
        }
        return to;
    }
    /* first clear bit in [from, to), or to */
    static uint64_t nv_first_clear(const uint8_t *bm, uint64_t nbytes, uint64_t from, uint64_t to) {
        while (from < to) {
            uint64_t w = ~nv_bits64(bm, nbytes, from);
            uint64_t lim = to - from < 64 ? to - from : 64;
            if (lim < 64) w &= (1ULL << lim) - 1;
            if (w) return from + __builtin_ctzll(w);
            from += lim;
        }
        return to;
    }
    static int64_t nv_find_free(const uint8_t *bm, uint64_t nbits, uint64_t start, uint64_t count, uint64_t align) {
        uint64_t nbytes = (nbits + 7) / 8;
        uint64_t cand = (start + align - 1) / align * align;
        while (cand < nbits && count <= nbits - cand) {
            uint64_t s = nv_first_set(bm, nbytes, cand, cand + count);
            if (s == cand + count) return (int64_t)cand;
            uint64_t z = nv_first_clear(bm, nbytes, s, nbits);
            if (z >= nbits) return -1;
            cand = (z + align - 1) / align * align;
        }
        return -1;
    }

    /* ---------------- inode table scan ---------------- */
    typedef struct {
        uint64_t *ino, *size, *blocks; uint16_t *mode; uint32_t *flags, *links;
    } nv_iout;
    static inline int nv_inode_wanted(const nv_map *m, uint64_t g, uint64_t i, int use_bitmap, const uint8_t **rec) {
        uint64_t a = nv_itable_off(m, g) + i * NV_INODE_SIZE;
        if (a + NV_INODE_SIZE > m->len) return -1;
        if (use_bitmap) {
            uint64_t bb = nv_ibm_off(m, g) + i / 8;
            if (bb >= m->len || !((m->base[bb] >> (i & 7)) & 1)) return 0;
        }
        *rec = m->base + a;
        return nv_f(*rec, NV_I_MODE) != 0;
    }
    /* with use_bitmap: at a multiple of 64, true when the next 64 bitmap bits are all clear */
    static inline int nv_skip64(const nv_map *m, uint64_t g, uint64_t i, int use_bitmap) {
        if (!use_bitmap || (i & 63)) return 0;
        uint64_t bb = nv_ibm_off(m, g) + i / 8;
        return bb + 8 <= m->len && nv_u64(m->base + bb) == 0;
    }
    static uint64_t nv_icount(const nv_map *m, uint64_t g0, uint64_t g1, int use_bitmap) {
        uint64_t n = 0;
        for (uint64_t g = g0; g < g1 && nv_itable_off(m, g) < m->len; g++)
            for (uint64_t i = 0; i < m->ipg; i++) {
                const uint8_t *rec;
                if (nv_skip64(m, g, i, use_bitmap)) { i += 63; continue; }
                int w = nv_inode_wanted(m, g, i, use_bitmap, &rec);
                if (w < 0) break;
                n += w;
            }
        return n;
    }
    static inline int nv_any(const uint8_t *p, uint64_t n) { for (uint64_t i = 0; i < n; i++) if (p[i]) return 1; return 0; }
    /* the problems scan_inodes reports for one in-use inode record r at address addr */
    static void nv_inode_probs(const nv_map *m, const uint8_t *r, uint64_t ino, uint64_t addr, nv_vec *probs,
                               uint64_t max_size) {
        uint64_t mode = nv_f(r, NV_I_MODE), flags = nv_f(r, NV_I_FLAGS), size = nv_f(r, NV_I_SIZE);
        uint64_t links = nv_f(r, NV_I_LINKS), fmt = mode & NV_S_IFMT;
        int valid = fmt == NV_S_IFSOCK || fmt == NV_S_IFLNK || fmt == NV_S_IFREG || fmt == NV_S_IFBLK ||
                    fmt == NV_S_IFDIR || fmt == NV_S_IFCHR || fmt == NV_S_IFIFO;
        if (!valid) nv_prob(probs, ino, addr, P_ILLEGAL_MODE);
        if (flags & ~NV_FLAGS_KNOWN) nv_prob(probs, ino, addr, P_UNKNOWN_FLAGS);
        if (flags & NV_FLAG_INLINE) {
            if (fmt != NV_S_IFLNK) nv_prob(probs, ino, addr, P_INLINE_NOT_SYMLINK);
            else if (size == 0 || size > NV_INLINE_MAX) nv_prob(probs, ino, addr, P_INLINE_BAD_SIZE);
        }
        if (size > max_size) nv_prob(probs, ino, addr, P_SIZE_TOO_LARGE);
        if (nv_f(r, NV_I_RES0)) nv_prob(probs, ino, addr, P_RESERVED0);
        if (links == 0) nv_prob(probs, ino, addr, P_LINKS_ZERO);
        if (fmt == NV_S_IFDIR) {
            uint64_t parent = nv_f(r, NV_I_PARENT);
            if (parent == 0 || parent > m->inodes_count || (ino == NV_ROOT_INO && parent != ino))
                nv_prob(probs, ino, addr, P_DIR_BAD_PARENT);
            if (nv_f(r, NV_I_BANK) > 1) nv_prob(probs, ino, addr, P_DIR_BAD_BANK);
        }
        if (fmt == NV_S_IFCHR || fmt == NV_S_IFBLK || fmt == NV_S_IFIFO || fmt == NV_S_IFSOCK)
            if (size || nv_any(r + NV_I_BLOCK.off, NV_I_BLOCK.size)) nv_prob(probs, ino, addr, P_SPECIAL_HAS_DATA);
    }
    static void nv_ifill(const nv_map *m, uint64_t g0, uint64_t g1, int use_bitmap, nv_iout *o, uint64_t k,
                         nv_vec *probs, nv_vec *dirs, nv_vec *xattrs, uint8_t *inuse, uint64_t max_size) {
        for (uint64_t g = g0; g < g1 && nv_itable_off(m, g) < m->len; g++)
            for (uint64_t i = 0; i < m->ipg; i++) {
                const uint8_t *r;
                if (nv_skip64(m, g, i, use_bitmap)) { i += 63; continue; }
                int w = nv_inode_wanted(m, g, i, use_bitmap, &r);
                if (w < 0) break;
                if (!w) continue;
                uint64_t ino = g * m->ipg + i + 1, addr = (uint64_t)(r - m->base);
                uint64_t mode = nv_f(r, NV_I_MODE), flags = nv_f(r, NV_I_FLAGS), size = nv_f(r, NV_I_SIZE);
                uint64_t links = nv_f(r, NV_I_LINKS), fmt = mode & NV_S_IFMT;
                __atomic_fetch_or(&inuse[(ino - 1) >> 3], (uint8_t)(1u << ((ino - 1) & 7)), __ATOMIC_RELAXED);
                o->ino[k] = ino; o->mode[k] = (uint16_t)mode; o->flags[k] = (uint32_t)flags;
                o->links[k] = (uint32_t)links; o->size[k] = size; o->blocks[k] = nv_f(r, NV_I_BLOCKS);
                k++;
                if (fmt == NV_S_IFDIR) {
                    uint64_t rec[3] = {ino, nv_f(r, NV_I_PARENT), nv_f(r, NV_I_BANK)};
                    nv_push(dirs, rec);
                }
                uint64_t xb = nv_f(r, NV_I_XATTR);
                if (xb) { uint64_t rec[3] = {ino, xb, 0}; nv_push(xattrs, rec); }
                nv_inode_probs(m, r, ino, addr, probs, max_size);
            }
    }

    /* ---------------- claims ---------------- */
    typedef struct {
        const nv_map *m;
        uint8_t *owned;          /* claims */
        uint8_t *dupw;           /* pass A: blocks found claimed twice */
        const uint8_t *dupr;     /* pass B: blocks to report as shared */
        int parallel;            /* on a second claim: raise *conflict and stop */
        volatile int *conflict;
        int report;
        nv_vec probs;
        nv_vec claimed;          /* directories in parallel mode: blocks this thread set (for undo) */
        uint64_t count, ppb;
        uint64_t lo, hi;         /* directories: lowest and highest block claimed (lo > hi: none) */
        int track_reads;         /* record the indirect blocks and directory blocks read (nv_release_reads) */
        uint64_t read_lo, read_hi, read_n;  /* their byte span and count since the last release */
    } nv_ctx;
    static inline void nv_note_read(nv_ctx *c, uint64_t start) {
        if (!c->track_reads) return;
        if (start < c->read_lo) c->read_lo = start;
        if (start + c->m->bs > c->read_hi) c->read_hi = start + c->m->bs;
        c->read_n++;
    }
    /* Drop from this process the mapped pages around the blocks read since the last call (a read fault
       maps its neighbours too: 64 KiB), then start a new span. */
    static void nv_release_reads(nv_ctx *c) {
        if (c->read_hi > c->read_lo) {
            uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), around = 64 * 1024;
            uint64_t lo = c->read_lo > around ? c->read_lo - around : 0;
            uint64_t hi = c->read_hi + around < c->m->len ? c->read_hi + around : c->m->len;
            uintptr_t a = (uintptr_t)(c->m->base + lo) & ~(page - 1);
            uintptr_t b = ((uintptr_t)(c->m->base + hi) + page - 1) & ~(page - 1);
            madvise((void *)a, b - a, MADV_DONTNEED);
        }
        c->read_lo = UINT64_MAX;
        c->read_hi = 0;
        c->read_n = 0;
    }
    static inline int nv_claim(nv_ctx *c, uint64_t b) {
        uint8_t bit = (uint8_t)(1u << (b & 7));
        uint8_t old;
        if (c->parallel) old = __atomic_fetch_or(&c->owned[b >> 3], bit, __ATOMIC_RELAXED);
        else { old = c->owned[b >> 3]; c->owned[b >> 3] = old | bit; }
        return !(old & bit);
    }
    static inline void nv_report(nv_ctx *c, uint64_t ino, uint64_t where, uint64_t code) {
        if (c->report) nv_prob(&c->probs, ino, where, code);
    }
    /* validate, count, claim one pointer; returns 1 if the caller should descend */
    static int nv_pointer(nv_ctx *c, uint64_t ino, uint64_t addr, uint64_t b, uint64_t c_range, uint64_t c_meta,
                          uint64_t c_shared) {
        uint64_t bad = nv_block_bad(c->m, b);
        if (bad) { nv_report(c, ino, addr, bad == P_B_RANGE ? c_range : c_meta); return 0; }
        c->count++;
        if (c->dupr && nv_bit(c->dupr, b)) nv_report(c, ino, addr, c_shared);
        if (nv_claim(c, b)) return 1;
        *c->conflict = 1;
        if (c->dupw) c->dupw[b >> 3] |= (uint8_t)(1u << (b & 7));
        return 0;
    }
    static void nv_tree(nv_ctx *c, uint64_t ino, uint64_t addr, int level, unsigned __int128 base, uint64_t needed);
    /* nv_tree for the pointer word b stored at device address addr (the word already read) */
    static void nv_tree_word(nv_ctx *c, uint64_t ino, uint64_t addr, uint64_t b, int level, unsigned __int128 base,
                             uint64_t needed) {
        const nv_map *m = c->m;
        if (!b) return;
        if (base >= needed && !nv_block_bad(m, b)) { nv_report(c, ino, addr, P_B_EOF); return; }
        if (!nv_pointer(c, ino, addr, b, P_B_RANGE, P_B_META, P_B_SHARED) || level == 0) return;
        unsigned __int128 span = 1;
        for (int k = 1; k < level; k++) span *= c->ppb;
        uint64_t start = b * m->bs;
        nv_note_read(c, start);
        if (!nv_any(m->base + start, m->bs)) { nv_report(c, ino, addr, P_B_ZERO_IND); return; }
        for (uint64_t i = 0; i < c->ppb; i++) {
            nv_tree(c, ino, start + i * NV_PTR_SIZE, level - 1, base + span * i, needed);
            if (c->parallel && *c->conflict) return;
        }
    }
    static void nv_tree(nv_ctx *c, uint64_t ino, uint64_t addr, int level, unsigned __int128 base, uint64_t needed) {
        nv_tree_word(c, ino, addr, nv_u64(c->m->base + addr), level, base, needed);
    }
    /* nv_walk_inode for the inode at device address a whose record bytes are at r (the mapping or a
       copy of them): the record's own words are read from r, indirect blocks from the mapping */
    static uint64_t nv_walk_rec(nv_ctx *c, uint64_t ino, uint64_t a, const uint8_t *r) {
        const nv_map *m = c->m;
        c->count = 0;
        uint64_t mode = nv_f(r, NV_I_MODE), flags = nv_f(r, NV_I_FLAGS), xb = nv_f(r, NV_I_XATTR);
        if (!mode) return 0;
        if (xb) nv_pointer(c, ino, a + NV_I_XATTR.off, xb, P_X_RANGE, P_X_META, P_X_SHARED);
        uint64_t fmt = mode & NV_S_IFMT;
        if (fmt == NV_S_IFREG || (fmt == NV_S_IFLNK && !(flags & NV_FLAG_INLINE))) {
            uint64_t size = nv_f(r, NV_I_SIZE);
            uint64_t needed = m->bs_shift >= 0 ? (size >> m->bs_shift) + ((size & (m->bs - 1)) != 0)
                                               : size / m->bs + (size % m->bs != 0);
            uint64_t p0 = a + NV_I_BLOCK.off;
            const uint8_t *w = r + NV_I_BLOCK.off;
            for (uint64_t i = 0; i < NV_N_DIRECT; i++) {  /* most words of a small file are 0: no call */
                uint64_t b = nv_u64(w + i * NV_PTR_SIZE);
                if (b) nv_tree_word(c, ino, p0 + i * NV_PTR_SIZE, b, 0, i, needed);
            }
            unsigned __int128 fb = NV_N_DIRECT, span = 1;
            for (uint64_t k = 0; k < NV_N_INDIRECT; k++) {
                span *= c->ppb;
                uint64_t at = (NV_N_DIRECT + k) * NV_PTR_SIZE, b = nv_u64(w + at);
                if (b) nv_tree_word(c, ino, p0 + at, b, (int)k + 1, fb, needed);
                fb += span;
            }
        }
        return c->count;
    }
    /* nv_walk_inode for the inode at byte address a (inside the mapping) */
    static uint64_t nv_walk_at(nv_ctx *c, uint64_t ino, uint64_t a) { return nv_walk_rec(c, ino, a, c->m->base + a); }
    static uint64_t nv_walk_inode(nv_ctx *c, uint64_t ino) {
        uint64_t a = nv_inode_addr(c->m, ino);
        if (a == UINT64_MAX) { c->count = 0; return 0; }
        return nv_walk_at(c, ino, a);
    }
    static void nv_walk_files(nv_ctx *c, const uint64_t *inos, uint64_t n, uint64_t *counts) {
        for (uint64_t i = 0; i < n; i++) {
            counts[i] = nv_walk_inode(c, inos[i]);
            if (c->parallel && *c->conflict) return;
        }
    }
    static inline void nv_setbits(uint8_t *bm, uint64_t first, uint64_t end) {
        while (first < end && (first & 7)) { bm[first >> 3] |= (uint8_t)(1u << (first & 7)); first++; }
        if (end - first >= 8 && first < end) { memset(bm + (first >> 3), 0xff, (end - first) >> 3); first += (end - first) & ~7ULL; }
        while (first < end) { bm[first >> 3] |= (uint8_t)(1u << (first & 7)); first++; }
    }
    static void nv_mark_metadata(const nv_map *m, uint8_t *bm) {
        for (uint64_t g = 0; g < m->groups; g++) nv_setbits(bm, g * m->bpg, g * m->bpg + nv_meta_blocks(m, g));
        uint64_t last_end = m->groups * m->bpg;
        nv_setbits(bm, m->blocks_count < last_end ? m->blocks_count : last_end, last_end);
        if (m->blocks_count - 1 < last_end) nv_setbits(bm, m->blocks_count - 1, m->blocks_count);
    }

    /* ---------------- directories ---------------- */
    typedef struct {
        nv_ctx c;
        uint64_t k0, k1, bits;
        nv_col ents[NV_N_COLS];   /* dir, child, ftype, hash, name_off, name_len */
        uint64_t ent_start;
    } nv_dctx;
    static inline uint64_t nv_mask(uint64_t d) { return d == 0 ? 0 : (~0ULL) << (64 - d); }
    static inline uint64_t nv_slot_prefix(uint64_t slot, int64_t level, uint64_t bits) {
        int64_t shift = 64 - (level * (int64_t)bits + (int64_t)bits);
        return shift >= 0 ? slot << shift : slot >> (-shift);
    }
    static int nv_dpointer(nv_dctx *d, uint64_t dir, uint64_t addr, uint64_t b) {
        nv_ctx *c = &d->c;
        uint64_t bad = nv_block_bad(c->m, b);
        if (bad) { nv_prob(&c->probs, dir, addr, bad); return 0; }
        c->count++;
        if (nv_claim(c, b)) {
            if (c->parallel) { uint64_t r[1] = {b}; nv_push(&c->claimed, r); }
            if (b < c->lo) c->lo = b;
            if (b > c->hi) c->hi = b;
            nv_note_read(c, b * c->m->bs);
            return 1;
        }
        if (c->parallel) *c->conflict = 1;
        nv_prob(&c->probs, dir, addr, P_B_SHARED);
        return 0;
    }
    static int nv_is_page(const nv_map *m, uint64_t page) { return memcmp(m->base + page, NV_PAGE_MAGIC, 4) == 0; }
    /* a '/' or NUL in the name (names are short: a loop beats two memchr calls) */
    static inline int nv_bad_name_byte(const uint8_t *name, uint64_t n) {
        for (uint64_t i = 0; i < n; i++) if (name[i] == '/' || name[i] == 0) return 1;
        return 0;
    }
    static void nv_entries(nv_dctx *d, uint64_t dir, uint64_t page, uint64_t depth, uint64_t prefix) {
        const nv_map *m = d->c.m;
        nv_vec *pv = &d->c.probs;
        uint64_t off = NV_PAGE_HDR, mask = nv_mask(depth);
        while (off + NV_ENTRY_HDR <= m->bs) {
            uint64_t rec = page + off;
            const uint8_t *r = m->base + rec;
            uint64_t rec_len = nv_f(r, NV_E_RECLEN);
            if (!rec_len) return;
            uint64_t nl = nv_f(r, NV_E_NAMELEN);
            uint64_t need = (NV_ENTRY_HDR + nl + NV_ENTRY_ALIGN - 1) & ~(NV_ENTRY_ALIGN - 1);
            if (rec_len != need || off + rec_len > m->bs) { nv_prob(pv, dir, rec, P_E_RECLEN); return; }
            off += rec_len;
            uint64_t child = nv_f(r, NV_E_INO);
            if (!child) continue;
            const uint8_t *name = r + NV_ENTRY_HDR;
            if (nl == 0 || nv_bad_name_byte(name, nl)) nv_prob(pv, dir, rec, P_E_NAME);
            else if ((nl == 1 && name[0] == '.') || (nl == 2 && name[0] == '.' && name[1] == '.')) nv_prob(pv, dir, rec, P_E_DOT);
            uint64_t h = nv_siphash(d->k0, d->k1, name, nl);
            if (nv_f(r, NV_E_HASH) != h) nv_prob(pv, dir, rec, P_E_HASH);
            if ((h & mask) != prefix) nv_prob(pv, dir, rec, P_E_WRONG_PAGE);
            if (child > m->inodes_count || child < NV_ROOT_INO) { nv_prob(pv, dir, rec, P_E_INO); continue; }
            uint64_t e[NV_N_COLS] = {dir, child, nv_f(r, NV_E_FTYPE), h, rec + NV_ENTRY_HDR, nl};
            for (int k = 0; k < NV_N_COLS; k++) nv_col_push(&d->ents[k], e[k]);
        }
    }
    static void nv_page_chain(nv_dctx *d, uint64_t dir, uint64_t block, uint64_t depth, uint64_t prefix) {
        const nv_map *m = d->c.m;
        nv_vec *pv = &d->c.probs;
        for (;;) {
            uint64_t page = block * m->bs;
            if (nv_f(m->base + page, NV_P_DIRINO) != dir) nv_prob(pv, dir, page, P_PG_DIRINO);
            nv_entries(d, dir, page, depth, prefix);
            uint64_t nxt = nv_f(m->base + page, NV_P_NEXT);
            if (!nxt) return;
            if (depth != 64) { nv_prob(pv, dir, page, P_PG_NEXT); return; }
            if (!nv_dpointer(d, dir, page + NV_P_NEXT.off, nxt)) return;
            block = nxt;
            page = block * m->bs;
            if (!nv_is_page(m, page)) { nv_prob(pv, dir, page, P_PG_MAGIC); return; }
            if (nv_f(m->base + page, NV_P_DEPTH) != 64) nv_prob(pv, dir, page, P_PG_DEPTH);
            if (nv_f(m->base + page, NV_P_PREFIX) != prefix) nv_prob(pv, dir, page, P_PG_PREFIX);
        }
    }
    static void nv_node(nv_dctx *d, uint64_t dir, uint64_t block, int64_t level, uint64_t prefix);
    static void nv_slot_word(nv_dctx *d, uint64_t dir, uint64_t addr, uint64_t word, int64_t level, uint64_t prefix,
                             uint64_t slot, uint64_t run) {
        const nv_map *m = d->c.m;
        nv_vec *pv = &d->c.probs;
        if (!word) return;
        uint64_t block = word & NV_BLOCK_MASK;
        if (!(word & NV_PAGE_BIT)) {
            if (nv_dpointer(d, dir, addr, block))
                nv_node(d, dir, block, level + 1, prefix | (level >= 0 ? nv_slot_prefix(slot, level, d->bits) : 0));
            return;
        }
        if (!nv_dpointer(d, dir, addr, block)) return;
        uint64_t page = block * m->bs;
        if (!nv_is_page(m, page)) { nv_prob(pv, dir, page, P_PG_MAGIC); return; }
        uint64_t depth = nv_f(m->base + page, NV_P_DEPTH), expected = 0, lo = 0, hi = 0, eff;
        if (level >= 0) {
            expected = prefix | nv_slot_prefix(slot, level, d->bits);
            lo = (uint64_t)level * d->bits;
            hi = lo + d->bits < 64 ? lo + d->bits : 64;
        }
        if (lo <= depth && depth <= hi) {
            eff = depth;
            if (level >= 0) {
                uint64_t span = 1ULL << ((uint64_t)level * d->bits + d->bits - depth);
                if (slot % span || run != span) nv_prob(pv, dir, page, P_PG_SLOTS);
            }
        } else { nv_prob(pv, dir, page, P_PG_DEPTH); eff = lo; }
        expected &= nv_mask(eff);
        if (nv_f(m->base + page, NV_P_PREFIX) != expected) nv_prob(pv, dir, page, P_PG_PREFIX);
        nv_page_chain(d, dir, block, eff, expected);
    }
    static void nv_node(nv_dctx *d, uint64_t dir, uint64_t block, int64_t level, uint64_t prefix) {
        const nv_map *m = d->c.m;
        if ((uint64_t)level * d->bits >= 64) { nv_prob(&d->c.probs, dir, block * m->bs, P_NODE_DEEP); return; }
        uint64_t start = block * m->bs, ppb = d->c.ppb, i = 0;
        while (i < ppb) {
            uint64_t w = nv_u64(m->base + start + 8 * i), run = 1;
            if (w & NV_PAGE_BIT)
                while (i + run < ppb && nv_u64(m->base + start + 8 * (i + run)) == w) run++;
            nv_slot_word(d, dir, start + 8 * i, w, level, prefix, i, run);
            if (d->c.parallel && *d->c.conflict) return;
            i += run;
        }
    }
    /* ENTRY_DUPLICATE for every live entry whose name appeared earlier in this directory (walk order) */
    static void nv_duplicates(nv_dctx *d, uint64_t dir) {
        for (int k = 0; k < NV_N_COLS; k++)
            if (d->ents[k].oom || d->ents[k].n != d->ents[0].n) return;  /* reported as MemoryError */
        uint64_t n = d->ents[0].n - d->ent_start;
        if (n < 2) return;
        uint64_t size = 16;
        while (size < 2 * n) size <<= 1;
        uint64_t *t = calloc(size, sizeof *t);  /* entry index + 1, 0 = empty */
        if (!t) { d->ents[0].oom = 1; return; }
        const uint64_t *hash = (const uint64_t *)d->ents[NV_C_HASH].d + d->ent_start;
        const uint64_t *off = (const uint64_t *)d->ents[NV_C_OFF].d + d->ent_start;
        const uint16_t *len = (const uint16_t *)d->ents[NV_C_LEN].d + d->ent_start;
        const uint8_t *base = d->c.m->base;
        for (uint64_t j = 0; j < n; j++) {
            uint64_t pos = (hash[j] ^ (hash[j] >> 29)) & (size - 1);
            for (;;) {
                if (!t[pos]) { t[pos] = j + 1; break; }
                uint64_t i = t[pos] - 1;
                if (hash[i] == hash[j] && len[i] == len[j] && memcmp(base + off[i], base + off[j], len[j]) == 0) {
                    nv_prob(&d->c.probs, dir, off[j] - NV_ENTRY_HDR, P_E_DUP);
                    break;
                }
                pos = (pos + 1) & (size - 1);
            }
        }
        free(t);
    }
    static uint64_t nv_walk_dir(nv_dctx *d, uint64_t dir) {
        const nv_map *m = d->c.m;
        d->c.count = 0;
        d->ent_start = d->ents[0].n;
        uint64_t a = nv_inode_addr(m, dir);
        if (a == UINT64_MAX) return 0;
        const uint8_t *r = m->base + a;
        if ((nv_f(r, NV_I_MODE) & NV_S_IFMT) != NV_S_IFDIR) { nv_prob(&d->c.probs, dir, a, P_NOT_DIR); return 0; }
        uint64_t bank = nv_f(r, NV_I_BANK) & 1;
        uint64_t addr = a + NV_I_BLOCK.off + bank * NV_PTR_SIZE;
        nv_slot_word(d, dir, addr, nv_u64(m->base + addr), -1, 0, 0, 1);
        nv_duplicates(d, dir);
        return d->c.count;
    }
    static void nv_walk_dirs(nv_dctx *d, const uint64_t *dirs, uint64_t n, uint64_t *counts) {
        for (uint64_t i = 0; i < n; i++) {
            counts[i] = nv_walk_dir(d, dirs[i]);
            if (d->c.parallel && *d->c.conflict) return;
        }
    }
    /* the four cache lines of the inode record `ahead` records after r, when inside the mapping */
    static inline void nv_prefetch_record(const nv_map *m, const uint8_t *r, uint64_t ahead) {
        uint64_t a = (uint64_t)(r - m->base) + ahead * NV_INODE_SIZE;
        if (a + NV_INODE_SIZE <= m->len)
            for (uint64_t k = 0; k < NV_INODE_SIZE; k += 64) __builtin_prefetch(m->base + a + k, 0, 0);
    }
    static inline void nv_prefetch_line(const uint8_t *p) { __builtin_prefetch(p, 0, 0); }
    static inline void nv_set_bit_atomic(uint8_t *bm, uint64_t i) {
        __atomic_fetch_or(&bm[i >> 3], (uint8_t)(1u << (i & 7)), __ATOMIC_RELAXED);
    }
    /* *p -= v, returning the old value: atomic when threads share the table */
    static inline uint32_t nv_sub32(uint32_t *p, uint32_t v, int parallel) {
        if (parallel) return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED);
        uint32_t old = *p;
        *p = old - v;
        return old;
    }
    """
    ctypedef struct nv_field:
        uint32_t off
        uint32_t size
    nv_field NV_I_MODE, NV_I_RES0, NV_I_FLAGS, NV_I_LINKS, NV_I_SIZE, NV_I_BLOCKS, NV_I_PARENT
    nv_field NV_I_XATTR, NV_I_BANK, NV_I_BLOCK
    nv_field NV_P_DEPTH, NV_P_PREFIX, NV_P_DIRINO, NV_P_NEXT
    nv_field NV_E_INO, NV_E_HASH, NV_E_NAMELEN, NV_E_FTYPE, NV_E_RECLEN
    uint64_t NV_INODE_SIZE, NV_N_DIRECT, NV_N_INDIRECT, NV_PTR_SIZE, NV_PAGE_HDR, NV_ENTRY_HDR
    uint64_t NV_ENTRY_ALIGN, NV_INLINE_MAX, NV_FLAGS_KNOWN, NV_FLAG_INLINE, NV_ROOT_INO
    uint64_t NV_S_IFMT, NV_S_IFREG, NV_S_IFDIR, NV_S_IFLNK, NV_S_IFCHR, NV_S_IFBLK, NV_S_IFIFO, NV_S_IFSOCK
    uint64_t NV_PAGE_BIT, NV_BLOCK_MASK
    uint8_t NV_PAGE_MAGIC[4]
    uint64_t P_ILLEGAL_MODE, P_UNKNOWN_FLAGS, P_INLINE_NOT_SYMLINK, P_INLINE_BAD_SIZE, P_SIZE_TOO_LARGE
    uint64_t P_RESERVED0, P_LINKS_ZERO, P_DIR_BAD_PARENT, P_DIR_BAD_BANK, P_SPECIAL_HAS_DATA
    uint64_t P_B_RANGE, P_B_META, P_B_SHARED, P_B_EOF, P_B_ZERO_IND, P_X_RANGE, P_X_META, P_X_SHARED
    uint64_t P_NOT_DIR, P_PG_MAGIC, P_PG_DEPTH, P_PG_PREFIX, P_PG_SLOTS, P_PG_DIRINO, P_PG_NEXT, P_NODE_DEEP
    uint64_t P_E_HASH, P_E_WRONG_PAGE, P_E_RECLEN, P_E_NAME, P_E_DOT, P_E_DUP, P_E_INO

    ctypedef struct nv_vec:
        uint64_t *d
        size_t n
        size_t cap
        int w
        int oom
    void nv_vec_init(nv_vec *v, int w) nogil
    void nv_vec_free(nv_vec *v) nogil
    void nv_push(nv_vec *v, const uint64_t *rec) nogil
    int __builtin_ctzll(unsigned long long x) nogil
    const uint8_t nv_empty[8]
    uint64_t nv_ld(const uint8_t *p, uint32_t n) nogil

    ctypedef struct nv_map:
        const uint8_t *base
        uint64_t len, bs, blocks_count, bpg, ipg, groups, ibm_blocks, itable_blocks, journal_blocks, inodes_count
        uint64_t block_limit
        int bpg_shift
        int bs_shift

    uint64_t nv_inode_addr(const nv_map *m, uint64_t ino) nogil
    void nv_release_slots(const nv_map *m, uint64_t x0, uint64_t x1) nogil
    void nv_release_reads(nv_ctx *c) nogil
    uint64_t nv_siphash(uint64_t k0, uint64_t k1, const uint8_t *inp, size_t length) nogil

    ctypedef struct nv_cpu_t:
        int popcnt, avx2, avx512f, vpopcntdq, clflush, clflushopt, clwb, sse2, os_avx512
    nv_cpu_t nv_cpu
    void nv_cpu_detect()
    ctypedef uint64_t (*nv_pop_fn)(const uint8_t *, uint64_t) noexcept nogil
    nv_pop_fn nv_pop_best
    nv_pop_fn nv_pop_kernel(int k)
    int nv_flush_kind
    void nv_flush(const uint8_t *p, uint64_t n) nogil
    void nv_sfence() nogil
    void nv_nt_zero(uint8_t *p, uint64_t n) nogil

    int64_t nv_find_free(const uint8_t *bm, uint64_t nbits, uint64_t start, uint64_t count, uint64_t align) nogil

    ctypedef struct nv_iout:
        uint64_t *ino
        uint64_t *size
        uint64_t *blocks
        uint16_t *mode
        uint32_t *flags
        uint32_t *links
    uint64_t nv_icount(const nv_map *m, uint64_t g0, uint64_t g1, int use_bitmap) nogil
    void nv_ifill(const nv_map *m, uint64_t g0, uint64_t g1, int use_bitmap, nv_iout *o, uint64_t k,
                  nv_vec *probs, nv_vec *dirs, nv_vec *xattrs, uint8_t *inuse, uint64_t max_size) nogil

    ctypedef struct nv_ctx:
        const nv_map *m
        uint8_t *owned
        uint8_t *dupw
        const uint8_t *dupr
        int parallel
        volatile int *conflict
        int report
        nv_vec probs
        nv_vec claimed
        uint64_t count, ppb
        uint64_t lo, hi
        int track_reads
        uint64_t read_lo, read_hi, read_n
    void nv_walk_files(nv_ctx *c, const uint64_t *inos, uint64_t n, uint64_t *counts) nogil
    void nv_mark_metadata(const nv_map *m, uint8_t *bm) nogil

    ctypedef struct nv_col:
        uint8_t *d
        size_t n
        size_t cap
        int size
        int oom
    void nv_col_init(nv_col *c, int size) nogil
    void nv_col_free(nv_col *c) nogil
    enum: NV_N_COLS

    ctypedef struct nv_dctx:
        nv_ctx c
        uint64_t k0, k1, bits
        nv_col ents[6]
        uint64_t ent_start
    void nv_walk_dirs(nv_dctx *d, const uint64_t *dirs, uint64_t n, uint64_t *counts) nogil

    int nv_inode_wanted(const nv_map *m, uint64_t g, uint64_t i, int use_bitmap, const uint8_t **rec) nogil
    uint64_t nv_itable_off(const nv_map *m, uint64_t g) nogil
    void nv_inode_probs(const nv_map *m, const uint8_t *r, uint64_t ino, uint64_t addr, nv_vec *probs,
                        uint64_t max_size) nogil
    uint64_t nv_walk_rec(nv_ctx *c, uint64_t ino, uint64_t a, const uint8_t *r) nogil
    void nv_set_bit_atomic(uint8_t *bm, uint64_t i) nogil
    uint32_t nv_sub32(uint32_t *p, uint32_t v, int parallel) nogil
    void nv_prefetch_record(const nv_map *m, const uint8_t *r, uint64_t ahead) nogil
    void nv_prefetch_line(const uint8_t *p) nogil
    uint64_t nv_walk_dir(nv_dctx *d, uint64_t dir) nogil
    enum: NV_C_DIR, NV_C_CHILD, NV_C_FTYPE, NV_C_HASH, NV_C_OFF, NV_C_LEN


# ---------------------------------------------------------------------------
# Import-time set-up: layout from format.py, CPU kernels from CPUID
# ---------------------------------------------------------------------------

cdef nv_field _fld(dict layout, str name):
    cdef nv_field f
    info = layout[name]
    if info.size not in (1, 2, 4, 8) and name != "block":
        raise ImportError(f"field {name} of {info.size} bytes is not supported by the fast-scan core")
    f.off = info.offset
    f.size = info.size
    return f


cdef _init_layout():
    global NV_I_MODE, NV_I_RES0, NV_I_FLAGS, NV_I_LINKS, NV_I_SIZE, NV_I_BLOCKS, NV_I_PARENT
    global NV_I_XATTR, NV_I_BANK, NV_I_BLOCK, NV_P_DEPTH, NV_P_PREFIX, NV_P_DIRINO, NV_P_NEXT
    global NV_E_INO, NV_E_HASH, NV_E_NAMELEN, NV_E_FTYPE, NV_E_RECLEN
    global NV_INODE_SIZE, NV_N_DIRECT, NV_N_INDIRECT, NV_PTR_SIZE, NV_PAGE_HDR, NV_ENTRY_HDR
    global NV_ENTRY_ALIGN, NV_INLINE_MAX, NV_FLAGS_KNOWN, NV_FLAG_INLINE, NV_ROOT_INO
    global NV_S_IFMT, NV_S_IFREG, NV_S_IFDIR, NV_S_IFLNK, NV_S_IFCHR, NV_S_IFBLK, NV_S_IFIFO, NV_S_IFSOCK
    global NV_PAGE_BIT, NV_BLOCK_MASK
    inode = F.field_layout(F.PLAIN["Inode"])
    page = F.field_layout(F.PLAIN["DirPageHeader"])
    entry = F.field_layout(F.PLAIN["DirEntryHeader"])
    NV_I_MODE = _fld(inode, "mode")
    NV_I_RES0 = _fld(inode, "reserved0")
    NV_I_FLAGS = _fld(inode, "flags")
    NV_I_LINKS = _fld(inode, "links_count")
    NV_I_SIZE = _fld(inode, "size")
    NV_I_BLOCKS = _fld(inode, "blocks")
    NV_I_PARENT = _fld(inode, "parent")
    NV_I_XATTR = _fld(inode, "xattr_block")
    NV_I_BANK = _fld(inode, "dir_bank")
    NV_I_BLOCK = _fld(inode, "block")
    NV_P_DEPTH = _fld(page, "depth")
    NV_P_PREFIX = _fld(page, "prefix")
    NV_P_DIRINO = _fld(page, "dir_ino")
    NV_P_NEXT = _fld(page, "next")
    NV_E_INO = _fld(entry, "ino")
    NV_E_HASH = _fld(entry, "hash")
    NV_E_NAMELEN = _fld(entry, "name_len")
    NV_E_FTYPE = _fld(entry, "file_type")
    NV_E_RECLEN = _fld(entry, "rec_len")
    NV_PTR_SIZE = inode["block"].size // F.N_BLOCK_POINTERS
    if NV_PTR_SIZE != 8 or page["magic"].size != 4 or page["magic"].offset != 0:
        raise ImportError("block pointers must be 8 bytes and the page magic 4 bytes at offset 0")
    for i, ch in enumerate(F.DIR_PAGE_MAGIC):
        NV_PAGE_MAGIC[i] = ch
    NV_INODE_SIZE = F.INODE_SIZE
    NV_N_DIRECT = F.N_DIRECT
    NV_N_INDIRECT = F.N_INDIRECT
    NV_PAGE_HDR = F.DIR_PAGE_HEADER_SIZE
    NV_ENTRY_HDR = F.DIR_ENTRY_HEADER_SIZE
    NV_ENTRY_ALIGN = F.DIR_ENTRY_ALIGN
    NV_INLINE_MAX = F.INLINE_SYMLINK_MAX
    NV_FLAGS_KNOWN = F.INODE_FLAGS_KNOWN
    NV_FLAG_INLINE = F.INODE_FLAG_INLINE
    NV_ROOT_INO = F.ROOT_INO
    NV_S_IFMT, NV_S_IFREG, NV_S_IFDIR, NV_S_IFLNK = F.S_IFMT, F.S_IFREG, F.S_IFDIR, F.S_IFLNK
    NV_S_IFCHR, NV_S_IFBLK, NV_S_IFIFO, NV_S_IFSOCK = F.S_IFCHR, F.S_IFBLK, F.S_IFIFO, F.S_IFSOCK
    NV_PAGE_BIT = F.RADIX_PAGE_BIT
    NV_BLOCK_MASK = F.RADIX_BLOCK_MASK


cdef _init_codes():
    global P_ILLEGAL_MODE, P_UNKNOWN_FLAGS, P_INLINE_NOT_SYMLINK, P_INLINE_BAD_SIZE, P_SIZE_TOO_LARGE
    global P_RESERVED0, P_LINKS_ZERO, P_DIR_BAD_PARENT, P_DIR_BAD_BANK, P_SPECIAL_HAS_DATA
    global P_B_RANGE, P_B_META, P_B_SHARED, P_B_EOF, P_B_ZERO_IND, P_X_RANGE, P_X_META, P_X_SHARED
    global P_NOT_DIR, P_PG_MAGIC, P_PG_DEPTH, P_PG_PREFIX, P_PG_SLOTS, P_PG_DIRINO, P_PG_NEXT, P_NODE_DEEP
    global P_E_HASH, P_E_WRONG_PAGE, P_E_RECLEN, P_E_NAME, P_E_DOT, P_E_DUP, P_E_INO
    P_ILLEGAL_MODE = Problem.ILLEGAL_MODE
    P_UNKNOWN_FLAGS = Problem.UNKNOWN_FLAGS
    P_INLINE_NOT_SYMLINK = Problem.INLINE_NOT_SYMLINK
    P_INLINE_BAD_SIZE = Problem.INLINE_BAD_SIZE
    P_SIZE_TOO_LARGE = Problem.SIZE_TOO_LARGE
    P_RESERVED0 = Problem.RESERVED0_NONZERO
    P_LINKS_ZERO = Problem.LINKS_ZERO
    P_DIR_BAD_PARENT = Problem.DIR_BAD_PARENT
    P_DIR_BAD_BANK = Problem.DIR_BAD_BANK
    P_SPECIAL_HAS_DATA = Problem.SPECIAL_HAS_DATA
    P_B_RANGE = Problem.BLOCK_OUT_OF_RANGE
    P_B_META = Problem.BLOCK_IN_METADATA
    P_B_SHARED = Problem.BLOCK_SHARED
    P_B_EOF = Problem.BLOCK_PAST_EOF
    P_B_ZERO_IND = Problem.INDIRECT_ALL_ZERO
    P_X_RANGE = Problem.XATTR_OUT_OF_RANGE
    P_X_META = Problem.XATTR_IN_METADATA
    P_X_SHARED = Problem.XATTR_SHARED
    P_NOT_DIR = Problem.NOT_A_DIRECTORY
    P_PG_MAGIC = Problem.PAGE_BAD_MAGIC
    P_PG_DEPTH = Problem.PAGE_BAD_DEPTH
    P_PG_PREFIX = Problem.PAGE_BAD_PREFIX
    P_PG_SLOTS = Problem.PAGE_BAD_SLOTS
    P_PG_DIRINO = Problem.PAGE_BAD_DIR_INO
    P_PG_NEXT = Problem.PAGE_BAD_NEXT
    P_NODE_DEEP = Problem.NODE_TOO_DEEP
    P_E_HASH = Problem.ENTRY_BAD_HASH
    P_E_WRONG_PAGE = Problem.ENTRY_WRONG_PAGE
    P_E_RECLEN = Problem.ENTRY_BAD_REC_LEN
    P_E_NAME = Problem.ENTRY_BAD_NAME
    P_E_DOT = Problem.ENTRY_DOT_NAME
    P_E_DUP = Problem.ENTRY_DUPLICATE
    P_E_INO = Problem.ENTRY_BAD_INO


cdef _init_cpu():
    global nv_pop_best, nv_flush_kind
    nv_cpu_detect()
    if nv_cpu.vpopcntdq:
        nv_pop_best = nv_pop_kernel(2)
    elif nv_cpu.popcnt:
        nv_pop_best = nv_pop_kernel(1)
    else:
        nv_pop_best = nv_pop_kernel(0)
    nv_flush_kind = 3 if nv_cpu.clwb else 2 if nv_cpu.clflushopt else 1 if nv_cpu.clflush else 0


_init_layout()
_init_codes()
_init_cpu()

_U64 = (1 << 64) - 1


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

cdef const uint8_t* _ro_ptr(const uint8_t[::1] mv):
    return &mv[0] if mv.shape[0] else nv_empty


cdef const uint8_t[::1] _ro(buf):
    """A read-only byte view of any buffer (bytes, bytearray, mmap, memoryview)."""
    if isinstance(buf, memoryview) and (buf.format != "B" or buf.ndim != 1):
        buf = buf.cast("B")
    return buf


cdef uint8_t[::1] _rw(buf):
    if isinstance(buf, memoryview) and (buf.format != "B" or buf.ndim != 1):
        buf = buf.cast("B")
    return buf


cdef _check_range(Py_ssize_t total, Py_ssize_t offset, Py_ssize_t nbytes):
    if offset < 0 or nbytes < 0 or offset + nbytes > total:
        raise ValueError(f"range {offset}+{nbytes} outside a buffer of {total} bytes")


def _zero_map(Py_ssize_t nbytes):
    """A zero-filled buffer whose pages cost memory only once written (private: a page only read
    maps the kernel's zero page, and faults are cheaper than on shared anonymous memory)."""
    return mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE)


cdef int _threads(int threads, Py_ssize_t work):
    if threads <= 0:
        threads = os.cpu_count() or 1
    if threads > work:
        threads = <int>work
    return max(threads, 1)


class _Workers:
    """Threads kept for the life of the process, one queue each, that run the jobs of _run_parallel.

    fsck calls the core once per window of inode tables or run of directories (about a hundred
    calls on a 1,000,000-inode image): starting and joining a thread per call cost ~0.14 ms, a
    hand-over through a queue ~0.02 ms.  (concurrent.futures would cost ~12 ms of imports.)
    """

    def __init__(self):
        import threading
        from _queue import SimpleQueue

        self.threading = threading
        self.SimpleQueue = SimpleQueue
        self.lock = threading.Lock()
        self.queues = []
        self.done = SimpleQueue()

    def _serve(self, queue):
        while True:
            job = queue.get()
            try:
                job.run()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                self.done.put(exc)
            else:
                self.done.put(None)

    def run(self, jobs):
        """Run ``jobs[1:]`` on the workers and ``jobs[0]`` here; raise the first failure.  A call made
        while another thread is using the workers gets threads of its own."""
        if not self.lock.acquire(blocking=False):
            _run_in_new_threads(jobs)
            return
        try:
            while len(self.queues) < len(jobs) - 1:
                queue = self.SimpleQueue()
                self.threading.Thread(target=self._serve, args=(queue,), name="nvfs-scan", daemon=True).start()
                self.queues.append(queue)
            for queue, job in zip(self.queues, jobs[1:]):
                queue.put(job)
            errors = []
            try:
                jobs[0].run()  # the calling thread takes the first share instead of waiting idle
            except BaseException as exc:  # noqa: BLE001 - the workers' jobs must still be waited for
                errors.append(exc)
            try:
                for _ in jobs[1:]:
                    exc = self.done.get()
                    if exc is not None:
                        errors.append(exc)
            except BaseException:  # interrupted while waiting: workers may still answer into self.done
                _forget_workers()  # so the next call starts with new ones
                raise
        finally:
            self.lock.release()
        if errors:
            raise errors[0]


_workers = None


def _forget_workers():
    global _workers
    _workers = None  # a forked child has none of the parent's threads


os.register_at_fork(after_in_child=_forget_workers)


def _run_parallel(jobs):
    """Run each job's ``run()`` on a thread of its own (the kernels release the GIL)."""
    global _workers
    if len(jobs) == 1:
        jobs[0].run()
        return
    if _workers is None:
        _workers = _Workers()
    _workers.run(jobs)


def _run_in_new_threads(jobs):
    import threading

    errors = []

    def run(job):
        try:
            job.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs[1:]]
    for thread in threads:
        thread.start()
    run(jobs[0])
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


cdef _check_geo(const uint8_t[::1] mv, geo):
    if geo.block_size <= 0 or geo.blocks_per_group <= 0 or geo.inodes_per_group <= 0 or geo.blocks_count <= 0:
        raise ValueError("bad geometry")


cdef nv_map _map(const uint8_t[::1] mv, geo):
    cdef nv_map m
    _check_geo(mv, geo)
    m.base = _ro_ptr(mv)
    m.len = mv.shape[0]
    m.bs = geo.block_size
    m.blocks_count = geo.blocks_count
    m.bpg = geo.blocks_per_group
    m.ipg = geo.inodes_per_group
    m.groups = geo.group_count
    m.ibm_blocks = geo.inode_bitmap_blocks
    m.itable_blocks = geo.inode_table_blocks
    m.journal_blocks = geo.journal_blocks
    m.inodes_count = geo.inodes_per_group * geo.group_count
    m.block_limit = min(m.blocks_count, m.len // m.bs)
    bpg = geo.blocks_per_group
    m.bpg_shift = bpg.bit_length() - 1 if bpg & (bpg - 1) == 0 else -1
    m.bs_shift = m.bs.bit_length() - 1 if m.bs & (m.bs - 1) == 0 else -1
    return m


cdef list _vec_arrays(nv_vec *vecs, int nvec, list typecodes):
    """Concatenate per-thread record vectors into one array per record column."""
    cdef Py_ssize_t total = 0, k, j, col, cnt, w = len(typecodes)
    cdef int v
    for v in range(nvec):
        if vecs[v].oom:
            raise MemoryError("fast-scan result vector")
        total += vecs[v].n
    cols = [carray.clone(array(tc), total, zero=False) for tc in typecodes]
    cdef carray.array a
    cdef uint64_t *src
    cdef int itemsize
    for col in range(w):
        a = cols[col]
        itemsize = a.ob_descr.itemsize
        k = 0
        for v in range(nvec):
            src = vecs[v].d
            cnt = vecs[v].n
            if itemsize == 8:
                for j in range(cnt):
                    (<uint64_t*>a.data.as_voidptr)[k + j] = src[j * w + col]
            elif itemsize == 4:
                for j in range(cnt):
                    (<uint32_t*>a.data.as_voidptr)[k + j] = <uint32_t>src[j * w + col]
            elif itemsize == 2:
                for j in range(cnt):
                    (<uint16_t*>a.data.as_voidptr)[k + j] = <uint16_t>src[j * w + col]
            else:
                for j in range(cnt):
                    (<uint8_t*>a.data.as_voidptr)[k + j] = <uint8_t>src[j * w + col]
            k += cnt
    return cols


cdef carray.array _u64_array(values):
    """An array('Q') copy of any sequence of non-negative integers."""
    if isinstance(values, array) and values.typecode == "Q":
        return values
    return array("Q", values)


cdef dict _problem_dict(list cols):
    return {"prob_ino": cols[0], "prob_where": cols[1], "prob_code": cols[2]}


# ---------------------------------------------------------------------------
# SipHash
# ---------------------------------------------------------------------------

cdef void _key(bytes key, uint64_t *k0, uint64_t *k1) except *:
    if len(key) != 16:
        raise ValueError("SipHash key must be 16 bytes")
    k0[0] = int.from_bytes(key[:8], "little")
    k1[0] = int.from_bytes(key[8:], "little")


def siphash24(key, data):
    """SipHash-2-4 of ``data`` under the 16-byte ``key``."""
    cdef uint64_t k0, k1
    _key(bytes(key), &k0, &k1)
    cdef const uint8_t[::1] mv = _ro(data)
    cdef const uint8_t *p = _ro_ptr(mv)
    cdef size_t n = mv.shape[0]
    cdef uint64_t h
    with nogil:
        h = nv_siphash(k0, k1, p, n)
    return h


def siphash24_bulk(key, buf, offsets, lengths):
    """SipHash-2-4 of ``buf[offsets[i] : offsets[i] + lengths[i]]`` for every i."""
    cdef uint64_t k0, k1
    _key(bytes(key), &k0, &k1)
    if len(offsets) != len(lengths):
        raise ValueError("offsets and lengths differ in length")
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef const uint8_t *p = _ro_ptr(mv)
    cdef Py_ssize_t n = len(offsets), i, total = mv.shape[0]
    cdef carray.array offs = _u64_array(offsets)
    cdef carray.array lens = _u64_array(lengths)
    cdef carray.array out = carray.clone(array("Q"), n, zero=False)
    cdef uint64_t *o = <uint64_t*>offs.data.as_voidptr
    cdef uint64_t *l = <uint64_t*>lens.data.as_voidptr
    cdef uint64_t *h = <uint64_t*>out.data.as_voidptr
    for i in range(n):
        if o[i] > <uint64_t>total or l[i] > <uint64_t>total - o[i]:
            raise ValueError(f"name at {o[i]} (+{l[i]}) outside the buffer")
    with nogil:
        for i in range(n):
            h[i] = nv_siphash(k0, k1, p + o[i], l[i])
    return out


# ---------------------------------------------------------------------------
# Bitmaps
# ---------------------------------------------------------------------------

_KERNELS = {"baseline": 0, "popcnt": 1, "avx512vpopcntdq": 2}


def popcount_kernels():
    """Popcount kernels this CPU can run, slowest first."""
    names = ["baseline"]
    if nv_cpu.popcnt:
        names.append("popcnt")
    if nv_cpu.vpopcntdq:
        names.append("avx512vpopcntdq")
    return names


def popcount(buf, Py_ssize_t offset, Py_ssize_t nbytes, kernel=None):
    """Number of set bits in ``nbytes`` bytes at ``offset`` (kernel chosen by CPUID unless named)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    _check_range(mv.shape[0], offset, nbytes)
    cdef nv_pop_fn fn = nv_pop_best
    if kernel is not None:
        if kernel not in popcount_kernels():
            raise ValueError(f"popcount kernel {kernel!r} not available on this CPU")
        fn = nv_pop_kernel(_KERNELS[kernel])
    cdef const uint8_t *p = _ro_ptr(mv) + offset
    cdef uint64_t r
    with nogil:
        r = fn(p, nbytes)
    return r


def find_free(buf, Py_ssize_t offset, Py_ssize_t nbits, Py_ssize_t start, Py_ssize_t count, Py_ssize_t align=1):
    """First bit index >= start, multiple of ``align``, that begins ``count`` clear bits within nbits; else -1."""
    if count < 1 or align < 1:
        raise ValueError("count and align must be positive")
    cdef const uint8_t[::1] mv = _ro(buf)
    if nbits < 0:
        raise ValueError("nbits must be >= 0")
    _check_range(mv.shape[0], offset, (nbits + 7) // 8)
    if start < 0:
        start = 0
    cdef const uint8_t *p = _ro_ptr(mv) + offset
    cdef int64_t r
    with nogil:
        r = nv_find_free(p, nbits, start, count, align)
    return r


def diff(buf_a, Py_ssize_t off_a, buf_b, Py_ssize_t off_b, Py_ssize_t nbits):
    """Indexes of the bits that differ between two bitmaps of ``nbits`` bits."""
    cdef const uint8_t[::1] ma = _ro(buf_a)
    cdef const uint8_t[::1] mb = _ro(buf_b)
    if nbits < 0:
        raise ValueError("nbits must be >= 0")
    cdef Py_ssize_t nbytes = (nbits + 7) // 8
    _check_range(ma.shape[0], off_a, nbytes)
    _check_range(mb.shape[0], off_b, nbytes)
    cdef const uint8_t *a = _ro_ptr(ma) + off_a
    cdef const uint8_t *b = _ro_ptr(mb) + off_b
    cdef nv_vec v
    nv_vec_init(&v, 1)
    cdef Py_ssize_t i = 0, k
    cdef uint64_t x, wa, wb, rec
    try:
        with nogil:
            while i < nbits:
                wa = 0
                wb = 0
                if i // 8 + 8 <= nbytes:
                    memcpy(&wa, a + i // 8, 8)
                    memcpy(&wb, b + i // 8, 8)
                else:
                    for k in range(nbytes - i // 8):
                        wa |= (<uint64_t>a[i // 8 + k]) << (8 * k)
                        wb |= (<uint64_t>b[i // 8 + k]) << (8 * k)
                x = wa ^ wb
                if nbits - i < 64:
                    x &= ((<uint64_t>1) << (nbits - i)) - 1
                while x:
                    rec = i + __builtin_ctzll(x)
                    nv_push(&v, &rec)
                    x &= x - 1
                i += 64
        return _vec_arrays(&v, 1, ["Q"])[0]
    finally:
        nv_vec_free(&v)


# ---------------------------------------------------------------------------
# Inode table scan
# ---------------------------------------------------------------------------

cdef class _IScanJob:
    cdef nv_map m
    cdef uint64_t g0, g1, k, count, max_size
    cdef int use_bitmap
    cdef nv_iout out
    cdef nv_vec probs, dirs, xattrs
    cdef uint8_t *inuse
    cdef int phase

    def __cinit__(self):
        nv_vec_init(&self.probs, 3)
        nv_vec_init(&self.dirs, 3)
        nv_vec_init(&self.xattrs, 3)

    def __dealloc__(self):
        nv_vec_free(&self.probs)
        nv_vec_free(&self.dirs)
        nv_vec_free(&self.xattrs)

    def run(self):
        if self.phase == 0:
            with nogil:
                self.count = nv_icount(&self.m, self.g0, self.g1, self.use_bitmap)
        else:
            with nogil:
                nv_ifill(&self.m, self.g0, self.g1, self.use_bitmap, &self.out, self.k, &self.probs, &self.dirs,
                         &self.xattrs, self.inuse, self.max_size)


def scan_inodes(buf, geo, *, use_bitmap=False, groups=None, int threads=0):
    """Every in-use inode of the inode tables, as compact arrays (see scan_pure.scan_inodes)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef nv_map m = _map(mv, geo)
    cdef uint64_t first = 0, last = m.groups
    if groups is not None:
        first, last = max(0, groups[0]), min(groups[1], m.groups)
        last = max(first, last)
    cdef int nt = _threads(threads, last - first)
    inuse = _zero_map((m.inodes_count + 7) // 8)
    cdef uint8_t[::1] inuse_mv = inuse
    cdef list jobs = []
    cdef _IScanJob job
    cdef uint64_t total = 0, t
    cdef uint64_t max_size = min(F.max_file_blocks(geo.block_size) * geo.block_size, _U64)
    for t in range(<uint64_t>nt):
        job = _IScanJob()
        job.m = m
        job.g0 = first + (last - first) * t // nt
        job.g1 = first + (last - first) * (t + 1) // nt
        job.use_bitmap = bool(use_bitmap)
        job.max_size = max_size
        job.inuse = &inuse_mv[0]
        jobs.append(job)
    _run_parallel(jobs)
    for job in jobs:
        job.k = total
        total += job.count
        job.phase = 1
    cdef carray.array a_ino = carray.clone(array("Q"), total, zero=False)
    cdef carray.array a_mode = carray.clone(array("H"), total, zero=False)
    cdef carray.array a_flags = carray.clone(array("I"), total, zero=False)
    cdef carray.array a_links = carray.clone(array("I"), total, zero=False)
    cdef carray.array a_size = carray.clone(array("Q"), total, zero=False)
    cdef carray.array a_blocks = carray.clone(array("Q"), total, zero=False)
    for job in jobs:
        job.out.ino = <uint64_t*>a_ino.data.as_voidptr
        job.out.mode = <uint16_t*>a_mode.data.as_voidptr
        job.out.flags = <uint32_t*>a_flags.data.as_voidptr
        job.out.links = <uint32_t*>a_links.data.as_voidptr
        job.out.size = <uint64_t*>a_size.data.as_voidptr
        job.out.blocks = <uint64_t*>a_blocks.data.as_voidptr
    _run_parallel(jobs)
    cdef nv_vec *vecs = <nv_vec*>PyMem_Malloc(sizeof(nv_vec) * nt * 3)
    if vecs == NULL:
        raise MemoryError()
    cdef int i
    try:
        for i in range(nt):
            job = jobs[i]
            vecs[i] = job.probs
            vecs[nt + i] = job.dirs
            vecs[2 * nt + i] = job.xattrs
        probs = _vec_arrays(vecs, nt, ["Q", "Q", "H"])
        dirs = _vec_arrays(vecs + nt, nt, ["Q", "Q", "Q"])
        xattrs = _vec_arrays(vecs + 2 * nt, nt, ["Q", "Q", "Q"])
    finally:
        PyMem_Free(vecs)
    out = {
        "ino": a_ino,
        "mode": a_mode,
        "flags": a_flags,
        "links": a_links,
        "size": a_size,
        "blocks": a_blocks,
        "dir_ino": dirs[0],
        "dir_parent": dirs[1],
        "dir_bank": dirs[2],
        "xattr_ino": xattrs[0],
        "xattr_block": xattrs[1],
        "inuse": inuse,
    }
    out.update(_problem_dict(probs))
    return out


# ---------------------------------------------------------------------------
# Block-map walk
# ---------------------------------------------------------------------------

cdef class _WalkJob:
    """One thread's share of an inode (or directory) list."""
    cdef nv_map m
    cdef nv_dctx d
    cdef const uint64_t *items
    cdef uint64_t n
    cdef uint64_t *counts
    cdef int dirs

    def __cinit__(self):
        memset(&self.d, 0, sizeof(self.d))
        nv_vec_init(&self.d.c.probs, 3)
        nv_vec_init(&self.d.c.claimed, 1)
        for i, size in enumerate(_ENTRY_COL_SIZES):
            nv_col_init(&self.d.ents[i], size)

    def __dealloc__(self):
        cdef int i
        nv_vec_free(&self.d.c.probs)
        nv_vec_free(&self.d.c.claimed)
        for i in range(NV_N_COLS):
            nv_col_free(&self.d.ents[i])

    def run(self):
        self.d.c.m = &self.m
        if self.dirs:
            with nogil:
                nv_walk_dirs(&self.d, self.items, self.n, self.counts)
        else:
            with nogil:
                nv_walk_files(&self.d.c, self.items, self.n, self.counts)


cdef list _make_jobs(nv_map m, carray.array items, carray.array counts, int nt, int parallel, volatile int *conflict,
                     uint8_t *owned, uint8_t *dupw, const uint8_t *dupr, int report, int dirs, job_type=_WalkJob):
    """``nt`` jobs (of ``job_type``, a _WalkJob or a subclass) over contiguous runs of ``items``."""
    cdef list jobs = []
    cdef _WalkJob job
    cdef uint64_t n = len(items), lo, hi
    cdef int t
    for t in range(nt):
        lo = n * t // nt
        hi = n * (t + 1) // nt
        job = <_WalkJob>job_type()
        job.m = m
        job.items = (<uint64_t*>items.data.as_voidptr) + lo
        job.counts = (<uint64_t*>counts.data.as_voidptr) + lo
        job.n = hi - lo
        job.dirs = dirs
        job.d.c.owned = owned
        job.d.c.dupw = dupw
        job.d.c.dupr = dupr
        job.d.c.parallel = parallel
        job.d.c.conflict = conflict
        job.d.c.report = report
        job.d.c.ppb = m.bs // NV_PTR_SIZE
        jobs.append(job)
    return jobs


cdef list _job_problems(list jobs):
    cdef int nt = len(jobs), i
    cdef nv_vec *vecs = <nv_vec*>PyMem_Malloc(sizeof(nv_vec) * max(nt, 1))
    if vecs == NULL:
        raise MemoryError()
    cdef _WalkJob job
    try:
        for i in range(nt):
            job = jobs[i]
            vecs[i] = job.d.c.probs
        return _vec_arrays(vecs, nt, ["Q", "Q", "H"])
    finally:
        PyMem_Free(vecs)


cdef uint8_t* _rw_ptr(obj) except NULL:
    cdef uint8_t[::1] mv = _rw(obj)
    if mv.shape[0] == 0:
        raise ValueError("empty bitmap")
    return &mv[0]


def walk_blockmaps(buf, geo, inos, *, mark_metadata=True, int threads=0):
    """Claim every block the given inodes own (see scan_pure.walk_blockmaps)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef nv_map m = _map(mv, geo)
    cdef carray.array items = _u64_array(inos)
    cdef Py_ssize_t n = len(items)
    cdef carray.array counts = carray.clone(array("Q"), n, zero=True)
    cdef Py_ssize_t nbytes = m.groups * m.bs
    cdef volatile int conflict = 0
    cdef int nt = _threads(threads, n)
    owned = _zero_map(nbytes)
    dups = None
    cdef list jobs
    if nt > 1:
        jobs = _make_jobs(m, items, counts, nt, 1, &conflict, _rw_ptr(owned), NULL, NULL, 1, 0)
        _run_parallel(jobs)
    if nt == 1 or conflict:
        # One thread, in inode order, as the reference: note every block claimed twice ...
        if conflict:
            conflict = 0
            owned.close()
            owned = _zero_map(nbytes)
        dups = _zero_map(nbytes)
        jobs = _make_jobs(m, items, counts, 1, 0, &conflict, _rw_ptr(owned), _rw_ptr(dups), NULL, 1, 0)
        _run_parallel(jobs)
    if conflict:
        # ... and when there are some, walk again to report every claimant of each.
        owned.close()
        owned = _zero_map(nbytes)
        jobs = _make_jobs(m, items, counts, 1, 0, &conflict, _rw_ptr(owned), NULL, _rw_ptr(dups), 1, 0)
        _run_parallel(jobs)
    if dups is not None:
        dups.close()
    if mark_metadata:
        nv_mark_metadata(&m, _rw_ptr(owned))
    out = {"owned": owned, "counts": counts}
    out.update(_problem_dict(_job_problems(jobs)))
    return out


# ---------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------

#: Entry columns: dir, child, file type, hash, name offset, name length (bytes per value; typecodes).
_ENTRY_COL_SIZES = (8, 8, 1, 8, 8, 2)
_ENTRY_COL_CODES = ("Q", "Q", "B", "Q", "Q", "H")


cdef list _entry_arrays(list jobs):
    """One array per entry column, each thread's column copied in order then freed at once (low peak)."""
    cdef list cols = []
    cdef _WalkJob job
    cdef int k
    cdef Py_ssize_t total, pos
    cdef carray.array a
    for job in jobs:
        for k in range(NV_N_COLS):
            if job.d.ents[k].oom or job.d.ents[k].n != job.d.ents[0].n:
                raise MemoryError("fast-scan entry columns")
    for k in range(NV_N_COLS):
        total = 0
        for job in jobs:
            total += job.d.ents[k].n
        a = carray.clone(array(_ENTRY_COL_CODES[k]), total, zero=False)
        if a.ob_descr.itemsize != _ENTRY_COL_SIZES[k]:
            raise ImportError("array item sizes differ from the entry columns")
        pos = 0
        for job in jobs:
            if job.d.ents[k].n:
                memcpy(a.data.as_chars + pos, job.d.ents[k].d, job.d.ents[k].n * _ENTRY_COL_SIZES[k])
            pos += job.d.ents[k].n * _ENTRY_COL_SIZES[k]
            nv_col_free(&job.d.ents[k])
        cols.append(a)
    return cols


def walk_directories(buf, geo, seed, dir_inos, owned=None, *, int threads=0):
    """Parse the live bank of each directory (see scan_pure.walk_directories)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef nv_map m = _map(mv, geo)
    cdef uint64_t k0, k1
    _key(bytes(seed), &k0, &k1)
    cdef carray.array items = _u64_array(dir_inos)
    cdef Py_ssize_t n = len(items)
    cdef carray.array counts = carray.clone(array("Q"), n, zero=True)
    cdef volatile int conflict = 0
    cdef int nt = _threads(threads, n)
    if owned is None:
        owned = _zero_map(m.groups * m.bs)
    cdef uint8_t[::1] owned_mv = _rw(owned)
    if owned_mv.shape[0] < <Py_ssize_t>((m.blocks_count + 7) // 8):
        raise ValueError("owned bitmap shorter than the device")
    cdef uint8_t *op = &owned_mv[0]
    cdef list jobs = _make_jobs(m, items, counts, nt, nt > 1, &conflict, op, NULL, NULL, 1, 1)
    cdef _WalkJob job
    cdef uint64_t bits = F.radix_bits(geo.block_size)
    cdef size_t j
    cdef uint64_t b
    for job in jobs:
        job.d.k0 = k0
        job.d.k1 = k1
        job.d.bits = bits
    _run_parallel(jobs)
    if nt > 1 and conflict:
        # Undo this pass's claims, then redo it in one thread so the first claimant is deterministic.
        for job in jobs:
            for j in range(job.d.c.claimed.n):
                b = job.d.c.claimed.d[j]
                op[b >> 3] &= ~(1 << (b & 7))
        jobs = _make_jobs(m, items, counts, 1, 0, &conflict, op, NULL, NULL, 1, 1)
        for job in jobs:
            job.d.k0 = k0
            job.d.k1 = k1
            job.d.bits = bits
        _run_parallel(jobs)
    ents = _entry_arrays(jobs)
    out = {
        "entry_dir": ents[0],
        "entry_ino": ents[1],
        "entry_hash": ents[3],
        "name_off": ents[4],
        "name_len": ents[5],
        "file_type": ents[2],
        "counts": counts,
    }
    out.update(_problem_dict(_job_problems(jobs)))
    return out


# ---------------------------------------------------------------------------
# Link counts
# ---------------------------------------------------------------------------

def link_counts(children, Py_ssize_t n_inodes):
    """counts[ino] = occurrences of ino in ``children`` (0 < ino <= n_inodes; others ignored)."""
    counts = _zero_map(4 * (n_inodes + 1) if n_inodes >= 0 else 4)
    cdef uint32_t[::1] c = memoryview(counts).cast("I")
    cdef carray.array items = _u64_array(children)
    cdef uint64_t *p = <uint64_t*>items.data.as_voidptr
    cdef Py_ssize_t n = len(items), i
    cdef uint64_t x
    with nogil:
        for i in range(n):
            x = p[i]
            if x > 0 and x <= <uint64_t>n_inodes and c[x] != 0xFFFFFFFFU:
                c[x] += 1
    return memoryview(counts).cast("I")


# ---------------------------------------------------------------------------
# Cross-checks of the scans' arrays (fsck's bulk fast path)
# ---------------------------------------------------------------------------

from nvfs_tools.scan import Mismatch

cdef enum:
    M_NONE = 0
    M_DIR_LIST = 1
    M_BLOCK_COUNT = 2
    M_DIR_SIZE = 3
    M_INODE_FIELDS = 4
    M_ENTRY_INO = 5
    M_ENTRY_TYPE = 6
    M_PAGE_RESIDUE = 7
    M_DIR_NAMES = 8
    M_UNREACHABLE = 9
    M_LINKS = 10

_M_CODES = {"NONE": M_NONE, "DIR_LIST": M_DIR_LIST, "BLOCK_COUNT": M_BLOCK_COUNT, "DIR_SIZE": M_DIR_SIZE, "INODE_FIELDS": M_INODE_FIELDS, "ENTRY_INO": M_ENTRY_INO, "ENTRY_TYPE": M_ENTRY_TYPE, "PAGE_RESIDUE": M_PAGE_RESIDUE, "DIR_NAMES": M_DIR_NAMES, "UNREACHABLE": M_UNREACHABLE, "LINKS": M_LINKS}

cdef uint8_t _DT_BY_TYPE[16]
cdef nv_field _F_NSEC[4]
cdef nv_field _F_PARENT, _F_BANK, _F_RDEV, _F_ORPHAN, _F_BLOCK, _F_PRES0, _F_PRES
cdef uint64_t _NSEC_LIMIT = 1000000000, _MAJOR_LIMIT = 1 << 12, _MINOR_LIMIT = 1 << 20


cdef _init_verify():
    global _F_PARENT, _F_BANK, _F_RDEV, _F_ORPHAN, _F_BLOCK, _F_PRES0, _F_PRES
    inode = F.field_layout(F.PLAIN["Inode"])
    page = F.field_layout(F.PLAIN["DirPageHeader"])
    for t in range(16):
        _DT_BY_TYPE[t] = F.MODE_TO_DT.get(t << 12, 0)
    for i, name in enumerate(("atime_nsec", "mtime_nsec", "ctime_nsec", "btime_nsec")):
        _F_NSEC[i] = _fld(inode, name)
    _F_PARENT = _fld(inode, "parent")
    _F_BANK = _fld(inode, "dir_bank")
    _F_RDEV = _fld(inode, "rdev")
    _F_ORPHAN = _fld(inode, "next_orphan")
    _F_BLOCK = _fld(inode, "block")
    _F_PRES0.off, _F_PRES0.size = page["reserved0"].offset, page["reserved0"].size
    _F_PRES.off, _F_PRES.size = page["reserved"].offset, page["reserved"].size
    for code, value in _M_CODES.items():
        if Mismatch[code] != value:
            raise ImportError(f"Mismatch.{code} is not {value}")


_init_verify()


cdef inline bint _zero(const uint8_t *p, uint64_t n) noexcept nogil:
    """All n bytes at p are zero (8 at a time: page slack is checked for every directory page)."""
    cdef uint64_t i = 0, word
    while i + 8 <= n:
        memcpy(&word, p + i, 8)
        if word:
            return False
        i += 8
    while i < n:
        if p[i]:
            return False
        i += 1
    return True


cdef bint _fields_ok(const nv_map *m, uint64_t ino, uint16_t mode) noexcept nogil:
    cdef uint64_t a = nv_inode_addr(m, ino)
    if a == <uint64_t>-1:
        return False
    return _fields_ok_at(m.base + a, mode)


cdef bint _fields_ok_at(const uint8_t *r, uint16_t mode) noexcept nogil:
    """_fields_ok of the inode record at r."""
    cdef uint64_t rdev, ftype = mode & NV_S_IFMT
    cdef int i
    if nv_ld(r + _F_ORPHAN.off, _F_ORPHAN.size):
        return False
    for i in range(4):
        if nv_ld(r + _F_NSEC[i].off, _F_NSEC[i].size) >= _NSEC_LIMIT:
            return False
    if ftype != NV_S_IFDIR and (nv_ld(r + _F_PARENT.off, _F_PARENT.size) or nv_ld(r + _F_BANK.off, _F_BANK.size)):
        return False
    rdev = nv_ld(r + _F_RDEV.off, _F_RDEV.size)
    if ftype == NV_S_IFCHR or ftype == NV_S_IFBLK:
        if (rdev >> 32) >= _MAJOR_LIMIT or (rdev & 0xFFFFFFFFU) >= _MINOR_LIMIT:
            return False
    elif rdev:
        return False
    if ftype == NV_S_IFDIR and not _zero(r + _F_BLOCK.off + 2 * NV_PTR_SIZE, _F_BLOCK.size - 2 * NV_PTR_SIZE):
        return False
    return True


cdef inline uint64_t _page_of(const nv_map *m, uint64_t addr) noexcept nogil:
    return addr >> m.bs_shift if m.bs_shift >= 0 else addr // m.bs


cdef bint _pages_clean(const nv_map *m, const uint64_t[::1] name_off, const uint16_t[::1] name_len) noexcept nogil:
    if name_off.shape[0] == 0:
        return True
    return _pages_clean_at(m, &name_off[0], &name_len[0], name_off.shape[0])


cdef bint _pages_clean_at(const nv_map *m, const uint64_t *name_off, const uint16_t *name_len,
                          Py_ssize_t n) noexcept nogil:
    """_pages_clean of n entries (name offsets and lengths) given by pointers."""
    cdef Py_ssize_t k = 0
    cdef uint64_t page, stop, end, base, hdr = NV_ENTRY_HDR, align = NV_ENTRY_ALIGN - 1, bs = m.bs
    while k < n:
        if name_off[k] < hdr:
            return False
        page = _page_of(m, name_off[k] - hdr)
        stop = 0
        while k < n and name_off[k] >= hdr and _page_of(m, name_off[k] - hdr) == page:
            end = name_off[k] - hdr + ((hdr + name_len[k] + align) & ~align)
            if end > stop:
                stop = end
            k += 1
        base = page * bs
        if base + bs > m.len or stop > base + bs or base + bs < base:
            return False
        if not _zero(m.base + base + _F_PRES0.off, _F_PRES0.size) or not _zero(m.base + base + _F_PRES.off, _F_PRES.size):
            return False
        if not _zero(m.base + stop, base + bs - stop):
            return False
    return True


cdef Py_ssize_t _find(const uint64_t[::1] sorted_, uint64_t x) noexcept nogil:
    """Index of x in a strictly increasing array, or -1."""
    cdef Py_ssize_t lo = 0, hi = sorted_.shape[0], mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    if lo < sorted_.shape[0] and sorted_[lo] == x:
        return lo
    return -1


cdef int _verify(const nv_map *m, const uint64_t[::1] ino, const uint16_t[::1] mode, const uint32_t[::1] links,
                 const uint64_t[::1] blocks, const uint64_t[::1] size, const uint64_t[::1] dir_ino,
                 const uint64_t[::1] dir_parent, const uint64_t[::1] bcounts, const uint64_t[::1] dcounts,
                 const uint64_t[::1] entry_ino, const uint64_t[::1] entry_dir, const uint8_t[::1] ftypes,
                 const uint64_t[::1] name_off, const uint16_t[::1] name_len, uint32_t *info, uint64_t *dpos,
                 uint32_t *named, uint32_t *subdirs, uint8_t *state, uint64_t *per_group,
                 bint fields, bint pages) noexcept nogil:
    """The checks of scan_pure.verify_arrays in the same order; ``info[ino]`` = refs << 4 | file type."""
    cdef Py_ssize_t n_ino = ino.shape[0], n_dir = dir_ino.shape[0], n_ent = entry_ino.shape[0]
    cdef Py_ssize_t p = 0, d, k, j, root = -1
    cdef uint64_t e, n = m.inodes_count, ndirs = 0, want, v, want_size
    if bcounts.shape[0] != n_ino or dcounts.shape[0] != n_dir or dir_parent.shape[0] != n_dir:
        return M_DIR_LIST
    for d in range(n_dir):
        while p < n_ino and ino[p] < dir_ino[d]:
            p += 1
        if p == n_ino or ino[p] != dir_ino[d] or (mode[p] & NV_S_IFMT) != NV_S_IFDIR:
            return M_DIR_LIST
        dpos[d] = p
        p += 1
    for p in range(n_ino):
        if (mode[p] & NV_S_IFMT) == NV_S_IFDIR:
            ndirs += 1
    if ndirs != <uint64_t>n_dir:
        return M_DIR_LIST
    d = 0
    for p in range(n_ino):
        want = bcounts[p]
        if d < n_dir and dpos[d] == <uint64_t>p:
            want += dcounts[d]
            d += 1
        if want != blocks[p]:
            return M_BLOCK_COUNT
    for d in range(n_dir):
        want_size = dcounts[d] * m.bs
        if size[dpos[d]] != want_size or (m.bs and want_size // m.bs != dcounts[d]):
            return M_DIR_SIZE
    for p in range(n_ino):
        if fields and not _fields_ok(m, ino[p], mode[p]):
            return M_INODE_FIELDS
    for k in range(n_ent):
        if entry_ino[k] < 11 or entry_ino[k] > n:
            return M_ENTRY_INO
    for p in range(n_ino):
        if ino[p] <= n:
            info[ino[p]] = _DT_BY_TYPE[(mode[p] >> 12) & 15]
    for k in range(n_ent):
        v = info[entry_ino[k]]
        if (v & 15) == 0 or (v & 15) != ftypes[k]:
            return M_ENTRY_TYPE
        if (v >> 4) != 0x0FFFFFFF:
            info[entry_ino[k]] = <uint32_t>(v + 16)
    if pages and not _pages_clean(m, name_off, name_len):
        return M_PAGE_RESIDUE
    for k in range(n_ent):
        if ftypes[k] != _DT_BY_TYPE[(NV_S_IFDIR >> 12) & 15]:
            continue
        j = _find(dir_ino, entry_ino[k])
        d = _find(dir_ino, entry_dir[k])
        if j < 0 or d < 0:
            return M_DIR_NAMES
        named[j] += 1
        if named[j] > 1 or dir_parent[j] != entry_dir[k]:
            return M_DIR_NAMES
        subdirs[d] += 1
    root = _find(dir_ino, NV_ROOT_INO)
    ndirs = 0
    for d in range(n_dir):
        ndirs += named[d]
    if root < 0 or dir_parent[root] != NV_ROOT_INO or named[root] or ndirs != <uint64_t>(n_dir - 1):
        return M_DIR_NAMES
    # parent-pointer cycles: 0 unknown, 1 on the current path, 2 reaches the root
    state[root] = 2
    for d in range(n_dir):
        j = d
        while state[j] != 2:
            if state[j] == 1:
                return M_UNREACHABLE
            state[j] = 1
            j = _find(dir_ino, dir_parent[j])
            if j < 0:
                return M_UNREACHABLE
        j = d
        while state[j] != 2:
            state[j] = 2
            j = _find(dir_ino, dir_parent[j])
    d = 0
    for p in range(n_ino):
        if d < n_dir and dpos[d] == <uint64_t>p:
            want = 2 + subdirs[d]
            d += 1
        else:
            want = info[ino[p]] >> 4
        if (ino[p] >= 11 or ino[p] == NV_ROOT_INO) and links[p] != want:
            return M_LINKS
    for d in range(n_dir):
        per_group[(dir_ino[d] - 1) // m.ipg] += 1
    return M_NONE


def check_inode_fields(buf, geo, inos, modes):
    """Index of the first inode with wrong per-type fixed fields, or -1 (see scan_pure)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef nv_map m = _map(mv, geo)
    cdef const uint64_t[::1] ino = inos
    cdef const uint16_t[::1] mode = modes
    cdef Py_ssize_t k
    if ino.shape[0] != mode.shape[0]:
        raise ValueError("inos and modes differ in length")
    with nogil:
        for k in range(ino.shape[0]):
            if not _fields_ok(&m, ino[k], mode[k]):
                break
        else:
            k = -1
    return k


def pages_clean(buf, geo, name_off, name_len):
    """Pages of the given live entries: reserved bytes zero, nothing after the last record (see scan_pure)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef nv_map m = _map(mv, geo)
    cdef const uint64_t[::1] off = name_off
    cdef const uint16_t[::1] length = name_len
    cdef bint ok
    if off.shape[0] != length.shape[0]:
        raise ValueError("name_off and name_len differ in length")
    with nogil:
        ok = _pages_clean(&m, off, length)
    return ok


def merge_bits(dst, src, Py_ssize_t offset, Py_ssize_t nbytes):
    """OR src into dst over [offset, offset+nbytes); True when a bit was set in both (see scan_pure)."""
    cdef uint8_t[::1] d = _rw(dst)
    cdef const uint8_t[::1] s = _ro(src)
    _check_range(d.shape[0], offset, nbytes)
    _check_range(s.shape[0], offset, nbytes)
    cdef Py_ssize_t i
    cdef uint8_t both = 0
    cdef const uint8_t *sp = &s[0] if s.shape[0] else nv_empty
    cdef uint8_t *dp = &d[0] if d.shape[0] else NULL
    with nogil:
        for i in range(offset, offset + nbytes):
            both |= dp[i] & sp[i]
            dp[i] |= sp[i]
    return both != 0


def verify_arrays(buf, geo, scan, blockmap, dirs, *, fields=True, pages=True):
    """Cross-check the three scans' results (see scan_pure.verify_arrays)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef nv_map m = _map(mv, geo)
    if F.FIRST_INO != 11:
        raise ImportError("verify_arrays assumes FIRST_INO == 11")
    cdef const uint64_t[::1] ino = scan["ino"]
    cdef const uint64_t[::1] dir_ino = scan["dir_ino"]
    cdef Py_ssize_t nd = dir_ino.shape[0]
    per_group = array("Q", bytes(8 * geo.group_count))
    cdef uint64_t[::1] pg = per_group
    info = _zero_map(4 * (m.inodes_count + 1))
    scratch = _zero_map(8 * nd + 4 * nd + 4 * nd + nd + 8)
    cdef uint32_t[::1] info_mv = memoryview(info).cast("I")
    cdef uint8_t[::1] sc = scratch
    cdef uint8_t *base = &sc[0]
    cdef int code
    try:
        code = _verify(&m, ino, scan["mode"], scan["links"], scan["blocks"], scan["size"], dir_ino,
                       scan["dir_parent"], blockmap["counts"], dirs["counts"], dirs["entry_ino"],
                       dirs["entry_dir"], dirs["file_type"], dirs["name_off"], dirs["name_len"], &info_mv[0],
                       <uint64_t*>base, <uint32_t*>(base + 8 * nd), <uint32_t*>(base + 12 * nd),
                       base + 16 * nd, &pg[0] if pg.shape[0] else <uint64_t*>base, bool(fields),
                       bool(pages))
    finally:
        pass
    if code != M_NONE:
        pg[:] = 0
    return Mismatch(code), per_group


# ---------------------------------------------------------------------------
# fsck's bulk fast path: one pass per in-use inode, directory entries tallied into a table
# ---------------------------------------------------------------------------

#: check_inode_groups' directory records (column name, typecode), then xattr and "odd" inode records.
_DIR_COLS = (("dir_ino", "Q"), ("dir_parent", "Q"), ("dir_mode", "H"), ("dir_links", "I"), ("dir_size", "Q"),
             ("dir_blocks", "Q"), ("dir_bcount", "Q"))
_XATTR_COLS = (("xattr_ino", "Q"), ("xattr_block", "Q"))
_ODD_COLS = (("odd_ino", "Q"), ("odd_mode", "H"))
#: table value = names still expected << 4 | file type (DT_*): link counts above this are "not proven"
_LINK_LIMIT = 1 << 28
cdef uint32_t _TABLE_LINK_LIMIT = _LINK_LIMIT
cdef uint8_t _DT_DIR = F.DT_DIR
cdef uint64_t _FIRST_INO = F.FIRST_INO
#: Inode records prefetched ahead of the one being checked (1 M files, cold windows: 0.155 -> 0.125 s).
cdef uint64_t _PREFETCH_AHEAD = 8
#: A thread of check_inode_groups is worth starting (~0.1 ms) only for this many inode slots or more.
cdef uint64_t _MIN_SLOTS_PER_THREAD = 4096


cdef struct nv_fctx:
    nv_ctx c
    const uint8_t *tables     # NULL: inode tables read from the mapping; else a copy of groups g0.. back to back
    uint64_t tables_g0, table_bytes
    uint8_t *inuse
    uint32_t *table
    uint64_t max_size, used
    nv_vec dirs, xattrs, odd
    int fail


#: With ``release``, the pages around the indirect blocks (check_inode_groups) or directory blocks
#: (check_directories) a thread has read are dropped after this many: a read fault maps 64 KiB of
#: neighbours (fault-around), so a tree of files just over the direct blocks would otherwise map most
#: of its data (measured: 164 MiB peak RSS on /usr/share, 28 MiB with this).
cdef uint64_t _RELEASE_EVERY = 64


cdef void _inode_pass(nv_fctx *f, uint64_t x0, uint64_t x1) noexcept nogil:
    """check_inode_groups over the inode slots x0 <= g * ipg + i < x1 (one thread's share, which may
    start and end inside a group): each in-use inode read once, its blocks claimed in ``owned``."""
    cdef const nv_map *m = f.c.m
    cdef uint64_t g = x0 // m.ipg, i, end, ino, mode, fmt, links, blocks, count, xb, addr
    cdef const uint8_t *r = NULL
    cdef const uint8_t *copy
    cdef int w
    cdef uint64_t rec[7]
    cdef uint8_t dt
    while g * m.ipg < x1 and nv_itable_off(m, g) < m.len:
        i = x0 - g * m.ipg if g * m.ipg < x0 else 0
        end = min(m.ipg, x1 - g * m.ipg)
        copy = f.tables + (g - f.tables_g0) * f.table_bytes if f.tables != NULL else NULL
        while i < end:
            if copy != NULL:  # the caller copied whole tables: every record is there
                r = copy + i * NV_INODE_SIZE
                w = nv_ld(r + NV_I_MODE.off, NV_I_MODE.size) != 0
                if i + _PREFETCH_AHEAD < m.ipg:
                    _prefetch(r + _PREFETCH_AHEAD * NV_INODE_SIZE)
            else:
                w = nv_inode_wanted(m, g, i, 0, &r)
                if w < 0:
                    break
                nv_prefetch_record(m, r, _PREFETCH_AHEAD)
            addr = nv_itable_off(m, g) + i * NV_INODE_SIZE
            i += 1
            if w == 0:
                continue
            ino = g * m.ipg + i
            nv_inode_probs(m, r, ino, addr, &f.c.probs, f.max_size)
            mode = nv_ld(r + NV_I_MODE.off, NV_I_MODE.size)
            if f.c.probs.n or not _fields_ok_at(r, <uint16_t>mode):
                f.fail = 1
                return
            count = nv_walk_rec(&f.c, ino, addr, r)
            if f.c.probs.n or f.c.conflict[0]:
                f.fail = 1
                return
            if f.c.read_n >= _RELEASE_EVERY:
                nv_release_reads(&f.c)
            fmt = mode & NV_S_IFMT
            links = nv_ld(r + NV_I_LINKS.off, NV_I_LINKS.size)
            blocks = nv_ld(r + NV_I_BLOCKS.off, NV_I_BLOCKS.size)
            dt = _DT_BY_TYPE[(mode >> 12) & 15]
            if fmt == NV_S_IFDIR:
                rec[0] = ino
                rec[1] = nv_ld(r + NV_I_PARENT.off, NV_I_PARENT.size)
                rec[2] = mode
                rec[3] = links
                rec[4] = nv_ld(r + NV_I_SIZE.off, NV_I_SIZE.size)
                rec[5] = blocks
                rec[6] = count
                nv_push(&f.dirs, rec)
                f.table[ino] = dt
            else:
                if blocks != count or links >= _TABLE_LINK_LIMIT:
                    f.fail = 1
                    return
                f.table[ino] = <uint32_t>(links << 4) | dt
            xb = nv_ld(r + NV_I_XATTR.off, NV_I_XATTR.size)
            if xb:
                rec[0] = ino
                rec[1] = xb
                nv_push(&f.xattrs, rec)
            if ino < _FIRST_INO or (fmt != NV_S_IFREG and fmt != NV_S_IFDIR):
                rec[0] = ino
                rec[1] = mode
                nv_push(&f.odd, rec)
            nv_set_bit_atomic(f.inuse, ino - 1)
            f.used += 1
        g += 1
    if f.dirs.oom or f.xattrs.oom or f.odd.oom or f.c.probs.oom:
        f.fail = 1




cdef inline void _prefetch(const uint8_t *p) noexcept nogil:
    cdef uint64_t k
    for k in range(0, NV_INODE_SIZE, 64):
        nv_prefetch_line(p + k)


cdef class _InodePassJob:
    """One thread's share of check_inode_groups' groups."""
    cdef nv_map m
    cdef nv_fctx f
    cdef uint64_t x0, x1
    cdef int release

    def __cinit__(self):
        memset(&self.f, 0, sizeof(self.f))
        nv_vec_init(&self.f.c.probs, 3)
        nv_vec_init(&self.f.c.claimed, 1)
        nv_vec_init(&self.f.dirs, 7)
        nv_vec_init(&self.f.xattrs, 2)
        nv_vec_init(&self.f.odd, 2)

    def __dealloc__(self):
        nv_vec_free(&self.f.c.probs)
        nv_vec_free(&self.f.c.claimed)
        nv_vec_free(&self.f.dirs)
        nv_vec_free(&self.f.xattrs)
        nv_vec_free(&self.f.odd)

    def run(self):
        self.f.c.m = &self.m
        with nogil:
            _inode_pass(&self.f, self.x0, self.x1)
            if self.release and not self.f.fail:
                nv_release_slots(&self.m, self.x0, self.x1)
            if self.f.c.track_reads:
                nv_release_reads(&self.f.c)


cdef uint32_t* _table_ptr(table, Py_ssize_t n_inodes) except NULL:
    cdef uint32_t[::1] tab = memoryview(table).cast("B").cast("I")
    if tab.shape[0] < n_inodes + 1:
        raise ValueError("link table shorter than inodes_count + 1 entries")
    return &tab[0]


def check_inode_groups(buf, geo, groups, owned, inuse, table, *, tables=None, int threads=0, bint release=False):
    """Every in-use inode of groups [first, end) checked in one pass (see scan_pure.check_inode_groups).

    ``release``: each thread drops the table pages of its share from the mapping when done (only
    for a shared mapping of the device itself; the records are read from ``buf``, not ``tables``)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef nv_map m = _map(mv, geo)
    cdef uint64_t first = max(0, groups[0]), last = min(groups[1], m.groups)
    last = max(first, last)
    cdef uint64_t table_bytes = m.itable_blocks * m.bs
    cdef const uint8_t[::1] copies
    cdef const uint8_t *tables_ptr = NULL
    if tables is not None:
        copies = _ro(tables)
        if m.ipg * NV_INODE_SIZE > table_bytes or copies.shape[0] < <Py_ssize_t>((last - first) * table_bytes):
            raise ValueError("tables must hold the inode tables of every group of the range")
        if last > first and nv_itable_off(&m, last - 1) + table_bytes > m.len:
            raise ValueError("an inode table of the range is not wholly inside the device")
        tables_ptr = _ro_ptr(copies)
    cdef uint8_t[::1] own = _rw(owned)
    cdef uint8_t[::1] inu = _rw(inuse)
    if own.shape[0] < <Py_ssize_t>((m.blocks_count + 7) // 8) or inu.shape[0] < <Py_ssize_t>((m.inodes_count + 7) // 8):
        raise ValueError("owned or inuse bitmap shorter than the device")
    cdef uint32_t *tab = _table_ptr(table, m.inodes_count)
    cdef volatile int conflict = 0
    # threads split the range's inode slots (a window of one large group still uses every thread)
    cdef uint64_t slots = (last - first) * m.ipg
    cdef int nt = _threads(threads, (slots + _MIN_SLOTS_PER_THREAD - 1) // _MIN_SLOTS_PER_THREAD), t
    cdef uint64_t max_size = min(F.max_file_blocks(geo.block_size) * geo.block_size, _U64)
    cdef list jobs = []
    cdef _InodePassJob job
    for t in range(nt):
        job = _InodePassJob()
        job.m = m
        job.x0 = first * m.ipg + slots * t // nt
        job.x1 = first * m.ipg + slots * (t + 1) // nt
        job.f.c.owned = &own[0]
        job.f.c.parallel = nt > 1  # atomic claims only when threads share the bitmap
        job.f.c.conflict = &conflict
        job.f.c.report = 1
        job.f.c.ppb = m.bs // NV_PTR_SIZE
        job.f.inuse = &inu[0]
        job.f.table = tab
        job.f.max_size = max_size
        job.f.tables = tables_ptr
        job.f.tables_g0 = first
        job.f.table_bytes = table_bytes
        job.release = release and tables_ptr == NULL
        job.f.c.track_reads = release  # indirect blocks are read from the mapping even with ``tables``
        job.f.c.read_lo = <uint64_t>-1
        jobs.append(job)
    _run_parallel(jobs)
    cdef uint64_t used = 0
    for job in jobs:
        if job.f.fail:
            return None
        used += job.f.used
    out = {"used": used}
    for cols, offset in ((_DIR_COLS, 0), (_XATTR_COLS, 1), (_ODD_COLS, 2)):
        vecs = <nv_vec*>PyMem_Malloc(sizeof(nv_vec) * nt)
        if vecs == NULL:
            raise MemoryError()
        try:
            for t in range(nt):
                job = jobs[t]
                vecs[t] = job.f.dirs if offset == 0 else job.f.xattrs if offset == 1 else job.f.odd
            arrays = _vec_arrays(vecs, nt, [code for _, code in cols])
        finally:
            PyMem_Free(vecs)
        out.update({name: a for (name, _), a in zip(cols, arrays)})
    return out


cdef int _dir_pass(nv_dctx *d, const uint64_t *dirs, uint64_t n, uint64_t *counts, uint32_t *table,
                   uint64_t n_inodes, nv_vec *named) noexcept nogil:
    """check_directories: each directory walked, its pages checked and its entries tallied, then its
    entry columns emptied (memory stays one directory's worth); 0 at the first doubt."""
    cdef uint64_t i, k, e, cnt
    cdef uint32_t v
    cdef int c
    cdef uint64_t rec[4]
    cdef const uint64_t *child
    cdef const uint64_t *off
    cdef const uint16_t *length
    cdef const uint8_t *ftype
    for i in range(n):
        counts[i] = nv_walk_dir(d, dirs[i])
        if d.c.probs.n or d.c.probs.oom:
            return 0
        for c in range(NV_N_COLS):
            if d.ents[c].oom or d.ents[c].n != d.ents[0].n:
                return 0
        cnt = d.ents[0].n
        child = <const uint64_t*>d.ents[NV_C_CHILD].d
        off = <const uint64_t*>d.ents[NV_C_OFF].d
        length = <const uint16_t*>d.ents[NV_C_LEN].d
        ftype = <const uint8_t*>d.ents[NV_C_FTYPE].d
        if cnt and not _pages_clean_at(d.c.m, off, length, cnt):
            return 0
        for k in range(cnt):
            e = child[k]
            if e < _FIRST_INO or e > n_inodes:
                return 0
            v = table[e]  # its type bits never change: only the count above them is taken down
            if (v & 15) == 0 or (v & 15) != ftype[k]:
                return 0
            if ftype[k] == _DT_DIR:
                rec[0] = dirs[i]
                rec[1] = e
                rec[2] = off[k]
                rec[3] = length[k]
                nv_push(named, rec)
            elif (nv_sub32(&table[e], 16, d.c.parallel) >> 4) == 0:
                return 0  # one name more than links (the table is left unspecified: not proven)
        for c in range(NV_N_COLS):
            d.ents[c].n = 0
        if d.c.parallel and d.c.conflict[0]:
            return 0
        if d.c.read_n >= _RELEASE_EVERY:
            nv_release_reads(&d.c)
    return not named.oom


cdef class _DirPassJob(_WalkJob):
    """One thread's share of check_directories: a contiguous run of the directories, so that the
    runs' entries, put back in thread order, come in the caller's order."""
    cdef uint32_t *table
    cdef uint64_t n_inodes
    cdef nv_vec named
    cdef int ok

    def __cinit__(self):
        nv_vec_init(&self.named, 4)

    def __dealloc__(self):
        nv_vec_free(&self.named)

    def run(self):
        self.d.c.m = &self.m
        with nogil:
            self.ok = _dir_pass(&self.d, self.items, self.n, self.counts, self.table, self.n_inodes, &self.named)
            if not self.ok and self.d.c.parallel:
                self.d.c.conflict[0] = 1  # the other threads stop at their next directory
            if self.d.c.track_reads:
                nv_release_reads(&self.d.c)


def check_directories(buf, geo, seed, dir_inos, owned, table, *, int threads=1, bint release=False):
    """walk_directories + pages_clean + tally_entries, directory by directory; None when not proven
    (see scan_pure.check_directories).  With several threads, each takes a contiguous run of the
    directories: page claims in ``owned`` and link counts in ``table`` are then atomic.  ``release``:
    as check_inode_groups', each thread drops the pages around what it has read every
    :data:`_RELEASE_EVERY` blocks (only for a shared mapping of the device)."""
    cdef const uint8_t[::1] mv = _ro(buf)
    cdef nv_map m = _map(mv, geo)
    cdef uint64_t k0, k1
    _key(bytes(seed), &k0, &k1)
    cdef carray.array items = _u64_array(dir_inos)
    cdef carray.array counts = carray.clone(array("Q"), len(items), zero=True)
    cdef uint8_t[::1] own = _rw(owned)
    if own.shape[0] < <Py_ssize_t>((m.blocks_count + 7) // 8):
        raise ValueError("owned bitmap shorter than the device")
    cdef uint32_t *tab = _table_ptr(table, m.inodes_count)
    cdef volatile int conflict = 0
    cdef int nt = _threads(threads, len(items)), t
    cdef uint64_t lo = <uint64_t>-1, hi = 0
    cdef list jobs = _make_jobs(m, items, counts, nt, nt > 1, &conflict, &own[0], NULL, NULL, 1, 1, _DirPassJob)
    cdef _DirPassJob job
    for job in jobs:
        job.d.k0 = k0
        job.d.k1 = k1
        job.d.bits = F.radix_bits(geo.block_size)
        job.d.c.lo = <uint64_t>-1
        job.d.c.hi = 0
        job.table = tab
        job.n_inodes = m.inodes_count
        job.d.c.track_reads = release
        job.d.c.read_lo = <uint64_t>-1
    _run_parallel(jobs)
    if conflict:
        return None
    for job in jobs:
        if not job.ok:
            return None
        lo = min(lo, job.d.c.lo)
        hi = max(hi, job.d.c.hi)
    cdef nv_vec *vecs = <nv_vec*>PyMem_Malloc(sizeof(nv_vec) * nt)
    if vecs == NULL:
        raise MemoryError()
    try:
        for t in range(nt):
            job = jobs[t]
            vecs[t] = job.named
        cols = _vec_arrays(vecs, nt, ["Q", "Q", "Q", "H"])
    finally:
        PyMem_Free(vecs)
    span = (0, 0)
    if lo <= hi:
        span = (lo * m.bs, (hi + 1) * m.bs)
    out = {"counts": counts, "entry_dir": cols[0], "entry_ino": cols[1], "name_off": cols[2], "name_len": cols[3]}
    out["span"] = span
    return out


def tally_entries(table, entry_ino, file_type, Py_ssize_t n_inodes):
    """Count directory entries against the link table; index of the first bad entry or -1 (see scan_pure)."""
    cdef uint32_t *tab = _table_ptr(table, n_inodes)
    cdef const uint64_t[::1] ent = _u64_array(entry_ino)
    cdef const uint8_t[::1] ft = _ro(file_type)
    if ent.shape[0] != ft.shape[0]:
        raise ValueError("entry_ino and file_type differ in length")
    cdef Py_ssize_t k, bad = -1
    cdef uint64_t e
    cdef uint32_t v
    with nogil:
        for k in range(ent.shape[0]):
            e = ent[k]
            if e < _FIRST_INO or e > <uint64_t>n_inodes:
                bad = k
                break
            v = tab[e]
            if (v & 15) == 0 or (v & 15) != ft[k]:
                bad = k
                break
            if ft[k] != _DT_DIR:
                if (v >> 4) == 0:
                    bad = k
                    break
                tab[e] = v - 16
    return bad


def unsettled_links(table, inuse, Py_ssize_t n_inodes):
    """First in-use non-directory inode >= FIRST_INO whose names were not all tallied, or 0 (see scan_pure)."""
    cdef uint32_t *tab = _table_ptr(table, n_inodes)
    cdef const uint8_t[::1] bm = _ro(inuse)
    cdef Py_ssize_t nbytes = (n_inodes + 7) // 8, b
    if bm.shape[0] < nbytes:
        raise ValueError("inuse bitmap shorter than inodes_count bits")
    cdef uint64_t ino, found = 0, word
    cdef const uint8_t *p = _ro_ptr(bm)
    cdef uint32_t v
    cdef int bit
    with nogil:
        b = 0
        while b < nbytes and not found:
            if b + 8 <= nbytes:
                memcpy(&word, p + b, 8)
                if word == 0:
                    b += 8
                    continue
            if p[b]:
                for bit in range(8):
                    ino = <uint64_t>b * 8 + bit + 1
                    if (p[b] >> bit) & 1 and _FIRST_INO <= ino <= <uint64_t>n_inodes:
                        v = tab[ino]
                        if (v & 15) != _DT_DIR and (v >> 4):
                            found = ino
                            break
            b += 1
    return found


# ---------------------------------------------------------------------------
# CPU features and persistence
# ---------------------------------------------------------------------------

def cpu_features():
    """What CPUID reports (AVX-512 only when the OS saves its state)."""
    return {
        "popcnt": bool(nv_cpu.popcnt),
        "avx2": bool(nv_cpu.avx2),
        "avx512f": bool(nv_cpu.avx512f),
        "avx512vpopcntdq": bool(nv_cpu.vpopcntdq),
        "clflush": bool(nv_cpu.clflush),
        "clflushopt": bool(nv_cpu.clflushopt),
        "clwb": bool(nv_cpu.clwb),
        "sse2": bool(nv_cpu.sse2),
    }


def flush_instruction():
    """The cache write-back instruction flush_range uses ("clwb", "clflushopt", "clflush" or "none")."""
    return {3: "clwb", 2: "clflushopt", 1: "clflush"}.get(nv_flush_kind, "none")


def flush_range(buf, Py_ssize_t offset, Py_ssize_t length):
    """Write back the cache lines of ``buf[offset:offset+length]`` (CLWB, else CLFLUSHOPT, else CLFLUSH), then SFENCE."""
    cdef const uint8_t[::1] mv = _ro(buf)
    _check_range(mv.shape[0], offset, length)
    if length == 0:
        return
    cdef const uint8_t *p = _ro_ptr(mv) + offset
    with nogil:
        nv_flush(p, length)


def sfence():
    """Order every earlier store before any later one."""
    nv_sfence()


def nt_zero(buf, Py_ssize_t offset, Py_ssize_t length):
    """Zero a range with non-temporal stores (no cache pollution), then SFENCE."""
    cdef uint8_t[::1] mv = _rw(buf)
    _check_range(mv.shape[0], offset, length)
    if length == 0:
        return
    cdef uint8_t *p = &mv[0] + offset
    with nogil:
        nv_nt_zero(p, length)


# ---------------------------------------------------------------------------
# mkfs -d: file contents copied into the image (see scan_pure.copy_files)
# ---------------------------------------------------------------------------

from posix.fcntl cimport open as c_open
from posix.unistd cimport pread as c_pread, pwrite as c_pwrite, close as c_close, lseek as c_lseek
from libc.errno cimport errno, EINTR, EPERM, ENOSPC, ENOMEM, EINVAL, ENOSYS, EDQUOT, EFBIG
from libc.stdlib cimport malloc, calloc

cdef extern from "<sys/sendfile.h>" nogil:
    ssize_t sendfile(int out_fd, int in_fd, long *offset, size_t count)

cdef extern from "<fcntl.h>" nogil:
    int openat(int dirfd, const char *pathname, int flags)
    int AT_FDCWD
from libc.string cimport memcmp, strrchr

cdef int _COPY_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
cdef int _COPY_NOATIME = getattr(os, "O_NOATIME", 0)


cdef int _write_all(int out_fd, const uint8_t *buf, Py_ssize_t length, int64_t offset) noexcept nogil:
    """pwrite all of ``buf``; 0 or an errno."""
    cdef Py_ssize_t done = 0, w
    while done < length:
        w = c_pwrite(out_fd, buf + done, length - done, offset + done)
        if w < 0:
            if errno == EINTR:
                continue
            return errno
        if w == 0:
            return ENOSPC
        done += w
    return 0


cdef inline bint _is_write_errno(int err) noexcept nogil:
    """Which sendfile failures are the image's (the rest are the source file's)."""
    return err == ENOSPC or err == EDQUOT or err == EFBIG


#: Small pieces bound for consecutive device bytes (the small files of one directory) are read into
#: one buffer of this size and written with one pwrite: open + pread + close per file instead of
#: open + lseek + sendfile + close + a pwrite of the padding (copy of /usr/include: 119 -> 102 ms CPU).
cdef Py_ssize_t _COPY_STAGE_BYTES = 1 << 20


cdef struct _copier:
    int out_fd
    Py_ssize_t block_size
    uint8_t *stage       # gathered small pieces, bound for [staged_off, staged_off + staged)
    Py_ssize_t staged
    int64_t staged_off
    Py_ssize_t staged_first  # index of the first piece in the stage
    uint8_t *zeros       # one block of zeros
    uint8_t *buf         # for a big piece that cannot be spliced (allocated when first needed)
    Py_ssize_t cap       # size for buf: the largest padded piece
    int dir_fd           # the directory of the last piece (O_PATH), -1 when none is open
    char *dir_path       # its path, NUL-terminated (dir_len bytes)
    Py_ssize_t dir_len


cdef int _read_piece(int fd, uint8_t *dst, uint64_t size, int64_t start, uint64_t *got) noexcept nogil:
    """pread up to ``size`` bytes from ``start`` (fewer if the file ends early); 0 or an errno."""
    cdef ssize_t r
    got[0] = 0
    while got[0] < size:
        r = c_pread(fd, dst + got[0], size - got[0], start + got[0])
        if r < 0:
            if errno == EINTR:
                continue
            return errno
        if r == 0:
            break
        got[0] += r
    return 0


cdef int _openat_noatime(int dfd, const char *path, int flags) noexcept nogil:
    """openat(2) with O_NOATIME, retried without it when the kernel refuses it (not the file's owner)."""
    cdef int fd = openat(dfd, path, flags | _COPY_NOATIME)
    if fd < 0 and errno == EPERM and _COPY_NOATIME:
        fd = openat(dfd, path, flags)
    return fd


cdef inline int _open_noatime(const char *path, int flags) noexcept nogil:
    return _openat_noatime(AT_FDCWD, path, flags)


cdef int _COPY_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


cdef int _open_piece(_copier *c, const char *path) noexcept nogil:
    """open(2) ``path`` as _open_noatime does, by name in its directory: the pieces of one directory
    come one after another, and opening the directory once (O_PATH) saves walking the whole path for
    each file (7,911 files of /usr/include: ~30 % of the copy thread's open time).  Any failure of
    the directory falls back to the whole path, whose errno is then the file's."""
    cdef const char *slash = strrchr(path, 47)  # '/'
    cdef Py_ssize_t n
    cdef int fd
    if slash == NULL or slash == path:
        return _open_noatime(path, _COPY_OPEN_FLAGS)
    n = slash - path
    if c.dir_fd < 0 or n != c.dir_len or memcmp(path, c.dir_path, n) != 0:
        if c.dir_fd >= 0:
            c_close(c.dir_fd)
            c.dir_fd = -1
        if c.dir_path == NULL:
            c.dir_path = <char *>malloc(4097)
        if c.dir_path == NULL or n > 4096:
            return _open_noatime(path, _COPY_OPEN_FLAGS)
        memcpy(c.dir_path, path, n)
        c.dir_path[n] = 0
        c.dir_len = n
        c.dir_fd = c_open(c.dir_path, _COPY_DIR_FLAGS)
        if c.dir_fd < 0:
            return _open_noatime(path, _COPY_OPEN_FLAGS)
    fd = _openat_noatime(c.dir_fd, slash + 1, _COPY_OPEN_FLAGS)
    if fd < 0:
        return _open_noatime(path, _COPY_OPEN_FLAGS)  # the errno of the whole path, as before
    return fd


cdef int _flush_stage(_copier *c, Py_ssize_t *failed) noexcept nogil:
    """Write the gathered pieces; 0, or a write failure as -(2 << 16 | errno) (see copy_files) with
    ``failed`` set to the first gathered piece."""
    cdef int err = 0
    if c.staged:
        err = _write_all(c.out_fd, c.stage, c.staged, c.staged_off)
        c.staged = 0
    if err:
        failed[0] = c.staged_first
        return -(2 << 16 | err)
    return 0


cdef int _copy_small(_copier *c, Py_ssize_t i, const char *path, uint64_t size, int64_t start, int64_t off,
                     Py_ssize_t padded, Py_ssize_t *failed) noexcept nogil:
    """Gather piece ``i`` (``padded`` <= the stage) into the stage, writing the stage first when the piece
    does not continue it; 0, or -(what << 16 | errno) with ``failed`` set (what: 0 open, 1 read, 2 write).
    """
    cdef uint64_t got
    cdef int err, fd
    if c.staged and (off != c.staged_off + c.staged or c.staged + padded > _COPY_STAGE_BYTES):
        err = _flush_stage(c, failed)
        if err:
            return err
    fd = _open_piece(c, path)
    if fd < 0:
        failed[0] = i
        return -errno
    err = _read_piece(fd, c.stage + c.staged, size, start, &got)
    c_close(fd)
    if err:
        failed[0] = i
        return -(1 << 16 | err)
    if padded:
        memset(c.stage + c.staged + got, 0, padded - got)  # zeros to the block end
        if c.staged == 0:
            c.staged_off, c.staged_first = off, i
        c.staged += padded
    return 0


cdef int _copy_big(_copier *c, const char *path, uint64_t size, int64_t start, int64_t off,
                   Py_ssize_t padded) noexcept nogil:
    """Copy one piece bigger than the stage with sendfile (or pread + pwrite when the source cannot be
    spliced), then zeros to its block end; 0 or -(what << 16 | errno) as _copy_small."""
    cdef uint64_t got = 0
    cdef ssize_t r
    cdef long src_off = start
    cdef int err = 0
    cdef int fd = _open_piece(c, path)
    if fd < 0:
        return -errno
    if size and c_lseek(c.out_fd, off, 0) < 0:
        err = errno
        c_close(fd)
        return -(2 << 16 | err)
    while got < size:
        r = sendfile(c.out_fd, fd, &src_off, size - got)
        if r < 0:
            if errno == EINTR:
                continue
            err = errno
            break
        if r == 0:  # the file ended early: zeros follow
            break
        got += r
    if err and got == 0 and (err == EINVAL or err == ENOSYS):  # no splice from this file: read it
        if c.buf == NULL:
            c.buf = <uint8_t *>malloc(c.cap)
            if c.buf == NULL:
                c_close(fd)
                return -(1 << 16 | ENOMEM)  # reported as "<file>: read error: Cannot allocate memory"
        err = _read_piece(fd, c.buf, size, start, &got)
        if not err:
            memset(c.buf + got, 0, padded - got)
            err = _write_all(c.out_fd, c.buf, padded, off)
            if err:
                c_close(fd)
                return -(2 << 16 | err)
            got = padded
    c_close(fd)
    if err:
        return -((2 if _is_write_errno(err) else 1) << 16 | err)
    while <uint64_t>padded > got:  # zeros to the block end (more than a block if the file shrank)
        r = min(<uint64_t>padded - got, <uint64_t>c.block_size)
        err = _write_all(c.out_fd, c.zeros, r, off + got)
        if err:
            return -(2 << 16 | err)
        got += r
    return 0


def copy_files(int out_fd, list paths, starts, sizes, offsets, Py_ssize_t block_size):
    """Copy pieces of files into the image file ``out_fd`` with the GIL released; see scan_pure.copy_files.

    Runs of small pieces bound for consecutive device bytes are gathered in one buffer
    (:data:`_COPY_STAGE_BYTES`) and written with one ``pwrite``.  A bigger piece goes with
    ``sendfile`` (page cache to page cache, one copy instead of a read and a write through a
    buffer), so the file position of ``out_fd`` is used and changed: give this function a
    descriptor of its own.
    """
    cdef Py_ssize_t n = len(paths), i, padded, failed = -1
    cdef int rc = 0
    cdef _copier c
    memset(&c, 0, sizeof(c))
    c.out_fd, c.block_size, c.cap, c.dir_fd = out_fd, block_size, block_size, -1
    if len(starts) != n or len(sizes) != n or len(offsets) != n:
        raise ValueError("paths, starts, sizes and offsets differ in length")
    cdef const char **cpaths = <const char **>PyMem_Malloc(max(n, 1) * sizeof(char *))
    cdef uint64_t *csizes = <uint64_t *>PyMem_Malloc(max(n, 1) * sizeof(uint64_t))
    cdef int64_t *coffs = <int64_t *>PyMem_Malloc(max(n, 1) * sizeof(int64_t))
    cdef int64_t *cstarts = <int64_t *>PyMem_Malloc(max(n, 1) * sizeof(int64_t))
    try:
        if cpaths == NULL or csizes == NULL or coffs == NULL or cstarts == NULL:
            raise MemoryError()
        for i in range(n):
            cpaths[i] = <bytes>paths[i]
            csizes[i] = sizes[i]
            coffs[i] = offsets[i]
            cstarts[i] = starts[i]
            c.cap = max(c.cap, (csizes[i] + block_size - 1) // block_size * block_size)
        c.zeros = <uint8_t *>calloc(block_size, 1)
        c.stage = <uint8_t *>malloc(_COPY_STAGE_BYTES)
        if c.zeros == NULL or c.stage == NULL:
            raise MemoryError()
        with nogil:
            for i in range(n):
                padded = (csizes[i] + block_size - 1) // block_size * block_size
                if padded <= _COPY_STAGE_BYTES:
                    rc = _copy_small(&c, i, cpaths[i], csizes[i], cstarts[i], coffs[i], padded, &failed)
                else:
                    rc = _flush_stage(&c, &failed)
                    if not rc:
                        failed, rc = i, _copy_big(&c, cpaths[i], csizes[i], cstarts[i], coffs[i], padded)
                if rc:
                    break
            if not rc:
                rc = _flush_stage(&c, &failed)
    finally:
        if c.dir_fd >= 0:
            c_close(c.dir_fd)
        free(c.dir_path)
        free(c.zeros)
        free(c.buf)
        free(c.stage)
        PyMem_Free(cpaths)
        PyMem_Free(csizes)
        PyMem_Free(coffs)
        PyMem_Free(cstarts)
    if not rc:
        return (-1, 0, 0)  # every piece was copied
    return (failed, (-rc) & 0xFFFF, (-rc) >> 16)  # (piece, errno, what: 0 open, 1 read, 2 write)


include "_fastscan_groups.pxi"


include "_populate_core.pxi"
