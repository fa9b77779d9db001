"""Copy a subtree of an NVFS image out to a host directory (tests, ``debugfs.nvfs rdump``).

Everything :mod:`nvfs_tools.populate` puts in comes back out: file contents
with their holes (only mapped blocks are written, then the file is sized, so
unmapped ranges stay holes on hosts that support them), directories,
symlinks, hard links (names that share an image inode become host hard
links), device nodes, FIFOs, sockets, permission bits, xattrs in every
namespace (POSIX ACLs included), and atime/mtime with nanoseconds.  ctime
cannot be set on a host.  Ownership is restored when running as root, or when
``owners=True`` is passed (which then fails loudly if it is not permitted).

Metadata is applied in the order that keeps it: contents and xattrs, then
owner (chown clears set-id bits), then mode, then times; directories get
theirs after their children exist (creating a child changes a directory's
mtime, and a read-only directory mode would block the children).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from nvfs_tools import format as fmt
from nvfs_tools.errors import NotADirectoryError_, NvfsError
from nvfs_tools.populate import _FIELD_INDEX, INODE_STRUCT

_MODE = _FIELD_INDEX["mode"]
_UID = _FIELD_INDEX["uid"]
_GID = _FIELD_INDEX["gid"]
_SIZE = _FIELD_INDEX["size"]
_ATIME, _MTIME = _FIELD_INDEX["atime"], _FIELD_INDEX["mtime"]
_ATIME_NS, _MTIME_NS = _FIELD_INDEX["atime_nsec"], _FIELD_INDEX["mtime_nsec"]
_XATTR = _FIELD_INDEX["xattr_block"]
_RDEV = _FIELD_INDEX["rdev"]
_NS = 1_000_000_000


class ExtractError(NvfsError):
    """A host file could not be created or written during extraction."""


@dataclass
class ExtractStats:
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    specials: int = 0
    hard_links: int = 0
    data_bytes: int = 0


class _Extractor:
    def __init__(self, vol, owners: bool) -> None:
        self.vol = vol
        self.view = vol.dev.view
        self.bs = vol.block_size
        self.geo = vol.geo
        self.owners = owners
        self.done: dict[int, bytes] = {}  # image ino -> first host path (hard links)
        self.stats = ExtractStats()

    def inode(self, ino: int) -> tuple:
        return INODE_STRUCT.unpack_from(self.view, self.geo.inode_offset(ino))

    def run(self, ino: int, dest: bytes) -> None:
        """Copy inode ``ino`` to host path ``dest`` (a whole subtree for a directory)."""
        node = self.inode(ino)
        if not stat.S_ISDIR(node[_MODE]):
            self.make(ino, node, dest)
            return
        # Iterative pre-order creation, post-order metadata.
        os.makedirs(dest, exist_ok=True)
        pending: list[tuple[int, tuple, bytes]] = []
        stack = [(ino, node, dest)]
        while stack:
            dino, dnode, dpath = stack.pop()
            pending.append((dino, dnode, dpath))
            self.stats.directories += 1
            for entry in self.vol.listdir(dino):
                child = os.path.join(dpath, entry.name)
                cnode = self.inode(entry.ino)
                if stat.S_ISDIR(cnode[_MODE]):
                    self.mkdir(child)
                    stack.append((entry.ino, cnode, child))
                else:
                    self.make(entry.ino, cnode, child)
        for dino, dnode, dpath in reversed(pending):
            self.finish(dino, dnode, dpath)

    def mkdir(self, path: bytes) -> None:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path):
                raise ExtractError(f"{os.fsdecode(path)}: exists and is not a directory") from None
        except OSError as exc:
            raise ExtractError(f"{os.fsdecode(path)}: cannot create directory: {exc.strerror}") from None

    def make(self, ino: int, node: tuple, path: bytes) -> None:
        """Create one non-directory (or a hard link to an earlier name of it)."""
        first = self.done.get(ino)
        try:
            if first is not None:
                os.link(first, path, follow_symlinks=False)
                self.stats.hard_links += 1
                return
            mode = node[_MODE]
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFREG:
                self.regular(ino, node, path)
                self.stats.files += 1
            elif kind == stat.S_IFLNK:
                os.symlink(self.vol.readlink(ino), path)
                self.stats.symlinks += 1
            elif kind in (stat.S_IFCHR, stat.S_IFBLK):
                major, minor = fmt.decode_rdev(node[_RDEV])
                os.mknod(path, kind | 0o600, os.makedev(major, minor))
                self.stats.specials += 1
            elif kind in (stat.S_IFIFO, stat.S_IFSOCK):
                os.mknod(path, kind | 0o600)
                self.stats.specials += 1
            else:
                raise ExtractError(f"{os.fsdecode(path)}: inode {ino} has unknown type {kind:o}")
        except OSError as exc:
            raise ExtractError(f"{os.fsdecode(path)}: cannot create: {exc.strerror}") from None
        self.done[ino] = path
        self.finish(ino, node, path)

    def regular(self, ino: int, node: tuple, path: bytes) -> None:
        size = node[_SIZE]
        bs = self.bs
        view = self.view
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            run_f = run_d = -1
            run_n = 0
            for fb, db in self.vol.file_blocks(ino):
                if run_n and fb == run_f + run_n and db == run_d + run_n:
                    run_n += 1
                    continue
                if run_n:
                    self._write_run(fd, view, run_f, run_d, run_n, size, bs)
                run_f, run_d, run_n = fb, db, 1
            if run_n:
                self._write_run(fd, view, run_f, run_d, run_n, size, bs)
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        self.stats.data_bytes += size

    @staticmethod
    def _write_run(fd: int, view, fb: int, db: int, n: int, size: int, bs: int) -> None:
        start = fb * bs
        length = min(n * bs, size - start)
        if length <= 0:
            return
        src = view[db * bs : db * bs + length]
        done = 0
        while done < length:
            done += os.pwrite(fd, src[done:], start + done)

    def finish(self, ino: int, node: tuple, path: bytes) -> None:
        """xattrs, owner, mode and times of one extracted name."""
        mode = node[_MODE]
        is_link = stat.S_ISLNK(mode)
        try:
            if node[_XATTR]:
                for name in self.vol.listxattr(ino):
                    os.setxattr(path, name, self.vol.getxattr(ino, name), follow_symlinks=False)
            if self.owners:
                os.chown(path, node[_UID], node[_GID], follow_symlinks=False)
            if not is_link:
                os.chmod(path, stat.S_IMODE(mode))
            atime = node[_ATIME] * _NS + node[_ATIME_NS]
            mtime = node[_MTIME] * _NS + node[_MTIME_NS]
            os.utime(path, ns=(atime, mtime), follow_symlinks=False)
        except OSError as exc:
            raise ExtractError(f"{os.fsdecode(path)}: cannot set metadata: {exc.strerror}") from None


def extract(vol, image_path: str | bytes, host_dir: str | bytes, *, owners: bool | None = None) -> ExtractStats:
    """Copy the file or subtree at ``image_path`` in ``vol`` to ``host_dir``.

    For a directory, ``host_dir`` becomes the copy (created if missing, merged
    into if it exists); for any other file, ``host_dir`` is the path of the
    copy.  ``owners``: None restores ownership only when running as root,
    True always (errors if not permitted), False never.
    """
    if owners is None:
        owners = os.geteuid() == 0
    ino = vol.lookup(os.fsencode(image_path))
    dest = os.fsencode(host_dir)
    ex = _Extractor(vol, owners)
    if os.path.exists(dest) and not os.path.isdir(dest) and stat.S_ISDIR(ex.inode(ino)[_MODE]):
        raise NotADirectoryError_(f"{os.fsdecode(dest)}: not a directory")
    ex.run(ino, dest)
    return ex.stats
