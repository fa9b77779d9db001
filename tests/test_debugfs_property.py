"""Property: after any sequence of file-level debugfs requests the image is clean.

Hypothesis draws request sequences (write, mkdir, ln, rm, rmdir, rename,
symlink, mknod, ea_set, ea_rm) over a small name space so that collisions,
non-empty directories and cross-directory renames happen often.  Requests may
fail (exists, not empty, ...): that is part of the property, since a failed
request must leave nothing half done.  The image is then checked by
``fsck.nvfs -fn`` (or the library's structural checker while fsck is absent),
and the listings must match a model of what the successful requests did.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvfs_tools.debugfs import Session

UUID = "12345678-1234-1234-1234-123456789abc"
NAMES = ["a", "b", "c"]
DIRS = ["", "d1/", "d2/"]
_PRISTINE: dict[str, Path] = {}


def pristine(tmp: Path) -> Path:
    if "img" not in _PRISTINE:
        img = tmp / "pristine.img"
        subprocess.run(["mkfs.nvfs", "-q", "-U", UUID, str(img), "16M"], check=True, timeout=120)
        host = tmp / "host"
        host.mkdir()
        (host / "tiny").write_bytes(b"tiny\n")
        (host / "multi").write_bytes(os.urandom(5 * 4096 + 17))
        (host / "ind").write_bytes(bytes(range(256)) * (13 * 16))
        _PRISTINE["img"] = img
        _PRISTINE["host"] = host
    return _PRISTINE["img"]


paths = st.builds(lambda d, n: d + n, st.sampled_from(DIRS), st.sampled_from(NAMES))
dirs = st.sampled_from(["d1", "d2", "d1/d3"])
requests = st.one_of(
    st.builds(lambda p, f: f"write {{host}}/{f} {p}", paths, st.sampled_from(["tiny", "multi", "ind"])),
    st.builds(lambda d: f"mkdir {d}", dirs),
    st.builds(lambda d: f"rmdir {d}", dirs),
    st.builds(lambda a, b: f"ln {a} {b}", paths, paths),
    st.builds(lambda p: f"rm {p}", paths),
    st.builds(lambda a, b: f"rename {a} {b}", paths, paths),
    st.builds(lambda p, t: f"symlink {p} {t}", paths, st.sampled_from(["x", "/" + "y" * 150])),
    st.builds(lambda p, k: f"mknod {p} {k}", paths, st.sampled_from(["p", "c 1 3", "b 8 1", "s"])),
    st.builds(lambda p, v: f"ea_set {p} user.k {v}", paths, st.sampled_from(["v", "w" * 300])),
    st.builds(lambda p: f"ea_rm {p} user.k", paths),
)


def fsck_clean(img: Path) -> None:
    if shutil.which("fsck.nvfs"):
        res = subprocess.run(["fsck.nvfs", "-fn", str(img)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
    else:  # pragma: no cover - until fsck lands
        from checker import check_image

        assert check_image(str(img)) == []


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(requests, min_size=1, max_size=14))
def test_file_requests_leave_a_clean_image(tmp_path_factory, seq):
    tmp = tmp_path_factory.getbasetemp() / "debugfs_property"
    tmp.mkdir(exist_ok=True)
    img = tmp / "work.img"
    shutil.copyfile(pristine(tmp), img)
    host = _PRISTINE["host"]
    out, err = io.StringIO(), io.StringIO()
    s = Session(str(img), writable=True, out=out, err=err)
    model: set[str] = set()
    listings: dict[str, set[str]] = {}
    try:
        for req in ["mkdir d1", "mkdir d2", *seq]:
            if s.run_line(req.format(host=host)):
                apply(model, req.split())
        for d in ("", "d1", "d2"):
            s.out = io.StringIO()
            if d and d not in model:
                assert not s.run_line(f"ls /{d}")
                continue
            assert s.run_line(f"ls /{d}")
            names = {line.split()[1] for line in s.out.getvalue().splitlines()} - {".", ".."}
            listings[d] = {f"{d}/{n}" if d else n for n in names}
    finally:
        s.close()
    assert "internal error" not in err.getvalue(), err.getvalue()
    for d, names in listings.items():
        expected = {p for p in model if (p.rpartition("/")[0] == d)}
        if not d:
            expected.add("lost+found")
        assert names == expected, (d, seq, err.getvalue())
    fsck_clean(img)


def apply(model: set[str], words: list[str]) -> None:
    """What a successful request does to the set of paths (the model)."""
    op, args = words[0], words[1:]
    if op in ("write", "ln"):
        model.add(args[1])
    elif op in ("mkdir", "symlink", "mknod"):
        model.add(args[0])
    elif op in ("rm", "rmdir"):
        model.discard(args[0])
    elif op == "rename":
        model.discard(args[0])
        model.add(args[1])
