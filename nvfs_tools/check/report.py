"""What a check found and did: the text lines and the ``--json`` report.

Both outputs come from the same :class:`Finding` records, whose wording comes
from the problem table, so the two never disagree.
"""

from __future__ import annotations

from typing import Any

from nvfs_tools.check.problems import PROBLEMS, fix_text, render
from nvfs_tools.record import Fields

# fsck(8) exit codes, summed.
EXIT_OK = 0
EXIT_FIXED = 1
EXIT_REBOOT = 2
EXIT_UNCORRECTED = 4
EXIT_OPERATIONAL = 8
EXIT_USAGE = 16
EXIT_CANCELLED = 32


class Finding(Fields):
    """One problem found: its code, the details that fill its message, and the outcome.

    (The three classes here are :class:`~nvfs_tools.record.Fields`, not dataclasses: importing
    ``dataclasses`` costs every fsck run ~10 ms of start-up.)
    """

    __slots__ = _fields = ("code", "details", "fixed", "answered")

    def __init__(self, code: str, details: dict[str, Any], fixed: bool = False, answered: str = "no") -> None:
        self.code = code
        self.details = details
        self.fixed = fixed
        self.answered = answered

    @property
    def message(self) -> str:
        return render(self.code, self.details)

    def to_json(self) -> dict[str, Any]:
        row = PROBLEMS[self.code]
        out: dict[str, Any] = {
            "code": self.code,
            "pass": row.pass_no,
            "severity": row.severity,
            "preen_safe": row.preen_safe,
            "message": self.message,
            "fix": fix_text(self.code, self.details),
            "fixed": self.fixed,
        }
        for key in ("ino", "block", "path", "group", "child"):
            if key in self.details:
                out[key] = self.details[key]
        out["details"] = {k: _jsonable(v) for k, v in self.details.items()}
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape").encode("utf-8", "backslashreplace").decode()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class PassStats(Fields):
    """Per-pass statistics for ``-v``."""

    __slots__ = _fields = ("number", "seconds", "inodes", "blocks", "extra")

    def __init__(self, number: int) -> None:
        self.number = number
        self.seconds = 0.0
        self.inodes = 0
        self.blocks = 0
        self.extra: dict[str, Any] = {}


class Report(Fields):
    """Everything one run of fsck produced."""

    _fields = (
        "device", "findings", "passes", "notes", "modified", "cancelled", "aborted", "used_backup", "files_used",
        "files_total", "blocks_used", "blocks_total", "skipped_clean", "error", "exit_code_override",
    )  # fmt: skip

    def __init__(self, device: str) -> None:
        self.device = device
        self.findings: list[Finding] = []
        self.passes: list[PassStats] = []
        self.notes: list[str] = []
        self.modified = False
        self.cancelled = False
        self.aborted = False
        self.used_backup = False
        self.files_used = 0
        self.files_total = 0
        self.blocks_used = 0
        self.blocks_total = 0
        self.skipped_clean = False
        self.error: str | None = None
        self.exit_code_override: int | None = None

    @property
    def unfixed(self) -> list[Finding]:
        return [f for f in self.findings if not f.fixed]

    def exit_code(self) -> int:
        if self.exit_code_override is not None:
            return self.exit_code_override
        code = 0
        if self.modified:
            code |= EXIT_FIXED
        if self.unfixed or self.aborted:
            code |= EXIT_UNCORRECTED
        if self.cancelled:
            code |= EXIT_CANCELLED
        return code

    def to_json(self) -> str:
        counts: dict[str, int] = {}
        for f in self.findings:
            counts[f.code] = counts.get(f.code, 0) + 1
        doc = {
            "device": self.device,
            "exit_code": self.exit_code(),
            "modified": self.modified,
            "cancelled": self.cancelled,
            "used_backup_superblock": self.used_backup,
            "skipped_clean": self.skipped_clean,
            "error": self.error,
            "problems": [f.to_json() for f in self.findings],
            "totals": {
                "problems": len(self.findings),
                "fixed": sum(1 for f in self.findings if f.fixed),
                "unfixed": len(self.unfixed),
                "by_code": counts,
                "files_used": self.files_used,
                "files_total": self.files_total,
                "blocks_used": self.blocks_used,
                "blocks_total": self.blocks_total,
            },
            "passes": [
                {"pass": p.number, "seconds": round(p.seconds, 6), "inodes": p.inodes, "blocks": p.blocks, **p.extra}
                for p in self.passes
            ],
            "notes": self.notes,
        }
        import json  # only for --json

        return json.dumps(doc, indent=2, sort_keys=False)
