"""What a check found and did: the text lines and the ``--json`` report.

Both outputs come from the same :class:`Finding` records, whose wording comes
from the problem table, so the two never disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from nvfs_tools.check.problems import PROBLEMS, fix_text, render

# fsck(8) exit codes, summed.
EXIT_OK = 0
EXIT_FIXED = 1
EXIT_REBOOT = 2
EXIT_UNCORRECTED = 4
EXIT_OPERATIONAL = 8
EXIT_USAGE = 16
EXIT_CANCELLED = 32


@dataclass
class Finding:
    """One problem found: its code, the details that fill its message, and the outcome."""

    code: str
    details: dict[str, Any]
    fixed: bool = False
    answered: str = "no"

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


@dataclass
class PassStats:
    """Per-pass statistics for ``-v``."""

    number: int
    seconds: float = 0.0
    inodes: int = 0
    blocks: int = 0
    extra: dict[str, int] = field(default_factory=dict)


@dataclass
class Report:
    """Everything one run of fsck produced."""

    device: str
    findings: list[Finding] = field(default_factory=list)
    passes: list[PassStats] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    modified: bool = False
    cancelled: bool = False
    aborted: bool = False
    used_backup: bool = False
    files_used: int = 0
    files_total: int = 0
    blocks_used: int = 0
    blocks_total: int = 0
    skipped_clean: bool = False
    error: str | None = None
    exit_code_override: int | None = None

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
        return json.dumps(doc, indent=2, sort_keys=False)
