"""Big files read from start to end stream through memory; files read in places stay on disk.

Through the real mount against a real pyftpdlib; what is on disk is checked in the cache
directory itself, and what came from disk rather than the server is told apart by changing
the server's bytes under an unchanged identity (same size and modification time).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mounting import mounted, run, scratch_dir
from tests.servers.ftp import FtpServer, running_ftp

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no FUSE")

MiB = 1 << 20


@pytest.fixture
def server() -> Iterator[FtpServer]:
    with running_ftp() as s:
        yield s


def config(server: FtpServer, stream_size: int | None, *, tls: bool = False, **options: object) -> str:
    top = "" if stream_size is None else f"stream_size = {stream_size}\n"
    url = server.url("ftpes") if tls else f"ftp://alice@127.0.0.1:{server.port}/"
    lines = ["[accounts.f]", f'url = "{url}"', 'password = "secret"']
    if tls:
        lines.append(f'ca_file = "{server.ca}"')
    else:
        lines += ["plaintext_auth = true", 'tls = "off"']
    lines += [f"{key} = {value}" for key, value in options.items()]
    return top + "\n".join(lines) + "\n"


def content_bytes(home: Path) -> int:
    """Bytes the content cache holds on disk (its files and its database)."""
    return sum(p.stat().st_blocks * 512 for p in (home / "cache").rglob("*") if p.is_file())


def swap_bytes(path: Path, data: bytes) -> None:
    """New bytes under the same size and mtime: the cache cannot tell, so what it serves
    afterwards shows whether it came from disk."""
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def uncached_read(path: Path) -> bytes:
    """The whole file, from a new open whose pages the kernel is told to drop first."""
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return f.read()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "ftpes"])
def test_a_big_file_streams_through_once_and_is_kept_when_read_again(server: FtpServer,
                                                                     tls: bool) -> None:
    blob = os.urandom(12 * MiB + 12345)
    path = server.root / "big.bin"
    path.write_bytes(blob)
    with mounted(config(server, 4 * MiB, tls=tls), source="f") as m:
        with open(m.path / "big.bin", "rb") as f:  # a first look at the head only
            assert f.read(4096) == blob[:4096]
        # reads that straddle the stream's chunks
        assert run("dd", f"if={m.path / 'big.bin'}", "bs=100000").stdout == blob
        assert content_bytes(m.home) < 1 * MiB  # nothing of it kept on disk
        assert uncached_read(m.path / "big.bin") == blob  # read again: fetched, and kept
        assert content_bytes(m.home) >= len(blob)
        swap_bytes(path, os.urandom(len(blob)))
        assert uncached_read(m.path / "big.bin") == blob  # the third time from disk


def test_a_file_read_in_places_lands_on_disk(server: FtpServer) -> None:
    blob = os.urandom(12 * MiB)
    path = server.root / "big.bin"
    path.write_bytes(blob)
    offsets = [7 * MiB + 5, 1 * MiB, 11 * MiB + 4000, 3 * MiB + 17]
    with mounted(config(server, 4 * MiB), source="f") as m:
        fd = os.open(m.path / "big.bin", os.O_RDONLY)
        try:
            for off in offsets:
                assert os.pread(fd, 4096, off) == blob[off:off + 4096]
            assert content_bytes(m.home) >= 4 * 128 * 1024  # a block per read, at least
            # (while the file is open: a file read in part is kept until it is closed)
            swap_bytes(path, os.urandom(len(blob)))
            for off in offsets:  # from the disk cache: the server's new bytes are not seen
                assert os.pread(fd, 4096, off) == blob[off:off + 4096]
        finally:
            os.close(fd)


def test_a_reader_that_seeks_away_leaves_the_stream(server: FtpServer) -> None:
    blob = os.urandom(12 * MiB)
    (server.root / "big.bin").write_bytes(blob)
    with mounted(config(server, 4 * MiB), source="f") as m:
        with open(m.path / "big.bin", "rb", buffering=0) as f:
            assert f.read(MiB) == blob[:MiB]  # streaming
            f.seek(9 * MiB + 3)
            assert f.read(2 * MiB) == blob[9 * MiB + 3:11 * MiB + 3]  # read in places from here
            assert content_bytes(m.home) >= 2 * MiB  # what was read in places is on disk
            f.seek(MiB)
            assert f.read() == blob[MiB:]


@pytest.mark.parametrize("stream_size", [0, 16 * MiB, None], ids=["never", "above", "default"])
def test_the_stream_size_setting_is_honoured(server: FtpServer, stream_size: int | None) -> None:
    """0 keeps every file read; a file below the threshold (the default is 64 MiB) is kept."""
    blob = os.urandom(12 * MiB)
    (server.root / "big.bin").write_bytes(blob)
    home = scratch_dir("fsmount-test-")
    with mounted(config(server, stream_size), source="f", home=home) as m:
        assert run("cat", m.path / "big.bin").stdout == blob
        assert content_bytes(m.home) >= len(blob)
        swap_bytes(server.root / "big.bin", os.urandom(len(blob)))
        assert uncached_read(m.path / "big.bin") == blob  # served from disk
    with mounted(config(server, stream_size), source="f", home=home) as m:
        assert run("cat", m.path / "big.bin").stdout == blob  # from disk after a remount too
    shutil.rmtree(home)


def test_an_interrupted_stream_resumes_where_it_stopped() -> None:
    with running_ftp(sendfile=False) as server:
        blob = os.urandom(24 * MiB)
        (server.root / "f.bin").write_bytes(blob)
        server.set_faults(drop_after=5 * MiB, times=2)  # two transfers die mid-way
        with mounted(config(server, 4 * MiB), source="f") as m:
            assert run("cat", m.path / "f.bin").stdout == blob
            assert content_bytes(m.home) < 1 * MiB


def test_a_paused_reader_holds_no_connection(server: FtpServer) -> None:
    """With one connection allowed, a reader that stops halfway (a paused video) must not
    keep it: the stream gives it back once its window is full, so a listing elsewhere is
    answered, and the read then goes on with the right bytes."""
    blob = os.urandom(40 * MiB)
    (server.root / "big.bin").write_bytes(blob)
    (server.root / "sub").mkdir()
    (server.root / "sub" / "note.txt").write_bytes(b"hi")
    with mounted(config(server, 4 * MiB, connections=1), source="f") as m:
        with open(m.path / "big.bin", "rb", buffering=0) as f:
            assert f.read(MiB) == blob[:MiB]
            assert run("ls", m.path / "sub", timeout=20).stdout == b"note.txt\n"
            assert f.read() == blob[MiB:]
