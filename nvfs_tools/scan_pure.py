"""Pure-Python reference of the fast-scan functions (same names and results)."""

from __future__ import annotations

from nvfs_tools.namehash import siphash24_pure as siphash24

__all__ = ["siphash24"]
