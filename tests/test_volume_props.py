"""Property test: random operation sequences against an in-memory model.

Every step reopens the volume from the device, runs one operation on both the
volume and the model (the same error must come out of both), then compares the
whole tree; the structural checker runs on the image at the end of every
example.
"""

from __future__ import annotations

import os
import tempfile

from checker import assert_clean
from fsfactory import make_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvfs_tools import errors as E
from nvfs_tools import format as fmt
from nvfs_tools.volume import Volume

NAMES = ["a", "b", "c", "f", "g"]
#: run first in every example so that moves between directories are likely
PRELUDE = [
    ("mkdir", 0, "a"),
    ("mkdir", 0, "b"),
    ("mkdir", 2, "c"),
    ("create", 0, "f", b"data"),
    ("create", 2, "g", b""),
]
BS = 4096


class Node:
    def __init__(self, kind: str, mode: int) -> None:
        self.kind = kind  # "reg", "dir", "lnk"
        self.mode = mode
        self.uid = 0
        self.data = bytearray()
        self.children: dict[bytes, Node] = {}
        self.parent: Node | None = None
        self.xattrs: dict[bytes, bytes] = {}
        self.ino = 0


class Model:
    def __init__(self, root_ino: int) -> None:
        self.root = Node("dir", fmt.S_IFDIR | 0o755)
        self.root.ino = root_ino
        self.root.children[b"lost+found"] = lf = Node("dir", fmt.S_IFDIR | 0o700)
        lf.parent = self.root
        lf.ino = fmt.FIRST_INO

    def dirs(self) -> list[Node]:
        out, todo = [], [self.root]
        while todo:
            d = todo.pop()
            out.append(d)
            todo.extend(c for _, c in sorted(d.children.items()) if c.kind == "dir")
        return out

    def files(self) -> list[Node]:
        seen: dict[int, Node] = {}
        for d in self.dirs():
            for _, c in sorted(d.children.items()):
                if c.kind != "dir":
                    seen.setdefault(id(c), c)
        return list(seen.values())

    def is_ancestor(self, a: Node, d: Node | None) -> bool:
        while d is not None:
            if d is a:
                return True
            d = d.parent
        return False


ops = st.one_of(
    st.tuples(st.just("create"), st.integers(0, 50), st.sampled_from(NAMES), st.binary(max_size=300)),
    st.tuples(st.just("mkdir"), st.integers(0, 50), st.sampled_from(NAMES)),
    st.tuples(st.just("symlink"), st.integers(0, 50), st.sampled_from(NAMES), st.integers(1, 300)),
    st.tuples(st.just("write"), st.integers(0, 50), st.integers(0, 80 * BS), st.integers(0, 3 * BS)),
    st.tuples(st.just("truncate"), st.integers(0, 50), st.integers(0, 80 * BS)),
    st.tuples(st.just("link"), st.integers(0, 50), st.integers(0, 50), st.sampled_from(NAMES)),
    st.tuples(st.just("unlink"), st.integers(0, 50), st.sampled_from(NAMES)),
    st.tuples(st.just("rmdir"), st.integers(0, 50), st.sampled_from(NAMES)),
    st.tuples(
        st.just("rename"), st.integers(0, 50), st.sampled_from(NAMES), st.integers(0, 50), st.sampled_from(NAMES)
    ),
    st.tuples(
        st.just("exchange"), st.integers(0, 50), st.sampled_from(NAMES), st.integers(0, 50), st.sampled_from(NAMES)
    ),
    st.tuples(st.just("setattr"), st.integers(0, 50), st.integers(0, 0o7777), st.integers(0, 5)),
    st.tuples(
        st.just("setxattr"),
        st.integers(0, 50),
        st.sampled_from([b"user.x", b"user.y", b"trusted.z"]),
        st.binary(max_size=100),
    ),
    st.tuples(st.just("removexattr"), st.integers(0, 50), st.sampled_from([b"user.x", b"user.y"])),
)


def pick(items, i):
    return items[i % len(items)] if items else None


def apply(vol: Volume, model: Model, op: tuple) -> None:
    """Run ``op`` on both; the model decides which error (if any) must come out."""
    kind = op[0]
    dirs = model.dirs()
    files = model.files()
    expect: type[Exception] | None = None
    action = None
    if kind in ("create", "mkdir", "symlink"):
        d, name = pick(dirs, op[1]), op[2].encode()
        if name in d.children:
            expect = E.FileExistsError_
        if kind == "create":
            data = op[3]

            def action():
                return vol.create(d.ino, name, 0o644, data=data or None)

            node = Node("reg", fmt.S_IFREG | 0o644)
            node.data = bytearray(data)
        elif kind == "mkdir":

            def action():
                return vol.mkdir(d.ino, name, 0o755)

            node = Node("dir", fmt.S_IFDIR | 0o755)
        else:
            target = (b"t" * 37)[: op[3] % 37 + 1] * (op[3] // 37 + 1)

            def action():
                return vol.symlink(d.ino, name, target)

            node = Node("lnk", fmt.S_IFLNK | 0o777)
            node.data = bytearray(target)
        if expect is None:
            node.ino = action()
            node.parent = d
            d.children[name] = node
            return
    elif kind == "write":
        f = pick([x for x in files if x.kind == "reg"], op[1])
        if f is None:
            return
        off, n = op[2], op[3]
        data = bytes((off + i) & 0xFF or 1 for i in range(n))
        vol.write(f.ino, off, data)
        if n:
            if len(f.data) < off + n:
                f.data.extend(bytes(off + n - len(f.data)))
            f.data[off : off + n] = data
        return
    elif kind == "truncate":
        f = pick([x for x in files if x.kind == "reg"], op[1])
        if f is None:
            return
        vol.truncate(f.ino, op[2])
        if op[2] < len(f.data):
            del f.data[op[2] :]
        else:
            f.data.extend(bytes(op[2] - len(f.data)))
        return
    elif kind == "link":
        f, d, name = pick(files, op[1]), pick(dirs, op[2]), op[3].encode()
        if f is None:
            return
        if name in d.children:
            expect = E.FileExistsError_

            def action():
                vol.link(f.ino, d.ino, name)
        else:
            vol.link(f.ino, d.ino, name)
            d.children[name] = f
            return
    elif kind in ("unlink", "rmdir"):
        d, name = pick(dirs, op[1]), op[2].encode()
        c = d.children.get(name)
        if c is None:
            expect = E.NoSuchFileError
        elif kind == "unlink" and c.kind == "dir":
            expect = E.IsADirectoryError_
        elif kind == "rmdir" and c.kind != "dir":
            expect = E.NotADirectoryError_
        elif kind == "rmdir" and c.children:
            expect = E.DirectoryNotEmptyError
        if d is model.root and name == b"lost+found":
            return

        def action():
            (vol.unlink if kind == "unlink" else vol.rmdir)(d.ino, name)

        if expect is None:
            action()
            del d.children[name]
            return
    elif kind == "rename":
        sd, sn, dd, dn = pick(dirs, op[1]), op[2].encode(), pick(dirs, op[3]), op[4].encode()
        s = sd.children.get(sn)
        t = dd.children.get(dn)
        if sd is model.root and sn == b"lost+found" or dd is model.root and dn == b"lost+found":
            return
        if s is None:
            expect = E.NoSuchFileError
        elif s is t:
            expect = None
        elif t is not None and s.kind == "dir" and t.kind != "dir":
            expect = E.NotADirectoryError_
        elif t is not None and s.kind != "dir" and t.kind == "dir":
            expect = E.IsADirectoryError_
        elif t is not None and t.kind == "dir" and t.children:
            expect = E.DirectoryNotEmptyError
        elif s.kind == "dir" and model.is_ancestor(s, dd):
            expect = E.InvalidArgumentError

        def action():
            vol.rename(sd.ino, sn, dd.ino, dn)

        if expect is None:
            action()
            if s is not t:
                del sd.children[sn]
                dd.children[dn] = s
                if s.kind == "dir":
                    s.parent = dd
            return
    elif kind == "exchange":
        sd, sn, dd, dn = pick(dirs, op[1]), op[2].encode(), pick(dirs, op[3]), op[4].encode()
        s, t = sd.children.get(sn), dd.children.get(dn)
        if b"lost+found" in (sn, dn) and model.root in (sd, dd):
            return
        if s is None or t is None:
            expect = E.NoSuchFileError
        elif s is t:
            expect = None
        elif (s.kind == "dir" and model.is_ancestor(s, dd)) or (t.kind == "dir" and model.is_ancestor(t, sd)):
            expect = E.InvalidArgumentError

        def action():
            vol.exchange(sd.ino, sn, dd.ino, dn)

        if expect is None:
            action()
            if s is not t:
                sd.children[sn], dd.children[dn] = t, s
                if s.kind == "dir":
                    s.parent = dd
                if t.kind == "dir":
                    t.parent = sd
            return
    elif kind == "setattr":
        f = pick(files + dirs, op[1])
        vol.setattr(f.ino, mode=op[2], uid=op[3], mtime=(op[2], op[3]))
        f.mode = (f.mode & fmt.S_IFMT) | op[2]
        f.uid = op[3]
        return
    elif kind == "setxattr":
        f = pick(files + dirs, op[1])
        vol.setxattr(f.ino, op[2], op[3])
        f.xattrs[op[2]] = op[3]
        return
    elif kind == "removexattr":
        f = pick(files + dirs, op[1])
        if op[2] not in f.xattrs:
            expect = E.NoSuchFileError

            def action():
                vol.removexattr(f.ino, op[2])
        else:
            vol.removexattr(f.ino, op[2])
            del f.xattrs[op[2]]
            return
    assert expect is not None
    try:
        action()
    except expect:
        return
    raise AssertionError(f"{op} should have raised {expect.__name__}")


def compare(vol: Volume, model: Model) -> None:
    for d in model.dirs():
        entries = {e.name: e.ino for e in vol.listdir(d.ino)}
        assert entries == {n: c.ino for n, c in d.children.items()}
        node = vol.read_inode(d.ino)
        assert node.links_count == 2 + sum(c.kind == "dir" for c in d.children.values())
        assert node.parent == (d.parent.ino if d.parent else d.ino)
    for f in model.files() + model.dirs()[1:]:
        node = vol.read_inode(f.ino)
        assert node.mode == f.mode and node.uid == f.uid
        if f.kind == "reg":
            assert vol.read(f.ino) == bytes(f.data)
        elif f.kind == "lnk":
            assert vol.readlink(f.ino) == bytes(f.data)
        assert {n: vol.getxattr(f.ino, n) for n in vol.listxattr(f.ino)} == f.xattrs


#: NVFS_VOLUME_EXAMPLES=2000 turns this into a long campaign (the default keeps CI fast)
EXAMPLES = int(os.environ.get("NVFS_VOLUME_EXAMPLES", "40"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=25), st.booleans(), st.booleans())
def test_random_operations_match_model(seq, quota, two_groups):
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        size, inodes = ((160 << 20), 512) if two_groups else ((8 << 20), None)
        path = make_image(os.path.join(tmp, "fs.img"), size, quota=quota, inode_count=inodes)
        model = Model(fmt.ROOT_INO)
        for op in PRELUDE + seq:
            with Volume.open(path, writable=True) as vol:
                apply(vol, model, op)
            with Volume.open(path) as vol:
                compare(vol, model)
        assert_clean(path)
