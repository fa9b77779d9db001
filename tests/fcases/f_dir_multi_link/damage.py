"""A second entry for directory /nested/a inside /small (a directory hard link)."""

from nvfs_tools import format as fmt  # noqa: F401


def damage(fs):
    from nvfs_tools.directory import Directory

    with fs.volume() as vol:
        Directory(vol, vol.lookup(b"/small")).add(b"again", vol.lookup(b"/nested/a"), fmt.DT_DIR)
