"""Crash residue after a directory page's used area, and a stray bit in the page header's reserved field:
both zeroed (operations.md 4.1, spec/checking.md 8.2-8.3)."""

from nvfs_tools import format as fmt


def damage(fs):
    e = fs.entry("/small", b"n1")
    page = e.block * 4096
    fs.write(page + 4000, b"residue")
    fs.write(page + fmt.field_offset(fmt.DirPageHeader, "reserved") + 5, b"\x10")
