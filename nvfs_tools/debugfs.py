"""debugfs.nvfs: look at and change every on-media structure of an NVFS image.

The command set follows e2fsprogs' debugfs (names, aliases, argument order),
plus xfs_db-style generic requests driven by the construct schemas of
format.py (``print``, ``wfield``, ``fuzz``).  Reading is done with the raw,
defensive readers of :mod:`nvfs_tools.annotate` so damaged images can be
inspected; file-level changes go through the shared library (Volume) so they
follow the same store ordering as every other tool; structure, bitmap and
inode-field writes are raw on purpose, because that is how damage is made for
tests.

Differences from debugfs, on purpose: the exit status is non-zero when any
request failed; ``link``/``ln`` keeps link counts right (debugfs does not;
``unlink`` and ``kill_file`` stay raw like debugfs); ``write`` with four
arguments is the structure write (``write TYPE ADDR FIELD VALUE``, also named
``wfield``), with two arguments debugfs' ``write HOSTFILE NAME``.
"""

from __future__ import annotations

import os
import posixpath
import random
import shlex
import stat as statmod
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from nvfs_tools import annotate as an
from nvfs_tools import fieldpath as fp
from nvfs_tools import format as fmt
from nvfs_tools.device import Device
from nvfs_tools.errors import NotNvfsError, NvfsError, ReadOnlyError, UsageError

PROG = "debugfs.nvfs"
PROMPT = "debugfs.nvfs:  "
HISTORY_ENV = "DEBUGFS_NVFS_HISTORY"
HISTORY_DEFAULT = "~/.debugfs_nvfs_history"
HISTORY_LENGTH = 1000


class RequestError(NvfsError):
    """A request that cannot be carried out (bad arguments, missing file...)."""

    exit_code = 1


@dataclass
class Command:
    names: tuple[str, ...]
    func: Callable[..., None]
    usage: str
    help: str
    writes: bool
    path_args: bool  # complete paths inside the image for its arguments


COMMANDS: dict[str, Command] = {}
_ORDER: list[Command] = []


def command(*names: str, usage: str = "", writes: bool = False, paths: bool = True) -> Callable:
    """Register a Session method as a request under ``names`` (first = main name)."""

    def wrap(func: Callable[..., None]) -> Callable[..., None]:
        doc = (func.__doc__ or "").strip()
        cmd = Command(names, func, usage, doc, writes, paths)
        _ORDER.append(cmd)
        for n in names:
            COMMANDS[n] = cmd
        return func

    return wrap


def _mode_type(mode: int) -> str:
    return {
        fmt.S_IFREG: "regular",
        fmt.S_IFDIR: "directory",
        fmt.S_IFLNK: "symlink",
        fmt.S_IFCHR: "character special",
        fmt.S_IFBLK: "block special",
        fmt.S_IFIFO: "FIFO",
        fmt.S_IFSOCK: "socket",
    }.get(mode & fmt.S_IFMT, "bad type")


def _ranges(pairs: list[tuple[int, int]]) -> str:
    """debugfs-style ``(0-3):100-103, (4):200`` runs of (file block, device block)."""
    out: list[str] = []
    i = 0
    while i < len(pairs):
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[j][0] + 1 and pairs[j + 1][1] == pairs[j][1] + 1:
            j += 1
        (f0, d0), (f1, d1) = pairs[i], pairs[j]
        out.append(f"({f0}):{d0}" if i == j else f"({f0}-{f1}):{d0}-{d1}")
        i = j + 1
    return ", ".join(out)


def _time(sec: int, nsec: int) -> str:
    try:
        text = time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(sec))
    except (OverflowError, OSError, ValueError):
        text = "(out of range)"
    return f"{sec:#x}:{nsec:08x} -- {text}"


class Session:
    """One open image and the state of a debugfs session (cwd, open library volume)."""

    def __init__(
        self,
        path: str | None,
        *,
        writable: bool = False,
        catastrophic: bool = False,
        backup: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.failures = 0
        self.dev: Any = None
        self._vol: Any = None
        if path is not None:
            self.open(path, writable=writable, catastrophic=catastrophic, backup=backup)

    def open(self, path: str, *, writable: bool = False, catastrophic: bool = False, backup: bool = False) -> None:
        """Open ``path`` (what the command line and the `open` request do)."""
        self.path = path
        self.writable = writable and not catastrophic
        self.catastrophic = catastrophic
        self.backup = backup
        dev = Device(path, writable=self.writable)
        self.dev = dev
        try:
            self._load_super()
        except BaseException:
            self.dev = None
            dev.close()
            raise
        self.cwd = fmt.ROOT_INO
        self.cwd_path = "/"
        self._vol = None

    # -- opening -----------------------------------------------------------

    def _load_super(self) -> None:
        if self.backup:
            try:
                block, bs = an.find_backup(self.dev)
            except ValueError as exc:
                raise NotNvfsError(f"{self.path}: {exc}") from None
            self.sb_addr = block * bs
        else:
            self.sb_addr = 0
        raw = self.dev.read(self.sb_addr, fmt.SB_STATIC_SIZE)
        if raw[:8] != fmt.MAGIC:
            hint = "" if self.backup else " (try -b for the backup superblock)"
            raise NotNvfsError(f"{self.path}: bad magic number in superblock{hint}")
        self.static = fmt.SuperblockStatic.parse(raw)
        if fmt.sb_static_checksum(raw) != self.static.checksum:
            self.warn(f"superblock checksum does not match (stored {self.static.checksum:#x})")
        try:
            self.geo = fmt.geometry_from_static(self.static)
            if self.geo.blocks_count * self.geo.block_size > self.dev.size:
                self.warn("the superblock describes a device larger than the image")
        except (ValueError, ZeroDivisionError) as exc:
            raise NotNvfsError(f"{self.path}: unusable geometry in superblock: {exc}") from None
        self.bs = self.geo.block_size

    def warn(self, message: str) -> None:
        print(f"{PROG}: warning: {message}", file=self.err)

    @property
    def vol(self) -> Any:
        """The shared library's Volume, opened on first use of a file-level request."""
        if self._vol is None:
            if self.catastrophic:
                raise RequestError("file-level requests through the library are off in catastrophic mode")
            try:
                from nvfs_tools.volume import Volume
            except ImportError:
                raise RequestError("the filesystem library (nvfs_tools.volume) is not available") from None
            # Share our device: a second writable open of a block device would hit O_EXCL,
            # and one mapping means raw and library stores can never disagree.
            self.dev.hold_open = True
            self._vol = Volume.from_device(self.dev, use_backup=self.backup)
        return self._vol

    def drop_volume(self) -> None:
        """Forget the library's view after raw writes so it cannot act on stale caches."""
        if self._vol is not None:
            self._vol.close()
            self._vol = None

    def close(self) -> None:
        if self.dev is None:
            return
        try:
            self.drop_volume()
        finally:
            self.dev.hold_open = False
            self.dev.close()
            self.dev = None

    # -- running requests ----------------------------------------------------

    def run_line(self, line: str) -> bool:
        """Run one request line; report errors on one line; True when it succeeded."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            return self._fail("?", f"cannot parse request: {exc}")
        name, args = argv[0], argv[1:]
        cmd = COMMANDS.get(name)
        if cmd is None:
            return self._fail(name, "command not found (try `help`)")
        try:
            if self.dev is None and cmd.names[0] not in _NO_FS_NEEDED:
                raise RequestError("no filesystem is open (use `open [-w] DEVICE`)")
            if cmd.writes and not self.writable:
                raise ReadOnlyError("filesystem opened read-only (use -w)")
            cmd.func(self, args)
            self.out.flush()
            return True
        except BrokenPipeError:
            raise  # the reader went away (`| head`): end quietly, as cli.run does
        except (NvfsError, fp.FieldPathError, ValueError, OSError, KeyError, IndexError) as exc:
            return self._fail(name, str(exc) or type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - a bug must not end the session
            if os.environ.get("NVFS_DEBUG") == "1":
                raise
            return self._fail(name, f"internal error: {type(exc).__name__}: {exc}")

    def _fail(self, name: str, message: str) -> bool:
        self.failures += 1
        try:
            self.out.flush()
        except ValueError:
            pass
        print(f"{name}: {' '.join(message.split())}", file=self.err)
        return False

    def p(self, text: str = "") -> None:
        print(text, file=self.out)

    # -- names and inodes ------------------------------------------------------

    def read_inode(self, ino: int) -> Any:
        return an.read_inode(self.dev, self.geo, ino)

    def entries(self, ino: int) -> list[an.RawEntry]:
        inode = self.read_inode(ino)
        if inode.mode & fmt.S_IFMT != fmt.S_IFDIR:
            raise RequestError(f"inode {ino} is not a directory")
        return list(an.dir_entries(self.dev, self.geo, inode))

    def child(self, dir_ino: int, name: bytes) -> int | None:
        inode = self.read_inode(dir_ino)
        if inode.mode & fmt.S_IFMT != fmt.S_IFDIR:
            raise RequestError(f"inode {dir_ino} is not a directory")
        e = an.find_entry(self.dev, self.geo, inode, name, self.static.hash_seed)
        return e.ino if e is not None else None

    def lookup(self, path: str, *, start: int | None = None) -> int:
        """Inode of ``path`` (``<INO>`` accepted), relative to the cwd unless absolute."""
        if path.startswith("<") and path.endswith(">") and path[1:-1].isdigit():
            ino = int(path[1:-1])
            if not 1 <= ino <= self.geo.inodes_count:
                raise RequestError(f"inode {ino} out of range 1..{self.geo.inodes_count}")
            return ino
        ino = fmt.ROOT_INO if path.startswith("/") else (self.cwd if start is None else start)
        for comp in path.split("/"):
            if comp in ("", "."):
                continue
            if comp == "..":
                parent = self.read_inode(ino).parent
                ino = parent if 1 <= parent <= self.geo.inodes_count else ino
                continue
            found = self.child(ino, os.fsencode(comp))
            if found is None:
                raise RequestError(f"{path}: file not found")
            ino = found
        return ino

    def split_parent(self, path: str) -> tuple[int, bytes]:
        """(parent directory inode, last name) for creating ``path``."""
        path = path.rstrip("/") or "/"
        head, name = posixpath.split(path)
        if not name or name in (".", ".."):
            raise RequestError(f"{path}: invalid name")
        parent = self.lookup(head) if head else self.cwd
        return parent, os.fsencode(name)

    def addr_ctx(self) -> fp.AddressContext:
        return fp.AddressContext(
            self.geo,
            self.cwd,
            lookup=self.lookup,
            read_inode=self.read_inode,
            file_map=self._file_addr,
            sb_addr=self.sb_addr,
        )

    def _file_addr(self, ino: int, offset: int) -> int | None:
        block = an.file_block_lookup(self.dev, self.geo, self.read_inode(ino), offset // self.bs)
        return block * self.bs + offset % self.bs if block else None

    def need(self, args: list[str], lo: int, hi: int | None, usage: str) -> None:
        if len(args) < lo or (hi is not None and len(args) > hi):
            raise UsageError(f"usage: {usage}")

    def raw_write(self, addr: int, data: bytes) -> None:
        self.drop_volume()
        self.dev.write(addr, data)
        self.dev.barrier()

    def full_path(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self.cwd_path, path))

    # ======================================================================
    # Session requests
    # ======================================================================

    @command("help", "?", "list_requests", "lr", usage="help [REQUEST]", paths=False)
    def do_help(self, args: list[str]) -> None:
        """Show the requests, or one request's usage and description."""
        if args:
            cmd = COMMANDS.get(args[0])
            if cmd is None:
                raise RequestError(f"no request named {args[0]!r}")
            self.p(f"{', '.join(cmd.names)}")
            self.p(f"  usage: {cmd.usage}")
            for line in cmd.help.splitlines():
                self.p(f"  {line.strip()}")
            if cmd.writes:
                self.p("  (needs -w)")
            return
        self.p("Available debugfs.nvfs requests:\n")
        for cmd in _ORDER:
            first = cmd.help.splitlines()[0] if cmd.help else ""
            names = ", ".join(cmd.names)
            self.p(f"{names:<34}{first}" if len(names) < 34 else f"{names}\n{'':<34}{first}")
        self.p("\n`help REQUEST` shows its usage.  Structure types for print/wfield/fuzz:")
        for t in fp.TYPES.values():
            self.p(f"  {t.name:<20} {', '.join(t.aliases):<16} {t.doc}; ADDR: {t.addr_doc}")
        self.p("Every type also takes ADDR @BYTE (device byte address) or BLOCK:OFFSET.")

    @command("open_filesys", "open", usage="open [-w] [-c] [-b] DEVICE", paths=False)
    def do_open(self, args: list[str]) -> None:
        """Open a filesystem (when none is open), with the command line's -w, -c and -b meanings."""
        flags = {a for a in args if a in ("-w", "-c", "-b")}
        rest = [a for a in args if a not in flags]
        self.need(rest, 1, 1, COMMANDS["open"].usage)
        if self.dev is not None:
            raise RequestError(f"{self.path} is already open; close it first")
        self.open(rest[0], writable="-w" in flags, catastrophic="-c" in flags, backup="-b" in flags)

    @command("close_filesys", "close", usage="close", paths=False)
    def do_close(self, args: list[str]) -> None:
        """Close the open filesystem (flushing everything written)."""
        self.close()

    @command("quit", "q", usage="quit", paths=False)
    def do_quit(self, args: list[str]) -> None:
        """Leave debugfs.nvfs."""
        raise _Quit()

    # ======================================================================
    # Superblock, groups, generic structures
    # ======================================================================

    @command("stats", "show_super_stats", "stat_super", usage="stats [-h]", paths=False)
    def do_stats(self, args: list[str]) -> None:
        """Show the superblock (static and dynamic) and, unless -h, every group's counters."""
        self.p(f"Filesystem at {self.path}" + (" (backup superblock)" if self.backup else ""))
        self._print_struct("superblock_static", self.sb_addr, [])
        raw = self.dev.read(self.sb_addr, fmt.SB_STATIC_SIZE)
        self.p(f"{'checksum status':<24} = {'ok' if fmt.sb_static_checksum(raw) == self.static.checksum else 'BAD'}")
        self._print_struct("superblock_dynamic", fmt.SB_DYNAMIC_OFFSET, [])
        if self.catastrophic:
            self.p("(catastrophic mode: counters are shown but not trusted)")
        if "-h" in args:
            return
        geo = self.geo
        for g in range(geo.group_count):
            c = fmt.GroupCounters.parse(self.dev.read(geo.counters_block(g) * self.bs, fmt.GroupCounters.sizeof()))
            self.p(
                f"Group {g}: blocks {geo.group_start(g)}-{geo.group_end(g) - 1}, block bitmap at "
                f"{geo.block_bitmap_block(g)}, counters at {geo.counters_block(g)}, inode bitmap at "
                f"{geo.inode_bitmap_block(g)}, inode table at {geo.inode_table_block(g)}"
            )
            self.p(f"  {c.free_blocks} free blocks, {c.free_inodes} free inodes, {c.used_dirs} directories")

    def _print_struct(self, type_name: str, addr: int, paths: list[str]) -> None:
        fields = fp.read_fields(self.dev, self.geo, type_name, addr, paths or None)
        runs = fp.collapse_runs(fields) if not paths else [(f, None, raw) for f, raw in fields]
        for first, last, raw in runs:
            label, value = fp.format_run(first, last, raw)
            self.p(f"{label:<24} = {value}")

    def _type_addr(self, args: list[str]) -> tuple[str, int, list[str]]:
        """TYPE [ADDR] rest...: ADDR is optional only where the type has a default."""
        if not args:
            raise UsageError("a structure type is needed (see `help`)")
        tname = fp.get_type(args[0]).name
        rest = args[1:]
        has_default = tname in (
            "superblock_static",
            "superblock_dynamic",
            "group_counters",
            "inode",
        ) or tname.startswith("journal_slot")
        names = set(fp.field_names(tname, self.bs))
        first = rest[0] if rest else None
        take = first is not None and (
            fp.looks_like_address(rest) or not has_default or (first.split("[")[0].split(".")[0] not in names)
        )
        if not take:
            addr, used = fp.address_of(tname, [], self.addr_ctx())
        else:
            addr, used = fp.address_of(tname, rest, self.addr_ctx())
        return tname, addr, rest[used:]

    @command("print", "p", usage="print TYPE [ADDR] [FIELD.PATH[i]...]")
    def do_print(self, args: list[str]) -> None:
        """Show a structure field by field (xfs_db style paths: block[3], entries[2].addr, block[0-4]).

        Without FIELD, every field is shown (runs of equal array elements collapsed);
        directory and xattr entries also show the name (and value) that follow them.
        """
        tname, addr, fields = self._type_addr(args)
        self._print_struct(tname, addr, fields)
        if not fields and tname in ("dir_entry_header", "xattr_entry_header"):
            self._print_entry_tail(tname, addr)

    def _print_entry_tail(self, tname: str, addr: int) -> None:
        """The variable part after an entry header, bounded by its block."""
        end = (addr // self.bs + 1) * self.bs
        if tname == "dir_entry_header":
            h = fmt.DirEntryHeader.parse(self.dev.read(addr, fmt.DIR_ENTRY_HEADER_SIZE))
            start = addr + fmt.DIR_ENTRY_HEADER_SIZE
            name = self.dev.read(start, max(0, min(h.name_len, end - start)))
            self.p(f"{'(name)':<24} = {name!r}")
            return
        h = fmt.XattrEntryHeader.parse(self.dev.read(addr, fmt.XATTR_ENTRY_HEADER_SIZE))
        start = addr + fmt.XATTR_ENTRY_HEADER_SIZE
        name = self.dev.read(start, max(0, min(h.name_len, end - start)))
        value = self.dev.read(start + len(name), max(0, min(h.value_len, end - start - len(name))))
        prefix = fmt.XATTR_PREFIXES.get(h.name_index, b"?")
        self.p(f"{'(name)':<24} = {prefix + name!r}")
        self.p(f"{'(value)':<24} = {_show_value(value)}")

    @command(
        "write",
        usage="write HOSTFILE NAME  |  write [-c] TYPE ADDR FIELD.PATH VALUE",
        writes=True,
    )
    def do_write(self, args: list[str]) -> None:
        """Two arguments: debugfs' file copy into the image (= write_file).  More: a structure write (= wfield).

        debugfs' `write HOSTFILE NAME` keeps its meaning; the xfs_db-style field write
        is told apart by its argument count and is also available as `wfield`.
        """
        if len(args) == 2:
            return self.do_write_file(args)
        return self.do_wfield(args)

    @command("wfield", "write_field", usage="wfield [-c] TYPE ADDR FIELD.PATH VALUE", writes=True)
    def do_wfield(self, args: list[str]) -> None:
        """Store VALUE into one field.  RAW ON PURPOSE: no journal, no checks, no counters.

        The static superblock, xattr block and journal slot checksums are recomputed
        unless -c is given (leaving them stale).  VALUE: integer (0x.. accepted),
        0xHEX or "string" for byte fields, a UUID for uuid.
        """
        nofix = "-c" in args
        args = [a for a in args if a != "-c"]
        tname, addr, rest = self._type_addr(args)
        if len(rest) != 2:
            raise UsageError("usage: wfield [-c] TYPE ADDR FIELD.PATH VALUE")
        self.drop_volume()
        field, _old, new = fp.set_field(self.dev, self.geo, tname, addr, rest[0], rest[1], fix_checksums=not nofix)
        self.p(f"{field.path} = {fp.format_value(field, new)}")
        self._reload_static()

    @command("fuzz", usage="fuzz [-c] [-s SEED] TYPE ADDR FIELD.PATH VERB [AMOUNT]", writes=True)
    def do_fuzz(self, args: list[str]) -> None:
        """Damage one field: VERB is zeroes, ones, firstbit, middlebit, lastbit, add, sub or random.

        Raw on purpose (for building test corpora).  firstbit is the most significant
        bit, lastbit the least; add/sub use AMOUNT (default 1); random uses SEED.
        Checksums covering the field are recomputed unless -c is given.
        """
        nofix, seed, rest = False, None, []
        it = iter(args)
        for a in it:
            if a == "-c":
                nofix = True
            elif a == "-s":
                seed = int(next(it), 0)
            else:
                rest.append(a)
        amount = 1
        if rest and rest[-1] not in fp.FUZZ_VERBS and len(rest) >= 2 and rest[-2] in ("add", "sub"):
            amount = int(rest.pop(), 0)
        if not rest or rest[-1] not in fp.FUZZ_VERBS:
            raise UsageError(f"usage: {COMMANDS['fuzz'].usage}; verbs: {', '.join(fp.FUZZ_VERBS)}")
        verb = rest.pop()
        tname, addr, fields = self._type_addr(rest)
        if len(fields) != 1:
            raise UsageError(f"usage: {COMMANDS['fuzz'].usage}")
        self.drop_volume()
        rng = random.Random(seed)
        field, old, new = fp.fuzz_field(
            self.dev, self.geo, tname, addr, fields[0], verb, rng=rng, amount=amount, fix_checksums=not nofix
        )
        self.p(f"{field.path}: {fp.format_value(field, old)} -> {fp.format_value(field, new)}")
        self._reload_static()

    def _reload_static(self) -> None:
        raw = self.dev.read(self.sb_addr, fmt.SB_STATIC_SIZE)
        if raw[:8] == fmt.MAGIC:
            self.static = fmt.SuperblockStatic.parse(raw)

    @command("set_super_value", "ssv", usage="ssv [-a] [-c] FIELD VALUE  (ssv -l lists fields)", writes=True)
    def do_ssv(self, args: list[str]) -> None:
        """Set a superblock field (static, or dynamic: state, free_blocks, ...).  RAW ON PURPOSE.

        The static checksum is recomputed unless -c; -a writes every copy of the static
        part (block 0, each group's first block, the backup) instead of block 0 only.
        FIELD may be prefixed static. or dynamic. when ambiguous.
        """
        if args == ["-l"]:
            for t in ("superblock_static", "superblock_dynamic"):
                self.p(f"{t}: {' '.join(fp.field_names(t, self.bs))}")
            return
        flags = {a for a in args if a in ("-a", "-c")}
        rest = [a for a in args if a not in flags]
        self.need(rest, 2, 2, COMMANDS["ssv"].usage)
        name, value = rest
        tname = None
        if name.startswith(("static.", "dynamic.")):
            part, name = name.split(".", 1)
            tname = "superblock_" + part
        else:
            for t in ("superblock_static", "superblock_dynamic"):
                try:
                    fp.resolve_one(t, name, self.bs)
                    tname = t
                    break
                except fp.FieldPathError:
                    continue
        if tname is None:
            raise RequestError(f"invalid superblock field {name!r} (ssv -l lists them)")
        if tname == "superblock_static":
            addrs = [self.sb_addr]
            if "-a" in flags:
                addrs = [0] + [self.geo.group_start(g) * self.bs for g in range(1, self.geo.group_count)]
                addrs.append(self.geo.backup_block * self.bs)
        else:
            addrs = [fmt.SB_DYNAMIC_OFFSET]
        self.drop_volume()
        for addr in addrs:
            field, _old, new = fp.set_field(
                self.dev, self.geo, tname, addr, name, value, fix_checksums="-c" not in flags
            )
        self.p(f"{field.path} = {fp.format_value(field, new)}")
        self._reload_static()

    @command("set_inode_field", "sif", usage="sif INODE FIELD.PATH VALUE", writes=True)
    def do_sif(self, args: list[str]) -> None:
        """Set an inode field (e.g. `sif <12> block[3] 1234`).  RAW ON PURPOSE: no journal, no counters."""
        self.need(args, 3, 3, COMMANDS["sif"].usage)
        ino = fp.parse_inode(self.addr_ctx(), args[0])
        self.drop_volume()
        field, _old, new = fp.set_field(self.dev, self.geo, "inode", self.geo.inode_offset(ino), args[1], args[2])
        self.p(f"{field.path} = {fp.format_value(field, new)}")

    @command("set_group", "set_bg", usage="set_bg GROUP FIELD VALUE", writes=True, paths=False)
    def do_set_bg(self, args: list[str]) -> None:
        """Set a group counter field (free_blocks, free_inodes, used_dirs, ...).  RAW ON PURPOSE."""
        self.need(args, 3, 3, COMMANDS["set_bg"].usage)
        addr, _ = fp.address_of("group_counters", [args[0]], self.addr_ctx())
        self.drop_volume()
        field, _old, new = fp.set_field(self.dev, self.geo, "group_counters", addr, args[1], args[2])
        self.p(f"{field.path} = {fp.format_value(field, new)}")

    @command("structures", "lsstruct", usage="structures [TYPE...]", paths=False)
    def do_structures(self, args: list[str]) -> None:
        """List every structure instance on the image as `TYPE @ADDR label` (for print, wfield, fuzz).

        Superblocks, group counters, journal slots, inodes in use and what they own
        (indirect blocks, radix nodes, directory pages and entries, xattr blocks and
        entries, quota records).  TYPE limits the list.
        """
        wanted = {fp.get_type(a).name for a in args}
        for inst in an.structures(self.dev, self.geo):
            if not wanted or inst.type_name in wanted:
                self.p(f"{inst.type_name:<20} @{inst.addr:<12} {inst.label}")

    @command("block_dump", "bd", usage="block_dump [-a] [-t TYPE] [-x] BLOCK", paths=False)
    def do_block_dump(self, args: list[str]) -> None:
        """Hex dump of a block; -a annotates it with the fields of the structure it holds.

        -t TYPE forces the structure (e.g. indirect, radix_node, dir_page, xattr);
        -x prints the hex dump after the annotation.
        """
        annotate, hexd, force, rest = False, False, None, []
        it = iter(args)
        for a in it:
            if a == "-a":
                annotate = True
            elif a == "-x":
                hexd = True
            elif a == "-t":
                force = next(it, None)
                annotate = True
            else:
                rest.append(a)
        self.need(rest, 1, 1, COMMANDS["bd"].usage)
        block = self.block_arg(rest[0])
        if annotate and force is None and an.describe_block(self.dev, self.geo, block)[1] is None:
            force = self._owner_type(block)
        if annotate:
            for line in an.annotate_block(self.dev, self.geo, block, force):
                self.p(line)
            if not hexd:
                return
        for line in an.hexdump(self.dev.read(block * self.bs, self.bs)):
            self.p(line)

    def _owner_type(self, block: int) -> str | None:
        """Structure type of an unlabelled data block, from the inode that owns it (icheck-style scan)."""
        if self.geo.inodes_count > 1 << 20:
            return None
        for ino, inode in self._inodes_in_use():
            for kind, b in an.inode_blocks(self.dev, self.geo, inode):
                if b == block:
                    self.p(f"(owned by inode {ino} as {kind})")
                    if kind.endswith("IND"):
                        return "indirect"
                    if kind == "DIR":
                        return "radix_node"
                    return None
        return None

    def block_arg(self, text: str) -> int:
        try:
            block = int(text, 0)
        except ValueError:
            raise RequestError(f"bad block number {text!r}") from None
        if not 0 <= block < self.geo.blocks_count:
            raise RequestError(f"block {block} out of range 0..{self.geo.blocks_count - 1}")
        return block

    # ======================================================================
    # Bitmaps
    # ======================================================================

    def _no_bitmaps(self) -> None:
        if self.catastrophic:
            raise RequestError("bitmaps are not used in catastrophic mode")

    def _bit_addr(self, kind: str, n: int) -> tuple[int, int]:
        geo = self.geo
        if kind == "block":
            g, i = divmod(n, geo.blocks_per_group)
            base = geo.block_bitmap_block(g)
        else:
            g, i = divmod(n - 1, geo.inodes_per_group)
            base = geo.inode_bitmap_block(g)
        return base * self.bs + i // 8, 1 << (i % 8)

    def test_bit(self, kind: str, n: int) -> bool:
        addr, mask = self._bit_addr(kind, n)
        return bool(self.dev.read(addr, 1)[0] & mask)

    def _set_bit(self, kind: str, n: int, value: bool) -> None:
        addr, mask = self._bit_addr(kind, n)
        byte = self.dev.read(addr, 1)[0]
        self.raw_write(addr, bytes([byte | mask if value else byte & ~mask]))

    def _bit_request(self, kind: str, args: list[str], action: str) -> None:
        self._no_bitmaps()
        usage = f"{action}{'b' if kind == 'block' else 'i'} {kind.upper()} [COUNT]"
        self.need(args, 1, 2, usage)
        if kind == "block":
            first = self.block_arg(args[0])
        else:
            first = fp.parse_inode(self.addr_ctx(), args[0])
        count = int(args[1], 0) if len(args) > 1 else 1
        limit = self.geo.blocks_count if kind == "block" else self.geo.inodes_count + 1
        if count < 1 or first + count > limit:
            raise RequestError(f"{kind} range {first}+{count} goes past the end")
        name = "Block" if kind == "block" else "Inode"
        for n in range(first, first + count):
            used = self.test_bit(kind, n)
            if action == "test":
                self.p(f"{name} {n} {'marked in use' if used else 'not in use'}")
            elif action == "set":
                if used:
                    self.warn(f"{kind} {n} already marked in use")
                self._set_bit(kind, n, True)
            else:
                if not used:
                    self.warn(f"{kind} {n} already clear")
                self._set_bit(kind, n, False)

    @command("testb", usage="testb BLOCK [COUNT]", paths=False)
    def do_testb(self, args: list[str]) -> None:
        """Tell whether blocks are marked in use in the block bitmap."""
        self._bit_request("block", args, "test")

    @command("setb", usage="setb BLOCK [COUNT]", writes=True, paths=False)
    def do_setb(self, args: list[str]) -> None:
        """Mark blocks in use in the bitmap.  RAW ON PURPOSE: counters are not changed."""
        self._bit_request("block", args, "set")

    @command("freeb", usage="freeb BLOCK [COUNT]", writes=True, paths=False)
    def do_freeb(self, args: list[str]) -> None:
        """Mark blocks free in the bitmap.  RAW ON PURPOSE: counters are not changed."""
        self._bit_request("block", args, "free")

    @command("testi", usage="testi INODE", paths=True)
    def do_testi(self, args: list[str]) -> None:
        """Tell whether inodes are marked in use in the inode bitmap."""
        self._bit_request("inode", args, "test")

    @command("seti", usage="seti INODE [COUNT]", writes=True)
    def do_seti(self, args: list[str]) -> None:
        """Mark inodes in use in the inode bitmap.  RAW ON PURPOSE: counters are not changed."""
        self._bit_request("inode", args, "set")

    @command("freei", usage="freei INODE [COUNT]", writes=True)
    def do_freei(self, args: list[str]) -> None:
        """Mark inodes free in the inode bitmap.  RAW ON PURPOSE: counters are not changed."""
        self._bit_request("inode", args, "free")

    @command("ffb", "find_free_block", usage="ffb [COUNT [GOAL]]", paths=False)
    def do_ffb(self, args: list[str]) -> None:
        """Find free blocks (from the bitmaps), starting at GOAL."""
        self._no_bitmaps()
        self.need(args, 0, 2, COMMANDS["ffb"].usage)
        count = int(args[0], 0) if args else 1
        goal = int(args[1], 0) if len(args) > 1 else 0
        found: list[int] = []
        for g in range(self.geo.group_count):
            bitmap = self.dev.read(self.geo.block_bitmap_block(g) * self.bs, self.bs)
            start = self.geo.group_start(g)
            for i in range(self.geo.group_end(g) - start):
                b = start + i
                if b >= goal and not bitmap[i // 8] & (1 << (i % 8)) and not self.geo.is_metadata_block(b):
                    found.append(b)
                    if len(found) == count:
                        break
            if len(found) == count:
                break
        if not found:
            raise RequestError("no free blocks found")
        self.p("Free blocks found: " + " ".join(map(str, found)))

    @command("ffi", "find_free_inode", usage="ffi [DIR [MODE]]", paths=True)
    def do_ffi(self, args: list[str]) -> None:
        """Find a free inode (from the bitmaps), preferring DIR's group."""
        self._no_bitmaps()
        self.need(args, 0, 2, COMMANDS["ffi"].usage)
        goal = 0
        if args and args[0] != "0":
            goal = self.geo.group_of_inode(fp.parse_inode(self.addr_ctx(), args[0]))
        ipg = self.geo.inodes_per_group
        for k in range(self.geo.group_count):
            g = (goal + k) % self.geo.group_count
            bitmap = self.dev.read(self.geo.inode_bitmap_block(g) * self.bs, (ipg + 7) // 8)
            for i in range(ipg):
                ino = g * ipg + i + 1
                if ino >= fmt.FIRST_INO and not bitmap[i // 8] & (1 << (i % 8)):
                    self.p(f"Free inode found: {ino}")
                    return
        raise RequestError("no free inodes found")

    @command("imap", usage="imap INODE")
    def do_imap(self, args: list[str]) -> None:
        """Show where an inode lives on the device."""
        self.need(args, 1, 1, COMMANDS["imap"].usage)
        ino = fp.parse_inode(self.addr_ctx(), args[0])
        off = self.geo.inode_offset(ino)
        self.p(f"Inode {ino} is part of group {self.geo.group_of_inode(ino)}")
        self.p(f"\tlocated at block {off // self.bs}, offset {off % self.bs:#06x}")

    # ======================================================================
    # Inodes and blocks
    # ======================================================================

    @command("stat", "show_inode_info", usage="stat FILE")
    def do_stat(self, args: list[str]) -> None:
        """Show an inode: type, mode, owners, size, times and the blocks it owns."""
        self.need(args, 1, 1, COMMANDS["stat"].usage)
        ino = fp.parse_inode(self.addr_ctx(), args[0])
        i = self.read_inode(ino)
        ftype = i.mode & fmt.S_IFMT
        self.p(f"Inode: {ino}   Type: {_mode_type(i.mode)}    Mode:  {i.mode & 0o7777:04o}   Flags: {i.flags:#x}")
        self.p(f"Generation: {i.generation}    Parent: {i.parent}    Next orphan: {i.next_orphan}")
        self.p(f"User: {i.uid:>5}   Group: {i.gid:>5}   Size: {i.size}")
        self.p(f"Links: {i.links_count}   Blockcount: {i.blocks}   Xattr block: {i.xattr_block}")
        for name in ("ctime", "atime", "mtime", "btime"):
            self.p(f" {name}: {_time(i[name], i[name + '_nsec'])}")
        if ftype in (fmt.S_IFCHR, fmt.S_IFBLK):
            major, minor = fmt.decode_rdev(i.rdev)
            self.p(f"Device major/minor number: {major:02}:{minor:02} (rdev {i.rdev:#x})")
        if ftype == fmt.S_IFLNK and i.flags & fmt.INODE_FLAG_INLINE:
            target = b"".join(v.to_bytes(8, "little") for v in i.block)[: i.size]
            self.p(f'Fast link dest: "{target.decode("utf-8", "backslashreplace")}"')
            return
        if ftype == fmt.S_IFDIR:
            self.p(f"Directory bank: {i.dir_bank}   roots: {i.block[0]:#x} {i.block[1]:#x}")
            blocks, bad = an.dir_blocks(self.dev, self.geo, i)
            self.p("DIRECTORY BLOCKS:")
            listing = " ".join(map(str, blocks)) if blocks else "(none)"
            self.p(listing + (f", (XATTR):{i.xattr_block}" if i.xattr_block else ""))
            for b in bad:
                self.p(f"  problem: {b}")
            self.p(f"TOTAL: {len(blocks) + (1 if i.xattr_block else 0)}")
            return
        bm = an.file_block_map(self.dev, self.geo, i)
        self.p("BLOCKS:")
        parts = [_ranges(bm.data)] if bm.data else []
        parts += [f"({kind}):{b}" for kind, b in bm.meta]
        if i.xattr_block:
            parts.append(f"(XATTR):{i.xattr_block}")
        self.p(", ".join(parts) if parts else "(none)")
        for b in bm.bad:
            self.p(f"  problem: {b}")
        self.p(f"TOTAL: {len(bm.data) + len(bm.meta) + (1 if i.xattr_block else 0)}")

    @command("blocks", usage="blocks FILE")
    def do_blocks(self, args: list[str]) -> None:
        """List the data blocks of a file (directories: pages and radix nodes)."""
        self.need(args, 1, 1, COMMANDS["blocks"].usage)
        i = self.read_inode(fp.parse_inode(self.addr_ctx(), args[0]))
        if i.mode & fmt.S_IFMT == fmt.S_IFDIR:
            blocks = an.dir_blocks(self.dev, self.geo, i)[0]
        else:
            blocks = [b for _f, b in an.file_block_map(self.dev, self.geo, i).data]
        self.p(" ".join(map(str, blocks)))

    @command("bmap", usage="bmap FILE FILE_BLOCK")
    def do_bmap(self, args: list[str]) -> None:
        """Map a file block number to a device block (0: hole)."""
        self.need(args, 2, 2, COMMANDS["bmap"].usage)
        i = self.read_inode(fp.parse_inode(self.addr_ctx(), args[0]))
        self.p(str(an.file_block_lookup(self.dev, self.geo, i, int(args[1], 0))))

    def _inodes_in_use(self):
        for ino in range(1, self.geo.inodes_count + 1):
            raw = self.dev.read(self.geo.inode_offset(ino), 2)
            if raw != b"\0\0":
                yield ino, self.read_inode(ino)

    @command("icheck", usage="icheck BLOCK...", paths=False)
    def do_icheck(self, args: list[str]) -> None:
        """Find the inode that owns each block (data, indirect, directory, xattr)."""
        self.need(args, 1, None, COMMANDS["icheck"].usage)
        wanted = {self.block_arg(a): None for a in args}
        for ino, inode in self._inodes_in_use():
            for _kind, b in an.inode_blocks(self.dev, self.geo, inode):
                if b in wanted and wanted[b] is None:
                    wanted[b] = ino
        self.p("Block\tInode number")
        for b, ino in wanted.items():
            if ino is not None:
                self.p(f"{b}\t{ino}")
            elif self.geo.is_metadata_block(b):
                self.p(f"{b}\t<filesystem metadata: {an.describe_block(self.dev, self.geo, b)[0]}>")
            else:
                self.p(f"{b}\t<block not found>")

    @command("ncheck", usage="ncheck [-c] INODE...", paths=False)
    def do_ncheck(self, args: list[str]) -> None:
        """Find the path names of inodes (-c: check the entry's file type)."""
        check = "-c" in args
        nums = [int(a, 0) for a in args if a != "-c"]
        if not nums:
            raise UsageError(f"usage: {COMMANDS['ncheck'].usage}")
        wanted = set(nums)
        found: list[tuple[int, str, str]] = []
        seen: set[int] = set()
        stack = [(fmt.ROOT_INO, "")]
        while stack:
            dino, prefix = stack.pop()
            if dino in seen:
                continue
            seen.add(dino)
            try:
                ents = self.entries(dino)
            except (NvfsError, ValueError):
                continue
            for e in sorted(ents, key=lambda e: e.name):
                path = f"{prefix}/{e.name.decode('utf-8', 'backslashreplace')}"
                if e.ino in wanted:
                    note = ""
                    if check and 1 <= e.ino <= self.geo.inodes_count:
                        mode = self.read_inode(e.ino).mode
                        if fmt.MODE_TO_DT.get(mode & fmt.S_IFMT) != e.file_type:
                            note = "  <--- BAD FILETYPE"
                    found.append((e.ino, path, note))
                if e.file_type == fmt.DT_DIR and 1 <= e.ino <= self.geo.inodes_count:
                    stack.append((e.ino, path))
        self.p("Inode\tPathname")
        if fmt.ROOT_INO in wanted:
            found.append((fmt.ROOT_INO, "/", ""))
        for ino, path, note in sorted(found):
            self.p(f"{ino}\t{path}{note}")

    # ======================================================================
    # Directories, journal, hash
    # ======================================================================

    @command("dx_hash", "hash", usage="dx_hash [-s SEED_HEX] NAME", paths=False)
    def do_dx_hash(self, args: list[str]) -> None:
        """Compute a name's directory hash and its slot at each radix level."""
        from nvfs_tools import namehash

        seed = self.static.hash_seed
        rest = list(args)
        if len(rest) >= 2 and rest[0] == "-s":
            seed = bytes.fromhex(rest[1])
            rest = rest[2:]
            if len(seed) != 16:
                raise RequestError("the seed is 16 bytes (32 hex digits)")
        self.need(rest, 1, 1, COMMANDS["dx_hash"].usage)
        name = os.fsencode(rest[0])
        h = namehash.name_hash(seed, name)
        bits = fmt.radix_bits(self.bs)
        slots = []
        for level in range(3):
            shift = 64 - (level + 1) * bits
            slots.append(str((h >> shift) & ((1 << bits) - 1)))
        self.p(f'Hash of "{rest[0]}" is {h:#018x} (slots at levels 0,1,2: {", ".join(slots)})')

    @command("htree_dump", "htree", "dx_dump", usage="htree [-b BANK] [-n] DIR")
    def do_htree(self, args: list[str]) -> None:
        """Dump a directory's radix tree: nodes (slot runs) and pages (header and records).

        Shows the live bank unless -b picks one; -n omits the records.
        """
        from nvfs_tools import namehash

        bank, names, rest = None, True, []
        it = iter(args)
        for a in it:
            if a == "-b":
                bank = int(next(it, "0"))
            elif a == "-n":
                names = False
            else:
                rest.append(a)
        self.need(rest, 0, 1, COMMANDS["htree"].usage)
        ino = fp.parse_inode(self.addr_ctx(), rest[0]) if rest else self.cwd
        i = self.read_inode(ino)
        if i.mode & fmt.S_IFMT != fmt.S_IFDIR:
            raise RequestError(f"inode {ino} is not a directory")
        live = i.dir_bank
        bank = live if bank is None else bank
        if bank not in (0, 1):
            raise RequestError(f"bank {bank} is not 0 or 1 (dir_bank = {live})")
        root = i.block[bank]
        self.p(f"Directory inode {ino}, bank {bank}{' (live)' if bank == live else ''}, root word {root:#x}")
        nodes, bad = an.dir_structure(self.dev, self.geo, root)
        bits = fmt.radix_bits(self.bs)
        for n in nodes:
            if n.kind == "node":
                lo = n.level * bits
                self.p(f"Node {n.block} (level {n.level}, hash bits {lo}..{min(lo + bits, 64) - 1}):")
                for first, last, w in n.slots:
                    kind, b = an.decode_word(w)
                    span = f"slot {first}" if first == last else f"slots {first}-{last}"
                    self.p(f"  {span} -> {kind}{'' if kind == 'empty' else ' ' + str(b)}")
                continue
            h = an.page_header(self.dev, self.geo, n.block)
            if h is None:
                self.p(f"Page {n.block}: bad magic")
                continue
            ents, err = an.page_entries(self.dev, self.geo, n.block)
            live_n = sum(1 for e in ents if e.ino)
            used = (ents[-1].offset + ents[-1].rec_len) if ents else fmt.DIR_PAGE_HEADER_SIZE
            self.p(
                f"Page {n.block}: depth {h.depth} prefix {h.prefix:#018x} dir_ino {h.dir_ino} next {h.next}, "
                f"{live_n} live / {len(ents)} records, {used} bytes used"
            )
            if names:
                for e in ents:
                    state = "" if e.ino else "  (removed)"
                    if namehash.name_hash(self.static.hash_seed, e.name) != e.hash:
                        state += "  (HASH MISMATCH)"
                    elif h.depth and h.depth <= 64 and (e.hash >> (64 - h.depth)) != (h.prefix >> (64 - h.depth)):
                        state += "  (MISPLACED: hash outside the page prefix)"
                    self.p(
                        f"  +{e.offset:<5} ino {e.ino:<6} hash {e.hash:#018x} type {e.file_type:<2} "
                        f"rec_len {e.rec_len:<4} {e.name.decode('utf-8', 'backslashreplace')}{state}"
                    )
            if err:
                self.p(f"  problem: {err}")
        for b in bad:
            self.p(f"problem: {b}")

    @command("logdump", "journal_dump", usage="logdump [-a] [SLOT]", paths=False)
    def do_logdump(self, args: list[str]) -> None:
        """Dump the microjournal: each slot's commit word, checksum and entries.

        Empty slots are summarised unless -a.  Entry addresses are named (inode field, ...).
        """
        show_all = "-a" in args
        rest = [a for a in args if a != "-a"]
        geo = self.geo
        slots = range(geo.journal_slots) if not rest else [int(rest[0], 0)]
        self.p(
            f"Journal: {geo.journal_slots} slots of {fmt.JOURNAL_SLOT_SIZE} bytes at block {geo.journal_block}, "
            f"journal_seq {self._dyn().journal_seq}"
        )
        for s in slots:
            addr, _ = fp.address_of("journal_slot", [str(s)], self.addr_ctx())
            raw = self.dev.read(addr, fmt.JOURNAL_SLOT_SIZE)
            slot = fmt.JournalSlot.parse(raw)
            commit = slot.header.commit
            count = commit & 0xFF
            if commit == 0 and not show_all:
                self.p(f"Slot {s}: empty")
                continue
            want = fp.journal_checksum(raw)
            state = "ok" if want == slot.header.checksum else f"BAD (computed {want:#x})"
            self.p(
                f"Slot {s}: commit {commit:#x} (seq {commit >> 8}, {count} entries), "
                f"checksum {slot.header.checksum:#x} {state}"
                + ("  -> would be replayed" if commit and state == "ok" else "")
            )
            n = fmt.JOURNAL_ENTRIES if show_all else min(count, fmt.JOURNAL_ENTRIES)
            zero = 0
            for k in range(n):
                e = slot.entries[k]
                if e.addr == 0 and e.value == 0 and k >= count:
                    zero += 1
                    continue
                where = an.describe_address(self.dev, geo, e.addr) if e.addr < geo.blocks_count * self.bs else "outside"
                self.p(f"  entry {k}: addr {e.addr:#x} ({where}) value {e.value:#x}")
            if zero:
                self.p(f"  ({zero} unused entries are zero)")

    def _dyn(self) -> Any:
        return fmt.SuperblockDynamic.parse(self.dev.read(fmt.SB_DYNAMIC_OFFSET, fmt.SB_DYNAMIC_SIZE))

    # ======================================================================
    # Navigation and files
    # ======================================================================

    @command("ls", "list_directory", usage="ls [-l] [-d] [-p] [DIR]")
    def do_ls(self, args: list[str]) -> None:
        """List a directory, sorted by name (-l long, -p parseable, -d also removed records)."""
        opts = {a for a in args if a.startswith("-")}
        rest = [a for a in args if not a.startswith("-")]
        self.need(rest, 0, 1, COMMANDS["ls"].usage)
        ino = self.lookup(rest[0]) if rest else self.cwd
        dinode = self.read_inode(ino)
        if dinode.mode & fmt.S_IFMT != fmt.S_IFDIR:
            raise RequestError(f"{rest[0] if rest else self.cwd_path}: not a directory")
        rows: list[tuple[bytes, int, bool]] = [(b".", ino, False), (b"..", dinode.parent, False)]
        if "-d" in opts:
            bank = dinode.dir_bank if dinode.dir_bank in (0, 1) else 0
            for n in an.dir_structure(self.dev, self.geo, dinode.block[bank])[0]:
                if n.kind == "page":
                    rows += [(e.name, e.ino, e.ino == 0) for e in an.page_entries(self.dev, self.geo, n.block)[0]]
        else:
            rows += [(e.name, e.ino, False) for e in an.dir_entries(self.dev, self.geo, dinode)]
        rows[2:] = sorted(rows[2:])
        for name, eino, removed in rows:
            text = name.decode("utf-8", "backslashreplace")
            if removed:
                self.p(f" <{eino}> {text}  (removed)")
                continue
            if "-l" in opts or "-p" in opts:
                i = self.read_inode(eino) if 1 <= eino <= self.geo.inodes_count else None
                mode, uid, gid, size, mtime = (i.mode, i.uid, i.gid, i.size, i.mtime) if i else (0, 0, 0, 0, 0)
                if "-p" in opts:
                    self.p(f"/{eino}/{mode:06o}/{uid}/{gid}/{text}/{size}/")
                else:
                    date = time.strftime("%d-%b-%Y %H:%M", time.gmtime(mtime)) if i else "-"
                    self.p(f" {eino:>7} {mode:>6o} {uid:>6} {gid:>6} {size:>10} {date} {text}")
            else:
                self.p(f" {eino:>7}  {text}")

    @command("cd", "change_working_directory", usage="cd DIR")
    def do_cd(self, args: list[str]) -> None:
        """Change the current directory."""
        self.need(args, 1, 1, COMMANDS["cd"].usage)
        ino = self.lookup(args[0])
        if self.read_inode(ino).mode & fmt.S_IFMT != fmt.S_IFDIR:
            raise RequestError(f"{args[0]}: not a directory")
        self.cwd = ino
        self.cwd_path = f"<{ino}>" if args[0].startswith("<") else self.full_path(args[0])

    @command("pwd", "print_working_directory", usage="pwd", paths=False)
    def do_pwd(self, args: list[str]) -> None:
        """Show the current directory."""
        self.p(f"[pwd]   INODE: {self.cwd:>6}  PATH: {self.cwd_path}")
        self.p(f"[root]  INODE: {fmt.ROOT_INO:>6}  PATH: /")

    @command("cat", usage="cat FILE")
    def do_cat(self, args: list[str]) -> None:
        """Write a file's contents to standard output."""
        self.need(args, 1, 1, COMMANDS["cat"].usage)
        ino = self.lookup(args[0])
        data = self._read_file(ino)
        self.out.flush()
        buf = getattr(self.out, "buffer", None)
        if buf is not None:
            buf.write(data)
            buf.flush()
        else:
            self.out.write(data.decode("utf-8", "backslashreplace"))

    def _read_file(self, ino: int) -> bytes:
        inode = self.read_inode(ino)
        if inode.mode & fmt.S_IFMT == fmt.S_IFDIR:
            raise RequestError(f"inode {ino} is a directory")
        return self._raw_contents(inode)

    def _raw_contents(self, inode: Any) -> bytes:
        """File bytes read straight from the block map (works on damaged images and with -c)."""
        if inode.flags & fmt.INODE_FLAG_INLINE:
            return b"".join(v.to_bytes(8, "little") for v in inode.block)[: inode.size]
        if inode.size > self.dev.size * 2:
            raise RequestError(f"size {inode.size} is absurd for this device")
        out = bytearray(inode.size)
        for fb, b in an.file_block_map(self.dev, self.geo, inode).data:
            start = fb * self.bs
            if start < inode.size:
                out[start : start + self.bs] = self.dev.read(b * self.bs, self.bs)[: inode.size - start]
        return bytes(out)

    @command("dump", "dump_inode", usage="dump [-p] FILE HOSTFILE")
    def do_dump(self, args: list[str]) -> None:
        """Copy a file out of the image to HOSTFILE (-p: keep mode, owner and times)."""
        keep = "-p" in args
        rest = [a for a in args if a != "-p"]
        self.need(rest, 2, 2, COMMANDS["dump"].usage)
        ino = self.lookup(rest[0])
        data = self._read_file(ino)
        with open(rest[1], "wb") as f:
            f.write(data)
        if keep:
            self._copy_attrs(ino, rest[1])

    def _copy_attrs(self, ino: int, host: str) -> None:
        i = self.read_inode(ino)
        os.chmod(host, i.mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(host, i.uid, i.gid)
        os.utime(host, ns=(i.atime * 10**9 + i.atime_nsec, i.mtime * 10**9 + i.mtime_nsec))

    @command("rdump", usage="rdump PATH... HOSTDIR")
    def do_rdump(self, args: list[str]) -> None:
        """Copy files or directory trees out of the image into HOSTDIR, with their metadata.

        Uses the library's extraction (not available in catastrophic mode; use dump there).
        """
        self.need(args, 2, None, COMMANDS["rdump"].usage)
        host = args[-1]
        if not os.path.isdir(host):
            raise RequestError(f"{host}: not a directory")
        from nvfs_tools import extract as ex

        for src in args[:-1]:
            self.lookup(src)  # a clear error before anything is written
            full = self.full_path(src)
            name = posixpath.basename(full)
            ex.extract(self.vol, os.fsencode(full), os.path.join(host, name) if name else host)

    @command("write_file", usage="write_file HOSTFILE NAME  (also: write HOSTFILE NAME)", writes=True)
    def do_write_file(self, args: list[str]) -> None:
        """Copy a host file into the image as NAME (holes kept where the host file has zero blocks).

        As in debugfs, the new file takes the host file's permission bits and is owned by 0:0.
        """
        self.need(args, 2, 2, "write HOSTFILE NAME")
        st = os.stat(args[0])
        if not statmod.S_ISREG(st.st_mode):
            raise RequestError(f"{args[0]}: not a regular file")
        parent, name = self.split_parent(args[1])
        if self.child(parent, name) is not None:
            raise RequestError(f"{args[1]}: file exists")
        vol = self.vol
        # like debugfs: permission bits from the host file, owner root (set it with sif if needed)
        ino = vol.create(parent, name, fmt.S_IFREG | (st.st_mode & 0o7777))
        chunk = max(self.bs, 1 << 20)
        with open(args[0], "rb") as f:
            offset = 0
            while True:
                data = f.read(chunk)
                if not data:
                    break
                self._write_sparse(ino, offset, data)
                offset += len(data)
        if self.read_inode(ino).size != st.st_size:
            vol.truncate(ino, st.st_size)
        self.p(f"Allocated inode: {ino}")

    def _write_sparse(self, ino: int, offset: int, data: bytes) -> None:
        bs = self.bs
        start = 0
        while start < len(data):
            end = min(start + bs, len(data))
            if any(data[start:end]):
                run_end = end
                while run_end < len(data) and any(data[run_end : run_end + bs]):
                    run_end = min(run_end + bs, len(data))
                self.vol.write(ino, offset + start, data[start:run_end])
                start = run_end
            else:
                start = end

    @command("mkdir", usage="mkdir DIR", writes=True)
    def do_mkdir(self, args: list[str]) -> None:
        """Make a directory."""
        self.need(args, 1, 1, COMMANDS["mkdir"].usage)
        parent, name = self.split_parent(args[0])
        self.vol.mkdir(parent, name, 0o755)

    @command("rmdir", usage="rmdir DIR", writes=True)
    def do_rmdir(self, args: list[str]) -> None:
        """Remove an empty directory."""
        self.need(args, 1, 1, COMMANDS["rmdir"].usage)
        parent, name = self.split_parent(args[0])
        self.vol.rmdir(parent, name)

    @command("rm", usage="rm FILE", writes=True)
    def do_rm(self, args: list[str]) -> None:
        """Remove a file (the inode is freed with its last link)."""
        self.need(args, 1, 1, COMMANDS["rm"].usage)
        parent, name = self.split_parent(args[0])
        ino = self.child(parent, name)
        if ino is None:
            raise RequestError(f"{args[0]}: file not found")
        if self.read_inode(ino).mode & fmt.S_IFMT == fmt.S_IFDIR:
            raise RequestError(f"{args[0]}: is a directory (use rmdir)")
        self.vol.unlink(parent, name)

    @command("link", "ln", usage="ln SOURCE DEST", writes=True)
    def do_link(self, args: list[str]) -> None:
        """Make a hard link (unlike debugfs, the link count IS kept right)."""
        self.need(args, 2, 2, COMMANDS["ln"].usage)
        ino = self.lookup(args[0])
        dest = args[1]
        try:
            target = self.lookup(dest)
            if self.read_inode(target).mode & fmt.S_IFMT == fmt.S_IFDIR:
                dest = posixpath.join(dest, posixpath.basename(args[0].rstrip("/")))
        except RequestError:
            pass
        parent, name = self.split_parent(dest)
        self.vol.link(ino, parent, name)

    @command("unlink", usage="unlink PATH", writes=True)
    def do_unlink(self, args: list[str]) -> None:
        """Remove a directory entry only.  RAW like debugfs: the link count is NOT changed."""
        self.need(args, 1, 1, COMMANDS["unlink"].usage)
        parent, name = self.split_parent(args[0])
        from nvfs_tools.directory import Directory

        if Directory(self.vol, parent).remove(name) is None:
            raise RequestError(f"{args[0]}: file not found")
        self.vol.barrier()

    @command("kill_file", usage="kill_file FILE", writes=True)
    def do_kill_file(self, args: list[str]) -> None:
        """Free an inode and its blocks, leaving directory entries.  RAW like debugfs."""
        self.need(args, 1, 1, COMMANDS["kill_file"].usage)
        ino = fp.parse_inode(self.addr_ctx(), args[0])
        inode = self.read_inode(ino)
        vol = self.vol
        for _kind, b in an.inode_blocks(self.dev, self.geo, inode):
            vol.free_block(b)
        vol.free_inode(ino)
        vol.barrier()

    @command("symlink", usage="symlink PATH TARGET", writes=True)
    def do_symlink(self, args: list[str]) -> None:
        """Make a symbolic link PATH pointing to TARGET."""
        self.need(args, 2, 2, COMMANDS["symlink"].usage)
        parent, name = self.split_parent(args[0])
        self.vol.symlink(parent, name, os.fsencode(args[1]))

    @command("mknod", usage="mknod PATH [p|s|c|b] [MAJOR MINOR]", writes=True)
    def do_mknod(self, args: list[str]) -> None:
        """Make a FIFO (p), socket (s), character (c) or block (b) device node."""
        self.need(args, 2, 4, COMMANDS["mknod"].usage)
        kinds = {"p": fmt.S_IFIFO, "s": fmt.S_IFSOCK, "c": fmt.S_IFCHR, "b": fmt.S_IFBLK}
        if args[1] not in kinds:
            raise UsageError(f"usage: {COMMANDS['mknod'].usage}")
        rdev = 0
        if args[1] in "cb":
            if len(args) != 4:
                raise UsageError("device nodes need MAJOR and MINOR")
            rdev = fmt.encode_rdev(int(args[2], 0), int(args[3], 0))
        elif len(args) != 2:
            raise UsageError(f"usage: {COMMANDS['mknod'].usage}")
        parent, name = self.split_parent(args[0])
        self.vol.mknod(parent, name, kinds[args[1]] | 0o644, rdev)

    @command("rename", "mv", usage="rename OLD NEW", writes=True)
    def do_rename(self, args: list[str]) -> None:
        """Rename (through the microjournal, like the kernel)."""
        self.need(args, 2, 2, COMMANDS["rename"].usage)
        sp, sn = self.split_parent(args[0])
        if self.child(sp, sn) is None:
            raise RequestError(f"{args[0]}: file not found")
        dp, dn = self.split_parent(args[1])
        self.vol.rename(sp, sn, dp, dn)

    # -- extended attributes --------------------------------------------------

    @command("ea_list", usage="ea_list FILE")
    def do_ea_list(self, args: list[str]) -> None:
        """List a file's extended attributes with their values."""
        self.need(args, 1, 1, COMMANDS["ea_list"].usage)
        ino = self.lookup(args[0])
        vol = self.vol
        names = sorted(vol.listxattr(ino))
        self.p("Extended attributes:")
        for n in names:
            value = vol.getxattr(ino, n)
            self.p(f"  {n.decode('utf-8', 'backslashreplace')} ({len(value)}) = {_show_value(value)}")

    @command("ea_get", usage="ea_get [-f OUTFILE] FILE NAME")
    def do_ea_get(self, args: list[str]) -> None:
        """Show one extended attribute (or write it to OUTFILE)."""
        outfile, rest = _opt(args, "-f")
        self.need(rest, 2, 2, COMMANDS["ea_get"].usage)
        value = self.vol.getxattr(self.lookup(rest[0]), os.fsencode(rest[1]))
        if outfile:
            with open(outfile, "wb") as f:
                f.write(value)
        else:
            self.p(_show_value(value))

    @command("ea_set", usage="ea_set [-f INFILE] FILE NAME [VALUE]", writes=True)
    def do_ea_set(self, args: list[str]) -> None:
        """Set an extended attribute (value from the command line or from INFILE)."""
        infile, rest = _opt(args, "-f")
        if infile:
            self.need(rest, 2, 2, COMMANDS["ea_set"].usage)
            with open(infile, "rb") as f:
                value = f.read()
        else:
            self.need(rest, 3, 3, COMMANDS["ea_set"].usage)
            value = os.fsencode(rest[2])
        self.vol.setxattr(self.lookup(rest[0]), os.fsencode(rest[1]), value)

    @command("ea_rm", usage="ea_rm FILE NAME...", writes=True)
    def do_ea_rm(self, args: list[str]) -> None:
        """Remove extended attributes."""
        self.need(args, 2, None, COMMANDS["ea_rm"].usage)
        ino = self.lookup(args[0])
        for n in args[1:]:
            self.vol.removexattr(ino, os.fsencode(n))


_NO_FS_NEEDED = ("help", "quit", "open_filesys")


def _opt(args: list[str], flag: str) -> tuple[str | None, list[str]]:
    if flag in args:
        i = args.index(flag)
        if i + 1 >= len(args):
            raise UsageError(f"{flag} needs an argument")
        return args[i + 1], args[:i] + args[i + 2 :]
    return None, list(args)


def _show_value(value: bytes) -> str:
    if value and all(32 <= b < 127 for b in value):
        return f'"{value.decode()}"'
    return "0x" + value.hex() if value else '""'


class _Quit(BaseException):  # not an Exception: request error handling must let it through
    """Raised by `quit` to end the session."""


# ---------------------------------------------------------------------------
# Batch mode and the REPL
# ---------------------------------------------------------------------------


def run_requests(session: Session, lines: Any, *, echo: bool) -> None:
    """Run request lines (from -f or a pipe); echo each like debugfs -f does."""
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if echo:
            session.p(f"{PROMPT.rstrip()} {line.strip()}")
        try:
            session.run_line(line)
        except _Quit:
            return


class Completer:
    """readline completion: request names, then structure types / paths inside the image."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.matches: list[str] = []

    def candidates(self, line: str, text: str) -> list[str]:
        words = line.split()
        at_first = not words or (len(words) == 1 and not line.endswith(" "))
        if at_first:
            return sorted(n for n in COMMANDS if n.startswith(text))
        cmd = COMMANDS.get(words[0])
        argpos = len(words) - (0 if line.endswith(" ") else 1)
        if cmd is not None and cmd.names[0] in ("print", "wfield", "fuzz"):
            args = [w for w in words[1:] if not w.startswith("-")]
            if argpos == 1 or (not args and not text.startswith("-")):
                return [n + " " for n in fp.type_names() if n.startswith(text)]
            try:
                fields = fp.field_names(args[0], self.session.bs)
            except fp.FieldPathError:
                fields = []
            return sorted(n for n in fields if n.startswith(text)) + self.paths(text)
        if cmd is not None and cmd.names[0] in ("set_inode_field",) and argpos == 2:
            return sorted(n for n in fp.field_names("inode", self.session.bs) if n.startswith(text))
        if cmd is not None and cmd.names[0] in ("set_super_value",):
            names = fp.field_names("superblock_static") + fp.field_names("superblock_dynamic")
            return sorted({n for n in names if n.startswith(text)})
        if cmd is not None and cmd.names[0] == "help":
            return sorted(n for n in COMMANDS if n.startswith(text))
        if cmd is None or not cmd.path_args:
            return []
        return self.paths(text)

    def paths(self, text: str) -> list[str]:
        head, _, partial = text.rpartition("/")
        directory = head + "/" if head or text.startswith("/") else ""
        try:
            ino = self.session.lookup(directory or ".")
            entries = self.session.entries(ino)
        except (NvfsError, ValueError, OSError):
            return []
        out = []
        prefix = os.fsencode(partial)
        for e in entries:
            if e.name.startswith(prefix):
                name = directory + e.name.decode("utf-8", "surrogateescape")
                out.append(name + "/" if e.file_type == fmt.DT_DIR else name + " ")
        return sorted(out)

    def complete(self, text: str, state: int) -> str | None:
        if state == 0:
            import readline

            line = readline.get_line_buffer()[: readline.get_endidx()]
            try:
                self.matches = self.candidates(line, text)
            except Exception:  # noqa: BLE001 - completion must never break the prompt
                self.matches = []
            if len(self.matches) == 1 and not self.matches[0].endswith(("/", " ")):
                self.matches[0] += " "
        return self.matches[state] if state < len(self.matches) else None


def history_path() -> str:
    return os.path.expanduser(os.environ.get(HISTORY_ENV) or HISTORY_DEFAULT)


def repl(session: Session) -> None:
    """Interactive loop: readline editing, history file, completion; errors never end it."""
    import readline

    hist = history_path()
    try:
        readline.read_history_file(hist)
    except (FileNotFoundError, OSError):
        pass
    readline.set_history_length(HISTORY_LENGTH)
    readline.set_completer(Completer(session).complete)
    readline.set_completer_delims(" \t\n")
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    try:
        while True:
            try:
                line = input(PROMPT)
            except EOFError:
                print(file=session.out)
                break
            except KeyboardInterrupt:
                print("^C", file=session.out)
                continue
            if not line.strip():
                continue  # an empty line never repeats a request
            try:
                session.run_line(line)
            except _Quit:
                break
            except KeyboardInterrupt:
                print(f"{PROG}: interrupted", file=session.err)
    finally:
        try:
            readline.write_history_file(hist)
        except OSError as exc:
            print(f"{PROG}: warning: cannot save history to {hist}: {exc.strerror}", file=session.err)


def _build_cli():
    import click

    @click.command(context_settings={"help_option_names": ["--help"]})
    @click.option("-w", "writable", is_flag=True, help="Open read-write (default read-only).")
    @click.option(
        "-c", "catastrophic", is_flag=True, help="Catastrophic mode: do not trust bitmaps/counters; read-only."
    )
    @click.option("-b", "backup", is_flag=True, help="Use the backup superblock (start of the last block).")
    @click.option("-R", "request", metavar="REQUEST", help="Run one request and exit.")
    @click.option("-f", "cmdfile", metavar="CMDFILE", help="Run requests from CMDFILE ('-' = stdin).")
    @click.argument("device", required=False)
    def cli(writable, catastrophic, backup, request, cmdfile, device) -> int:
        """Examine and change an NVFS filesystem image or device.

        Without -R or -f, requests are read interactively (line editing, history in
        ~/.debugfs_nvfs_history or $DEBUGFS_NVFS_HISTORY, tab completion), or from
        standard input when it is not a terminal.  `help` lists the requests.

        \b
        Exit status: 0 every request succeeded, 1 a request failed (unlike
        debugfs), 8 the device could not be opened, 16 usage error.
        """
        if request is not None and cmdfile is not None:
            raise UsageError("-R and -f cannot be used together")
        if catastrophic and writable:
            print(f"{PROG}: catastrophic mode is read-only; ignoring -w", file=sys.stderr)
        if device is None and (writable or catastrophic or backup):
            raise UsageError("-w, -c and -b need a DEVICE (or use the `open` request)")
        session = Session(device, writable=writable, catastrophic=catastrophic, backup=backup)
        try:
            if request is not None:
                try:
                    session.run_line(request)
                except _Quit:
                    pass
            elif cmdfile is not None:
                if cmdfile == "-":
                    run_requests(session, sys.stdin, echo=True)
                else:
                    try:
                        with open(cmdfile, encoding="utf-8", errors="surrogateescape") as f:
                            run_requests(session, f, echo=True)
                    except OSError as exc:
                        raise UsageError(f"{cmdfile}: {exc.strerror}") from None
            elif not sys.stdin.isatty():
                run_requests(session, sys.stdin, echo=True)
            else:
                repl(session)
        finally:
            session.close()
        return 1 if session.failures else 0

    return cli


def main(argv: list[str] | None = None) -> None:
    from nvfs_tools.cli import main_wrapper

    main_wrapper(_build_cli(), PROG, args=argv)
