"""Chooses the scan implementation: the Cython core or the pure-Python reference.

``NVFS_PURE=1`` in the environment forces the pure-Python path (CI runs the
suite that way once, so both stay correct).
"""

from __future__ import annotations

import os
from types import ModuleType

_backend: ModuleType | None = None


def backend() -> ModuleType:
    """The module that implements the fast-scan functions."""
    global _backend
    if _backend is None:
        _backend = _load()
    return _backend


def using_compiled() -> bool:
    return backend().__name__.endswith("_fastscan")


def _load() -> ModuleType:
    if os.environ.get("NVFS_PURE") != "1":
        try:
            from nvfs_tools import _fastscan

            return _fastscan
        except ImportError:
            pass
    from nvfs_tools import scan_pure

    return scan_pure
