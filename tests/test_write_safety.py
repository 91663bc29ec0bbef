"""A write that failed, or never finished, leaves the server's file as it was.

Through the real mount against real servers: a spool disk that fills up (a small tmpfs as the
mount's cache), a SIGTERM while a program is still writing, an upload killed midway. Every
check is of what the server holds afterwards.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.mounting import is_mounted, mounted, run, scratch_dir, wait_for
from tests.servers.dovecot import Dovecot, dovecot_server  # noqa: F401  (fixture)
from tests.servers.ftp import FtpServer, running_ftp
from tests.test_ftp_mounted import ftpes
from tests.test_imap_backend import PLAIN, server_messages, unique
from tests.test_imap_mounted import config as imap_config

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no FUSE")

NO_SPACE = ["No space left on device"]  # the one WARNING a failed spool write logs


@pytest.fixture
def server() -> Iterator[FtpServer]:
    with running_ftp() as s:
        yield s


@contextmanager
def small_disk(size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size``, to be a mount's cache and spool directory: it fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = scratch_dir("fsmount-full-")
    run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", where)
    try:
        yield where
    finally:
        run("umount", where, check=False)
        where.rmdir()


def temps(root: Path) -> list[Path]:
    return sorted(root.rglob(".fsmount-*.part"))


def test_a_full_spool_disk_never_reaches_the_ftp_server(server: FtpServer, tmp_path: Path) -> None:
    old = os.urandom(3 << 20)
    (server.root / "existing.bin").write_bytes(old)
    new = tmp_path / "new.bin"
    new.write_bytes(os.urandom(8 << 20))
    with small_disk() as cache, mounted(ftpes(server), source="f", env={"XDG_CACHE_HOME": str(cache)},
                                        expect_warnings=NO_SPACE) as m:
        done = run("cp", new, m.path / "existing.bin", check=False)
        assert done.returncode != 0 and b"No space left" in done.stderr
        assert (server.root / "existing.bin").read_bytes() == old
        done = run("cp", new, m.path / "fresh.bin", check=False)
        assert done.returncode != 0
        assert not (server.root / "fresh.bin").exists()
        # a program that goes on after the failed write: nothing it does later is stored
        fd = os.open(m.path / "existing.bin", os.O_WRONLY | os.O_TRUNC)
        try:
            data = memoryview(new.read_bytes())
            with pytest.raises(OSError):
                while data:  # as a careful program does: short writes are retried
                    data = data[os.write(fd, data):]
            with pytest.raises(OSError):
                os.ftruncate(fd, 0)
            with pytest.raises(OSError):
                os.write(fd, b"short")
            with pytest.raises(OSError):
                os.fsync(fd)
        finally:
            with pytest.raises(OSError):
                os.close(fd)
        assert (server.root / "existing.bin").read_bytes() == old
        # other writers are not affected: a small file (held in memory) is stored
        (m.path / "small.txt").write_bytes(b"fits\n")
        assert (server.root / "small.txt").read_bytes() == b"fits\n"
    assert (server.root / "existing.bin").read_bytes() == old
    assert not (server.root / "fresh.bin").exists()
    assert temps(server.root) == []


def test_a_full_spool_disk_appends_no_partial_message(dovecot_server: Dovecot, tmp_path: Path) -> None:
    """IMAP APPEND goes through the same writer as an FTP upload: a failed write poisons it."""
    folder = unique("Full")
    dovecot_server.create_folder(folder)
    big = tmp_path / "big.eml"
    line = b"x" * 76 + b"\r\n"
    big.write_bytes(PLAIN + line * ((6 << 20) // len(line)))
    held = unique("Held")
    dovecot_server.create_folder(held)
    dovecot_server.deliver("alice", big.read_bytes(), held)
    with small_disk() as cache, mounted(imap_config(dovecot_server), env={"XDG_CACHE_HOME": str(cache)},
                                        expect_warnings=NO_SPACE + ["cannot be written"]) as m:
        done = run("cp", big, m.path / "mail" / folder / "big.eml", check=False)
        assert done.returncode != 0 and b"No space left" in done.stderr
        (m.path / "mail" / folder / "small.eml").write_bytes(PLAIN)
        # a message too big for the full cache disk is still read whole, from the server
        (message,) = (p for p in (m.path / "mail" / held).iterdir() if p.suffix == ".eml")
        assert run("cat", message).stdout == big.read_bytes()
    assert [raw for raw, _ in server_messages(dovecot_server, folder).values()] == [PLAIN]


WRITER = textwrap.dedent("""
    import os, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    chunk = b"n" * (1 << 20)
    for i in range(6):
        try:
            os.write(fd, chunk)
        except OSError as e:
            print("write failed", e.errno, flush=True)
            break
        print("wrote", i, flush=True)
        if sys.stdin.readline() == "":
            break
    try:
        os.close(fd)
        print("closed", flush=True)
    except OSError as e:
        print("close failed", e.errno, flush=True)
""")


def test_sigterm_with_a_writer_still_writing_keeps_the_servers_file(server: FtpServer) -> None:
    old = os.urandom(3 << 20)
    (server.root / "target.bin").write_bytes(old)
    with mounted(ftpes(server), source="f", expect_warnings=["still open for writing"]) as m:
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(m.path / name)], text=True,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                   for name in ("target.bin", "new.bin")]
        try:
            for w in writers:
                assert w.stdout.readline() == "wrote 0\n"  # one MiB written, the rest to come
            m.proc.send_signal(signal.SIGTERM)
            m.proc.wait(timeout=60)
            assert not is_mounted(m.path)
            outcomes = [w.communicate("go on\n" * 6, timeout=30)[0] for w in writers]
        finally:
            for w in writers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
        for out in outcomes:  # the program learns its file was not stored
            assert "write failed" in out or "close failed" in out, out
    assert (server.root / "target.bin").read_bytes() == old
    assert not (server.root / "new.bin").exists()
    assert temps(server.root) == []


def test_an_upload_killed_midway_leaves_no_temporary_file_after_the_next_mount(tmp_path: Path) -> None:
    with running_ftp(throttle=4_000_000) as server:  # a 16 MiB upload takes 4 s: time to kill it
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(16 << 20))
        foreign = server.root / ".fsmount-0123456789ab.part"  # another client's upload
        foreign.write_bytes(b"someone else's, still in progress")
        home = scratch_dir("fsmount-test-")
        try:
            with mounted(ftpes(server), source="f", home=home) as m:
                cp = subprocess.Popen(["cp", str(big), str(m.path / "big.bin")], stderr=subprocess.PIPE)
                wait_for(lambda: any(p != foreign and p.stat().st_size > 0 for p in temps(server.root)),
                         30, "the upload to start")
                m.proc.kill()
                m.proc.wait()
                subprocess.run(["fusermount3", "-uz", str(m.path)], capture_output=True)
                cp.communicate(timeout=30)
                ours = [p for p in temps(server.root) if p != foreign]
                assert ours  # left by the killed mount
            with mounted(ftpes(server), source="f", home=home):
                wait_for(lambda: temps(server.root) == [foreign], 30, "the killed upload's temporary file to go")
            assert foreign.read_bytes() == b"someone else's, still in progress"
            assert not (server.root / "big.bin").exists()
        finally:
            subprocess.run(["rm", "-rf", str(home)])


def test_a_full_cache_disk_still_serves_reads_from_the_server(server: FtpServer) -> None:
    blob = os.urandom(8 << 20)
    (server.root / "big.bin").write_bytes(blob)
    with small_disk() as cache, mounted(ftpes(server), source="f", env={"XDG_CACHE_HOME": str(cache)},
                                        expect_warnings=[r"cache"]) as m:
        assert run("cat", m.path / "big.bin").stdout == blob
        assert run("cat", m.path / "big.bin").stdout == blob
        log = m.log_text()
    warnings = re.findall(r"^.* WARNING .*$", log, re.M)
    assert len(warnings) == 1, warnings
    assert "Traceback" not in log


def test_a_lazy_unmount_stores_a_writer_at_its_close(server: FtpServer) -> None:
    """``fusermount3 -uz`` with a file open: the program finishes it, its close stores it."""
    with mounted(ftpes(server), source="f") as m:
        fd = os.open(m.path / "lazy.bin", os.O_WRONLY | os.O_CREAT)
        os.write(fd, b"a" * 1000)
        run("fusermount3", "-uz", m.path)
        assert not is_mounted(m.path) and m.proc.poll() is None
        os.write(fd, b"b" * 1000)  # (the fork of fusermount3 flushed the first part: a close)
        os.close(fd)
        assert m.proc.wait(timeout=30) == 0
    assert (server.root / "lazy.bin").read_bytes() == b"a" * 1000 + b"b" * 1000


def test_sigterm_during_an_upload_at_close_lets_it_finish(tmp_path: Path) -> None:
    """cp's close() is under way (the file is whole): the upload completes, then the mount ends."""
    with running_ftp(throttle=8_000_000) as server:  # 16 MiB: about 2 s of upload
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(16 << 20))
        with mounted(ftpes(server), source="f") as m:
            cp = subprocess.Popen(["cp", str(big), str(m.path / "big.bin")], stderr=subprocess.PIPE)
            wait_for(lambda: any(p.stat().st_size > 0 for p in temps(server.root)), 30, "the upload")
            m.proc.send_signal(signal.SIGTERM)
            _, err = cp.communicate(timeout=60)
            assert m.proc.wait(timeout=60) == 0
        assert cp.returncode == 0, err
        assert (server.root / "big.bin").read_bytes() == big.read_bytes()
        assert temps(server.root) == []
