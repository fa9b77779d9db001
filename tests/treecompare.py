"""Compare two host directory trees, metadata and all (populate/extract round trips).

Returns a list of human-readable differences; an empty list means identical.
Compared: the set of names, file type, permission bits, owner, atime/mtime
in nanoseconds, content, the hole map of regular files, xattrs (every
namespace the host lists, ACLs included), symlink targets, device numbers,
and which names share an inode.  Not compared: ctime (the host cannot set
it; tests check the image's ctime against the source separately), directory
sizes and link counts that depend on the host filesystem, and the atime of
symlinks (reading a link updates it under relatime).
"""

from __future__ import annotations

import os
import stat

_CHUNK = 1 << 20


def walk(root: bytes, ignore: tuple[bytes, ...] = ()) -> dict[bytes, os.stat_result]:
    """Every path under ``root`` (relative, bytes; root itself is b".") with its lstat."""
    found = {b".": os.lstat(root)}
    stack = [b"."]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel)) as it:
            for entry in it:
                child = os.path.normpath(os.path.join(rel, entry.name))
                if child in ignore:
                    continue
                st = entry.stat(follow_symlinks=False)
                found[child] = st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(child)
    return found


def xattrs(path: bytes) -> dict[bytes, bytes]:
    names = os.listxattr(path, follow_symlinks=False)
    return {os.fsencode(n): os.getxattr(path, n, follow_symlinks=False) for n in names}


def data_map(path: bytes, size: int) -> list[tuple[int, int]]:
    """Data extents of a file as (start, end) byte pairs (SEEK_DATA/SEEK_HOLE)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        extents = []
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end))
            pos = end
        return extents
    finally:
        os.close(fd)


def same_content(a: bytes, b: bytes) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(_CHUNK)
            y = fb.read(_CHUNK)
            if x != y:
                return False
            if not x:
                return True


def _link_groups(tree: dict[bytes, os.stat_result]) -> set[frozenset[bytes]]:
    groups: dict[tuple[int, int], set[bytes]] = {}
    for rel, st in tree.items():
        if not stat.S_ISDIR(st.st_mode):
            groups.setdefault((st.st_dev, st.st_ino), set()).add(rel)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def compare_trees(
    a: str | bytes,
    b: str | bytes,
    *,
    owners: bool = True,
    atime: bool = True,
    holes: bool = True,
    root_meta: bool = True,
    ignore: tuple[bytes, ...] = (),
) -> list[str]:
    """Differences between trees ``a`` and ``b`` (empty when identical).

    ``ignore``: relative paths (and everything under them) left out, e.g.
    ``b"lost+found"`` of an extracted image.
    """
    a, b = os.fsencode(a), os.fsencode(b)
    ta, tb = walk(a, ignore), walk(b, ignore)
    diffs: list[str] = []
    for rel in sorted(ta.keys() - tb.keys()):
        diffs.append(f"{rel!r}: only in {a!r}")
    for rel in sorted(tb.keys() - ta.keys()):
        diffs.append(f"{rel!r}: only in {b!r}")
    seen: set[tuple[int, int]] = set()
    for rel in sorted(ta.keys() & tb.keys()):
        if rel == b"." and not root_meta:
            continue
        key = (ta[rel].st_dev, ta[rel].st_ino)
        if key in seen and not stat.S_ISDIR(ta[rel].st_mode):
            # another name of an inode already compared: the link groups are compared below
            continue
        seen.add(key)
        diffs.extend(
            _compare_one(rel, os.path.join(a, rel), os.path.join(b, rel), ta[rel], tb[rel], owners, atime, holes)
        )
    ga, gb = _link_groups(ta), _link_groups(tb)
    for group in sorted(ga ^ gb, key=sorted):
        side = "source" if group in ga else "copy"
        diffs.append(f"hard-link group {sorted(group)!r} only in {side}")
    return diffs


def _compare_one(
    rel: bytes, pa: bytes, pb: bytes, sa: os.stat_result, sb: os.stat_result, owners: bool, atime: bool, holes: bool
) -> list[str]:
    out: list[str] = []
    name = repr(rel)
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return [f"{name}: type {stat.S_IFMT(sa.st_mode):o} != {stat.S_IFMT(sb.st_mode):o}"]
    if stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
        out.append(f"{name}: mode {stat.S_IMODE(sa.st_mode):o} != {stat.S_IMODE(sb.st_mode):o}")
    if owners and (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid):
        out.append(f"{name}: owner {sa.st_uid}:{sa.st_gid} != {sb.st_uid}:{sb.st_gid}")
    if sa.st_mtime_ns != sb.st_mtime_ns:
        out.append(f"{name}: mtime {sa.st_mtime_ns} != {sb.st_mtime_ns}")
    if atime and not stat.S_ISLNK(sa.st_mode) and sa.st_atime_ns != sb.st_atime_ns:
        out.append(f"{name}: atime {sa.st_atime_ns} != {sb.st_atime_ns}")
    xa, xb = xattrs(pa), xattrs(pb)
    if xa != xb:
        out.append(f"{name}: xattrs {sorted(xa)} != {sorted(xb)} or values differ")
    mode = sa.st_mode
    if stat.S_ISREG(mode):
        if sa.st_size != sb.st_size:
            out.append(f"{name}: size {sa.st_size} != {sb.st_size}")
        elif not same_content(pa, pb):
            out.append(f"{name}: content differs")
        elif holes and data_map(pa, sa.st_size) != data_map(pb, sb.st_size):
            out.append(f"{name}: hole map {data_map(pa, sa.st_size)} != {data_map(pb, sb.st_size)}")
    elif stat.S_ISLNK(mode):
        if os.readlink(pa) != os.readlink(pb):
            out.append(f"{name}: symlink target {os.readlink(pa)!r} != {os.readlink(pb)!r}")
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        if sa.st_rdev != sb.st_rdev:
            out.append(f"{name}: rdev {sa.st_rdev} != {sb.st_rdev}")
    return out
