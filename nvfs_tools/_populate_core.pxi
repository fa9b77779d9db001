# mkfs -d (nvfs_tools/populate.py): the loops that run once per source entry or directory.
#
# Included at the end of _fastscan.pyx.  The pure-Python references of these functions,
# with the same signatures and results, are in nvfs_tools/populate.py (_scan_dir_pure,
# _write_simple_pure, _dir_page_pure, _take_bits_pure); NVFS_PURE=1 uses them.  Inode offsets come from
# format.field_layout, never typed here.

from libc.stdlib cimport malloc, realloc, calloc
from cpython.bytearray cimport PyByteArray_FromStringAndSize
from libc.string cimport strlen
from libc.errno cimport EOVERFLOW
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from posix.stat cimport struct_stat, fstatat, S_ISDIR


cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR:
        pass

    struct dirent:
        char d_name[256]

    DIR *fdopendir(int fd)
    dirent *readdir(DIR *dirp)
    int closedir(DIR *dirp)

cdef extern from "<fcntl.h>" nogil:
    int AT_SYMLINK_NOFOLLOW


#: What each source entry's row of ``meta`` holds (populate.py checks it equals its META_FIELDS).
POPULATE_META_FIELDS = (
    "mode", "uid", "gid", "nlink", "size", "blocks", "dev", "ino", "atime_ns", "mtime_ns", "ctime_ns", "rdev",
    "xattr",
)

cdef enum:
    PM_MODE, PM_UID, PM_GID, PM_NLINK, PM_SIZE, PM_BLOCKS, PM_DEV, PM_INO, PM_ATIME, PM_MTIME, PM_CTIME, PM_RDEV
    PM_XATTR, PM_N

cdef int _PD_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY | os.O_NOFOLLOW
cdef int64_t _PN_NS = 1000000000


cdef nv_field _PI_MODE, _PI_UID, _PI_GID, _PI_LINKS, _PI_GEN, _PI_SIZE, _PI_BLOCKS, _PI_BLOCK
cdef nv_field _PI_TIME[4]
cdef nv_field _PI_NSEC[4]
cdef uint8_t _P_DT_REG = F.MODE_TO_DT[F.S_IFREG]
cdef Py_ssize_t _P_N_DIRECT = F.N_DIRECT


cdef _init_populate_layout():
    global _PI_MODE, _PI_UID, _PI_GID, _PI_LINKS, _PI_GEN, _PI_SIZE, _PI_BLOCKS, _PI_BLOCK
    inode = F.field_layout(F.PLAIN["Inode"])
    _PI_MODE = _fld(inode, "mode")
    _PI_UID = _fld(inode, "uid")
    _PI_GID = _fld(inode, "gid")
    _PI_LINKS = _fld(inode, "links_count")
    _PI_GEN = _fld(inode, "generation")
    _PI_SIZE = _fld(inode, "size")
    _PI_BLOCKS = _fld(inode, "blocks")
    _PI_BLOCK = _fld(inode, "block")
    for i, t in enumerate(("atime", "mtime", "ctime", "btime")):
        _PI_TIME[i] = _fld(inode, t)
        _PI_NSEC[i] = _fld(inode, t + "_nsec")
    if _PI_BLOCK.size != 8 * F.N_BLOCK_POINTERS:
        raise ImportError("inode block pointers must be 8 bytes each")


_init_populate_layout()


cdef inline void _put_le(uint8_t *p, nv_field f, uint64_t value) noexcept nogil:
    """Store ``value`` little-endian in field ``f`` (any width up to 8 bytes)."""
    cdef Py_ssize_t i
    for i in range(f.size):
        p[f.off + i] = <uint8_t>(value >> (8 * i))


cdef extern from *:
    """
    #include <errno.h>
    static inline void set_errno(int e) { errno = e; }
    /* sec * 10**9 + nsec into *out; 0 when it does not fit an int64 (before 1677 or after 2262) */
    static inline int nv_time_ns(int64_t sec, long nsec, int64_t *out) {
        int64_t r;
        if (__builtin_mul_overflow(sec, (int64_t)1000000000, &r) || __builtin_add_overflow(r, (int64_t)nsec, &r))
            return 0;
        *out = r;
        return 1;
    }
    """
    void set_errno(int e) nogil
    int nv_time_ns(int64_t sec, long nsec, int64_t *out) nogil


cdef extern from *:
    """
    #include <errno.h>
    #include <fcntl.h>
    #include <limits.h>
    #include <unistd.h>
    #include <sys/syscall.h>
    #include <sys/xattr.h>
    #if !defined(SYS_listxattrat) && (defined(__x86_64__) || defined(__aarch64__))
    #define SYS_listxattrat 465  /* Linux 6.13 */
    #endif
    /* Whether entry ``name`` of directory ``dfd`` (whole path ``full``) has extended attributes:
       listxattr's size answer (-1 on error).  listxattrat(2) looks up one name in the open directory;
       llistxattr(2), where the kernel lacks it, walks the whole path again. */
    static int nv_listxattrat_missing = 0;
    static inline ssize_t nv_listxattr_at(int dfd, const char *name, const char *full, size_t full_len) {
        if (full_len >= PATH_MAX) {  /* what llistxattr (and the pure walk) answer for the whole path */
            errno = ENAMETOOLONG;
            return -1;
        }
    #ifdef SYS_listxattrat
        if (!nv_listxattrat_missing) {
            long r = syscall(SYS_listxattrat, dfd, name, AT_SYMLINK_NOFOLLOW, (char *)0, (size_t)0);
            if (r >= 0 || (errno != ENOSYS && errno != EPERM))  /* EPERM: a seccomp filter that does not know it */
                return (ssize_t)r;
            nv_listxattrat_missing = 1;
        }
    #endif
        return llistxattr(full, (char *)0, 0);
    }
    """
    ssize_t nv_listxattr_at(int dfd, const char *name, const char *full, size_t full_len) nogil
    int nv_listxattrat_missing


def populate_scan_by_path(bint by_path):
    """Make the scan ask llistxattr(2) with whole paths, as on kernels without listxattrat(2) (tests
    compare the two), or (False) try listxattrat again; returns the previous setting."""
    global nv_listxattrat_missing
    previous = bool(nv_listxattrat_missing)
    nv_listxattrat_missing = by_path
    return previous


cdef inline int64_t _pmod(int64_t t) noexcept nogil:
    """``t`` mod 10**9 in [0, 10**9), like Python's divmod (times before 1970 are negative)."""
    cdef int64_t rem = t % _PN_NS
    return rem + _PN_NS if rem < 0 else rem


cdef struct _scan_out:
    char *names  # per entry: one length byte, then the name
    Py_ssize_t names_len
    Py_ssize_t names_cap
    int64_t *rows
    uint8_t *simple
    Py_ssize_t n
    Py_ssize_t cap
    int64_t simple_blocks
    int err
    int what
    int nomem
    Py_ssize_t bad_len
    char bad[256]


cdef bint _scan_grow(_scan_out *o, Py_ssize_t nlen) noexcept nogil:
    """Room for one more entry of an ``nlen``-byte name; False when memory is short."""
    cdef void *p
    if o.n == o.cap:
        o.cap = 2 * o.cap if o.cap else 64
        p = realloc(o.rows, o.cap * PM_N * sizeof(int64_t))
        if p == NULL:
            return False
        o.rows = <int64_t *>p
        p = realloc(o.simple, o.cap)
        if p == NULL:
            return False
        o.simple = <uint8_t *>p
    if o.names_len + nlen + 1 > o.names_cap:
        o.names_cap = 2 * (o.names_cap + nlen + 1)
        p = realloc(o.names, o.names_cap)
        if p == NULL:
            return False
        o.names = <char *>p
    return True


cdef void _scan_into(const char *path, Py_ssize_t plen, Py_ssize_t block_size, int64_t simple_max,
                     _scan_out *o) noexcept nogil:
    """The entries of directory ``path`` into ``o`` (see populate_scan_dir); no Python objects."""
    cdef int dfd = _open_noatime(path, _PD_FLAGS)
    if dfd < 0:
        o.err, o.what = errno, 0
        return
    cdef DIR *dp = fdopendir(dfd)
    if dp == NULL:
        o.err, o.what = errno, 1
        c_close(dfd)
        return
    cdef char *full = <char *>malloc(plen + 258)
    cdef dirent *ent
    cdef struct_stat st
    cdef int64_t *r
    cdef Py_ssize_t nlen
    cdef int64_t nblk
    cdef bint is_simple
    if full == NULL:
        o.nomem = 1
        closedir(dp)
        return
    memcpy(full, path, plen)
    full[plen] = b"/"
    while True:
        set_errno(0)
        ent = readdir(dp)
        if ent == NULL:
            if errno:
                o.err, o.what = errno, 1
            break
        nlen = strlen(ent.d_name)
        if ent.d_name[0] == b"." and (nlen == 1 or (nlen == 2 and ent.d_name[1] == b".")):
            continue
        if fstatat(dfd, ent.d_name, &st, AT_SYMLINK_NOFOLLOW) < 0:
            o.err, o.what = errno, 2
            o.bad_len = nlen
            memcpy(o.bad, ent.d_name, nlen)
            break
        if not _scan_grow(o, nlen):
            o.nomem = 1
            break
        r = o.rows + o.n * PM_N
        r[PM_MODE], r[PM_UID], r[PM_GID], r[PM_NLINK] = st.st_mode, st.st_uid, st.st_gid, st.st_nlink
        r[PM_SIZE], r[PM_BLOCKS], r[PM_DEV], r[PM_INO] = st.st_size, st.st_blocks, st.st_dev, st.st_ino
        if not (nv_time_ns(st.st_atim.tv_sec, st.st_atim.tv_nsec, &r[PM_ATIME])
                and nv_time_ns(st.st_mtim.tv_sec, st.st_mtim.tv_nsec, &r[PM_MTIME])
                and nv_time_ns(st.st_ctim.tv_sec, st.st_ctim.tv_nsec, &r[PM_CTIME])):
            o.err, o.what = EOVERFLOW, 3
            o.bad_len = nlen
            memcpy(o.bad, ent.d_name, nlen)
            break
        r[PM_RDEV] = st.st_rdev
        r[PM_XATTR] = 0
        if not S_ISDIR(st.st_mode):
            memcpy(full + plen + 1, ent.d_name, nlen + 1)
            r[PM_XATTR] = nv_listxattr_at(dfd, ent.d_name, full, plen + 1 + nlen) != 0  # an error too: the caller reports it
        is_simple = (
            (st.st_mode & NV_S_IFMT) == NV_S_IFREG and st.st_nlink == 1 and st.st_size <= simple_max
            and st.st_blocks * 512 >= st.st_size and not r[PM_XATTR]
        )
        if is_simple:
            nblk = (st.st_size + block_size - 1) // block_size
            o.simple_blocks += nblk + (nblk > _P_N_DIRECT)
        o.simple[o.n] = is_simple
        o.names[o.names_len] = <char>nlen
        memcpy(o.names + o.names_len + 1, ent.d_name, nlen)
        o.names_len += nlen + 1
        o.n += 1
    free(full)
    closedir(dp)


cdef tuple _scan_result(_scan_out *o):
    """The Python answer for one scanned directory; frees ``o``'s buffers."""
    cdef Py_ssize_t i, off = 0, nlen
    cdef carray.array meta = array("q")
    try:
        if o.nomem:
            raise MemoryError()
        names = []
        for i in range(o.n):
            nlen = <uint8_t>o.names[off]
            names.append(PyBytes_FromStringAndSize(o.names + off + 1, nlen))
            off += nlen + 1
        if o.n:
            carray.resize(meta, o.n * PM_N)
            memcpy(meta.data.as_voidptr, o.rows, o.n * PM_N * sizeof(int64_t))
        simple = PyByteArray_FromStringAndSize(<char *>o.simple, o.n)
        bad_name = PyBytes_FromStringAndSize(o.bad, o.bad_len)
        return names, meta, simple, o.simple_blocks, o.err, o.what, bad_name
    finally:
        free(o.names)
        free(o.rows)
        free(o.simple)
        o.names, o.rows, o.simple = NULL, NULL, NULL


def populate_scan_dir(bytes path, Py_ssize_t block_size, int64_t simple_max):
    """lstat every entry of directory ``path`` (see populate._scan_dir_pure for the reference).

    Returns ``(names, meta, simple, simple_blocks, err, what, bad_name)``: entry names (bytes, readdir
    order), an ``array('q')`` of ``len(POPULATE_META_FIELDS)`` values per entry (``xattr`` is 1 when a
    non-directory lists any extended attribute or cannot list them), a bytearray marking the *simple*
    entries (regular file, one link, dense, at most ``simple_max`` bytes, no xattrs) and the blocks they
    take (data, and one indirect block past the direct ones); or, on failure, ``err`` (errno) and
    ``what`` (0 open, 1 read the directory, 2 lstat ``bad_name``).  The system calls run with the GIL
    released.
    """
    cdef _scan_out o
    memset(&o, 0, sizeof(o))
    cdef const char *cpath = path
    cdef Py_ssize_t plen = len(path)
    with nogil:
        _scan_into(cpath, plen, block_size, simple_max, &o)
    return _scan_result(&o)


def populate_scan_dirs(list paths, Py_ssize_t block_size, int64_t simple_max):
    """:func:`populate_scan_dir` of every path (the walk scans a chunk of a level of the tree at once), the system
    calls with the GIL released.  (Splitting a level between two threads measured slower, 50 -> 55-62
    ms for /usr/include's walk on a busy machine; likely causes: no free CPU, and a second thread makes
    the kernel take a reference at every descriptor lookup.)"""
    cdef Py_ssize_t n = len(paths), i
    cdef _scan_out *outs = <_scan_out *>calloc(max(n, 1), sizeof(_scan_out))
    cdef const char **cpaths = <const char **>malloc(max(n, 1) * sizeof(char *))
    cdef Py_ssize_t *lens = <Py_ssize_t *>malloc(max(n, 1) * sizeof(Py_ssize_t))
    if outs == NULL or cpaths == NULL or lens == NULL:
        free(outs)
        free(cpaths)
        free(lens)
        raise MemoryError()
    results = []
    try:
        for i in range(n):
            cpaths[i] = <bytes>paths[i]
            lens[i] = len(<bytes>paths[i])
        with nogil:
            for i in range(n):
                _scan_into(cpaths[i], lens[i], block_size, simple_max, &outs[i])
        for i in range(n):
            results.append(_scan_result(&outs[i]))
    finally:
        for i in range(n):
            free(outs[i].names)
            free(outs[i].rows)
            free(outs[i].simple)
        free(outs)
        free(cpaths)
        free(lens)
    return results


def populate_write_simple(list names, meta, simple, bytes prefix, list supply, list pool, gens,
                          int64_t btime_ns, Py_ssize_t block_size, list entries, list pending, list copy_paths,
                          list copy_starts, list copy_sizes, list copy_offsets, list block_writes):
    """Inodes and copy orders for a directory's simple files (see populate._write_simple_pure).

    Each simple entry ``i`` (in order) takes generation ``gens[k]`` (``k``-th simple entry, uint32
    little-endian), then, if its data blocks are the next consecutive ones at the end of ``pool`` (and one
    more pool block is there for its indirect block, past the direct ones), the last inode of ``supply``
    and those blocks: ``(name, ino, DT_REG)`` goes to ``entries``, ``(ino, inode bytes)`` to ``pending``,
    a copy order to the four ``copy_*`` lists and ``(device offset, indirect block)`` to ``block_writes``.  Otherwise ``i`` is returned
    in ``deferred`` (the caller writes it the general way).  Returns ``(files, data_bytes, deferred)``.
    """
    cdef const int64_t[::1] m = meta
    cdef const uint8_t[::1] g = gens
    cdef const uint8_t[::1] s = simple
    cdef Py_ssize_t count = len(names), i, k = 0, nblk, j, npool, nind, per_block = block_size // 8
    cdef int64_t size, first, ind_block = 0, files = 0, data_bytes = 0
    cdef const int64_t *r
    cdef uint8_t *p
    cdef uint8_t *q
    cdef uint64_t gen
    cdef int64_t t
    cdef nv_field ptr
    deferred = []
    if m.shape[0] != count * PM_N or s.shape[0] != count:
        raise ValueError("names, meta and simple differ in length")
    for i in range(count):
        if not s[i]:
            continue
        if g.shape[0] < 4 * (k + 1):
            raise ValueError("fewer generations than simple entries")
        gen = g[4 * k] | (<uint64_t>g[4 * k + 1] << 8) | (<uint64_t>g[4 * k + 2] << 16) | (<uint64_t>g[4 * k + 3] << 24)
        k += 1
        r = &m[i * PM_N]
        size = r[PM_SIZE]
        nblk = (size + block_size - 1) // block_size
        npool = len(pool)
        nind = nblk > _P_N_DIRECT
        if nblk > _P_N_DIRECT + per_block:
            raise ValueError("a simple file needs at most one indirect block")
        if nblk and (npool < nblk + nind or <int64_t>pool[npool - nblk] != <int64_t>pool[npool - 1] + nblk - 1):
            deferred.append(i)
            continue
        ino = supply.pop()
        name = names[i]
        entries.append((name, ino, _P_DT_REG))
        first = 0
        if nblk:
            first = pool[npool - 1]
            if nind:
                ind_block = pool[npool - nblk - 1]
            del pool[npool - nblk - nind:]
            copy_paths.append(prefix + name)
            copy_starts.append(0)
            copy_sizes.append(size)
            copy_offsets.append(first * block_size)
        raw = PyBytes_FromStringAndSize(NULL, NV_INODE_SIZE)
        p = <uint8_t *>PyBytes_AS_STRING(raw)
        memset(p, 0, NV_INODE_SIZE)
        _put_le(p, _PI_MODE, r[PM_MODE])
        _put_le(p, _PI_UID, r[PM_UID])
        _put_le(p, _PI_GID, r[PM_GID])
        _put_le(p, _PI_LINKS, 1)
        _put_le(p, _PI_GEN, gen)
        _put_le(p, _PI_SIZE, size)
        _put_le(p, _PI_BLOCKS, nblk + nind)
        for j in range(4):
            t = r[PM_ATIME + j] if j < 3 else btime_ns
            _put_le(p, _PI_TIME[j], <uint64_t>((t - _pmod(t)) // _PN_NS))
            _put_le(p, _PI_NSEC[j], <uint64_t>_pmod(t))
        ptr.size = 8
        for j in range(min(nblk, _P_N_DIRECT)):
            ptr.off = _PI_BLOCK.off + 8 * j
            _put_le(p, ptr, first + j)
        if nind:
            ptr.off = _PI_BLOCK.off + 8 * _P_N_DIRECT  # the single-indirect pointer
            _put_le(p, ptr, ind_block)
            block = PyBytes_FromStringAndSize(NULL, block_size)
            q = <uint8_t *>PyBytes_AS_STRING(block)
            memset(q, 0, block_size)
            ptr.off = 0
            for j in range(nblk - _P_N_DIRECT):
                _put_le(q + 8 * j, ptr, first + _P_N_DIRECT + j)
            block_writes.append((ind_block * block_size, block))
        pending.append((ino, raw))
        files += 1
        data_bytes += size
    return files, data_bytes, deferred


# ---------------------------------------------------------------------------
# The one page of a small new directory
# ---------------------------------------------------------------------------

from libc.stdlib cimport qsort
from libc.string cimport memcmp

cdef struct _prec:
    uint64_t hash
    const char *name
    Py_ssize_t name_len
    uint64_t ino
    uint64_t ftype

cdef nv_field _PP_DIRINO, _PE_INO, _PE_HASH, _PE_NAMELEN, _PE_FTYPE, _PE_RECLEN


cdef _init_populate_page_layout():
    global _PP_DIRINO, _PE_INO, _PE_HASH, _PE_NAMELEN, _PE_FTYPE, _PE_RECLEN
    page = F.field_layout(F.PLAIN["DirPageHeader"])
    entry = F.field_layout(F.PLAIN["DirEntryHeader"])
    _PP_DIRINO = _fld(page, "dir_ino")
    _PE_INO = _fld(entry, "ino")
    _PE_HASH = _fld(entry, "hash")
    _PE_NAMELEN = _fld(entry, "name_len")
    _PE_FTYPE = _fld(entry, "file_type")
    _PE_RECLEN = _fld(entry, "rec_len")


_init_populate_page_layout()


cdef int _prec_cmp(const void *a, const void *b) noexcept nogil:
    """By hash, then by name as Python compares bytes."""
    cdef const _prec *x = <const _prec *>a
    cdef const _prec *y = <const _prec *>b
    cdef int c
    if x.hash != y.hash:
        return -1 if x.hash < y.hash else 1
    c = memcmp(x.name, y.name, x.name_len if x.name_len < y.name_len else y.name_len)
    if c:
        return c
    return (x.name_len > y.name_len) - (x.name_len < y.name_len)


def populate_dir_page(list entries, seed, hashes, uint64_t dir_ino, Py_ssize_t block_size):
    """The page of a directory whose ``(name, ino, file_type)`` records fit one page (see
    populate._dir_page_pure): header (depth 0) and records by (hash, name).  ``hashes`` None: the names'
    SipHash under ``seed`` (the default name hash).
    """
    cdef Py_ssize_t n = len(entries), i, off = NV_PAGE_HDR, rl
    cdef uint64_t k0 = 0, k1 = 0
    cdef _prec *recs = <_prec *>malloc(max(n, 1) * sizeof(_prec))
    cdef uint8_t *p
    if recs == NULL:
        raise MemoryError()
    try:
        if hashes is None:
            _key(bytes(seed), &k0, &k1)
        elif len(hashes) != n:
            raise ValueError("entries and hashes differ in length")
        for i in range(n):
            name, ino, ftype = entries[i]
            recs[i].name = <bytes>name
            recs[i].name_len = len(<bytes>name)
            recs[i].ino = ino
            recs[i].ftype = ftype
            if hashes is None:
                recs[i].hash = nv_siphash(k0, k1, <const uint8_t *>recs[i].name, recs[i].name_len)
            else:
                recs[i].hash = hashes[i]
        qsort(recs, n, sizeof(_prec), _prec_cmp)
        page = PyBytes_FromStringAndSize(NULL, block_size)
        p = <uint8_t *>PyBytes_AS_STRING(page)
        memset(p, 0, block_size)
        memcpy(p, NV_PAGE_MAGIC, 4)
        _put_le(p, _PP_DIRINO, dir_ino)
        for i in range(n):
            rl = (NV_ENTRY_HDR + recs[i].name_len + NV_ENTRY_ALIGN - 1) & ~(NV_ENTRY_ALIGN - 1)
            if off + rl > block_size:
                raise ValueError("the records do not fit one page")
            _put_le(p + off, _PE_INO, recs[i].ino)
            _put_le(p + off, _PE_HASH, recs[i].hash)
            _put_le(p + off, _PE_NAMELEN, recs[i].name_len)
            _put_le(p + off, _PE_FTYPE, recs[i].ftype)
            _put_le(p + off, _PE_RECLEN, rl)
            memcpy(p + off + NV_ENTRY_HDR, recs[i].name, recs[i].name_len)
            off += rl
    finally:
        free(recs)
    return page


# ---------------------------------------------------------------------------
# Inode numbers for a directory's new children
# ---------------------------------------------------------------------------

def populate_take_bits(bytearray bm, Py_ssize_t nbits, Py_ssize_t start_byte, Py_ssize_t count, int64_t first):
    """Mark up to ``count`` clear bits of bitmap ``bm`` (``nbits`` valid bits) and return ``(numbers, lo,
    hi)``: ``first`` + each bit index, in the order taken, and the byte range changed (-1, -1 when none);
    see populate._take_bits_pure for the order (from ``start_byte``, then from 0; whole clear bytes
    eight bits at a time while eight or more are wanted)."""
    cdef uint8_t[::1] b = bm
    cdef Py_ssize_t nbytes = b.shape[0], ngot = 0, lo = -1, hi = -1, pos, i, z, run, j, bit, rnd
    cdef int byte
    got = []
    for rnd in range(2):
        pos = start_byte if rnd == 0 else 0
        while ngot < count:
            i = pos
            while i < nbytes and b[i] == 0xFF:
                i += 1
            if i >= nbytes:
                break
            lo = i if lo < 0 or i < lo else lo
            if b[i] == 0 and count - ngot >= 8:
                z = i
                while z < nbytes and b[z] == 0:
                    z += 1
                run = min(z - i, (count - ngot) // 8)
                for j in range(i * 8, (i + run) * 8):
                    got.append(first + j)
                memset(&b[i], 0xFF, run)
                ngot += run * 8
                pos = i + run
            else:
                byte = b[i]
                for bit in range(8):
                    if not (byte >> bit) & 1 and i * 8 + bit < nbits and ngot < count:
                        byte |= 1 << bit
                        got.append(first + i * 8 + bit)
                        ngot += 1
                b[i] = byte
                pos = i + 1
            hi = pos if hi < 0 or pos > hi else hi
        if ngot == count:
            break
    return got, lo, hi
