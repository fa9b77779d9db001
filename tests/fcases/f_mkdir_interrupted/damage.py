"""A mkdir cut before its entry committed: the empty directory is freed, the parent's count lowered."""

from nvfs_tools import format as fmt


def damage(fs):
    with fs.volume() as vol:
        vol.mkdir(fs.ino("/docs"), b"half-made-dir")
    fs.remove_entry("/docs", b"half-made-dir")
    assert fmt.ROOT_INO
