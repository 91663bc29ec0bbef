"""A server that stops answering or goes away, through the real mount: one ``timeout`` for
the first operation that meets it, nothing else blocked meanwhile, the cache served while it
is away, writes refused at once, and everything back when it is, without remounting.

The server is the real pyftpdlib, paused with SIGSTOP or behind ``OutageProxy``; what the
server holds afterwards is checked in its root.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faultproxy import OutageProxy
from tests.mounting import mounted, run, scratch_dir, wait_for
from tests.servers.ftp import USERS, FtpServer, running_ftp

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no FUSE")

TIMEOUT = 2.0
#: long enough for the other operations of a test to be done while one operation hangs
#: (a stale listing waits ``STALE_PATIENCE``, 1 s, before it is served as it is)
HANG = 3.0
STATUS = ".fsmount-status"
# the mount's log says so, and the user should know: expected in these tests
AWAY = [r"the server does not answer", r"the server answers again"]
HOST_DOWN = os.strerror(errno.EHOSTDOWN).encode()


@pytest.fixture
def server() -> Iterator[FtpServer]:
    with running_ftp() as s:
        (s.root / "d").mkdir()
        (s.root / "d" / "seen.txt").write_text("read before\n")
        (s.root / "d" / "unseen.txt").write_text("never read before\n")
        (s.root / "e").mkdir()
        (s.root / "e" / "x.txt").write_text("x\n")
        yield s


@pytest.fixture
def proxy(server: FtpServer) -> Iterator[OutageProxy]:
    p = OutageProxy("127.0.0.1", server.port)
    try:
        yield p
    finally:
        p.close()


def account(name: str, port: int, user: str = "alice", timeout: float = TIMEOUT,
            **settings: object) -> str:
    lines = [f"[accounts.{name}]", f'url = "ftp://{user}@127.0.0.1:{port}"',
             f'password = "{USERS[user]}"', "plaintext_auth = true", f"timeout = {timeout}"]
    lines += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def timed(*cmd: str | Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.monotonic()
    done = run(*cmd, check=False)
    return time.monotonic() - start, done


def local_file(text: str) -> Path:
    path = scratch_dir("fsmount-away-") / "new.txt"
    path.write_text(text)
    return path


def test_a_paused_server_costs_one_timeout_then_the_cache_answers(server: FtpServer) -> None:
    """SIGSTOP: the kernel reads a page again after a failed read (read-ahead, then the read
    itself); that second read must not wait a second ``timeout``."""
    with mounted(account("f", server.port), source="f", expect_warnings=AWAY) as m:
        d = m.path / "d"
        assert sorted(os.listdir(d)) == ["seen.txt", "unseen.txt"]
        assert (d / "seen.txt").read_text() == "read before\n"
        assert (m.path / STATUS).read_text() == "online\n"
        assert STATUS not in os.listdir(m.path)
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            took, done = timed("cat", d / "unseen.txt")
            assert done.returncode != 0
            assert took < 1.6 * TIMEOUT, f"cat waited {took:.1f} s for a {TIMEOUT:g} s timeout"

            status = (m.path / STATUS).read_text()
            assert status.startswith("offline since ") and "timed out" in status
            took, done = timed("cat", d / "unseen.txt")  # needs the server: fails at once
            assert done.returncode != 0 and HOST_DOWN in done.stderr and took < 1.0
            took, done = timed("ls", m.path / "e")  # never listed: needs the server too
            assert done.returncode != 0 and HOST_DOWN in done.stderr and took < 1.0
            took, done = timed("ls", "-l", d)  # what is cached is served
            assert done.returncode == 0 and b"seen.txt" in done.stdout and took < 1.0
            assert run("cat", d / "seen.txt").stdout == b"read before\n"
            took, done = timed("cp", local_file("new\n"), d / "new.txt")
            assert done.returncode != 0 and HOST_DOWN in done.stderr and took < 1.0
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert not (server.root / "d" / "new.txt").exists()

        wait_for(lambda: run("cat", d / "unseen.txt", check=False).returncode == 0, 30,
                 "the mount to find the server back")
        assert (m.path / STATUS).read_text() == "online\n"
        run("cp", local_file("new\n"), d / "new.txt")
        assert (server.root / "d" / "new.txt").read_text() == "new\n"


def test_cached_folders_and_other_accounts_answer_while_an_operation_hangs(
        server: FtpServer, proxy: OutageProxy) -> None:
    """A file manager's window froze for over a minute: its folders, listed before but due for
    a check (metadata_ttl = 0 here), waited for the server that had stopped answering."""
    config = (account("a", proxy.port, timeout=HANG, metadata_ttl=0)
              + account("b", server.port, user="bob", timeout=HANG))
    with mounted(config, expect_warnings=AWAY) as m:
        a, b = m.path / "a", m.path / "b"
        assert sorted(os.listdir(a / "d")) == ["seen.txt", "unseen.txt"]
        assert os.listdir(a / "e") == ["x.txt"]
        assert (a / "d" / "seen.txt").read_text() == "read before\n"
        proxy.silence()
        started = time.monotonic()
        cat = subprocess.Popen(["cat", a / "d" / "unseen.txt"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        try:
            wait_for(lambda: proxy.held, 10, "the read to reach the silent server")
            took, done = timed("ls", "-l", a / "e")
            assert done.returncode == 0 and b"x.txt" in done.stdout
            assert sorted(os.listdir(b / "d")) == ["seen.txt", "unseen.txt"]
            assert run("cat", a / "d" / "seen.txt").stdout == b"read before\n"
            assert cat.poll() is None, "these waited for the hanging read to give up"
            _, err = cat.communicate(timeout=4 * HANG)
        finally:
            cat.kill()
            cat.wait()
        took = time.monotonic() - started
        assert cat.returncode != 0 and took < 1.6 * HANG + 1, err
        assert (a / STATUS).read_text().startswith("offline since ")
        assert (b / STATUS).read_text() == "online\n"

        proxy.restore()
        wait_for(lambda: run("cat", a / "d" / "unseen.txt", check=False).returncode == 0, 30,
                 "the mount to find the server back")
        assert (a / STATUS).read_text() == "online\n"


def test_a_stopped_server_serves_the_cache_refuses_writes_and_comes_back(
        server: FtpServer, proxy: OutageProxy) -> None:
    """Connections refused (the server is stopped): cached listings, however old, and cached
    bytes are served; changes fail at once with EHOSTDOWN and reach nothing; once the server
    is back, the same mount works again."""
    with mounted(account("a", proxy.port, metadata_ttl=0), source="a", expect_warnings=AWAY) as m:
        d = m.path / "d"
        assert sorted(os.listdir(d)) == ["seen.txt", "unseen.txt"]
        assert (d / "seen.txt").read_text() == "read before\n"
        proxy.refuse()

        took, done = timed("ls", "-l", d)  # due for a check that cannot be made: served
        assert done.returncode == 0 and b"unseen.txt" in done.stdout, done.stderr
        assert took < TIMEOUT + 1
        wait_for(lambda: (m.path / STATUS).read_text().startswith("offline since "), 2 * TIMEOUT,
                 "the check of the listing to find the server gone")
        assert run("cat", d / "seen.txt").stdout == b"read before\n"
        assert os.stat(d / "unseen.txt").st_size == len("never read before\n")
        for cmd in (["cat", d / "unseen.txt"], ["cp", local_file("new\n"), d / "new.txt"],
                    ["rm", d / "seen.txt"], ["mkdir", d / "sub"], ["mv", d / "seen.txt", d / "moved.txt"]):
            took, done = timed(*cmd)
            assert done.returncode != 0 and HOST_DOWN in done.stderr and took < 1.0, (cmd, done.stderr)
        assert sorted(os.listdir(d)) == ["seen.txt", "unseen.txt"]  # no failed change shows
        assert sorted(p.name for p in (server.root / "d").iterdir()) == ["seen.txt", "unseen.txt"]

        proxy.restore()
        wait_for(lambda: run("ls", m.path / "e", check=False).returncode == 0, 30,
                 "the mount to find the server back")
        assert (m.path / STATUS).read_text() == "online\n"
        assert (d / "unseen.txt").read_text() == "never read before\n"
        run("cp", local_file("new\n"), d / "new.txt")
        run("rm", d / "seen.txt")
        assert sorted(p.name for p in (server.root / "d").iterdir()) == ["new.txt", "unseen.txt"]


def test_the_status_file_cannot_be_changed(server: FtpServer) -> None:
    with mounted(account("f", server.port), source="f") as m:
        status = m.path / STATUS
        assert status.read_text() == "online\n"
        assert os.stat(status).st_mode & 0o777 == 0o444
        for cmd in (["sh", "-c", f"echo x > '{status}'"], ["rm", status], ["touch", status]):
            assert run(*cmd, check=False).returncode != 0, cmd
        assert status.read_text() == "online\n"
        assert not (server.root / STATUS).exists()


def test_a_connection_checked_before_reuse_waits_one_timeout_too(server: FtpServer) -> None:
    """A connection is checked (NOOP) before reuse after an error reply or 15 s idle: a check
    the paused server does not answer must not be followed by a new connection that waits as
    long again."""
    (server.root / "d" / "gone.txt").write_text("deleted behind the mount's back\n")
    with mounted(account("f", server.port), source="f", expect_warnings=AWAY) as m:
        d = m.path / "d"
        assert "gone.txt" in os.listdir(d)
        (server.root / "d" / "gone.txt").unlink()
        done = run("cat", d / "gone.txt", check=False)  # 550: the connection is checked next
        assert done.returncode != 0 and b"No such file" in done.stderr
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            took, done = timed("cat", d / "unseen.txt")
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert done.returncode != 0
        assert took < 1.6 * TIMEOUT, f"cat waited {took:.1f} s for a {TIMEOUT:g} s timeout"
