"""debugfs.nvfs in batch mode (-R, -f, piped stdin): every request against golden output.

Images are made by mkfs.nvfs with a fixed UUID and SOURCE_DATE_EPOCH (so the
hash seed and the layout are reproducible) and populated through debugfs.nvfs
itself.  Times, generations and dates are filtered out before comparing with
tests/golden/debugfs/*.out.  After an intended change of output, regenerate
with ``UPDATE_GOLDEN=1 pytest tests/test_debugfs_batch.py`` and review the diff.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nvfs_tools import fieldpath as fp

GOLDEN = Path(__file__).parent / "golden" / "debugfs"
UUID = "12345678-1234-1234-1234-123456789abc"
ENV = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "NVFS_NO_PROGRESS": "1", "TZ": "UTC"}

_FILTERS = [
    (re.compile(r"(?m)^(\s*(?:\+[0-9a-f]+\s+)?(?:[acmb]time(?:_nsec)?|last_\w+_time|generation)\s+= ).*$"), r"\1<X>"),
    (re.compile(r"(?m)^( [acmb]time: ).*$"), r"\1<time>"),
    (re.compile(r"Generation: \d+"), "Generation: <gen>"),
    (re.compile(r"\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d"), "<date>"),
]


def scrub(text: str, tmp: Path | None = None) -> str:
    """Remove what legitimately changes between runs (times, generations, temp paths)."""
    for pattern, repl in _FILTERS:
        text = pattern.sub(repl, text)
    if tmp is not None:
        text = text.replace(str(tmp), "<TMP>")
    return text


def debugfs(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["debugfs.nvfs", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.out"
    if os.environ.get("UPDATE_GOLDEN") == "1" or not path.exists():
        if os.environ.get("UPDATE_GOLDEN") != "1":
            pytest.fail(f"golden file {path} missing; run with UPDATE_GOLDEN=1 to create it")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    expected = path.read_text()
    assert text == expected, f"output differs from {path} (UPDATE_GOLDEN=1 regenerates)"


def mkfs(path: Path, size: str = "64M") -> None:
    subprocess.run(["mkfs.nvfs", "-q", "-U", UUID, str(path), size], check=True, env=ENV, timeout=120)


def host_files(root: Path) -> dict[str, Path]:
    """Host files of telling sizes: tiny, exactly 11 blocks (all direct), 12 blocks, sparse."""
    root.mkdir(exist_ok=True)
    files = {
        "small": b"hello, nvfs\n",
        "direct11": bytes((i * 7) % 251 for i in range(11 * 4096)),
        "ind12": bytes((i * 13) % 253 for i in range(12 * 4096 + 100)),
    }
    out = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        (root / name).chmod(0o644)  # the image copies permission bits: keep goldens umask-proof
        out[name] = root / name
    sparse = root / "sparse"
    with open(sparse, "wb") as f:
        f.write(b"head")
        f.seek(40 * 4096)
        f.write(b"tail")
    sparse.chmod(0o644)
    out["sparse"] = sparse
    (root / "attrval").write_bytes(b"\x00\x01binary\xff")
    out["attrval"] = root / "attrval"
    return out


def populate_script(files: dict[str, Path]) -> str:
    lines = [
        "mkdir docs",
        "mkdir docs/sub",
        f"write {files['small']} docs/small",
        f"write {files['direct11']} docs/direct11",
        f"write {files['ind12']} ind12",
        f"write {files['sparse']} sparse",
        "symlink short docs/small",
        "symlink long /" + "x" * 200,
        "mknod fifo p",
        "mknod null c 1 3",
        "mknod sda b 8 0",
        "ln docs/small hardlink",
        "ea_set docs/small user.comment hello",
        f"ea_set -f {files['attrval']} docs/small trusted.bin",
        "mkdir big",
    ]
    lines += [f"mknod big/entry-{i:04d} p" for i in range(300)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path, dict[str, Path]]:
    tmp = tmp_path_factory.mktemp("debugfs")
    img = tmp / "base.img"
    mkfs(img)
    files = host_files(tmp / "host")
    script = tmp / "populate.txt"
    script.write_text(populate_script(files))
    res = debugfs("-w", "-f", str(script), str(img))
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    return tmp, img, files


def copy(base, name: str) -> Path:
    tmp, img, _files = base
    dst = tmp / name
    shutil.copyfile(img, dst)
    return dst


def run_script(base, name: str, lines: list[str], img: Path, *, writable: bool = False) -> subprocess.CompletedProcess:
    tmp = base[0]
    script = tmp / f"{name}.txt"
    script.write_text("\n".join(lines) + "\n")
    args = ["-w"] if writable else []
    return debugfs(*args, "-f", str(script), str(img))


def golden_run(base, name: str, lines: list[str], img: Path | None = None, *, writable: bool = False, ok=True):
    img = img or base[1]
    res = run_script(base, name, lines, img, writable=writable)
    text = scrub(res.stdout + "--- stderr ---\n" + res.stderr, base[0])
    check_golden(name, text)
    assert (res.returncode == 0) == ok, res.stderr
    return res


# ---------------------------------------------------------------------------


def test_info_requests(base):
    golden_run(
        base,
        "info",
        [
            "stats",
            "print sb",
            "print sb label uuid blocks_count",
            "print dsb free_blocks free_inodes",
            "print group 0",
            "print sb backup magic",
            "imap <2>",
            "imap /docs/small",
            "testb 0 2",
            "testi 11",
            "testi 4000",
            "ffb 3",
            "ffb 2 5000",
            "ffi",
            "dx_hash lost+found",
            "dx_hash -s 000102030405060708090a0b0c0d0e0f abc",
            "logdump",
            "bd -a 0",
            "bd -a 2",
            "help print",
            "help ssv",
            "help write",
        ],
    )


def test_help_lists_every_request(base):
    res = debugfs("-R", "help", str(base[1]))
    assert res.returncode == 0
    from nvfs_tools.debugfs import COMMANDS

    for name in {c.names[0] for c in COMMANDS.values()}:
        assert name in res.stdout
    for name in ("superblock_static", "inode", "indirect", "radix_node", "journal_slot", "xattr_header"):
        assert name in res.stdout


def test_file_requests(base):
    golden_run(
        base,
        "files",
        [
            "ls",
            "ls -l /",
            "ls -p docs",
            "cd docs",
            "pwd",
            "cat small",
            "cd ..",
            "stat docs/small",
            "stat docs/direct11",
            "stat ind12",
            "stat sparse",
            "stat short",
            "stat long",
            "stat null",
            "stat docs",
            "blocks docs/direct11",
            "blocks ind12",
            "bmap ind12 11",
            "bmap sparse 5",
            "icheck 1 0",
            "ncheck 2 13",
            "ncheck -c 14",
            "ea_list docs/small",
            "ea_get docs/small user.comment",
            "ea_get docs/small trusted.bin",
            "print inode docs/small mode links_count size blocks block[0-1]",
            "print inode <2> dir_bank",
            "htree -n /",
            "htree docs",
            "htree -n big",
        ],
    )


def test_cat_dump_rdump_are_byte_exact(base, tmp_path):
    _tmp, img, files = base
    for name, path in (("docs/direct11", "direct11"), ("ind12", "ind12"), ("sparse", "sparse")):
        res = subprocess.run(["debugfs.nvfs", "-R", f"cat {name}", str(img)], capture_output=True, env=ENV)
        assert res.returncode == 0
        assert res.stdout == files[path].read_bytes()
        out = tmp_path / path
        assert debugfs("-R", f"dump -p {name} {out}", str(img)).returncode == 0
        assert out.read_bytes() == files[path].read_bytes()
    rd = tmp_path / "rdump"
    rd.mkdir()
    res = debugfs("-R", f"rdump docs {rd}", str(img))
    assert res.returncode == 0, res.stderr
    assert (rd / "docs" / "small").read_bytes() == files["small"].read_bytes()
    assert (rd / "docs" / "direct11").read_bytes() == files["direct11"].read_bytes()
    assert (rd / "docs" / "sub").is_dir()
    assert os.getxattr(rd / "docs" / "small", "user.comment") == b"hello"


def test_block_annotations(base):
    tmp, img, _ = base
    # find blocks worth annotating from the image itself
    stat = debugfs("-R", "stat ind12", str(img)).stdout
    ind = int(re.search(r"\(IND\):(\d+)", stat).group(1))
    dirblocks = debugfs("-R", "blocks docs", str(img)).stdout.split()
    xblock = int(re.search(r"Xattr block: (\d+)", debugfs("-R", "stat docs/small", str(img)).stdout).group(1))
    bigblocks = debugfs("-R", "blocks big", str(img)).stdout.split()
    res = golden_run(
        base,
        "annotate",
        [
            f"bd -a {ind}",
            f"bd -a {dirblocks[0]}",
            f"bd -a {xblock}",
            f"bd -t radix_node {bigblocks[0]}",
            "bd -a 3",
            f"print indirect {ind} ptr[0-2]",
            f"print xattr {xblock}",
            "print xattr docs/small count used",
            f"print dir_page_header {dirblocks[0]}",
            f"print dirent {dirblocks[0]}:64",
        ],
    )
    assert "--- indirect" in res.stdout and 'magic                    = "NVDP"' in res.stdout


def test_structure_edits(base):
    img = copy(base, "edit.img")
    res = golden_run(
        base,
        "edit",
        [
            "wfield inode docs/small uid 4242",
            "write inode docs/small gid 0x10",
            "print inode docs/small uid gid",
            "fuzz inode <13> links_count zeroes",
            "fuzz inode <13> links_count ones",
            "fuzz inode <13> links_count firstbit",
            "fuzz inode <13> links_count middlebit",
            "fuzz inode <13> links_count lastbit",
            "fuzz inode <13> links_count add 5",
            "fuzz inode <13> links_count sub",
            "fuzz -s 7 inode <13> size random",
            "ssv -a label relabelled",
            "print sb label checksum",
            "print sb backup label checksum",
            "fuzz -c sb version lastbit",
            "bd -a 0",
            "ssv version 1",
            "ssv dynamic.orphan_head 99",
            "sif <14> block[3] 1234",
            "set_bg 0 used_dirs 77",
            "print group 0 used_dirs",
            "setb 9000 2",
            "testb 8999 4",
            "freeb 9000 2",
            "testb 9000",
            "seti 4000",
            "testi 4000",
            "freei 4000",
            "testi 4000",
            "wfield journal_entry 1:0 addr 0x4c18",
            "wfield journal_entry 1:0 value 99",
            "wfield jslot 1 header.commit 0x501",
            "logdump",
            "logdump -a 1",
            "fuzz -c jslot 1 header.checksum lastbit",
            "logdump 1",
        ],
        img,
        writable=True,
    )
    assert 'label                    = "relabelled"' in res.stdout
    # the checksum was recomputed by ssv but left stale by fuzz -c: block 0 says BAD, backup ok
    assert "checksum BAD" in res.stdout


def test_checksums_fixed_unless_asked(base):
    img = copy(base, "csum.img")
    assert debugfs("-w", "-R", "ssv label abc", str(img)).returncode == 0
    out = debugfs("-R", "stats -h", str(img)).stdout
    assert "checksum status          = ok" in out
    assert debugfs("-w", "-R", "ssv -c label abd", str(img)).returncode == 0
    out = debugfs("-R", "stats -h", str(img))
    assert "checksum status          = BAD" in out.stdout
    assert "superblock checksum does not match" in out.stderr


def test_file_level_changes(base):
    img = copy(base, "modify.img")
    _tmp, _img, files = base
    golden_run(
        base,
        "modify",
        [
            "mkdir newdir",
            f"write {files['small']} newdir/copy",
            "ln newdir/copy newdir/copy2",
            "ln docs/small newdir",
            "symlink newdir/sl ../docs",
            "mknod newdir/pipe p",
            "mknod newdir/tty c 4 1",
            "rename newdir/copy2 newdir/renamed",
            "mv newdir/renamed docs/moved",
            "ea_set newdir/copy user.k v",
            "ea_set newdir/copy user.k2 v2",
            "ea_rm newdir/copy user.k",
            "ea_list newdir/copy",
            "rm newdir/pipe",
            "mkdir gone",
            "rmdir gone",
            "ls -l newdir",
            "ls docs",
            "stat newdir/copy",
            "cat docs/moved",
        ],
        img,
        writable=True,
    )
    assert_clean(img)


def test_raw_file_requests_make_damage(base):
    """unlink and kill_file are raw like debugfs': they leave work for fsck."""
    img = copy(base, "raw.img")
    res = golden_run(
        base, "rawfile", ["unlink docs/sub", "kill_file sparse", "ls -d docs", "testi sparse"], img, writable=True
    )
    assert res.returncode == 0
    from checker import check_image

    assert check_image(str(img)), "unlink/kill_file must leave an image fsck has to repair"


def test_errors_are_one_line_and_set_the_exit_status(base):
    img = base[1]
    res = golden_run(
        base,
        "errors",
        [
            "nosuch",
            "print nosuch",
            "print inode <99999>",
            "print inode docs/nosuch",
            "print inode <2> nosuchfield",
            "fuzz inode <13> mode explode",
            "wfield inode <13> mode 1",
            "mkdir x",
            "cat /nosuch",
            "ls docs/small",
            "testb 999999999",
            "bd",
            "cd docs/small",
            "ea_get docs/small user.missing",
            'ls "unterminated',
            "pwd",
        ],
        img,
        ok=False,
    )
    lines = res.stderr.splitlines()
    assert len(lines) == 15
    assert all(": " in line for line in lines)
    assert "Traceback" not in res.stderr
    assert "[pwd]" in res.stdout  # the session went on after every error


def test_invocation_modes(base, tmp_path):
    img = base[1]
    # -R: one request, exit 0; failing request: exit 1
    assert debugfs("-R", "pwd", str(img)).returncode == 0
    assert debugfs("-R", "cat /nosuch", str(img)).returncode == 1
    # piped stdin is a request file
    res = debugfs(str(img), stdin="pwd\n\nls docs\n")
    assert res.returncode == 0 and "sub" in res.stdout and res.stdout.count("[pwd]") == 1
    # `quit` ends a request file; requests after it are not run
    res = debugfs(str(img), stdin="testi 2\nquit\ntesti 11\n")
    assert res.returncode == 0 and "Inode 2" in res.stdout and "Inode 11" not in res.stdout
    # a reader that goes away early is not an error worth a message
    res = subprocess.run(f"debugfs.nvfs -R 'bd 0' {img} | head -1", shell=True, capture_output=True, text=True)
    assert res.stderr == ""
    # -f -
    res = debugfs("-f", "-", str(img), stdin="testi 2\n")
    assert res.returncode == 0 and "Inode 2 marked in use" in res.stdout
    # read-only unless -w
    res = debugfs("-R", "mkdir q", str(img))
    assert res.returncode == 1 and "read-only" in res.stderr
    # not an NVFS image, missing file, usage
    junk = tmp_path / "junk"
    junk.write_bytes(bytes(1 << 20))
    res = debugfs("-R", "stats", str(junk))
    assert res.returncode == 8 and "bad magic" in res.stderr and "Traceback" not in res.stderr
    assert debugfs("-R", "stats", str(tmp_path / "missing")).returncode == 8
    assert debugfs("-R", "x", "-f", "y", str(img)).returncode == 16


def test_backup_superblock_and_catastrophic_mode(base):
    img = copy(base, "zeroed.img")
    with open(img, "r+b") as f:
        f.write(b"\0" * 4096)
    res = debugfs("-R", "stats -h", str(img))
    assert res.returncode == 8 and "-b" in res.stderr
    res = debugfs("-b", "-R", "print sb magic blocks_count", str(img))
    assert res.returncode == 0 and "NVFS" in res.stdout and "blocks_count             = 16384" in res.stdout
    good = base[1]
    res = debugfs("-c", "-R", "ls docs", str(good))
    assert res.returncode == 0 and "small" in res.stdout
    res = debugfs("-c", "-R", "cat docs/small", str(good))
    assert res.returncode == 0 and res.stdout == "hello, nvfs\n"
    res = debugfs("-c", "-R", "testb 5", str(good))
    assert res.returncode == 1 and "catastrophic" in res.stderr
    res = debugfs("-c", "-w", "-R", "mkdir z", str(good))
    assert res.returncode == 1 and "read-only" in res.stderr


def assert_clean(img: Path) -> None:
    """fsck.nvfs -fn when it exists, else the library's structural checker."""
    if shutil.which("fsck.nvfs"):
        res = subprocess.run(["fsck.nvfs", "-fn", str(img)], capture_output=True, text=True, env=ENV, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
    else:
        from checker import check_image

        assert check_image(str(img)) == []


def test_quota_records_are_addressed_through_the_quota_file(tmp_path):
    img = tmp_path / "quota.img"
    subprocess.run(["mkfs.nvfs", "-q", "-O", "quota", "-U", UUID, str(img), "32M"], check=True, env=ENV)

    def used(qtype: str) -> int:
        res = debugfs("-R", f"print quota_record {qtype} 0 inodes_used", str(img))
        assert res.returncode == 0, res.stderr
        return int(res.stdout.split("=")[1])

    before = used("user")
    assert before >= 2  # root and lost+found belong to user 0
    host = tmp_path / "f"
    host.write_bytes(b"x" * 5000)
    assert debugfs("-w", "-R", f"write {host} f", str(img)).returncode == 0
    assert used("user") == before + 1 and used("group") == before + 1
    res = debugfs("-R", "print quota_record user 999", str(img))
    assert res.returncode == 1 and "hole" in res.stderr


def test_damaged_directory_entries_are_flagged_and_still_found(base):
    img = copy(base, "dirdamage.img")
    root_page = debugfs("-R", "blocks /", str(img)).stdout.split()[0]
    listing = debugfs("-R", "htree /", str(img)).stdout
    first = re.search(r"\+(\d+)\s+ino (\d+)\s.*?rec_len \d+\s+(\S+)", listing)
    offset, name = first.group(1), first.group(3)
    assert "MISMATCH" not in listing and "MISPLACED" not in listing
    res = debugfs("-w", "-R", f"wfield dirent {root_page}:{offset} hash 5", str(img))
    assert res.returncode == 0, res.stderr
    listing = debugfs("-R", "htree /", str(img)).stdout
    assert re.search(rf"{re.escape(name)}\s+\(HASH MISMATCH\)", listing)
    # the hash path no longer leads to it; the fallback scan still finds it by name
    res = debugfs("-R", f"imap /{name}", str(img))
    assert res.returncode == 0 and f"Inode {first.group(2)} " in res.stdout


def test_open_and_close_requests(base):
    img = str(base[1])
    script = f"stats\nopen {img}\nopen {img}\npwd\nclose\npwd\nopen -c {img}\ntestb 1\nls docs\n"
    res = debugfs(stdin=script)
    errors = res.stderr.splitlines()
    assert errors == [
        "stats: no filesystem is open (use `open [-w] DEVICE`)",
        f"open: {img} is already open; close it first",
        "pwd: no filesystem is open (use `open [-w] DEVICE`)",
        "testb: bitmaps are not used in catastrophic mode",
    ]
    assert res.stdout.count("[pwd]") == 1 and "small" in res.stdout
    assert res.returncode == 1
    assert debugfs("-w").returncode == 16


def test_structures_lists_every_kind_and_each_parses(base):
    img = base[1]
    res = debugfs("-R", "structures", str(img))
    assert res.returncode == 0, res.stderr
    rows = [line.split(None, 2) for line in res.stdout.splitlines()]
    kinds = {r[0] for r in rows}
    expected = set(fp.TYPES) - {"journal_slot_header", "journal_entry", "quota_record"}
    assert kinds == expected
    # every listed instance reads back as its type: magic constants intact, headers sane
    script = [f"print {t} {addr}" for t, addr, _label in rows if t != "inode"]
    out = debugfs(str(img), stdin="\n".join(script) + "\n")
    assert out.returncode == 0 and "BAD" not in out.stdout
    entries = [r for r in rows if r[0] == "dir_entry_header"]
    names = {r[2].split("'")[1] for r in entries}
    assert {"docs", "small", "direct11", "entry-0299", "lost+found"} <= names
    assert len(entries) == 300 + 11 + 3  # big/, the 11 names in /, docs/
