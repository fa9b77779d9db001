"""Shared pieces of the reliability campaigns: images, in-process fsck, tree snapshots, summaries.

Every campaign prints one summary table (cases, detections, repairs,
survivors, failures) and, for each failure, a line with the case id and the
command that replays exactly that case.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nvfs_tools import format as fmt
from nvfs_tools.volume import Volume

SEED = bytes(range(16))
MKFS_TIME = (1_700_000_000, 0)
TIMES = (1_700_000_100, 5)
#: Snapshots read at most this much of a file (the sample files are far smaller).
MAX_READ = 4 << 20
#: Campaign images: small, so a crash state or a fuzz case costs little more than one fsck.
IMAGE_SIZE = 8 << 20


def scratch_dir(prefix: str) -> str:
    """A private directory in /dev/shm (tmpfs: images cost no disk I/O)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def make_fs(path: str, size: int = IMAGE_SIZE, *, block_size: int = 4096, quota: bool = False) -> str:
    """A fresh image made by mkfs.nvfs itself (in process), reproducible: fixed time, clear UUID, fixed seed."""
    from nvfs_tools import mkfs

    if os.path.exists(path):
        os.unlink(path)
    argv = ["-q", "-b", str(block_size), "-U", "clear", "-E", f"hash_seed={SEED.hex()}"]
    if quota:
        argv += ["-O", "quota"]
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(MKFS_TIME[0])
    try:
        mkfs.main([*argv, path, str(size)])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"mkfs.nvfs {' '.join(argv)} {path} failed with exit {exc.code}") from None
    finally:
        if old is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old
    return path


def content(tag: str, size: int) -> bytes:
    """Deterministic, position-dependent bytes (so a misplaced block is visible)."""
    h = hashlib.sha256(tag.encode()).digest()
    reps = size // len(h) + 1
    raw = (h * reps)[:size]
    return bytes((b + i // 32) & 0xFF for i, b in enumerate(raw))


def populate_sample(vol: Volume) -> dict[str, Any]:
    """One object of every kind fsck knows, in a tree worth damaging; returns handy inode numbers."""
    bs = vol.block_size
    root = fmt.ROOT_INO
    t = TIMES
    inos: dict[str, Any] = {}
    docs = vol.mkdir(root, b"docs", 0o755, times=t)
    inos["dir"] = docs
    inos["small"] = vol.create(docs, b"small.txt", 0o644, times=t, data=content("small", 100))
    # 20 blocks + 1 byte: direct blocks plus a single indirect block
    inos["big"] = vol.create(docs, b"big.bin", 0o644, times=t, data=content("big", 20 * bs + 1))
    sp = vol.create(docs, b"sparse.bin", 0o644, times=t)
    vol.write(sp, 40 * bs, b"tail of a sparse file")
    inos["sparse"] = sp
    vol.link(inos["small"], root, b"hardlink")
    inos["symlink"] = vol.symlink(root, b"sym-short", b"docs/small.txt", times=t)
    inos["longlink"] = vol.symlink(root, b"sym-long", b"/" + b"y" * 299, times=t)
    inos["fifo"] = vol.mknod(root, b"fifo", fmt.S_IFIFO | 0o644, times=t)
    inos["chardev"] = vol.mknod(root, b"chardev", fmt.S_IFCHR | 0o600, fmt.encode_rdev(1, 3), times=t)
    inos["blockdev"] = vol.mknod(root, b"blockdev", fmt.S_IFBLK | 0o600, fmt.encode_rdev(8, 1), times=t)
    inos["socket"] = vol.mknod(root, b"socket", fmt.S_IFSOCK | 0o755, times=t)
    xf = vol.create(root, b"xattr-file", 0o644, times=t, data=b"has attributes")
    vol.setxattr(xf, b"user.test", b"value of the attribute")
    vol.setxattr(xf, b"trusted.other", b"second")
    inos["xattr"] = xf
    many = vol.mkdir(root, b"many", 0o755, times=t)
    inos["many"] = many
    # enough entries to split the first page: a radix node under the root word
    for i in range(160):
        vol.create(many, b"file-%03d" % i, 0o644, times=t, data=content(f"m{i}", 10 + i % 50))
    a = vol.mkdir(vol.mkdir(root, b"nested", times=t), b"a", times=t)
    vol.create(a, b"deep.txt", 0o644, times=t, data=b"deep inside")
    vol.mkdir(root, b"empty-dir", times=t)
    vol.create(root, b"empty-file", 0o644, times=t)
    return inos


# ---------------------------------------------------------------------------------------------------
# Snapshots of the file tree (what a user can see)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    size: int
    times: tuple[int, ...]
    rdev: int
    data: bytes  # file content or symlink target (b"" otherwise)
    xattrs: tuple[tuple[bytes, bytes], ...]

    def without(self, *names: str) -> Node:
        from dataclasses import replace

        blank = {"nlink": 0, "size": 0, "times": (), "data": b"", "ino": 0, "xattrs": ()}
        return replace(self, **{n: blank[n] for n in names})


Tree = dict[bytes, Node]


def snapshot(path: str, *, skip_lost_found: bool = True) -> Tree:
    """Every path below the root (not inside /lost+found) with what a user can observe of it."""
    tree: Tree = {}
    with Volume.open(path) as vol:
        stack = [(b"", fmt.ROOT_INO)]
        seen = 0
        while stack:
            prefix, dino = stack.pop()
            for e in vol.listdir(dino):
                p = prefix + b"/" + e.name
                node = _node(vol, e.ino)
                tree[p] = node
                seen += 1
                if seen > vol.geo.inodes_count * 4:
                    raise RuntimeError("directory walk does not end (loop?)")
                if node.mode & fmt.S_IFMT == fmt.S_IFDIR:
                    if skip_lost_found and p == b"/" + fmt.LOST_FOUND_NAME:
                        continue
                    stack.append((p, e.ino))
    return tree


def _node(vol: Volume, ino: int) -> Node:
    i = vol.read_inode(ino)
    kind = i.mode & fmt.S_IFMT
    data = b""
    if kind == fmt.S_IFREG:
        # a size fuzzed upwards must not make the snapshot read gigabytes of holes
        data = vol.read(ino, 0, min(i.size, MAX_READ))
    elif kind == fmt.S_IFLNK:
        data = vol.readlink(ino)
    xattrs = tuple(sorted((n, vol.getxattr(ino, n)) for n in vol.listxattr(ino)))
    times = (i.atime, i.atime_nsec, i.mtime, i.mtime_nsec, i.ctime, i.ctime_nsec, i.btime, i.btime_nsec)
    size = i.size if kind != fmt.S_IFDIR else 0
    return Node(ino, i.mode, i.uid, i.gid, i.links_count, size, times, i.rdev, data, xattrs)


def tree_diff(a: Tree, b: Tree, limit: int = 4) -> list[str]:
    """Human-readable differences between two snapshots (at most ``limit``)."""
    out = []
    for p in sorted(set(a) | set(b)):
        if a.get(p) != b.get(p):
            if p not in a:
                out.append(f"{p!r} appeared")
            elif p not in b:
                out.append(f"{p!r} vanished")
            else:
                fields = [f for f in a[p].__dataclass_fields__ if getattr(a[p], f) != getattr(b[p], f)]
                out.append(f"{p!r} differs in {', '.join(fields)}")
            if len(out) >= limit:
                break
    return out


# ---------------------------------------------------------------------------------------------------
# fsck, in process
# ---------------------------------------------------------------------------------------------------


@dataclass
class FsckRun:
    code: int  # -1: the checker raised (a traceback is a failure, always)
    output: str
    findings: list[Any] = field(default_factory=list)

    @property
    def crashed(self) -> bool:
        return self.code < 0


def fsck(path: str, mode: str, *, force: bool = False, **options: Any) -> FsckRun:
    """Run the checker in this process; any exception becomes code -1 with its traceback as output."""
    from nvfs_tools.check import Options, check

    out = io.StringIO()
    try:
        report = check(path, Options(mode=mode, force=force, **options), out=out)
    except Exception as exc:  # noqa: BLE001 - reported as a failure of the case
        # the exception itself first: summaries show the last lines of the output
        return FsckRun(-1, out.getvalue() + traceback.format_exc() + f"raised {type(exc).__name__}: {exc}")
    text = out.getvalue() + (f"\nerror: {report.error}" if getattr(report, "error", None) else "")
    return FsckRun(report.exit_code(), text, list(report.findings))


def digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def copy_image(src: str, dst: str) -> None:
    shutil.copyfile(src, dst)


def write_image(path: str, data: bytes | bytearray) -> None:
    with open(path, "wb") as f:
        f.write(data)


def read_image(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------


@dataclass
class Summary:
    """Counts of one campaign and the failures, each with how to replay it."""

    name: str
    cases: int = 0
    detections: int = 0
    repairs: int = 0
    survivors: int = 0  # damage no check could see (allowed only where spec lists it)
    failures: list[tuple[str, str]] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def fail(self, case_id: str, why: str) -> None:
        self.failures.append((case_id, why))

    def table(self, replay: str = "") -> str:
        secs = time.perf_counter() - self.started
        cols = ["cases", "detections", "repairs", "survivors", "failures", *self.extra]
        vals = [self.cases, self.detections, self.repairs, self.survivors, len(self.failures), *self.extra.values()]
        widths = [max(len(c), len(str(v))) for c, v in zip(cols, vals, strict=True)]
        lines = [
            f"== {self.name} ({secs:.1f} s)",
            "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)),
            "  ".join(str(v).rjust(w) for v, w in zip(vals, widths, strict=True)),
        ]
        for case_id, why in self.failures[:50]:
            lines.append(f"FAIL {case_id}: {why}")
            if replay:
                lines.append(f"     replay: {replay.format(case=case_id)}")
        if len(self.failures) > 50:
            lines.append(f"... and {len(self.failures) - 50} more failures")
        return "\n".join(lines)


def first_lines(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines and lines[-1].startswith("raised "):  # a traceback: the exception, then where it came from
        frames = [ln.strip() for ln in lines if ln.strip().startswith("File ")]
        return " | ".join([lines[-1], *frames[-2:]])
    return " | ".join(lines[-n:]) if lines else "(no output)"


def chunks(seq: Iterable[Any], n: int) -> list[list[Any]]:
    seq = list(seq)
    return [seq[i : i + n] for i in range(0, len(seq), n)]
