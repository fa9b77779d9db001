"""/lost+found was removed."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    with fs.volume() as vol:
        vol.rmdir(fmt.ROOT_INO, b"lost+found")
