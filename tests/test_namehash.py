"""The name hash is SipHash-2-4: check it against the published test vectors."""

import pytest

from nvfs_tools.namehash import siphash24_pure

KEY = bytes(range(16))

# First entries of the reference vectors (Aumasson & Bernstein, vectors.h):
# message i is bytes 0..i-1, key is bytes 0..15, output little-endian.
VECTORS = {
    0: "310e0edd47db6f72",
    1: "fd67dc93c539f874",
    7: "37d1018bf50002ab",
    8: "6224939a79f5f593",
    15: "e545be4961ca29a1",
}


@pytest.mark.parametrize("length", sorted(VECTORS))
def test_reference_vectors(length):
    expected = int.from_bytes(bytes.fromhex(VECTORS[length]), "little")
    assert siphash24_pure(KEY, bytes(range(length))) == expected


def test_key_changes_hash():
    assert siphash24_pure(KEY, b"name") != siphash24_pure(bytes(16), b"name")


def test_rejects_short_key():
    with pytest.raises(ValueError):
        siphash24_pure(b"short", b"x")
