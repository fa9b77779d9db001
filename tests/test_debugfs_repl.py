"""debugfs.nvfs driven through a pseudo-terminal, as a person would use it.

The stdlib ``pty`` runs the installed ``debugfs.nvfs`` on a real terminal so
readline is active: typing, line editing keys, tab completion of request
names and of paths inside the image, and the history file across sessions.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

UUID = "12345678-1234-1234-1234-123456789abc"
PROMPT = b"debugfs.nvfs:  "
UP = b"\x1b[A"


class Term:
    """A child process on a pty, with expect-style reading."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.execvpe("debugfs.nvfs", ["debugfs.nvfs", *args], env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.buf = b""

    def expect(self, pattern: bytes, timeout: float = 30.0) -> bytes:
        """Read until ``pattern`` (a regex) appears; return everything before it and consume through it."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.buf)
            if m:
                before = self.buf[: m.start()]
                self.buf = self.buf[m.end() :]
                return before
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; got {self.buf[-500:]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"EOF waiting for {pattern!r}; got {self.buf[-500:]!r}")
                self.buf += chunk

    def prompt(self) -> bytes:
        return self.expect(re.escape(PROMPT))

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # drain output so the child never blocks on a full pty
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    self.buf += os.read(self.fd, 4096)
                except OSError:
                    pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"debugfs.nvfs did not exit; output: {self.buf[-800:]!r}")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("repl")
    img = tmp / "repl.img"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    subprocess.run(["mkfs.nvfs", "-q", "-U", UUID, str(img), "32M"], check=True, env=env, timeout=120)
    host = tmp / "greeting"
    host.write_bytes(b"hello from the image\n")
    script = f"mkdir documents\nmkdir documents/deeper\nwrite {host} documents/greeting.txt\n"
    res = subprocess.run(["debugfs.nvfs", "-w", "-f", "-", str(img)], input=script, text=True, capture_output=True)
    assert res.returncode == 0, res.stderr
    return img


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k not in ("INPUTRC",)},
        "TERM": "xterm",
        "INPUTRC": "/dev/null",
        "HOME": str(tmp_path),
        "DEBUGFS_NVFS_HISTORY": str(tmp_path / "history"),
    }


def test_typing_errors_and_empty_lines(image, env):
    t = Term([str(image)], env)
    t.prompt()
    t.send(b"ls\r")
    out = t.prompt()
    assert b"documents" in out and b"lost+found" in out
    t.send(b"no_such_request\r")
    out = t.prompt()
    assert b"no_such_request: command not found" in out
    assert b"Traceback" not in out
    t.send(b"testi 11\r")
    assert b"Inode 11 marked in use" in t.prompt()
    t.send(b"\r")  # an empty line must not repeat the last request
    out = t.prompt()
    assert b"Inode 11" not in out
    t.send(b"cat /documents/greeting.txt\r")
    assert b"hello from the image" in t.prompt()
    # line editing: type a wrong word, erase it with backspaces, finish the line
    t.send(b"pwdxx\x7f\x7f\r")
    assert b"[pwd]" in t.prompt()
    t.send(b"\x04")  # Ctrl-D ends the session
    assert t.wait() == 1  # one request failed


def test_tab_completion_of_requests_and_image_paths(image, env):
    t = Term([str(image)], env)
    t.prompt()
    # a path inside the image: "cat doc<TAB>" -> "cat documents/", "gr<TAB>" -> "greeting.txt "
    t.send(b"cat doc\t")
    t.expect(rb"documents/")
    t.send(b"gr\t")
    t.expect(rb"greeting\.txt")
    t.send(b"\r")
    assert b"hello from the image" in t.prompt()
    # a request name: "bloc<TAB>" completes to "block_dump " (the only match)
    t.send(b"block_d\t")
    t.expect(rb"ump")
    t.send(b"-a 0\r")
    assert b"Block 0: superblock" in t.prompt()
    # field names of a structure for print
    t.send(b"print inode <2> links_c\t")
    t.expect(rb"ount")
    t.send(b"\r")
    assert b"links_count" in t.prompt()
    # cd with completion, then a relative completion from the new cwd
    t.send(b"cd documents/dee\t")
    t.expect(rb"per/")
    t.send(b"\r")
    t.prompt()
    t.send(b"pwd\r")
    assert b"/documents/deeper" in t.prompt()
    t.send(b"quit\r")
    assert t.wait() == 0


def test_history_survives_sessions(image, env, tmp_path):
    t = Term([str(image)], env)
    t.prompt()
    t.send(b"testi 2\r")
    assert b"Inode 2 marked in use" in t.prompt()
    t.send(b"\x04")
    assert t.wait() == 0
    hist = Path(env["DEBUGFS_NVFS_HISTORY"]).read_text()
    assert "testi 2" in hist
    t = Term([str(image)], env)
    t.prompt()
    t.send(UP + b"\r")  # recall the previous session's last request
    assert b"Inode 2 marked in use" in t.prompt()
    t.send(b"\x04")
    assert t.wait() == 0


def test_writes_need_w_and_work_with_it(image, env, tmp_path):
    img = tmp_path / "rw.img"
    img.write_bytes(image.read_bytes())
    t = Term([str(img)], env)
    t.prompt()
    t.send(b"mkdir made_here\r")
    assert b"read-only" in t.prompt()
    t.send(b"quit\r")
    assert t.wait() == 1
    t = Term(["-w", str(img)], env)
    t.prompt()
    t.send(b"mkdir made_here\r")
    t.prompt()
    t.send(b"ls\r")
    assert b"made_here" in t.prompt()
    t.send(b"quit\r")
    assert t.wait() == 0
