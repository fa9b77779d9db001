"""Marked clean, but the counters disagree: caught without -f."""

from nvfs_tools import format as fmt  # noqa: F401

FORCE = False


def damage(fs):
    fs.set_dyn("state", fmt.STATE_CLEAN)
    addr = fs.geo.counters_block(0) * 4096 + fmt.field_offset(fmt.GroupCounters, "free_inodes")
    fs.put(addr, fs.u64(addr) - 1)
