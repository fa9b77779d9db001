"""mkfs.nvfs: create an NVFS filesystem on a pmem device, devdax device or image file.

The command line is modelled on mke2fs; the safety rules are stricter (see
``docs/mkfs.md``).  The writing itself is :func:`nvfs_tools.layout.make_filesystem`,
lost+found included, except with quota or bad media, where it is made through the
library (:class:`nvfs_tools.volume.Volume`), which ``-d`` uses too.

Start-up time is most of what a plain mkfs costs, so this module imports only
what the run needs: ordinary command lines are parsed by :func:`fast_parse`
(click is loaded for help, version and mistakes), and the library modules are
imported inside the functions that use them.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time

from nvfs_tools import __version__
from nvfs_tools import format as fmt
from nvfs_tools.cli import format_size, parse_size, progress, run, run_call
from nvfs_tools.errors import DeviceError, NvfsError, UsageError

PROG = "mkfs.nvfs"

HELP = """Create an NVFS filesystem on DEVICE (a /dev/pmemN or /dev/daxX.Y device,
or an image file).

SIZE (e.g. 512M, 1G, 2T; plain numbers are bytes) creates a sparse image
file when DEVICE does not exist, or resizes an existing image file (shrinking
needs -F).  It cannot be given for a block or character device.

Safety: a mounted or busy device is always refused.  A device holding a
filesystem, swap, LUKS/LVM/RAID signature or partition table is refused
unless -F is given; the message names what was found.

\b
Extended options (-E, comma separated):
  journal_slots=N        microjournal slots (default 8)
  root_owner[=UID:GID]   owner of the root directory (default 0:0;
                         without a value: the calling user)
  hash_seed=HEX          directory hash seed, 32 hex digits (for tests)
  discard / nodiscard    discard the device before writing (default: discard)

\b
Features (-O, comma separated, ^ to clear): xattr (default on), quota.

-d DIR copies the tree at DIR in (files with their holes, directories,
symlinks, hard links, device nodes, FIFOs, sockets, modes, owners, times and
xattrs).  If the copy fails the run exits 1 and the new superblock is erased,
so a half-populated filesystem is never left looking finished.

\b
Reproducible images: with SOURCE_DATE_EPOCH set and a fixed -U UUID, the same
inputs give a byte-identical filesystem (times come from SOURCE_DATE_EPOCH and
the hash seed is derived from the UUID).

\b
Exit status (as mke2fs): 0 success, 1 any error or refusal (nothing is
written when a check fails), 130 interrupted.
"""

_FEATURES = {
    "xattr": ("compat", fmt.FEATURE_COMPAT_XATTR),
    "quota": ("ro_compat", fmt.FEATURE_RO_COMPAT_QUOTA),
}


class Options:
    """Validated command-line settings.

    Class attributes are the defaults; a plain class rather than a dataclass,
    whose creation would cost milliseconds of every mkfs's start-up.
    """

    inode_count: int | None = None
    inode_ratio: int = fmt.DEFAULT_INODE_RATIO
    label: bytes = b""
    uuid: bytes = b""
    hash_seed: bytes = b""
    mkfs_time: tuple[int, int] = (0, 0)
    journal_slots: int = fmt.DEFAULT_JOURNAL_SLOTS
    root_uid: int = 0
    root_gid: int = 0
    discard: bool = True
    source_dir: bytes | None = None

    def __init__(self, block_size: int = fmt.DEFAULT_BLOCK_SIZE) -> None:
        self.block_size = block_size
        self.features: dict[str, int] = {"compat": fmt.FEATURE_COMPAT_XATTR, "ro_compat": 0}


def _parse_block_size(text: str | None) -> int:
    if text is None:
        return max(fmt.DEFAULT_BLOCK_SIZE, os.sysconf("SC_PAGE_SIZE"))
    value = parse_size(text, what="block size")
    page = os.sysconf("SC_PAGE_SIZE")
    low = max(fmt.MIN_BLOCK_SIZE, page)
    if value & (value - 1) or not low <= value <= fmt.MAX_BLOCK_SIZE:
        raise UsageError(f"invalid block size {text}: must be a power of two from {low} to {fmt.MAX_BLOCK_SIZE}")
    return value


def random_uuid() -> bytes:
    """A random (version 4, RFC 4122 variant) UUID."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return bytes(raw)


def uuid_text(raw: bytes) -> str:
    """The usual 8-4-4-4-12 spelling of a 16-byte UUID."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _parse_uuid(text: str | None) -> bytes:
    if text is None or text == "random":
        return random_uuid()
    if text in ("clear", "null"):
        return bytes(16)
    import uuid as uuidlib  # lazily: importing it costs more than all of mkfs's work on 1 GiB

    if text == "time":
        return uuidlib.uuid1().bytes
    try:
        return uuidlib.UUID(text).bytes
    except ValueError:
        raise UsageError(f"invalid UUID '{text}' (use random, time, clear or a UUID)") from None


def _parse_features(specs: tuple[str, ...], opts: Options) -> None:
    for spec in specs:
        for item in filter(None, (s.strip() for s in spec.split(","))):
            clear = item.startswith("^")
            name = item.lstrip("^").lower()
            if name == "none":
                opts.features = {"compat": 0, "ro_compat": 0}
                continue
            if name not in _FEATURES:
                raise UsageError(f"unknown feature '{name}' (known: {', '.join(sorted(_FEATURES))})")
            word, bit = _FEATURES[name]
            opts.features[word] = opts.features[word] & ~bit if clear else opts.features[word] | bit


def _parse_extended(specs: tuple[str, ...], opts: Options) -> None:
    for spec in specs:
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, has_value, value = item.partition("=")
            if key == "journal_slots" and has_value:
                if not value.isdigit() or not 1 <= int(value) <= 1024:
                    raise UsageError(f"invalid journal_slots '{value}' (1..1024)")
                opts.journal_slots = int(value)
            elif key == "root_owner":
                if not has_value:
                    opts.root_uid, opts.root_gid = os.getuid(), os.getgid()
                    continue
                uid, colon, gid = value.partition(":")
                if not colon or not uid.isdigit() or not gid.isdigit() or int(uid) >= 2**32 or int(gid) >= 2**32:
                    raise UsageError(f"invalid root_owner '{value}' (expected UID:GID)")
                opts.root_uid, opts.root_gid = int(uid), int(gid)
            elif key == "hash_seed" and has_value:
                try:
                    seed = bytes.fromhex(value.replace("-", ""))
                except ValueError:
                    seed = b""
                if len(seed) != 16:
                    raise UsageError(f"invalid hash_seed '{value}' (32 hex digits)")
                opts.hash_seed = seed
            elif key in ("discard", "nodiscard") and not has_value:
                opts.discard = key == "discard"
            else:
                raise UsageError(
                    f"unknown or malformed extended option '{item}' "
                    "(known: journal_slots=N, root_owner=UID:GID, hash_seed=HEX, discard, nodiscard)"
                )


def _source_date_epoch() -> int | None:
    from nvfs_tools.layout import source_date_epoch

    try:
        return source_date_epoch()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def build_options(
    *,
    block_size: str | None,
    inode_count: str | None,
    inode_ratio: str | None,
    label: str | None,
    uuid: str | None,
    features: tuple[str, ...],
    extended: tuple[str, ...],
) -> Options:
    """Check every option before anything is touched."""
    opts = Options(block_size=_parse_block_size(block_size))
    if inode_count is not None and inode_ratio is not None:
        raise UsageError("-N and -i are exclusive: give an inode count or a bytes-per-inode ratio")
    if inode_count is not None:
        if not inode_count.isdigit() or int(inode_count) < 1:
            raise UsageError(f"invalid inode count '{inode_count}'")
        opts.inode_count = int(inode_count)
    if inode_ratio is not None:
        opts.inode_ratio = parse_size(inode_ratio, what="bytes-per-inode")
    if label is not None:
        raw = os.fsencode(label)
        if len(raw) > 64:
            raise UsageError(f"label is {len(raw)} bytes long; at most 64 bytes (UTF-8) are allowed")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("label is not valid UTF-8") from None
        opts.label = raw
    opts.uuid = _parse_uuid(uuid)
    _parse_features(features, opts)
    _parse_extended(extended, opts)
    epoch = _source_date_epoch()
    if epoch is not None:
        opts.mkfs_time = (epoch, 0)
        if not opts.hash_seed:
            import hashlib

            opts.hash_seed = hashlib.blake2b(opts.uuid, digest_size=16, person=b"nvfs-hash-seed").digest()
    else:
        now = time.time_ns()
        opts.mkfs_time = (now // 1_000_000_000, now % 1_000_000_000)
    if not opts.hash_seed:
        opts.hash_seed = os.urandom(16)
    return opts


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


class Reporter:
    """Prints the mke2fs-like narrative unless -q."""

    def __init__(self, quiet: bool, verbose: bool) -> None:
        self.quiet, self.verbose = quiet, verbose

    def say(self, text: str = "", end: str = "\n") -> None:
        if not self.quiet:
            print(text, end=end, flush=True)

    def detail(self, text: str) -> None:
        if self.verbose and not self.quiet:
            print(text)


def describe(geo: fmt.Geometry, opts: Options, rep: Reporter) -> None:
    """The layout, as ``-n`` prints it and a real run announces it."""
    bs = geo.block_size
    rep.say(f"Creating NVFS filesystem with {geo.blocks_count} {bs // 1024}k blocks and {geo.inodes_count} inodes")
    rep.say(f"Filesystem UUID: {uuid_text(opts.uuid)}")
    if opts.label:
        rep.say(f"Filesystem label: {opts.label.decode('utf-8')}")
    tail = geo.blocks_count - geo.group_end(geo.group_count - 1)
    rep.say(
        f"{geo.group_count} block group{'s' if geo.group_count != 1 else ''} of {geo.blocks_per_group} blocks, "
        f"{geo.inodes_per_group} inodes per group" + (f"; {tail} trailing blocks unused" if tail else "")
    )
    copies = [geo.group_start(g) for g in range(1, geo.group_count)]
    shown = ", ".join(str(c) for c in copies[:8]) + (f", ... ({len(copies)} in all)" if len(copies) > 8 else "")
    rep.say(f"Superblock copies on blocks: {shown + '; ' if copies else ''}backup on block {geo.backup_block}")
    rep.say(
        f"Inode tables: {geo.inode_table_blocks} blocks per group; microjournal: {geo.journal_slots} slots "
        f"at block {geo.journal_block}"
    )
    free = total_free_blocks(geo)
    rep.say(f"Data blocks: {free} ({format_size(free * bs)})")
    if not rep.verbose or rep.quiet:
        return
    for g in range(geo.group_count):
        rep.detail(
            f"  group {g}: blocks {geo.group_start(g)}-{geo.group_end(g) - 1}, bitmap {geo.block_bitmap_block(g)}, "
            f"counters {geo.counters_block(g)}, inode bitmap {geo.inode_bitmap_block(g)}, "
            f"inode table {geo.inode_table_block(g)}-{geo.inode_table_block(g) + geo.inode_table_blocks - 1}, "
            f"first data block {geo.first_data_block(g)}, {_free(geo, g)} free"
        )


def _free(geo: fmt.Geometry, g: int) -> int:
    from nvfs_tools.layout import group_free_blocks

    return group_free_blocks(geo, g)


def total_free_blocks(geo: fmt.Geometry) -> int:
    from nvfs_tools.layout import total_free_blocks as total

    return total(geo)


def _geometry(size: int, opts: Options) -> fmt.Geometry:
    try:
        return fmt.compute_geometry(
            size,
            opts.block_size,
            inode_ratio=opts.inode_ratio,
            inode_count=opts.inode_count,
            journal_slots=opts.journal_slots,
        )
    except fmt.GeometryError as exc:
        raise DeviceError(str(exc)) from None


def _check_badblocks(dev, geo: fmt.Geometry, rep: Reporter) -> None:
    """Refuse when listed bad media hits metadata; warn about bad data blocks."""
    if not dev.badblocks:
        return
    bs = geo.block_size
    bad_data = 0
    for start, length in dev.badblocks:
        for block in range(start // bs, min((start + length - 1) // bs, geo.blocks_count - 1) + 1):
            if geo.is_metadata_block(block) and block < geo.group_end(geo.group_count - 1) or block == geo.backup_block:
                raise DeviceError(
                    f"{dev.path}: bad media at byte {start} (block {block}) falls in filesystem metadata; "
                    "clear the poison (ndctl) or use another device"
                )
            bad_data += 1
    print(f"{PROG}: warning: {bad_data} data block(s) lie on media the kernel lists as bad", file=sys.stderr)


def _refuse_signatures(path: str, sigs: list, force: bool, dry_run: bool) -> None:
    if not sigs or force:
        return
    names = "; ".join(str(s) for s in sigs)
    if dry_run:
        print(f"{PROG}: note: {path} contains {names}; a real run would need -F", file=sys.stderr)
        return
    raise DeviceError(f"{path} contains {names}; use -F to overwrite it")


def _prepare_target(path: str, size: int | None, force: bool, dry_run: bool) -> tuple[bool, int | None]:
    """Check SIZE against DEVICE and create a missing image file.

    Returns ``(created, size_to_use)``: ``size_to_use`` is SIZE when the file
    must still be resized (done by :func:`make` only after the mount and
    signature checks, so a refused run changes nothing) or, in a dry run,
    when the file does not exist.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if size is None:
            raise DeviceError(f"{path}: no such file or device (give a SIZE to create an image file)") from None
        if dry_run:
            return False, size
        from nvfs_tools.device import create_image

        create_image(path, size)
        return True, None
    except OSError as exc:
        raise DeviceError(f"{path}: cannot access: {exc.strerror}") from None
    if size is None:
        return False, None
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        raise UsageError(f"{path} is a device: SIZE cannot be given (the whole device is used)")
    if not stat.S_ISREG(st.st_mode) or size == st.st_size:
        return False, None  # Device() reports what else it is
    if size < st.st_size and not force:
        raise DeviceError(f"{path}: SIZE {size} is smaller than the file ({st.st_size} bytes); use -F to shrink it")
    if st.st_size == 0 and not dry_run:  # nothing to protect in an empty file, and Device() refuses it
        _resize(path, size)
        return False, None
    return False, size


def _resize(path: str, size: int) -> None:
    try:
        os.truncate(path, size)
    except OSError as exc:
        raise DeviceError(f"{path}: cannot resize to {size} bytes: {exc.strerror}") from None


def make(path: str, size: int | None, opts: Options, *, force: bool, dry_run: bool, rep: Reporter) -> int:
    """The whole mkfs run; returns the exit code."""
    from nvfs_tools import probe
    from nvfs_tools.device import Device

    created, new_size = _prepare_target(path, size, force, dry_run)
    if dry_run and new_size is not None and not os.path.exists(path):
        describe(_geometry(new_size, opts), opts, rep)
        rep.say("Dry run (-n): nothing written.")
        return 0
    try:
        if dry_run:
            users = probe.find_users(path)
            if users:
                raise DeviceError(f"{users[0]}; refusing to touch it")
        dev = Device(path, writable=not dry_run, unordered=True)
        try:
            blank = created or _holds_no_data(dev)
            sigs = [] if blank else probe.detect_signatures(_reader(dev), dev.size, use_blkid=path)
            _refuse_signatures(path, sigs, force, dry_run)
            geo = _geometry(new_size if new_size is not None else dev.size, opts)
            if new_size is not None and not dry_run:  # checks passed: now the image may change size
                dev.close()
                _resize(path, new_size)
                dev = Device(path, writable=True, unordered=True)
            _check_badblocks(dev, geo, rep)
            describe(geo, opts, rep)
            if dry_run:
                rep.say("Dry run (-n): nothing written.")
                return 0
            result = _write(dev, geo, opts, blank, sigs, rep)
            free_blocks, free_inodes = _finish(dev, opts, rep, result)
        finally:
            dev.hold_open = False
            dev.close()
    except BaseException:
        if created:
            os.unlink(path)
        raise
    rep.say(
        f"Filesystem ready: {free_blocks} free blocks ({format_size(free_blocks * geo.block_size)}), "
        f"{free_inodes} free inodes."
    )
    return 0


def _holds_no_data(dev) -> bool:
    """True for an image file that is one hole (``SEEK_DATA`` finds nothing): it reads as zeros.

    Such a file (``truncate -s 1T img``) can hold no signature and needs no
    discard or zeroing, exactly like an image mkfs created itself; knowing it
    saves running blkid and punching a hole through the whole file.
    """
    if dev.kind != "file" or dev.dax:
        return False
    try:
        os.lseek(dev.fd, 0, os.SEEK_DATA)
    except OSError as exc:
        return exc.errno == errno.ENXIO
    return False


def _reader(dev):
    """Read for probing with pread where possible: faulting holes of a tmpfs image through
    the mapping would allocate pages, and a refused run must leave the file as it was."""
    if dev.dax:
        return dev.read
    return lambda offset, length: os.pread(dev.fd, length, offset)


def _write(dev, geo: fmt.Geometry, opts: Options, blank: bool, sigs: list, rep: Reporter):
    from nvfs_tools.layout import Features, make_filesystem, wipe_foreign_signatures

    rep.say("Writing group tables and superblocks: ", end="")
    bar = progress(2 * geo.group_count, "groups", enabled=not rep.quiet and geo.group_count >= 64)
    try:
        result = make_filesystem(
            dev,
            geo,
            uuid=opts.uuid,
            label=opts.label,
            hash_seed=opts.hash_seed,
            mkfs_time=opts.mkfs_time,
            features=Features(compat=opts.features["compat"], ro_compat=opts.features["ro_compat"]),
            root_uid=opts.root_uid,
            root_gid=opts.root_gid,
            fresh=blank,
            discard=opts.discard,
            lost_found=not opts.features["ro_compat"] & fmt.FEATURE_RO_COMPAT_QUOTA and not dev.badblocks,
            progress=bar.update,
        )
        result.wiped = wipe_foreign_signatures(dev, geo, sigs)
    finally:
        bar.close()
    rep.say(f"done (inode tables: {result.zeroing})")
    for what in result.wiped:
        rep.detail(f"  erased the old {what} signature")
    return result


def _finish(dev, opts: Options, rep: Reporter, result) -> tuple[int, int]:
    """Finish the root and lost+found, and copy ``-d``'s tree in; returns the free totals.

    The layout writes lost+found itself unless quota or bad media need the
    library; the library (:class:`nvfs_tools.volume.Volume`, on the still-open
    device) is then loaded only for those cases and for ``-d``.  It may stamp
    the current time and random generations; times, lost+found's generation
    and ``last_write_time`` are pinned to the mkfs time / 0 afterwards so that
    images stay reproducible.
    """
    rep.say("Creating root directory and lost+found: ", end="")
    if result.lost_found and opts.source_dir is None:  # the layout wrote it: no library needed
        rep.say("done")
        return result.free_blocks, result.free_inodes
    from nvfs_tools.volume import Volume

    sec, nsec = opts.mkfs_time
    times = {f"{t}{sfx}": v for t in ("atime", "mtime", "ctime", "btime") for sfx, v in (("", sec), ("_nsec", nsec))}
    dev.hold_open = True
    vol = Volume.from_device(dev)
    try:
        if not result.lost_found:
            _lost_found_through_library(vol, times, opts.mkfs_time)
        rep.say("done")
        if opts.source_dir is not None:
            _populate(vol, opts, rep)
        free = (vol.dyn.free_blocks, vol.dyn.free_inodes)
    finally:
        vol.close()
    dyn_off = fmt.SB_DYNAMIC_OFFSET + fmt.field_offset(fmt.PLAIN["SuperblockDynamic"], "last_write_time")
    dev.write(dyn_off, sec.to_bytes(8, "little", signed=True))
    return free


def _lost_found_through_library(vol, times: dict[str, int], mkfs_time: tuple[int, int]) -> None:
    """``vol.mkdir`` of lost+found, times and generation pinned, quota usage set (when the layout could not)."""
    ino = _mkdir_lost_found(vol, mkfs_time)
    if ino != fmt.FIRST_INO:
        raise NvfsError(f"lost+found got inode {ino}, expected {fmt.FIRST_INO}")
    vol.set_inode_fields(ino, generation=0, **times)
    vol.set_inode_fields(fmt.ROOT_INO, **times)
    if vol.quota is not None:
        _set_quota_usage(vol)
        for qino in fmt.QUOTA_INODES.values():
            vol.set_inode_fields(qino, generation=0, **times)


def _populate(vol, opts: Options, rep: Reporter) -> None:
    """``-d DIR``: copy a host tree in with :func:`nvfs_tools.populate.populate`.

    If the copy fails, the magic numbers of the superblock and its backup are
    erased before the error is reported, so that a half-populated filesystem
    can never be mistaken for a finished one (the run exits 1 either way).
    """
    from nvfs_tools.populate import populate

    rep.say(f"Copying files from {os.fsdecode(opts.source_dir)}: ", end="")
    bar = None
    last = 0

    def report(done: int, total: int) -> None:
        nonlocal bar, last
        if bar is None:
            bar = progress(total, "entries", unit="entry", enabled=not rep.quiet and total >= 1000)
        bar.update(done - last)
        last = done

    try:
        stats = populate(vol, opts.source_dir, root_owner=(opts.root_uid, opts.root_gid), progress=report)
    except BaseException:
        _invalidate(vol.dev, vol.geo)
        raise
    finally:
        if bar is not None:
            bar.close()
    rep.say(
        f"done ({stats.files} files, {stats.directories} directories, {stats.symlinks} symlinks, "
        f"{stats.specials} special files, {stats.hard_links} extra hard links)"
    )


def _invalidate(dev, geo: fmt.Geometry) -> None:
    """Erase the magic of the superblock and of every static copy so nothing mistakes the device for NVFS."""
    blank = bytes(len(fmt.MAGIC))
    for block in (0, geo.backup_block, *(geo.group_start(g) for g in range(1, geo.group_count))):
        dev.write(block * geo.block_size, blank)


def _set_quota_usage(vol) -> None:
    """Store the exact usage of the root directory and lost+found in the three quota files.

    The usage is set, not charged: it does not depend on which of mkfs's
    writes the library happened to charge (mkfs wrote the root inode itself).
    """
    import struct

    usage: dict[tuple[int, int], list[int]] = {}
    for ino in (fmt.ROOT_INO, fmt.FIRST_INO):
        node = vol.read_inode(ino)
        for qino, qid in ((fmt.USR_QUOTA_INO, node.uid), (fmt.GRP_QUOTA_INO, node.gid), (fmt.PRJ_QUOTA_INO, 0)):
            record = usage.setdefault((qino, qid), [0, 0])
            record[0] += node.blocks * vol.block_size
            record[1] += 1
    used_off = fmt.field_offset(fmt.QuotaRecord, "bytes_used")
    assert fmt.field_offset(fmt.QuotaRecord, "inodes_used") == used_off + 8
    size = fmt.QUOTA_RECORD_SIZE
    for (qino, qid), (nbytes, ninodes) in sorted(usage.items()):
        # whole records, so that the file size stays a multiple of the record size
        record = bytearray(vol.read(qino, qid * size, size).ljust(size, b"\0"))
        struct.pack_into("<QQ", record, used_off, nbytes, ninodes)
        vol.write(qino, qid * size, bytes(record), charge=False)


def _mkdir_lost_found(vol, mkfs_time: tuple[int, int]) -> int:
    """``vol.mkdir`` of lost+found; the library puts it in group 0, so it gets inode 11 (``first_ino``)."""
    return vol.mkdir(fmt.ROOT_INO, fmt.LOST_FOUND_NAME, fmt.S_IFDIR | 0o700, 0, 0, times=mkfs_time)


# (short, long, keyword, kind, metavar, help); kind is "value", "multiple" or "flag".
# The one table both the click command and the fast parser are made from.
_OPTIONS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("-b", "--block-size", "block_size", "value", "BYTES", "Block size: power of two, 4096..1M."),
    ("-N", "--inodes", "inode_count", "value", "COUNT", "Number of inodes (rounded up to whole blocks)."),
    ("-i", "--bytes-per-inode", "inode_ratio", "value", "BYTES", "One inode per BYTES of device."),
    ("-L", "--label", "label", "value", "LABEL", "Volume label, at most 64 bytes of UTF-8."),
    ("-U", "--uuid", "uuid", "value", "UUID", "random (default), time, clear or a UUID."),
    ("-F", "--force", "force", "flag", "", "Overwrite an existing filesystem or signature."),
    ("-n", "--dry-run", "dry_run", "flag", "", "Print the layout, write nothing."),
    ("-q", "--quiet", "quiet", "flag", "", "Print nothing but errors."),
    ("-v", "--verbose", "verbose", "flag", "", "Also print every group's layout."),
    ("-O", "--features", "features", "multiple", "LIST", "Features: xattr, quota (^ clears)."),
    ("-d", "--root-directory", "source_dir", "value", "DIR", "Copy the tree at DIR into the new filesystem."),
    ("-E", "--extended", "extended", "multiple", "OPTS", "Extended options (see above)."),
)
_BY_NAME = {name: opt for opt in _OPTIONS for name in opt[:2]}
_EMPTY = {"flag": False, "multiple": (), "value": None}


def execute(
    device: str,
    size: str | None,
    block_size: str | None,
    inode_count: str | None,
    inode_ratio: str | None,
    label: str | None,
    uuid: str | None,
    force: bool,
    dry_run: bool,
    quiet: bool,
    verbose: bool,
    features: tuple[str, ...],
    source_dir: str | None,
    extended: tuple[str, ...],
) -> int:
    """The command itself, once the command line is parsed (by :func:`fast_parse` or by click)."""
    opts = build_options(
        block_size=block_size,
        inode_count=inode_count,
        inode_ratio=inode_ratio,
        label=label,
        uuid=uuid,
        features=features,
        extended=extended,
    )
    if source_dir is not None:
        if not os.path.isdir(source_dir):
            raise UsageError(f"-d {source_dir}: not a directory")
        opts.source_dir = os.fsencode(source_dir)
    nbytes = parse_size(size, what="SIZE") if size is not None else None
    if nbytes == 0:
        raise UsageError("SIZE must be more than 0")
    return make(device, nbytes, opts, force=force, dry_run=dry_run, rep=Reporter(quiet, verbose))


def fast_parse(argv: list[str]) -> dict | None:
    """The keyword arguments click would give :func:`execute` for ``argv``, or None to let click answer.

    Importing and running click costs more than a whole mkfs of a small
    device, so ordinary command lines are parsed here, by click's rules
    (clustered short flags, ``-bVALUE``, ``--opt=VALUE``, options anywhere,
    ``--``, the last of a repeated option).  Anything else -- help, version,
    an unknown option, a missing value, a value that looks like an option,
    the wrong number of arguments -- returns None and click handles it, so
    messages and exit codes stay click's.
    """
    kwargs: dict = {opt[2]: _EMPTY[opt[3]] for opt in _OPTIONS}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            opt = _BY_NAME.get(name)
            if opt is None or (opt[3] == "flag" and eq):
                return None
            if opt[3] == "flag":
                kwargs[opt[2]] = True
                continue
            taken = _option_value(argv, i, value if eq else None)
            if taken is None or not _store(kwargs, opt, taken[0]):
                return None
            i = taken[1]
            continue
        for j in range(1, len(arg)):
            opt = _BY_NAME.get("-" + arg[j])
            if opt is None:
                return None
            if opt[3] == "flag":
                kwargs[opt[2]] = True
                continue
            taken = _option_value(argv, i, arg[j + 1 :] or None)
            if taken is None or not _store(kwargs, opt, taken[0]):
                return None
            i = taken[1]
            break
    if not 1 <= len(positional) <= 2 or not positional[0] or any(p.startswith("-") for p in positional):
        return None
    kwargs["device"] = positional[0]
    kwargs["size"] = positional[1] if len(positional) == 2 else None
    return kwargs


def _option_value(argv: list[str], i: int, inline: str | None) -> tuple[str, int] | None:
    """An option's value and the index after it: ``inline`` (``--opt=V``, ``-oV``) or the next argument."""
    if inline is not None:
        return inline, i
    if i >= len(argv):
        return None
    return argv[i], i + 1


def _store(kwargs: dict, opt: tuple[str, ...], value: str) -> bool:
    """Record an option's value; False for a value click might read differently (one starting with '-')."""
    if value.startswith("-"):
        return False
    kwargs[opt[2]] = (*kwargs[opt[2]], value) if opt[3] == "multiple" else value
    return True


_CLICK_COMMAND = None


def click_command():
    """The click command (built on first use: only help, version and mistakes need it)."""
    global _CLICK_COMMAND
    if _CLICK_COMMAND is None:
        import click

        def callback(**kwargs) -> int:
            return execute(**kwargs)

        cmd = click.version_option(__version__, "-V", "--version", prog_name=PROG)(callback)
        for short, long, key, kind, metavar, text in reversed(_OPTIONS):
            extra = {"is_flag": True} if kind == "flag" else {"metavar": metavar, "multiple": kind == "multiple"}
            cmd = click.option(short, long, key, help=text, **extra)(cmd)
        cmd = click.argument("size", required=False)(cmd)
        cmd = click.argument("device", type=click.Path(dir_okay=True, allow_dash=False))(cmd)
        settings = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
        _CLICK_COMMAND = click.command(name=PROG, help=HELP, context_settings=settings)(cmd)
    return _CLICK_COMMAND


def __getattr__(name: str):
    """``command``: the click command, for callers (tests) that drive it through :func:`nvfs_tools.cli.run`."""
    if name == "command":
        return click_command()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_argv(argv: list[str] | None = None) -> int:
    """Run mkfs on ``argv`` (default: ``sys.argv[1:]``) and return the exit code; never raises."""
    codes = {"error_code": 1, "usage_code": 1, "interrupt_code": 130}
    kwargs = fast_parse(sys.argv[1:] if argv is None else argv)
    if kwargs is None:
        return run(click_command(), PROG, args=argv, **codes)
    return run_call(lambda: execute(**kwargs), PROG, **codes)


def main(argv: list[str] | None = None) -> None:
    """Exit 0 on success, 1 on any error (as mke2fs)."""
    sys.exit(run_argv(argv))


def console_main() -> None:
    """Console-script entry point: :func:`main` without the interpreter's finalization (cli.exit_fast)."""
    from nvfs_tools.cli import exit_fast

    exit_fast(run_argv)


if __name__ == "__main__":  # pragma: no cover
    console_main()
