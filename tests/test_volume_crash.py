"""Crash atomicity of the journaled operations (rename, exchange, setattr).

The stores of one operation are recorded at the device; the image is then
rebuilt as a crash would leave it after every barrier (all earlier stores
durable) and with a random part of the following epoch's stores, opened for
writing (which replays the microjournal), and must show exactly the state
before or exactly the state after the operation, with every format rule kept.
"""

from __future__ import annotations

import random
import shutil

import pytest
from checker import check_image
from fsfactory import make_image, scratch
from test_journal import RecordingDevice

from nvfs_tools import format as fmt
from nvfs_tools.volume import Volume

ROOT = fmt.ROOT_INO


@pytest.fixture
def shm_tmp(tmp_path):
    yield from scratch(tmp_path)


def snapshot(path: str) -> dict:
    """Everything visible: names, inode numbers, types, owners, modes, times, links, parents, contents."""
    out = {}
    with Volume.open(path) as vol:
        todo = [(b"", ROOT)]
        while todo:
            prefix, d = todo.pop()
            for e in vol.listdir(d):
                n = vol.read_inode(e.ino)
                key = prefix + b"/" + e.name
                data = vol.read(e.ino) if n.mode & fmt.S_IFMT != fmt.S_IFDIR else None
                out[key] = (e.ino, e.file_type, n.mode, n.uid, n.gid, n.links_count, n.parent, n.mtime, data)
                if data is None:
                    todo.append((key, e.ino))
        out[b"/"] = vol.read_inode(ROOT).links_count
    return out


def crash_states(log: list[tuple], rng: random.Random):
    """Store lists a crash can leave: every barrier prefix, plus part of the next epoch."""
    barriers = [i for i, op in enumerate(log) if op[0] == "b"] + [len(log)]
    start = 0
    for b in barriers:
        epoch = [op for op in log[start:b] if op[0] == "w"]
        done = [op for op in log[:start] if op[0] == "w"]
        yield done
        if epoch:
            yield done + [op for op in epoch if rng.random() < 0.5]
        start = b + 1


def record_operation(base: str, workdir, operation, view) -> tuple[bytes, list, object, object]:
    """Run ``operation`` on a copy of ``base`` under the recorder.

    Returns the pristine image bytes, the store log, and ``view`` of the image
    before and after the operation.
    """
    before = view(base)
    with open(base, "rb") as f:
        pristine = f.read()
    work = str(workdir / "op.img")
    shutil.copyfile(base, work)
    dev = RecordingDevice(work, writable=True)
    vol = Volume.from_device(dev)
    dev.log.clear()
    operation(vol)
    log = list(dev.log)
    vol.close()
    return pristine, log, before, view(work)


def crashed_images(pristine: bytes, log: list, path: str):
    """Write each sampled crash state of ``log`` over ``pristine`` at ``path``, replay, and yield its store count."""
    for stores in crash_states(log, random.Random(len(log))):
        with open(path, "wb") as f:
            f.write(pristine)
            for _, offset, data in stores:
                f.seek(offset)
                f.write(data)
        with Volume.open(path, writable=True):
            pass  # replays a committed transaction
        yield len(stores)


def run_crash_cases(base: str, workdir, operation) -> int:
    pristine, log, before, after = record_operation(base, workdir, operation, snapshot)
    assert before != after
    cases = 0
    crashed = str(workdir / "crash.img")
    for count in crashed_images(pristine, log, crashed):
        state = snapshot(crashed)
        assert state in (before, after), f"crash after {count} stores: neither before nor after"
        assert check_image(crashed) == []
        cases += 1
    return cases


@pytest.fixture
def base(shm_tmp):
    path = make_image(shm_tmp / "base.img", 8 << 20)
    with Volume.open(path, writable=True) as vol:
        a = vol.mkdir(ROOT, "a")
        b = vol.mkdir(ROOT, "b")
        vol.mkdir(a, "sub")
        vol.create(a, "f", 0o644, data=b"payload")
        vol.create(b, "g", 0o600, uid=3, data=b"other")
        for i in range(60):  # enough entries for directory pages to split under prepare
            vol.create(b, f"filler-{i:03d}-" + "x" * 40, 0o644)
        assert a and b
    return path


def test_rename_file_across_directories(base, shm_tmp):
    assert run_crash_cases(base, shm_tmp, lambda vol: vol.rename(vol.lookup("/a"), "f", vol.lookup("/b"), "f2")) > 4


def test_rename_directory_across_directories(base, shm_tmp):
    assert run_crash_cases(base, shm_tmp, lambda vol: vol.rename(vol.lookup("/a"), "sub", vol.lookup("/b"), "s")) > 4


def test_exchange_file_and_directory(base, shm_tmp):
    assert run_crash_cases(base, shm_tmp, lambda vol: vol.exchange(vol.lookup("/a"), "sub", vol.lookup("/b"), "g")) > 4


def test_setattr(base, shm_tmp):
    def op(vol):
        vol.setattr(vol.lookup("/b/g"), mode=0o4755, uid=77, gid=88, mtime=(123, 456))

    assert run_crash_cases(base, shm_tmp, op) > 4


# ---------------------------------------------------------------------------
# Unjournaled operations: a crash may leave only what fsck repairs without loss
# ---------------------------------------------------------------------------

#: Problems a crash may leave behind: leaks and stale counters, never a hazard.
FIXABLE = (
    "leaked",
    "counter",
    "superblock free_",
    "not reachable from the root",
    "orphan list not empty",
    "but bitmap bit 1",  # inode bit set, inode not written yet or already cleared
    "mapped past EOF",
    ": blocks ",
    ": size ",
)


def fixable(problem: str, named: set[int] = frozenset()) -> bool:
    """True for what fsck repairs without loss; ``named`` holds the inodes a live entry names."""
    if any(p in problem for p in FIXABLE):
        return True
    if "but bitmap bit 0" in problem:
        # An in-use inode the bitmap calls free is a hazard only while a name reaches it (rule 1:
        # the bit is set before anything points to the inode). Unnamed, it is the residue of a
        # create that never committed or of a delete that is finishing: fsck frees or reconnects it.
        return int(problem.split()[1].rstrip(":")) not in named
    if ": links " in problem:  # too high is fine (fsck lowers it); too low would lose data
        have, _, want = problem.split(": links ", 1)[1].partition(" != ")
        want = want.split()[0] if "+" not in want else str(2 + int(want.split("+")[1].split()[0]))
        return int(have) > int(want)
    return False


def names(path: str) -> dict:
    out = {}
    with Volume.open(path) as vol:
        todo = [(b"", ROOT)]
        while todo:
            prefix, d = todo.pop()
            for e in vol.listdir(d):
                out[prefix + b"/" + e.name] = e.ino
                if e.file_type == fmt.DT_DIR:
                    todo.append((prefix + b"/" + e.name, e.ino))
    return out


def run_unjournaled(base: str, workdir, operation) -> int:
    pristine, log, before, after = record_operation(base, workdir, operation, names)
    crashed = str(workdir / "crash.img")
    cases = 0
    for count in crashed_images(pristine, log, crashed):
        state = names(crashed)
        assert state in (before, after)
        named = set(state.values())
        bad = [p for p in check_image(crashed) if not fixable(p, named)]
        assert bad == [], f"crash after {count} stores leaves hazards: {bad}"
        cases += 1
    return cases


@pytest.mark.parametrize(
    "op",
    [
        pytest.param(lambda vol: vol.create(vol.lookup("/a"), "new", 0o644, data=b"d" * 70000), id="create-data"),
        pytest.param(lambda vol: vol.mkdir(vol.lookup("/b"), "newdir"), id="mkdir"),
        pytest.param(lambda vol: vol.symlink(ROOT, "ln", "x" * 300), id="symlink"),
        pytest.param(lambda vol: vol.link(vol.lookup("/a/f"), ROOT, "hard"), id="link"),
        pytest.param(lambda vol: vol.unlink(vol.lookup("/a"), "f"), id="unlink-last"),
        pytest.param(lambda vol: vol.rmdir(vol.lookup("/a"), "sub"), id="rmdir"),
        pytest.param(lambda vol: vol.write(vol.lookup("/a/f"), 50000, b"w" * 30000), id="write-extend"),
        pytest.param(lambda vol: vol.truncate(vol.lookup("/b/big"), 5000), id="truncate"),
        pytest.param(lambda vol: vol.setxattr(vol.lookup("/a/f"), "user.k", b"v" * 100), id="setxattr"),
        pytest.param(lambda vol: vol.rename(vol.lookup("/a"), "f", vol.lookup("/b"), "g"), id="rename-over"),
    ],
)
def test_crash_leaves_only_fixable_problems(base, shm_tmp, op):
    with Volume.open(base, writable=True) as vol:
        vol.create(vol.lookup("/b"), "big", 0o644, data=b"B" * 100000)
        vol.setxattr(vol.lookup("/a/f"), "user.k", b"old")
    assert run_unjournaled(base, shm_tmp, op) > 2
