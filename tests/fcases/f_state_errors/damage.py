"""State says ERRORS (and CLEAN too): reported even though the full check finds nothing else."""

from nvfs_tools import format as fmt


def damage(fs):
    fs.set_dyn("state", fmt.STATE_ERRORS | fmt.STATE_CLEAN)
