"""The checker: options, the ask-and-fix protocol, interruption, and the pass sequence.

Every problem goes through :meth:`Checker.fix`: it records a
:class:`~nvfs_tools.check.report.Finding`, prints the problem, decides (from
``-n``/``-p``/``-y`` or by asking) and, when the answer is yes, runs the repair
action to its end.  Ctrl-C only raises a flag, looked at between repairs and
between passes, so an interrupted run never leaves a half-done repair.

Before the first repair the dynamic superblock gets ``STATE_CHECKING``; it is
replaced by ``STATE_CLEAN`` only when a run ends with nothing left to fix, so
a run that was killed mid-repair is visible and forces a full check next time.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from nvfs_tools import format as fmt
from nvfs_tools.check.problems import PASS_TITLES, PROBLEMS, render
from nvfs_tools.check.report import Finding, PassStats, Report
from nvfs_tools.record import Fields

#: Seconds to pause after each repair (tests of Ctrl-C / SIGKILL during repairs set it).
_TEST_DELAY = float(os.environ.get("NVFS_FSCK_TEST_DELAY", "0") or 0)


class Cancelled(Exception):
    """The user pressed Ctrl-C; stop at the next safe point."""


class PreenAbort(Exception):
    """``-p`` met a problem it may not fix without a human."""


class Options(Fields):
    """How one run checks: the fsck(8) mode ("n", "p", "y" or "ask") and the tool's flags.

    (:class:`~nvfs_tools.record.Fields`, not a dataclass: that import would cost every run ~10 ms.)
    """

    __slots__ = _fields = ("mode", "force", "use_backup", "progress_fd", "verbose", "json", "tty_progress", "badblocks")

    def __init__(
        self,
        mode: str = "ask",
        force: bool = False,
        use_backup: bool = False,
        progress_fd: int | None = None,
        verbose: bool = False,
        json: bool = False,
        tty_progress: bool = False,
        badblocks: tuple[tuple[int, int], ...] = (),  # bad media (offset, length) byte ranges from --badblocks
    ) -> None:
        self.mode = mode
        self.force = force
        self.use_backup = use_backup
        self.progress_fd = progress_fd
        self.verbose = verbose
        self.json = json
        self.tty_progress = tty_progress
        self.badblocks = badblocks


class Checker:
    """One run of fsck over one device."""

    def __init__(self, device: str, options: Options, out: TextIO | None = None, answers: TextIO | None = None):
        self.device = device
        self.opt = options
        self.out = out if out is not None else sys.stdout
        self.answers = answers if answers is not None else sys.stdin
        self.report = Report(device)
        self.yes_to_all = False
        self.cancel_requested = False
        self.repairing = False
        self.image: Any = None
        self.current_pass = 0
        self._progress_file: TextIO | None = None
        self._bar: Any = None
        # shared state filled by the passes
        self.owned: bytearray = bytearray()
        self.inodes: dict[int, Any] = {}
        self.dirs: dict[int, Any] = {}
        self.orphans_cleared: set[int] = set()
        self.orphans_listed: set[int] = set()
        self.allocator: Any = None

    @property
    def writable(self) -> bool:
        return self.opt.mode != "n"

    # -- output --------------------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        if not self.opt.json:
            print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        self.report.notes.append(text)
        self.say(text)

    # -- the fix protocol ----------------------------------------------------------------------
    def fix(self, code: str, details: dict[str, Any], action: Callable[[], Any] | None = None) -> bool:
        """Report problem ``code``; when allowed, run ``action`` (the repair) to its end.

        Returns True when the repair was made.  ``action`` None means the fix
        is applied later by the caller (it must call nothing else).
        """
        self.checkpoint()
        row = PROBLEMS[code]
        finding = Finding(code, details)
        self.report.findings.append(finding)
        message = render(code, details)
        answer = self._decide(row, message)
        if not answer:
            return False
        if self.cancel_requested:
            raise Cancelled
        self.begin_repair()
        if action is not None:
            action()
        if _TEST_DELAY:
            time.sleep(_TEST_DELAY)  # lets interruption tests land between repairs
        finding.fixed = True
        finding.answered = "yes"
        self.report.modified = True
        return True

    def _decide(self, row: Any, message: str) -> bool:
        mode = self.opt.mode
        if mode == "n":
            self.say(f"{message}.  Fix? no")
            return False
        if mode == "y" or self.yes_to_all:
            self.say(f"{message}.  Fix? yes")
            return True
        if mode == "p":
            if row.preen_safe:
                self.say(f"{self.device}: {message}.  FIXED.")
                return True
            self.say(f"{self.device}: {message}.")
            self.say(
                f"\n{self.device}: UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY.\n\t(i.e., without -a or -p options)"
            )
            raise PreenAbort
        return self._ask(message)

    def _ask(self, message: str) -> bool:
        while True:
            prompt_to = sys.stderr if self.opt.json else self.out
            print(f"{message}.  Fix<y>? ", end="", file=prompt_to, flush=True)
            line = self.answers.readline()
            if line == "":
                self.say("no")
                self.cancel_requested = True
                raise Cancelled
            reply = line.strip().lower() or "y"
            if reply in ("y", "yes"):
                return True
            if reply in ("n", "no"):
                return False
            if reply in ("a", "all"):
                self.yes_to_all = True
                return True
            self.say("Please answer y (yes), n (no) or a (yes to all).")

    def begin_repair(self) -> None:
        """Mark the filesystem as being repaired before the first store of a repair."""
        if self.repairing:
            return
        self.repairing = True
        img = self.image
        if img is None:
            return
        state = img.dyn_field("state")
        img.set_dyn("state", (state & ~fmt.STATE_CLEAN) | fmt.STATE_CHECKING)
        img.barrier()  # alone in its epoch: no later store can persist without it
        img.set_dyn("repair_generation", (img.dyn_field("repair_generation") + 1) & ((1 << 64) - 1))
        img.barrier()

    def checkpoint(self) -> None:
        """A safe point: stop here if the user asked to."""
        if self.cancel_requested:
            raise Cancelled

    # -- passes and progress -------------------------------------------------------------------
    def start_pass(self, number: int, total: int) -> PassStats:
        self.checkpoint()
        self.current_pass = number
        self.say(f"Pass {number}: {PASS_TITLES[number]}")
        stats = PassStats(number)
        stats.extra["_start"] = time.perf_counter()  # type: ignore[assignment]
        self.report.passes.append(stats)
        self._progress_total = max(total, 1)
        self._progress_done = 0
        if self.opt.tty_progress:
            from nvfs_tools.cli import progress

            self._bar = progress(self._progress_total, f"Pass {number}", unit="grp")
        return stats

    def end_pass(self, stats: PassStats) -> None:
        start = stats.extra.pop("_start")
        stats.seconds = time.perf_counter() - start
        self.progress(self._progress_total - self._progress_done)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.opt.verbose:
            extra = "".join(f", {k} {v}" for k, v in stats.extra.items())
            self.say(
                f"  pass {stats.number}: {stats.seconds:.3f} s, {stats.inodes} inodes, {stats.blocks} blocks{extra}"
            )

    def progress(self, step: int) -> None:
        """Advance the current pass by ``step`` units (groups, directories)."""
        if step <= 0:
            return
        self._progress_done = min(self._progress_total, self._progress_done + step)
        if self._bar is not None:
            self._bar.update(step)
        if self.opt.progress_fd is not None:
            if self._progress_file is None:
                try:
                    self._progress_file = os.fdopen(self.opt.progress_fd, "w", closefd=False)
                except OSError:
                    self.opt.progress_fd = None
                    return
            try:
                self._progress_file.write(
                    f"{self.current_pass} {self._progress_done} {self._progress_total} {self.device}\n"
                )
                self._progress_file.flush()
            except OSError:
                self.opt.progress_fd = None
        if self.cancel_requested and not self.repairing:
            raise Cancelled


class SigintGuard:
    """Turns SIGINT into a flag on the checker while a run is in progress."""

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.old: Any = None

    def __enter__(self) -> SigintGuard:
        def handler(signum: int, frame: Any) -> None:
            self.checker.cancel_requested = True

        try:
            self.old = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            self.old = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
