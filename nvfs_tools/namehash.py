"""The directory name hash: SipHash-2-4 keyed by the superblock's hash seed.

SipHash (Aumasson and Bernstein, 2012) is a keyed 64-bit PRF: with a per-
filesystem random key nobody can craft names that all land in one directory
page.  This module is the pure-Python reference; the fast-scan core carries a
C implementation of the same function, and ``name_hash`` uses it when built.
"""

from __future__ import annotations

_MASK = 0xFFFFFFFFFFFFFFFF


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (64 - shift))) & _MASK


def siphash24_pure(key: bytes, data: bytes) -> int:
    """SipHash-2-4 of ``data`` under the 16-byte ``key`` (reference version)."""
    if len(key) != 16:
        raise ValueError("SipHash key must be 16 bytes")
    k0 = int.from_bytes(key[:8], "little")
    k1 = int.from_bytes(key[8:], "little")
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(count: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(count):
            v0 = (v0 + v1) & _MASK
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    length = len(data)
    tail_start = length - length % 8
    for offset in range(0, tail_start, 8):
        m = int.from_bytes(data[offset : offset + 8], "little")
        v3 ^= m
        rounds(2)
        v0 ^= m
    last = ((length & 0xFF) << 56) | int.from_bytes(data[tail_start:], "little")
    v3 ^= last
    rounds(2)
    v0 ^= last
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


def _select():
    """Pick the compiled SipHash when the fast-scan core is available."""
    try:
        from nvfs_tools import scan

        compiled = getattr(scan.backend(), "siphash24", None)
    except ImportError:
        compiled = None
    return compiled or siphash24_pure


_siphash = None


def name_hash(seed: bytes, name: bytes) -> int:
    """The 64-bit hash that places ``name`` in a directory's radix tree."""
    global _siphash
    if _siphash is None:
        _siphash = _select()
    return _siphash(seed, name)
