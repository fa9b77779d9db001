"""One complete fsck run: open, pass 0, the clean-flag shortcut, passes 1-5, the final state."""

from __future__ import annotations

import gc
import os
import time
from typing import Any, TextIO

from nvfs_tools import format as fmt
from nvfs_tools.check.checker import Cancelled, Checker, Options, PreenAbort, SigintGuard
from nvfs_tools.check.report import EXIT_OPERATIONAL, Report
from nvfs_tools.errors import NvfsError, UnsupportedFeatureError


def check(device: str, options: Options, out: TextIO | None = None, answers: TextIO | None = None) -> Report:
    """Check (and repair, as ``options`` allow) ``device``; never raises for filesystem trouble."""
    chk = Checker(device, options, out, answers)
    chk.pending_clones = []
    chk.rebuild_dirs = set()
    chk.shared_blocks = set()
    chk.children = {}
    chk.lost_found = 0
    chk.hole_scan = None
    dev = None
    unexpected: BaseException | None = None
    try:
        with SigintGuard(chk):
            dev = _open(device, options)
            chk.device_obj = dev
            _run(chk, dev)
    except Cancelled:
        chk.report.cancelled = True
        chk.say(f"\n{device}: cancelled; the filesystem is consistent up to the last completed repair.")
    except PreenAbort:
        chk.report.aborted = True
    except NvfsError as exc:
        chk.report.error = str(exc)
        chk.report.exit_code_override = EXIT_OPERATIONAL | (1 if chk.report.modified else 0)
    except Exception as exc:  # noqa: BLE001 - re-raised below, after the device is closed
        unexpected = exc.with_traceback(None) if os.environ.get("NVFS_DEBUG") != "1" else exc
    if dev is not None:
        _close(chk, dev)
    if unexpected is not None:
        raise unexpected
    return chk.report


def _close(chk: Checker, dev: Any) -> None:
    """Close the device; when scans still hold views of the mapping (in reference cycles), collect them
    and close again (a full collection costs several ms, most runs need none)."""
    chk.image = None
    if chk.hole_scan is not None:  # a scan nobody took may still use the device's descriptor
        chk.hole_scan.thread.join()
        chk.hole_scan = None
    try:
        dev.close()
    except BufferError:
        gc.collect()
        try:
            dev.close()
        except BufferError:
            pass
    except NvfsError as exc:  # a failing final flush is an operational error
        chk.report.error = str(exc)
        chk.report.exit_code_override = EXIT_OPERATIONAL


def _open(device: str, options: Options) -> Any:
    from nvfs_tools.device import Device

    return Device(device, writable=options.mode != "n")


def _run(chk: Checker, dev: Any) -> None:
    from nvfs_tools.check import pass0_super
    from nvfs_tools.check.image import Image

    dev = _media_safe(dev, chk.opt)
    if chk.opt.force and not chk.opt.use_backup:
        chk.hole_scan = _prefetch_table_holes(dev)
    static, raw, reason, offset = pass0_super.load_superblock(dev, chk.opt.use_backup)
    unknown_ro = static.feature_ro_compat & ~fmt.FEATURE_RO_COMPAT_KNOWN
    if unknown_ro and chk.writable:
        raise UnsupportedFeatureError(
            f"{chk.device}: unknown read-only-compatible features {unknown_ro:#x}; only -n can check it"
        )
    chk.image = Image(dev, static, raw)
    chk.image.prefetched = chk.hole_scan
    state = chk.image.dyn_field("state")
    if chk.image.bad is not None:
        dev.set_unit(chk.image.bs)
        chk.image.bad = dev.bad_blocks(chk.image.bs)
    pass0_super.run(chk, reason, offset, state)
    if chk.image.bad:
        _report_media(chk)
    forced = _forced_reason(chk, state)
    if forced is None:
        from nvfs_tools.check.pass5_bitmaps import counters_consistent

        why = counters_consistent(chk.image)
        if why is None:
            _summary_clean(chk)
            return
        forced = f"{why}, check forced"
    if not chk.opt.force:
        chk.say(f"{chk.device}: {forced}.")
    _full_check(chk)


def _prefetch_table_holes(dev: Any) -> Any:
    """A thread finding which inode tables are holes while load_superblock and pass 0 compare the
    static copies (image.HoleScan): the full check asks next.  Only for a valid primary superblock
    (its geometry is the question) on a device opened read-only; else None."""
    from nvfs_tools.check import fastpath
    from nvfs_tools.check.image import prefetch_holes
    from nvfs_tools.check.pass0_super import BadStatic, validate_static

    try:
        static = validate_static(dev.read(0, min(fmt.SB_STATIC_SIZE, dev.size)), dev.size)
    except (BadStatic, NvfsError):
        return None
    return prefetch_holes(dev, *fastpath.table_holes_question(fmt.geometry_from_static(static)))


def _media_safe(dev: Any, options: Options) -> Any:
    """The device, or (when bad ranges are known) a view of it that never touches them (check/media.py).

    ``--badblocks`` ranges join the kernel's own list (Device.badblocks, from sysfs).
    """
    if options.badblocks:
        from nvfs_tools import badblocks as bb  # only then: it loads ctypes and subprocess (~10 ms)

        bb.apply(dev, list(options.badblocks))
    if not dev.badblocks:
        return dev
    from nvfs_tools.check.media import MediaSafeDevice

    return MediaSafeDevice(dev)


def _report_media(chk: Checker) -> None:
    """One MEDIA_BAD_BLOCK problem per bad block, naming the files or metadata it hits (a note for the
    blocks the bad-blocks inode holds)."""
    from nvfs_tools import badblocks as bb

    img = chk.image
    for hit in bb.describe_device(img.dev, list(img.dev.badblocks), img.static):
        if hit.recorded:  # spec/checking.md 5.1: already kept out of every allocation, nothing to repair
            chk.note(f"bad media: {hit.describe()}")
            continue
        details = {"where": hit.describe(), "block": hit.block, "what": hit.what, "inodes": hit.inodes[:64]}
        details["paths"] = [os.fsdecode(p) for p in hit.paths]
        chk.fix("MEDIA_BAD_BLOCK", details, None)


def _media_dropped(chk: Checker) -> None:
    """Repairs whose stores fell into a bad block did not stick: that block's problem stays unfixed (exit 4)."""
    bs = chk.image.bs
    dropped = {blk for a, b in getattr(chk.image.dev, "dropped", ()) for blk in range(a // bs, -(-b // bs))}
    if not dropped:
        return
    for finding in chk.report.findings:
        if finding.code == "MEDIA_BAD_BLOCK" and finding.details["block"] in dropped:
            finding.fixed = False
    listed = ", ".join(map(str, sorted(dropped)[:8])) + (", ..." if len(dropped) > 8 else "")
    chk.note(
        f"repairs that had to be stored in bad block(s) {listed} were dropped: what those blocks held stays lost"
        " until the media is repaired (the bad range is rewritten through the block device)"
    )


def _forced_reason(chk: Checker, state: int) -> str | None:
    if chk.image.bad:
        return "bad media listed, check forced"
    if chk.opt.force:
        return "check forced (-f)"
    if state & fmt.STATE_CHECKING:
        return "a previous check was interrupted while repairing, check forced"
    if state & fmt.STATE_ERRORS:
        return "contains a file system with errors, check forced"
    if chk.report.findings:
        return "problems found in the superblock, check forced"
    if not state & fmt.STATE_CLEAN:
        return "was not cleanly unmounted, check forced"
    return None


def _summary_clean(chk: Checker) -> None:
    img = chk.image
    geo = img.geo
    rep = chk.report
    rep.skipped_clean = True
    rep.files_total = geo.inodes_count
    rep.files_used = geo.inodes_count - img.dyn_field("free_inodes")
    rep.blocks_total = geo.blocks_count
    rep.blocks_used = geo.blocks_count - img.dyn_field("free_blocks")
    chk.say(
        f"{chk.device}: clean, {rep.files_used}/{rep.files_total} files, {rep.blocks_used}/{rep.blocks_total} blocks"
    )


def _full_check(chk: Checker) -> None:
    quota = chk.image.static.feature_ro_compat & fmt.FEATURE_RO_COMPAT_QUOTA
    if not chk.report.findings and not quota and not chk.image.bad and _fast(chk):
        _finish(chk)
        return
    from nvfs_tools.check import pass1_inodes, pass2_dirs, pass3_connect, pass4_links, pass5_bitmaps

    pass1_inodes.run(chk)
    pass2_dirs.run(chk)
    pass3_connect.run(chk)
    pass4_links.run(chk)
    pass5_bitmaps.run(chk)
    from nvfs_tools.check import pass5_quota

    pass5_quota.run(chk)
    if chk.image.bad:
        _media_dropped(chk)
    _finish(chk)


def _fast(chk: Checker) -> bool:
    """Passes 1-5 proven in bulk by the fast-scan core (see fastpath); False when not proven."""
    from nvfs_tools.check import fastpath

    img = chk.image
    quota = bool(img.static.feature_ro_compat & fmt.FEATURE_RO_COMPAT_QUOTA)
    result = fastpath.verify(img, quota)
    if result is None:
        return False
    geo = img.geo
    for number in range(1, 6):
        stats = chk.start_pass(number, 1)
        info = result.stats.get(number, {})
        stats.inodes = info.get("inodes", 0)
        stats.blocks = info.get("blocks", 0)
        stats.extra["_start"] -= info.get("seconds", 0.0)  # the bulk work was done before the pass lines
        chk.end_pass(stats)
    rep = chk.report
    rep.files_total, rep.files_used = geo.inodes_count, result.files_used
    rep.blocks_total, rep.blocks_used = geo.blocks_count, result.blocks_used
    return True


def _finish(chk: Checker) -> None:
    rep = chk.report
    img = chk.image
    if chk.writable:
        state = img.dyn_field("state") & ~(fmt.STATE_CHECKING | fmt.STATE_CLEAN | fmt.STATE_ERRORS)
        state |= fmt.STATE_ERRORS if rep.unfixed else fmt.STATE_CLEAN
        img.barrier()
        img.set_dyn("state", state)
        img.set_dyn("last_check_time", int(time.time()))
        # a statistic that wraps: any value is legal (spec/checking.md 13), even the largest
        width = 8 * fmt.field_layout(fmt.PLAIN["SuperblockDynamic"])["check_count"].size
        img.set_dyn("check_count", (img.dyn_field("check_count") + 1) % (1 << width))
        img.barrier()
        if rep.modified and not rep.unfixed:  # repairs after pass 5 (quota files) may have allocated
            rep.files_used = rep.files_total - img.dyn_field("free_inodes")
            rep.blocks_used = rep.blocks_total - img.dyn_field("free_blocks")
    if rep.modified:
        chk.say(f"\n{chk.device}: ***** FILE SYSTEM WAS MODIFIED *****")
    chk.say(f"{chk.device}: {rep.files_used}/{rep.files_total} files, {rep.blocks_used}/{rep.blocks_total} blocks")
    if rep.unfixed and chk.opt.mode != "p":
        chk.say(f"\n{chk.device}: ********** WARNING: Filesystem still has errors **********")
