"""FTP through the real mount, driven by real tools; every write checked in the server's root."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mounting import mounted, run, wait_for
from tests.servers import proftpd
from tests.servers.ftp import FtpServer, running_ftp, running_vsftpd

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no FUSE")


# the availability WARNING when a killed server stops answering (the tests kill it)
SERVER_GONE = [r"the server does not answer"]


@pytest.fixture
def server() -> Iterator[FtpServer]:
    with running_ftp() as s:
        yield s


@pytest.fixture(params=["pyftpdlib", "proftpd"])
def any_server(request: pytest.FixtureRequest) -> Iterator[FtpServer | proftpd.ProFtpd]:
    """Each real FTP server with users, writes and explicit FTPS (tests that need no faults)."""
    if request.param == "proftpd":
        if not proftpd.available():
            pytest.skip("ProFTPD is not unpacked (contrib/setup.sh)")
        with proftpd.running_proftpd() as p:
            yield p
    else:
        with running_ftp() as s:
            yield s


def config(url: str, ca: Path, *, password: str | None = "secret", **options: object) -> str:
    lines = ["[accounts.f]", f'url = "{url}"', f'ca_file = "{ca}"']
    if password is not None:
        lines.append(f'password = "{password}"')
    for key, value in options.items():
        lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else repr(value)}"
                     .replace("'", '"'))
    return "\n".join(lines) + "\n"


def ftpes(server: FtpServer | proftpd.ProFtpd, **options: object) -> str:
    return config(server.url("ftpes"), server.ca, **options)


def test_read_tools(any_server: FtpServer | proftpd.ProFtpd) -> None:
    server = any_server
    root = server.root
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("alpha\nneedle here\n")
    (root / "docs" / "deep" / "b.txt").write_text("beta\n")
    (root / "docs" / "grüße €.txt").write_text("ünïcode\n")
    blob = os.urandom(3 << 20)
    (root / "docs" / "deep" / "blob.bin").write_bytes(blob)
    os.utime(root / "docs" / "a.txt", (1_600_000_000, 1_600_000_000))
    with mounted(ftpes(server), source="f") as m:
        docs = m.path / "docs"
        assert sorted(os.listdir(docs)) == ["a.txt", "deep", "grüße €.txt"]
        assert run("cat", docs / "a.txt").stdout == b"alpha\nneedle here\n"
        assert run("cat", docs / "grüße €.txt").stdout == "ünïcode\n".encode()
        st = (docs / "a.txt").stat()
        assert st.st_size == 18 and st.st_mtime == 1_600_000_000
        assert run("stat", "-c", "%s %Y", docs / "a.txt").stdout.split() == [b"18", b"1600000000"]
        found = run("grep", "-rl", "needle", m.path).stdout.decode().split()
        assert found == [str(docs / "a.txt")]
        names = sorted(run("find", docs, "-type", "f").stdout.decode().splitlines())
        assert names == sorted(str(docs / p) for p in ["a.txt", "deep/b.txt", "deep/blob.bin", "grüße €.txt"])
        out = Path(tempfile.mkdtemp(prefix="ftp-out-"))
        try:
            run("cp", "-r", docs, out / "cp")
            assert (out / "cp" / "deep" / "blob.bin").read_bytes() == blob
            run("rsync", "-a", f"{docs}/", out / "rsync")
            assert (out / "rsync" / "deep" / "blob.bin").read_bytes() == blob
            assert (out / "rsync" / "a.txt").stat().st_mtime == 1_600_000_000
            assert (out / "rsync" / "grüße €.txt").read_text() == "ünïcode\n"
        finally:
            shutil.rmtree(out)


def test_cache_removed_under_the_mount(any_server: FtpServer | proftpd.ProFtpd, tmp_path: Path) -> None:
    """``rm -rf ~/.cache/fsmount`` while mounted: reads refetch and writes still spool."""
    server = any_server
    blob = os.urandom(3 << 20)
    (server.root / "blob.bin").write_bytes(blob)
    (server.root / "small.txt").write_text("small\n")
    with mounted(ftpes(server), source="f", home=tmp_path) as m:
        assert (m.path / "blob.bin").read_bytes() == blob
        shutil.rmtree(tmp_path / "cache")
        with open(m.path / "blob.bin", "rb") as f:  # a new open: keep_cache off the kernel's pages
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            assert f.read() == blob
        assert run("cat", m.path / "small.txt").stdout == b"small\n"
        (m.path / "new.txt").write_text("written after\n")
        assert (server.root / "new.txt").read_text() == "written after\n"


def test_write_tools(any_server: FtpServer | proftpd.ProFtpd) -> None:
    server = any_server
    root = server.root
    (root / "old.txt").write_text("0123456789")
    (root / "log.txt").write_text("line 1\n")
    local = Path(tempfile.mkdtemp(prefix="ftp-in-"))
    big = os.urandom(20 << 20)
    (local / "big.bin").write_bytes(big)
    try:
        with mounted(ftpes(server), source="f") as m:
            run("cp", local / "big.bin", m.path / "big.bin")
            assert (root / "big.bin").read_bytes() == big  # complete when cp returns
            run("mkdir", m.path / "new dir")
            assert (root / "new dir").is_dir()
            run("cp", local / "big.bin", m.path / "new dir" / "copy.bin")
            run("mv", m.path / "new dir" / "copy.bin", m.path / "moved.bin")
            assert (root / "moved.bin").read_bytes() == big and not (root / "new dir" / "copy.bin").exists()
            run("rmdir", m.path / "new dir")
            assert not (root / "new dir").exists()
            run("rm", m.path / "moved.bin")
            assert not (root / "moved.bin").exists()
            run("sh", "-c", f"echo 'line 2' >> '{m.path / 'log.txt'}'")
            assert (root / "log.txt").read_text() == "line 1\nline 2\n"
            run("truncate", "-s", "4", m.path / "old.txt")
            assert (root / "old.txt").read_text() == "0123"
            run("sh", "-c", f"printf new > '{m.path / 'old.txt'}'")
            assert (root / "old.txt").read_text() == "new"
            run("touch", m.path / "empty")
            assert (root / "empty").read_bytes() == b""
            run("touch", "-d", "2020-01-02 03:04:05 UTC", m.path / "log.txt")
            assert (root / "log.txt").stat().st_mtime == 1_577_934_245
            run("chmod", "600", m.path / "log.txt")
            assert (root / "log.txt").stat().st_mode & 0o777 == 0o600
            assert (m.path / "log.txt").stat().st_mode & 0o777 == 0o600
            with open(m.path / "rw.txt", "w+b") as f:  # O_RDWR: read back before close
                f.write(b"hello world")
                f.seek(6)
                assert f.read() == b"world"
                f.seek(0)
                f.write(b"HELLO")
                f.seek(0)
                assert f.read() == b"HELLO world"
            assert (root / "rw.txt").read_bytes() == b"HELLO world"
            with open(m.path / "old.txt", "r+b") as f:
                f.seek(1)
                f.write(b"E")
                f.seek(0)
                assert f.read() == b"nEw"
            assert (root / "old.txt").read_bytes() == b"nEw"
            assert not list(root.rglob(".fsmount-*"))
    finally:
        shutil.rmtree(local)


def huge_file(server: FtpServer | proftpd.ProFtpd) -> Path:
    path = server.root / "huge.bin"
    with open(path, "wb") as f:
        f.truncate(256 << 20)
        f.seek(0)
        f.write(b"MAGIC" + b"x" * 65531)
    return path


def cached_bytes(home: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in (home / "cache").rglob("*") if p.is_file())


def test_head_of_a_big_file_does_not_download_it(any_server: FtpServer | proftpd.ProFtpd) -> None:
    server = any_server
    huge_file(server)
    with mounted(ftpes(server), source="f") as m:
        assert run("head", "-c", "65536", m.path / "huge.bin").stdout == b"MAGIC" + b"x" * 65531
        # the read-ahead may still be running: give it the time a whole download would take
        time.sleep(1)
        assert cached_bytes(m.home) < 40 << 20


def test_file_of_a_big_file_does_not_download_it(any_server: FtpServer | proftpd.ProFtpd) -> None:
    server = any_server
    huge_file(server)
    with mounted(ftpes(server), source="f") as m:
        for _ in range(3):
            assert run("file", "-b", m.path / "huge.bin").returncode == 0
            time.sleep(1)
            assert cached_bytes(m.home) < 64 << 20


def test_permission_denied_for_a_read_only_user(server: FtpServer) -> None:
    (server.root / "ro.txt").write_text("keep")
    with mounted(config(server.url("ftpes", user="bob"), server.ca, password="secret2"), source="f",
                 expect_warnings=["never stored", "Not enough privileges"]) as m:
        assert run("cat", m.path / "ro.txt").stdout == b"keep"
        done = run("rm", m.path / "ro.txt", check=False)
        assert done.returncode != 0 and b"ermission denied" in done.stderr
        done = run("cp", "/etc/hostname", m.path / "new.txt", check=False)
        assert done.returncode != 0
    assert (server.root / "ro.txt").exists() and not (server.root / "new.txt").exists()
    assert not list(server.root.rglob(".fsmount-*"))


def test_cp_fails_when_the_server_dies_mid_upload() -> None:
    with running_ftp(throttle=16_000_000) as server:  # the upload takes 3 s: time to kill it
        local = Path(tempfile.mkdtemp(prefix="ftp-in-"))
        (local / "big.bin").write_bytes(os.urandom(48 << 20))
        try:
            with mounted(ftpes(server, timeout=2), source="f", expect_warnings=SERVER_GONE) as m:
                os.listdir(m.path)
                cp = subprocess.Popen(["cp", str(local / "big.bin"), str(m.path / "big.bin")],
                                      stderr=subprocess.PIPE)
                wait_for(lambda: any(p.stat().st_size > 0 for p in server.root.glob(".fsmount-*"))
                         or cp.poll() is not None, 30, "the upload to start")
                server.kill()
                _, err = cp.communicate(timeout=60)
                assert cp.returncode != 0, err
                assert not (server.root / "big.bin").exists()
        finally:
            shutil.rmtree(local)


def test_vsftpd_over_tls_with_session_reuse() -> None:
    files = {"readme.txt": b"read me\n", "pub/data.bin": os.urandom(1 << 20)}
    with running_vsftpd(files, tls=True) as v:
        with mounted(config(v.url(), v.ca, password=None), source="f") as m:
            assert sorted(os.listdir(m.path)) == ["pub", "readme.txt"]
            assert run("cat", m.path / "readme.txt").stdout == b"read me\n"
            assert (m.path / "pub" / "data.bin").read_bytes() == files["pub/data.bin"]
            done = run("touch", "-d", "2020-01-01", m.path / "readme.txt", check=False)
            assert done.returncode != 0 and b"not supported" in done.stderr
            assert run("rm", m.path / "readme.txt", check=False).returncode != 0
            assert (v.root / "readme.txt").exists()


def test_hostile_names_and_lines_from_the_server(server: FtpServer) -> None:
    (server.root / "good.txt").write_text("good\n")
    (server.root / "evil\r\nname").write_text("evil\n")  # a real file whose name holds CR/LF
    server.set_faults(mlsd_extra=["type=file;size=5;modify=20240101000000; a/b\r\n",
                                  "type=file;size=99999999999999999999999999; huge\r\n",
                                  "type=dir; ..\r\n", "\x00\xff garbage\r\n"])
    with mounted(ftpes(server), source="f") as m:
        assert os.listdir(m.path) == ["good.txt"]
        assert run("cat", m.path / "good.txt").stdout == b"good\n"
        assert run("find", m.path).returncode == 0


def test_a_server_that_stops_answering_fails_operations_and_unmounts(server: FtpServer) -> None:
    (server.root / "d").mkdir()
    (server.root / "d" / "f.txt").write_text("x")
    with mounted(ftpes(server, timeout=2), source="f", expect_warnings=SERVER_GONE) as m:
        assert os.listdir(m.path) == ["d"]
        server.set_faults(hang=True)
        start = time.monotonic()
        done = subprocess.run(["ls", str(m.path / "d")], capture_output=True, timeout=60)
        assert done.returncode != 0
        assert time.monotonic() - start < 20
    # leaving the block unmounted it (mounted() fails the test if fsmount does not exit)


def test_an_interrupted_read_resumes_where_it_stopped() -> None:
    with running_ftp(sendfile=False) as server:
        blob = os.urandom(24 << 20)
        (server.root / "f.bin").write_bytes(blob)
        server.set_faults(drop_after=5 << 20, times=2)  # two transfers die mid-way
        with mounted(ftpes(server), source="f") as m:
            assert run("cat", m.path / "f.bin").stdout == blob


@pytest.mark.parametrize("stream_size", [0, 1 << 20], ids=["disk-cached", "streamed"])
def test_a_server_killed_mid_read_fails_the_read(stream_size: int, tmp_path: Path) -> None:
    with running_ftp(throttle=8_000_000) as server:
        (server.root / "f.bin").write_bytes(os.urandom(64 << 20))
        with mounted(f"stream_size = {stream_size}\n" + ftpes(server, timeout=2), source="f",
                     expect_warnings=SERVER_GONE) as m:
            out = tmp_path / "out"
            dd = subprocess.Popen(["dd", f"if={m.path / 'f.bin'}", f"of={out}", "bs=1M"],
                                  stderr=subprocess.PIPE)
            wait_for(lambda: (out.exists() and out.stat().st_size > 2 << 20) or dd.poll() is not None,
                     30, "the read")
            server.kill()
            _, err = dd.communicate(timeout=60)
            assert dd.returncode != 0, err
            assert b"Input/output error" in err or b"error" in err.lower()


def _tree(root: Path, folders: int, files: int) -> list[Path]:
    """``folders`` folders of ``files`` files each (and one sub-folder holding one file)."""
    made = []
    for d in range(folders):
        (root / f"d{d:02d}" / "sub").mkdir(parents=True)
        (root / f"d{d:02d}" / "sub" / "deep.txt").write_text("deep\n")
        for f in range(files):
            p = root / f"d{d:02d}" / f"f{f:03d}.txt"
            p.write_text("x" * f)
            made.append(p)
    return made


def _listings(server: FtpServer) -> list[str]:
    return [c for c in server.commands() if c.split()[0] in ("MLSD", "LIST", "NLST", "MLST", "STAT")]


def test_a_warm_walk_lists_nothing_again_within_the_ttl(server: FtpServer) -> None:
    """Within ``metadata_ttl`` a second walk, ``ls -lR`` and a ``stat`` of every file are
    answered by the kernel and the cache: the server sees no listing beyond the first walk's."""
    files = _tree(server.root, 5, 20)
    with mounted(ftpes(server), source="f") as m:
        first = run("find", m.path).stdout.decode().splitlines()
        cold = len(_listings(server))
        assert cold >= 11  # the root and each folder, once
        time.sleep(1.2)  # past the kernel's old one-second timeout
        assert run("find", m.path).stdout.decode().splitlines() == first
        run("ls", "-lR", m.path)
        for p in files:
            st = (m.path / p.relative_to(server.root)).stat()
            assert st.st_size == p.stat().st_size
        assert _listings(server)[cold:] == []


def test_changes_through_the_mount_show_at_once(server: FtpServer) -> None:
    """After touch, an append, cp, rm, mv and mkdir through the mount, ``stat`` and ``ls``
    are right at once, although the kernel holds every entry for as long as the cache trusts
    the listing it came from (here an hour)."""
    root = server.root
    _tree(root, 2, 3)
    src = Path(tempfile.mkdtemp(prefix="ftp-src-"))
    (src / "new.txt").write_text("new content\n")
    try:
        with mounted(ftpes(server, metadata_ttl=3600), source="f") as m:
            d = m.path / "d00"
            run("ls", "-lR", m.path)  # every entry and its attributes in the kernel's cache
            before = {p.name: p.stat() for p in d.iterdir()}
            assert before["f002.txt"].st_size == 2

            run("touch", "-d", "@1600000000", d / "f001.txt")
            assert (d / "f001.txt").stat().st_mtime == 1_600_000_000
            assert (root / "d00" / "f001.txt").stat().st_mtime == 1_600_000_000

            with open(d / "f002.txt", "a") as f:
                f.write("appended\n")
            assert (d / "f002.txt").stat().st_size == 11 == (root / "d00" / "f002.txt").stat().st_size
            assert run("stat", "-c", "%s", d / "f002.txt").stdout.strip() == b"11"

            run("cp", src / "new.txt", d / "new.txt")
            assert (d / "new.txt").stat().st_size == 12
            assert "new.txt" in os.listdir(d)

            run("rm", d / "f000.txt")
            assert not (root / "d00" / "f000.txt").exists()
            assert "f000.txt" not in os.listdir(d)
            with pytest.raises(FileNotFoundError):
                (d / "f000.txt").stat()

            run("mv", d / "f001.txt", d / "renamed.txt")
            assert (d / "renamed.txt").stat().st_mtime == 1_600_000_000
            with pytest.raises(FileNotFoundError):
                (d / "f001.txt").stat()
            assert sorted(os.listdir(d)) == ["f002.txt", "new.txt", "renamed.txt", "sub"]

            run("mkdir", d / "made")
            assert (d / "made").is_dir() and (root / "d00" / "made").is_dir()
            run("mv", d / "sub", m.path / "d01" / "moved")
            assert (m.path / "d01" / "moved" / "deep.txt").read_text() == "deep\n"
            assert sorted(os.listdir(d)) == ["f002.txt", "made", "new.txt", "renamed.txt"]
            assert run("ls", m.path / "d01" / "moved").stdout == b"deep.txt\n"
    finally:
        shutil.rmtree(src)


def test_listings_kept_are_bounded_by_their_entries(server: FtpServer) -> None:
    """``cache_entries`` bounds the listings kept, counted in entries: a walk bigger than it
    lists again what was evicted (the server sees it), one within it lists nothing again."""
    _tree(server.root, 10, 10)  # 10 listings of 11 entries, 10 of 1, the root's 10
    with mounted("cache_entries = 60\n" + ftpes(server), source="f") as m:
        run("find", m.path)
        cold = len(_listings(server))
        run("find", m.path)
        again = len(_listings(server)) - cold
        assert again >= 10
    with mounted(ftpes(server), source="f") as m:
        run("find", m.path)
        cold = len(_listings(server))
        run("find", m.path)
        assert len(_listings(server)) == cold


def test_the_kernel_is_made_to_forget_past_max_inodes(server: FtpServer) -> None:
    """Past ``max_inodes`` the kernel is asked to drop the files looked up first, and fsmount
    their nodes once it did: such a file, looked up again, has a new inode number."""
    files = _tree(server.root, 10, 30)
    with mounted("max_inodes = 100\n" + ftpes(server), source="f") as m:
        first = m.path / files[0].relative_to(server.root)
        ino = first.stat().st_ino
        run("find", m.path)
        assert wait_for(lambda: first.stat().st_ino != ino, 10, "the first file forgotten")
        assert first.read_text() == ""


def test_a_walk_lists_subfolders_ahead(server: FtpServer) -> None:
    """A folder read right after its parent (a walk) has its subfolders listed in the
    background, on spare connections; ``ls`` of a single folder lists nothing ahead."""
    for x in range(4):
        (server.root / "a" / "s0" / f"x{x}").mkdir(parents=True)
        (server.root / "a" / "s0" / f"x{x}" / "f.txt").write_text("f\n")
    (server.root / "a" / "s1" / "y").mkdir(parents=True)
    with mounted(ftpes(server), source="f") as m:

        def listed(*tail: str) -> bool:
            return any(c.startswith(("MLSD", "LIST")) and c.endswith("/".join(tail)) for c in server.commands())

        assert run("ls", m.path / "a").stdout == b"s0\ns1\n"
        assert run("ls", m.path / "a" / "s1").stdout == b"y\n"  # read after its parent: a walk
        assert wait_for(lambda: listed("a", "s1", "y"), 10, "a/s1/y listed ahead")
        assert not listed("a", "s0")  # ls of a/ alone listed nothing ahead
        run("ls", m.path / "a" / "s0")
        assert wait_for(lambda: all(listed("a", "s0", f"x{x}") for x in range(4)), 10, "a/s0/x* listed ahead")
        before = len(_listings(server))
        assert run("find", m.path / "a" / "s0").stdout.decode().count("f.txt") == 4
        assert len(_listings(server)) == before  # the walker found them all listed already

