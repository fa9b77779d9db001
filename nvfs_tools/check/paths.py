"""Path names for messages: which directory entry names an inode, as found on the media."""

from __future__ import annotations

from typing import Any

from nvfs_tools import format as fmt


def show(name: bytes) -> str:
    """Printable form of an on-media name (invalid UTF-8 as backslash escapes)."""
    return name.decode("utf-8", "backslashreplace")


class PathNamer:
    """Names inodes through the entries the checker has read (first entry wins)."""

    def __init__(self, chk: Any) -> None:
        self.chk = chk
        self.up: dict[int, tuple[int, bytes]] = {}
        for dino, info in chk.inodes.items():
            scan = getattr(info, "dirscan", None)
            children = chk.children.get(dino) if hasattr(chk, "children") and chk.children else None
            if children is not None:
                for entry in children:
                    self.up.setdefault(entry[1], (dino, entry[0]))
            elif scan is not None:
                for e in scan.entries:
                    self.up.setdefault(e.ino, (dino, e.name))

    def path(self, ino: int) -> str:
        if ino == fmt.ROOT_INO:
            return "/"
        parts: list[bytes] = []
        seen: set[int] = set()
        cur = ino
        while cur != fmt.ROOT_INO:
            if cur in seen or cur not in self.up or len(parts) > 64:
                return "???/" + show(b"/".join(reversed(parts))) if parts else f"<inode {ino}>"
            seen.add(cur)
            parent, name = self.up[cur]
            parts.append(name)
            cur = parent
        return "/" + show(b"/".join(reversed(parts)))

    def child(self, dino: int, name: bytes) -> str:
        base = self.path(dino)
        return (base.rstrip("/") + "/" + show(name)) if not base.startswith("<") else f"{base}/{show(name)}"
