"""FTP symlinks and cut-short listings through the real mount, on real servers (ProFTPD,
vsftpd) and on pyftpdlib turned hostile or capped by its hooks."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.mounting import mounted, run, scratch_dir
from tests.servers import proftpd
from tests.servers.ftp import FtpServer, running_ftp, running_vsftpd
from tests.test_ftp_mounted import config, ftpes

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no FUSE")

TEXT = os.urandom(2533)


@pytest.fixture
def server() -> Iterator[FtpServer]:
    with running_ftp() as s:
        yield s


@pytest.fixture
def pro() -> Iterator[proftpd.ProFtpd]:
    if not proftpd.available():
        pytest.skip("ProFTPD is not unpacked (contrib/setup.sh)")
    with proftpd.running_proftpd() as p:
        yield p


# -- links that are really there ------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ftpes", "ftps"])
def test_proftpd_links_without_targets_read_as_what_they_point_at(
        pro: proftpd.ProFtpd, scheme: str) -> None:
    """ProFTPD's MLSD says ``type=OS.unix=symlink`` with the link's length as ``size`` and no
    target: a link to a file must read whole, a link to a folder must lead into it, and a
    link to ``.`` must not make ``find`` walk for ever (over explicit and implicit FTPS, with
    ProFTPD's required TLS session reuse on the data connections)."""
    (pro.root / "a.txt").write_bytes(TEXT)
    (pro.root / "sub").mkdir()
    (pro.root / "sub" / "in.txt").write_text("inside\n")
    os.symlink("a.txt", pro.root / "lnk")
    os.symlink("sub", pro.root / "dlnk")
    os.symlink("../a.txt", pro.root / "sub" / "up")
    os.symlink(".", pro.root / "sub" / "loop")
    with mounted(config(pro.url(scheme), pro.ca), source="f") as m:
        assert sorted(os.listdir(m.path)) == ["a.txt", "dlnk", "lnk", "sub"]
        assert run("cat", m.path / "lnk").stdout == TEXT
        assert run("stat", "-L", "-c", "%s %F", m.path / "lnk").stdout.split(b" ", 1) == \
            [b"2533", b"regular file\n"]
        assert os.readlink(m.path / "lnk") == "a.txt" and os.readlink(m.path / "dlnk") == "sub"
        assert run("ls", m.path / "dlnk/").stdout == b"in.txt\nloop\nup\n"
        assert run("cat", m.path / "dlnk" / "in.txt").stdout == b"inside\n"
        assert run("cp", m.path / "sub" / "up", m.home / "copy").returncode == 0
        assert (m.home / "copy").read_bytes() == TEXT
        found = sorted(run("find", m.path).stdout.decode().splitlines())
        assert len(found) == 8 and str(m.path / "sub" / "loop") in found
        assert os.readlink(m.path / "sub" / "loop") == "."  # known by its MLSD "unique"


def test_links_with_targets_are_links_inside_the_mount() -> None:
    """vsftpd's LIST tells the targets: ``readlink`` shows them, made relative and kept inside
    the mount; a target climbing out of it cannot be followed; a dangling one stays a link."""
    files = {"a.txt": TEXT, "sub/b.txt": b"bee\n"}
    links = {"link.txt": "a.txt", "up": "/sub", "sub/back": "/a.txt", "sub/rel": "../a.txt",
             "esc": "../../../../etc/hostname", "abs": "/etc/hostname", "dang": "missing"}
    with running_vsftpd(files, links=links) as v:
        with mounted(config(v.url(), v.ca, password=None), source="f") as m:
            p = m.path
            assert os.readlink(p / "link.txt") == "a.txt"
            assert os.readlink(p / "up") == "sub"
            assert os.readlink(p / "sub" / "back") == "../a.txt"
            assert os.readlink(p / "sub" / "rel") == "../a.txt"
            assert run("cat", p / "link.txt").stdout == TEXT
            assert run("cat", p / "sub" / "back").stdout == TEXT
            assert run("cat", p / "up" / "b.txt").stdout == b"bee\n"
            assert os.readlink(p / "dang") == "missing"
            assert run("stat", "-c", "%F", p / "dang").stdout == b"symbolic link\n"
            # /etc/hostname of the server's (chrooted) root: inside the account, and missing
            assert os.readlink(p / "abs") == "etc/hostname"
            assert run("cat", p / "abs", check=False).returncode != 0
            # climbing above the account: the server cannot follow it either → a link to itself
            assert os.readlink(p / "esc") == "esc"
            done = run("cat", p / "esc", check=False)
            assert done.returncode != 0 and b"symbolic links" in done.stderr


# -- a hostile server -----------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["mlsd", "list"])
@pytest.mark.parametrize("account_path", ["", "/pub"])
def test_a_hostile_servers_links_cannot_reach_outside_the_mount(
        server: FtpServer, dialect: str, account_path: str) -> None:
    """Links to absolute local paths and climbing ones: writing through them must change no
    file outside the mount (it overwrote one before) and create nothing on the server."""
    outside = scratch_dir("ftp-victim-")
    victim = outside / "victim.txt"
    victim.write_text("keep me\n")
    (server.root / "pub").mkdir()
    (server.root / "pub" / "ok.txt").write_text("ok\n")
    (server.root / "pub" / "two.txt").write_text("two\n")  # the hook takes one file for MLST
    climb = "../" * 12 + str(victim).lstrip("/")
    names = {"trap": str(victim), "climb": climb, "dir": str(outside)}
    if dialect == "mlsd":
        server.set_faults(mlsd_extra=[f"type=OS.unix=slink:{t};modify=20240101000000;size=9; {n}\r\n"
                                      for n, t in names.items()])
    else:
        server.set_faults(no_mlst=True, list_extra=[
            f"lrwxrwxrwx   1 root root 9 Jan 01  2024 {n} -> {t}\r\n" for n, t in names.items()])
    before = sorted(p.relative_to(server.root) for p in server.root.rglob("*"))
    try:
        with mounted(config(server.url("ftpes", path=account_path), server.ca), source="f") as m:
            listed = os.listdir(m.path)
            assert {"trap", "climb", "dir"} <= set(listed)
            for name in names:
                done = subprocess.run(["sh", "-c", f"printf x > '{m.path / name}'"],
                                      capture_output=True)
                assert done.returncode != 0 and victim.read_text() == "keep me\n"
                target = os.readlink(m.path / name)
                assert not target.startswith("/") and not target.startswith("..")
            done = subprocess.run(["sh", "-c", f"printf x > '{m.path / 'dir' / 'new.txt'}'"],
                                  capture_output=True)
            assert done.returncode != 0 and not (outside / "new.txt").exists()
            assert run("cat", m.path / ("ok.txt" if account_path else "pub/ok.txt")).stdout == b"ok\n"
        assert victim.read_text() == "keep me\n"
        assert sorted(os.listdir(outside)) == ["victim.txt"]
        assert sorted(p.relative_to(server.root) for p in server.root.rglob("*")) == before
    finally:
        shutil.rmtree(outside)


# -- cut-short listings ---------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["mlsd", "list"])
@pytest.mark.parametrize("silent, reply", [(False, None), (True, None),
                                           (False, "426 Connection closed; transfer aborted.")],
                         ids=["226-truncated", "cut-mid-line", "426"])
def test_a_cut_short_listing_is_never_taken_as_complete(server: FtpServer, silent: bool,
                                                        reply: str | None, dialect: str) -> None:
    """The server sends 10 of 30 names (saying so, or ending inside a line): ``ls`` shows what
    came, every other name is still found on the server, and a no-clobber create of one of
    them fails instead of replacing it."""
    for i in range(30):
        (server.root / f"f{i:02d}.txt").write_text(f"file {i}\n")
    server.set_faults(list_cap=10, list_cap_silent=silent, list_cap_reply=reply,
                      no_mlst=dialect == "list")
    with mounted(ftpes(server), source="f",
                 expect_warnings=[r"the server's listing of / is incomplete"]) as m:
        shown = set(os.listdir(m.path))
        every = {f"f{i:02d}.txt" for i in range(30)}
        assert 9 <= len(shown) <= 10 and shown <= every
        a, b, c = sorted(every - shown)[:3]
        assert run("stat", "-c", "%s", m.path / a).stdout == \
            f"{(server.root / a).stat().st_size}\n".encode()
        assert run("cat", m.path / b).stdout == f"file {int(b[1:3])}\n".encode()
        done = subprocess.run(["sh", "-C", "-c", f"echo replaced > '{m.path / c}'"],
                              capture_output=True)
        assert done.returncode != 0 and b"exists" in done.stderr
        assert run("ls", m.path / "nothere.txt", check=False).returncode != 0
        run("sh", "-C", "-c", f"echo new > '{m.path / 'new.txt'}'")
        assert (server.root / "new.txt").read_text() == "new\n"
        for i in range(30):
            assert (server.root / f"f{i:02d}.txt").read_text() == f"file {i}\n"
        run("ls", "-l", m.path)
        warnings = [ln for ln in m.log_text().splitlines() if "WARNING" in ln]
        assert len(warnings) == 1, warnings  # once, however often the folder is listed


def test_links_leaving_the_account_are_what_the_server_follows(pro: proftpd.ProFtpd) -> None:
    """Links that climb above the account (mounted at ``/d``) are asked about on the server,
    a batch per round trip, and shown as the files they point at; ``ls -l`` of 300 stays fast."""
    (pro.root / "t.bin").write_bytes(b"x" * 1000)
    (pro.root / "d").mkdir()
    for i in range(300):
        os.symlink("../t.bin", pro.root / "d" / f"l{i:03d}")
    with mounted(config(pro.url("ftpes", path="/d"), pro.ca), source="f") as m:
        start = time.monotonic()
        out = run("ls", "-l", m.path).stdout.decode().splitlines()
        took = time.monotonic() - start
        assert sum(line.startswith("-") and " 1000 " in line for line in out) == 300
        assert took < 10, took
        assert run("cat", m.path / "l123").stdout == b"x" * 1000
