"""Group 1's counters block has a stray byte after the counters."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    fs.write(fs.geo.counters_block(1) * 4096 + 1000, b"\x01")
