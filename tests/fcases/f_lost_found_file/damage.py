"""/lost+found is a regular file: it goes to lost+found itself and a directory takes its name."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    with fs.volume() as vol:
        vol.rmdir(fmt.ROOT_INO, b"lost+found")
        vol.create(fmt.ROOT_INO, b"lost+found", 0o600, data=b"not a directory")
