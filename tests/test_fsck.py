"""fsck.nvfs command line, prompting, exit codes, reports, progress, interruption and the documented table."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fcases"))
import base  # noqa: E402

from nvfs_tools import format as fmt  # noqa: E402
from nvfs_tools.check import Options, check  # noqa: E402
from nvfs_tools.check.problems import PROBLEMS  # noqa: E402

ROOT = Path(__file__).parent.parent
FSCK = [sys.executable, "-m", "nvfs_tools.fsck"]


@pytest.fixture(scope="module")
def base_image(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fsckcli") / "base.img")
    files = base.build_base(path)
    return path, files


@pytest.fixture
def image(base_image, tmp_path):
    src, _ = base_image
    dst = str(tmp_path / "img")
    base.copy_image(src, dst)
    return dst


def damaged(path: str) -> base.Damage:
    fs = base.Damage(path)
    ino = fs.ino("/docs/big.bin")
    fs.set_inode(ino, "links_count", 7)  # preen-safe
    return fs


def fsck(*args: str, stdin=subprocess.DEVNULL, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*FSCK, *args], capture_output=True, text=True, stdin=stdin, env=env, timeout=120)


# -- command line ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["-n", "-y", "x"],
        ["-p", "-n", "x"],
        ["-ny", "x"],
        [],
        ["-n"],
        ["-n", "a", "b"],
        ["-Q", "x"],
        ["-C"],
        ["-Cz", "x"],
    ],
)
def test_usage_errors(args):
    run = fsck(*args)
    assert run.returncode == 16
    assert "usage:" in run.stderr and "Traceback" not in run.stderr


def test_no_terminal_refuses_to_ask(image):
    run = fsck(image)
    assert run.returncode == 16
    assert "not a terminal" in run.stderr


@pytest.mark.parametrize(
    "content,needle",
    [(None, "no such file"), (b"", "empty"), (b"\0" * 65536, "not an NVFS"), (b"x" * 100, "")],
    ids=["missing", "empty", "zeros", "tiny"],
)
def test_operational_errors(tmp_path, content, needle):
    path = tmp_path / "dev"
    if content is not None:
        path.write_bytes(content)
    run = fsck("-n", str(path))
    assert run.returncode == 8, run.stderr
    assert needle in run.stderr and "Traceback" not in run.stderr


def test_directory_is_refused(tmp_path):
    run = fsck("-n", str(tmp_path))
    assert run.returncode == 8 and "directory" in run.stderr


def test_unknown_incompat_feature_is_refused(image):
    raw = bytearray(open(image, "rb").read(2048))
    off = fmt.field_offset(fmt.SuperblockStatic, "feature_incompat")
    raw[off : off + 4] = (0x80).to_bytes(4, "little")
    raw[2044:2048] = fmt.sb_static_checksum(bytes(raw)).to_bytes(4, "little")
    with open(image, "r+b") as f:
        f.write(raw)
    run = fsck("-fn", image)
    assert run.returncode == 8 and "incompatible" in run.stderr


def test_truncated_image_is_refused(image):
    os.truncate(image, os.path.getsize(image) - 8 * 4096)
    run = fsck("-fn", image)
    assert run.returncode == 8 and "blocks" in run.stderr


def test_version_is_fast():
    run = fsck("--version")
    assert run.returncode == 0 and "fsck.nvfs" in run.stdout
    code = "import time,sys; t=time.perf_counter(); import nvfs_tools.fsck as f; sys.argv=['x','--version']; f.main()"
    best = min(_timed([sys.executable, "-X", "importtime", "-c", code]) for _ in range(3))
    assert best < 1.0  # generous: the interpreter itself; the lazy import is checked below
    mods = subprocess.run(
        [sys.executable, "-c", "import sys, nvfs_tools.fsck as f; f.main(['--version']); print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
    ).stdout
    for heavy in ("construct", "nvfs_tools.check", "nvfs_tools.volume", "tqdm", "numpy"):
        assert f"'{heavy}'" not in mods


def _timed(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(args, capture_output=True)
    return time.perf_counter() - t


# -- modes ---------------------------------------------------------------------------------------
def test_preen_fixes_safe_problems(image):
    damaged(image)
    run = fsck("-pf", image)
    assert run.returncode == 1, run.stdout
    assert "FIXED" in run.stdout
    assert fsck("-fn", image).returncode == 0


def test_preen_stops_on_unsafe_problem(image):
    fs = base.Damage(image)
    fs.set_inode(fs.ino("/docs/big.bin"), "block", fs.geo.blocks_count + 1, index=2)
    run = fsck("-pf", image)
    assert run.returncode == 4
    assert "UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY" in run.stdout
    assert fsck("-fy", image).returncode == 1
    assert fsck("-fn", image).returncode == 0


def test_interactive_answers(image):
    """y, n and a answers (in-process, answers from a stream)."""
    fs = base.Damage(image)
    fs.set_inode(fs.ino("/docs/big.bin"), "links_count", 7)
    fs.set_inode(fs.ino("/docs/five.bin"), "links_count", 7)
    fs.set_dyn("free_inodes", 5)
    out = io.StringIO()
    rep = check(image, Options(mode="ask", force=True), out=out, answers=io.StringIO("n\nmaybe\ny\n"))
    text = out.getvalue()
    assert "Fix<y>?" in text and "Please answer" in text
    assert [f.fixed for f in rep.findings if f.code == "LINK_COUNT"] == [False, True]
    # the superblock totals question met the end of the input: cancelled there
    assert rep.findings[-1].code == "SB_FREE_COUNTS" and not rep.findings[-1].fixed
    assert rep.cancelled and rep.exit_code() == 32 + 4 + 1
    out = io.StringIO()
    rep = check(image, Options(mode="ask", force=True), out=out, answers=io.StringIO("a\n"))
    assert rep.exit_code() == 1 and all(f.fixed for f in rep.findings)
    assert check(image, Options(mode="n", force=True), out=io.StringIO()).exit_code() == 0


def test_end_of_input_cancels(image):
    damaged(image)
    rep = check(image, Options(mode="ask", force=True), out=io.StringIO(), answers=io.StringIO(""))
    assert rep.cancelled and rep.exit_code() & 32


def test_prompt_through_a_terminal(image):
    """A person at a terminal: the question appears, 'y' fixes it."""
    import pty

    damaged(image)
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - child
        os.execv(sys.executable, [*FSCK, "-f", image])
    out = b""
    deadline = time.time() + 60
    answered = False
    while time.time() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if not answered and b"Fix<y>?" in out:
            os.write(fd, b"y\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    assert answered, out
    assert os.waitstatus_to_exitcode(status) == 1, out
    assert fsck("-fn", image).returncode == 0


# -- reports -------------------------------------------------------------------------------------
def test_json_report(image):
    fs = damaged(image)
    ino = fs.ino("/docs/big.bin")
    run = fsck("-fn", "--json", image)
    assert run.returncode == 4
    doc = json.loads(run.stdout)
    assert doc["exit_code"] == 4
    (problem,) = [p for p in doc["problems"] if p["code"] == "LINK_COUNT"]
    assert problem["ino"] == ino and problem["fixed"] is False and problem["path"] == "/docs/big.bin"
    assert problem["severity"] == PROBLEMS["LINK_COUNT"].severity
    assert doc["totals"]["unfixed"] == len(doc["problems"]) >= 1
    assert [p["pass"] for p in doc["passes"]] == [0, 1, 2, 3, 4, 5]
    run = fsck("-fy", "--json", image)
    doc = json.loads(run.stdout)
    assert run.returncode == doc["exit_code"] == 1 and all(p["fixed"] for p in doc["problems"])


def test_verbose_statistics(image):
    run = fsck("-fnv", image)
    assert run.returncode == 0
    assert len(re.findall(r"pass \d: [\d.]+ s, \d+ inodes, \d+ blocks", run.stdout)) == 6


def test_progress_lines(image):
    r, w = os.pipe()
    proc = subprocess.Popen([*FSCK, "-fn", "-C", str(w), image], pass_fds=(w,), stdout=subprocess.PIPE)
    os.close(w)
    with os.fdopen(r) as f:
        lines = f.read().splitlines()
    assert proc.wait() == 0
    passes = set()
    for line in lines:
        p, cur, mx, dev = line.split(" ", 3)
        assert dev == image and 0 <= int(cur) <= int(mx)
        passes.add(int(p))
    assert passes == {0, 1, 2, 3, 4, 5}


def test_clean_flag_shortcut_and_force(image):
    run = fsck("-n", image)
    assert run.returncode == 0 and "clean," in run.stdout and "Pass 1" not in run.stdout
    assert "Pass 5" in fsck("-fn", image).stdout


def test_sigint_stops_between_repairs(image):
    """Ctrl-C during a long repair: exit 32 (+1), STATE_CHECKING left, the next run repairs to clean."""
    fs = base.Damage(image)
    for i in range(300):
        fs.set_inode(fs.ino(f"/many/f{i:03d}"), "links_count", 5)
    env = dict(os.environ, NVFS_FSCK_TEST_DELAY="0.01")
    proc = subprocess.Popen([*FSCK, "-fy", image], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    time.sleep(0.3)
    deadline = time.time() + 30
    seen = 0
    while time.time() < deadline and seen < 2:  # the second question means the first repair is done
        seen += "link count" in proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (32 + 1, 32 + 1 + 4), (out, err)
    assert "Traceback" not in err
    assert base.Damage(image).get_dyn("state") & fmt.STATE_CHECKING
    again = fsck("-y", image)  # no -f: the interrupted repair forces the full check
    assert "interrupted" in again.stdout and again.returncode == 1
    assert fsck("-fn", image).returncode == 0


def test_n_never_writes_even_with_journal_and_orphans(image):
    fs = base.Damage(image)
    ino = fs.ino("/docs/five.bin")
    fs.set_inode(ino, "next_orphan", 0)
    fs.set_dyn("orphan_head", ino)
    before = base.digest(image)
    assert fsck("-fn", image).returncode == 4
    assert base.digest(image) == before


def test_quota_usage_agrees_with_the_library(tmp_path):
    """Usage the library charged is what fsck counts; a damaged record is rewritten."""
    sys.path.insert(0, str(Path(__file__).parent))
    from fsfactory import make_image

    from nvfs_tools.quota import read_usage
    from nvfs_tools.volume import Volume

    path = make_image(tmp_path / "q.img", 32 << 20, quota=True)
    with Volume.open(path, writable=True) as vol:
        d = vol.mkdir(fmt.ROOT_INO, b"d", 0o755, uid=1000, gid=100)
        for i in range(6):
            vol.create(d, b"f%d" % i, 0o644, uid=1000 + i % 2, gid=100, data=b"x" * (5000 * i))
        vol.symlink(fmt.ROOT_INO, b"s", b"t" * 200, uid=7)
        vol.unlink(d, b"f3")
        before = read_usage(vol, fmt.USR_QUOTA_INO, 1001)
    assert check(path, Options(mode="n", force=True), out=io.StringIO()).exit_code() == 0
    with Volume.open(path, writable=True) as vol:
        vol.write(fmt.USR_QUOTA_INO, 1001 * fmt.QUOTA_RECORD_SIZE, (12345).to_bytes(8, "little"), charge=False)
    rep = check(path, Options(mode="y", force=True), out=io.StringIO())
    assert [f.code for f in rep.findings] == ["QUOTA_USAGE"] and rep.exit_code() == 1
    with Volume.open(path) as vol:
        assert read_usage(vol, fmt.USR_QUOTA_INO, 1001) == before
    assert check(path, Options(mode="n", force=True), out=io.StringIO()).exit_code() == 0


# -- the documented table ------------------------------------------------------------------------
def test_doc_table_matches_problem_table():
    from nvfs_tools.check import doc

    text = (ROOT / "docs" / "fsck.md").read_text()
    assert doc.render(text) == text, "docs/fsck.md is stale: run python -m nvfs_tools.check.doc docs/fsck.md"
    for code in PROBLEMS:
        assert f"`{code}`" in text


def test_every_problem_code_has_a_case():
    outputs = "".join(p.read_text() for p in (ROOT / "tests" / "fcases").glob("*/expect.1"))
    for code, row in PROBLEMS.items():
        pattern = re.sub(r"\\\{[^}]*\\\}", ".*", re.escape(row.message))
        assert re.search(pattern, outputs), f"no f_* case shows {code}"


# -- the bulk fast path, window by window ----------------------------------------------------------
def _spread_image(path: str) -> tuple[str, list[tuple[int, int]]]:
    """A sparse 400 MiB image (4 groups) with a one-block file in directories of groups 1, 2, 3."""
    from fsfactory import make_image

    from nvfs_tools.volume import Volume

    make_image(path, 400 << 20)
    made = []
    with Volume.open(path, writable=True) as vol:
        for i in range(3):
            d = vol.mkdir(fmt.ROOT_INO, f"d{i}", 0o755)
            f = vol.create(d, "f", 0o644)
            vol.write(f, 0, b"x" * 3000)
            made.append((d, f))
    return path, made


def _fast(path: str, window: int, monkeypatch) -> tuple[bool, list[tuple[int, int]]]:
    from nvfs_tools.check import fastpath
    from nvfs_tools.check.image import Image
    from nvfs_tools.check.pass0_super import load_superblock
    from nvfs_tools.device import Device

    monkeypatch.setattr(fastpath, "WINDOW_BYTES", window)
    with Device(path) as dev:
        static, raw, _reason, _off = load_superblock(dev, False)
        img = Image(dev, static, raw)
        windows = fastpath._windows(img)
        proven = fastpath.verify(img, quota=False) is not None
        del img
    return proven, windows


def test_fast_path_windows_skip_holes_and_see_across_windows(tmp_path, monkeypatch):
    path = str(tmp_path / "fresh.img")
    from fsfactory import make_image

    make_image(path, 400 << 20)
    assert _fast(path, 1, monkeypatch) == (True, [(0, 1)])  # groups 1..3: inode tables are holes, not read
    assert os.stat(path).st_blocks * 512 < 4 << 20  # and reading did not fill the sparse image

    path, made = _spread_image(str(tmp_path / "spread.img"))
    assert {(f - 1) // 6400 for _, f in made} == {1, 2, 3}
    assert _fast(path, 1, monkeypatch) == (True, [(0, 1), (1, 2), (2, 3), (3, 4)])
    assert _fast(path, 1 << 30, monkeypatch) == (True, [(0, 4)])
    # the file of group 1 now claims the block of the file of group 3: two windows, one block
    from nvfs_tools.volume import Volume

    with Volume.open(path, writable=True) as vol:
        other = vol.read_inode(made[2][1]).block[0]
        vol.set_inode_fields(made[0][1], block=[other] + [0] * (fmt.N_BLOCK_POINTERS - 1))
    for window in (1, 1 << 30):
        assert _fast(path, window, monkeypatch)[0] is False
    assert check(path, Options(mode="n", force=True), out=io.StringIO()).exit_code() == 4


def test_prefetched_table_holes_are_the_answer_only_to_the_same_question(tmp_path, monkeypatch):
    """fsck -fn finds which inode tables are holes on a thread while pass 0 runs; the Image takes that
    answer only for its own device and question, and a writable check asks itself."""
    from fsfactory import make_image

    from nvfs_tools.check import fastpath, image
    from nvfs_tools.check.image import Image
    from nvfs_tools.check.pass0_super import load_superblock
    from nvfs_tools.device import Device

    path = str(tmp_path / "fresh.img")
    make_image(path, 400 << 20)  # groups 1..3: inode tables never written
    asked: list[tuple[int, str]] = []
    real = image.file_holes

    def counting(dev, starts, length):
        asked.append((len(starts), threading.current_thread().name))
        return real(dev, starts, length)

    monkeypatch.setattr(image, "file_holes", counting)
    assert check(path, Options(mode="n", force=True), out=io.StringIO()).exit_code() == 0
    assert asked == [(4, "nvfs-hole-scan")]  # once, on the prefetch thread, for the 4 groups
    asked.clear()
    assert check(path, Options(mode="p", force=True), out=io.StringIO()).exit_code() == 0
    assert asked == [(4, "MainThread")]
    asked.clear()
    with Device(path) as dev, Device(path) as other:
        static, raw, _reason, _offset = load_superblock(dev, False)
        starts, length = fastpath.table_holes_question(fmt.geometry_from_static(static))
        for device, asked_length, taken in ((other, length, False), (dev, length + 1, False), (dev, length, True)):
            img = Image(device, static, raw)
            img.prefetched = image.prefetch_holes(dev, starts, length)
            assert img.holes(starts, asked_length) == [False, True, True, True]
            assert img.prefetched is None
            assert len(asked) == (1 if taken else 2)  # the scan thread's question, and the Image's own if not taken
            asked.clear()
    with Device(path, writable=True) as dev:
        assert image.prefetch_holes(dev, starts, length) is None  # a repair could make the answer stale
