"""Group 0's free block counter is off by 5 and group 1's counters block lost its magic."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    addr = fs.geo.counters_block(0) * 4096 + fmt.field_offset(fmt.GroupCounters, "free_blocks")
    fs.put(addr, fs.u64(addr) + 5)
    fs.write(fs.geo.counters_block(1) * 4096, b"garbage!")
