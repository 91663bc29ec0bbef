"""POP3 through the real mount, driven by real tools; every result checked on the server.

The Dovecot here locks the maildrop per POP3 session (see test_pop3_backend), so the direct
client's logins between tool runs also prove that the mount holds no session open.
"""
from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fsmount.backends import pop3
from tests.faultproxy import Relay
from tests.mounting import Mount, mounted, run, wait_for
from tests.servers.dovecot import Dovecot
from tests.test_pop3_backend import Proxy, direct, message, server_uidls, srv  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no FUSE")


@pytest.fixture(autouse=True)
def _empty_maildrop(srv: Dovecot) -> None:  # noqa: F811
    with direct(srv) as conn:
        for n in range(1, conn.stat()[0] + 1):
            conn.dele(n)


def config(server: Dovecot, **options: object) -> str:
    lines = [
        "[accounts.mail]",
        f'url = "pop3s://alice@127.0.0.1:{server.pop3s_port}"',
        f'ca_file = "{server.ca}"',
        'password = "secret1"',
        "timeout = 10",
    ]
    for key, value in options.items():
        lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value!r}")
    return "\n".join(lines) + "\n"


def retrieved(server: Dovecot) -> list[bytes]:
    """Every message as RETR gives it (CRLF lines), in maildrop order."""
    with direct(server) as conn:
        return [b"\r\n".join(conn.retr(n)[1]) + b"\r\n" for n in range(1, conn.stat()[0] + 1)]


def unlocked(server: Dovecot) -> None:
    """A direct login succeeds at once: the mount holds no POP3 session."""
    with direct(server, timeout=3):
        pass


@contextmanager
def through(proxy: Proxy | Relay, **kw: Any) -> Iterator[Mount]:
    """A mount of alice's maildrop through ``proxy`` (closed afterwards)."""
    table = "\n".join([
        "[accounts.mail]", f'url = "pop3://alice@127.0.0.1:{proxy.port}"', 'password = "secret1"',
        'tls = "off"', "plaintext_auth = true", "timeout = 10", ""])
    try:
        with mounted(table, **kw) as m:
            yield m
    finally:
        proxy.close()


@contextmanager
def misreporting(server: Dovecot, list_delta: int) -> Iterator[Mount]:
    """A mount through a proxy that adds ``list_delta`` to every size LIST reports."""
    with proxied(server, list_delta=list_delta) as (m, _):
        yield m


@contextmanager
def proxied(server: Dovecot, *, list_delta: int = 0, home: Path | None = None
            ) -> Iterator[tuple[Mount, Proxy]]:
    """A mount through the line proxy, whose ``commands`` are what the server was asked."""
    proxy = Proxy(server)
    proxy.list_delta = list_delta
    with through(proxy, home=home) as m:
        yield m, proxy


@contextmanager
def relayed(server: Dovecot) -> Iterator[tuple[Mount, Relay]]:
    """A mount through a relay, whose ``commands()`` and ``batches()`` are what the server
    was asked and how it was pipelined."""
    relay = Relay(server.host, server.pop3_port)
    with through(relay) as m:
        yield m, relay


def emls(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix == ".eml")


def test_ls_cat_cp_grep(srv: Dovecot, tmp_path: Path) -> None:  # noqa: F811
    srv.append_many("alice", [
        message(f"Report {i}", f"Quarter {i} figures.\r\n.dotted line {i}\r\n") for i in range(4)])
    srv.deliver("alice", message("Needle", "The secret word is xylophone.\r\n"))
    stored = retrieved(srv)
    with relayed(srv) as (m, relay):
        box = m.path / "mail"
        files = emls(box)
        assert len(files) == 5
        assert sorted(f.name.split(" ", 2)[2].rsplit(" [", 1)[0] for f in files) == \
            ["Needle", *(f"Report {i}" for i in range(4))]
        unlocked(srv)
        by_subject = {f.name.split(" ", 2)[2].rsplit(" [", 1)[0]: f for f in files}
        for i in range(4):
            f = by_subject[f"Report {i}"]
            assert run("cat", f).stdout == stored[i]
            assert f.stat().st_size == len(stored[i])
        unlocked(srv)
        run("cp", by_subject["Needle"], tmp_path)
        assert (tmp_path / by_subject["Needle"].name).read_bytes() == stored[4]
        found = run("grep", "-rl", "xylophone", box).stdout.decode().splitlines()
        assert found == [str(by_subject["Needle"])]
        found = run("grep", "-rlF", ".dotted line 2", box).stdout.decode().splitlines()
        assert found == [str(by_subject["Report 2"])]
        retrs = relay.commands("RETR")
        assert retrs  # the relay does see them
        assert run("grep", "-rlc", "Quarter", box).returncode == 0  # warm: from the cache
        assert relay.commands("RETR") == retrs  # the server was asked for nothing more
        with open(by_subject["Report 3"], "rb") as f:  # Python file I/O, partial reads
            assert f.read(10) == stored[3][:10]
            f.seek(-5, os.SEEK_END)
            assert f.read() == stored[3][-5:]
        unlocked(srv)


def test_rm_deletes_on_the_server(srv: Dovecot) -> None:  # noqa: F811
    srv.append_many("alice", [message("Keep me"), message("Delete me"), message("Delete me too")])
    uidls = server_uidls(srv)
    with mounted(config(srv)) as m:
        box = m.path / "mail"
        victims = [f for f in emls(box) if "Delete me" in f.name]
        run("rm", victims[0])
        assert server_uidls(srv) == [uidls[0], uidls[2]]  # committed before rm returned
        assert not victims[0].exists()
        os.unlink(victims[1])
        assert server_uidls(srv) == [uidls[0]]
        assert [f.name for f in emls(box) if "Keep me" in f.name] and len(emls(box)) == 1
        done = run("rm", box / "no such [aaaaaaaaaaaa].eml", check=False)
        assert done.returncode != 0
        unlocked(srv)


def test_read_only_by_nature(srv: Dovecot, tmp_path: Path) -> None:  # noqa: F811
    srv.deliver("alice", message("Immutable"))
    src = tmp_path / "new.eml"
    src.write_bytes(message("Copied in"))
    with mounted(config(srv), expect_warnings=["never stored", "commit failed"]) as m:
        box = m.path / "mail"
        [f] = emls(box)
        assert run("cp", src, box, check=False).returncode != 0
        assert run("mv", f, box / "renamed.eml", check=False).returncode != 0
        assert run("mkdir", box / "folder", check=False).returncode != 0
        with pytest.raises(OSError):
            with open(f, "ab") as out:
                out.write(b"more")
        assert len(server_uidls(srv)) == 1


def test_new_mail_and_deletions_elsewhere_appear(srv: Dovecot) -> None:  # noqa: F811
    srv.deliver("alice", message("Old news"))
    with mounted(config(srv, poll_interval=0.3)) as m:
        box = m.path / "mail"
        assert len(emls(box)) == 1
        srv.deliver("alice", message("Fresh mail"))
        wait_for(lambda: any("Fresh mail" in f.name for f in emls(box)), 15, "the new message")
        with direct(srv) as conn:
            conn.dele(1)
        wait_for(lambda: not any("Old news" in f.name for f in emls(box)), 15, "the deletion")
        [f] = emls(box)
        assert f.read_bytes() == retrieved(srv)[0]


def test_many_messages_grep(srv: Dovecot) -> None:  # noqa: F811
    """grep -r fetches ahead in pipelined batches, each message exactly once."""
    srv.write_maildir("alice", "INBOX", [message(f"Bulk {i}", f"item {i:04d}\r\n") for i in range(300)])
    with relayed(srv) as (m, relay):
        box = m.path / "mail"
        assert len(emls(box)) == 300
        found = run("grep", "-rl", "item 0123", box).stdout.decode().splitlines()
        assert len(found) == 1 and "Bulk 123 " in found[0]
        asked = relay.commands("RETR")
        assert len(asked) == len(set(asked)) == 300  # what the server was asked: each once
        pipelined = [n for n in relay.batches("RETR") if n > 1]  # sent before the first answer
        assert len(pipelined) >= 300 // pop3.BATCH, relay.batches("RETR")
        unlocked(srv)


def cached_by_the_kernel(files: list[Path]) -> int:
    """How many of ``files`` have pages in the kernel's page cache (``fincore``: mincore(2),
    which reads nothing; its open of each file may well start a scan, as any open would)."""
    out = run("fincore", "--noheadings", "--bytes", "--output", "RES", *files).stdout.split()
    return sum(int(res) > 0 for res in out)


def test_a_scan_hands_messages_to_the_page_cache(srv: Dovecot) -> None:  # noqa: F811
    """Messages a scan fetched ahead also go to the kernel's page cache, so reading them costs
    no request: they are there before anyone read them, and the bytes are the server's, from
    the kernel and from fsmount alike."""
    srv.write_maildir("alice", "INBOX", [message(f"Paged {i}", "Some text.\r\n" * (i * 37 % 200 + 1))
                                         for i in range(120)])
    stored = sorted(retrieved(srv))
    with mounted(config(srv)) as m:
        box = m.path / "mail"
        run("ls", "-l", box)  # the kernel learns each file (and its size)
        listed = [box / name for name in os.listdir(box)]  # in the order readdir gives
        for f in listed[:5]:  # a scan begins, as grep -r reads
            f.read_bytes()
        unread = listed[5:]
        wait_for(lambda: cached_by_the_kernel(unread) >= 100, 20,  # all but a few stragglers
                 "the messages fetched ahead in the page cache, before anyone read them")
        assert sorted(f.read_bytes() for f in emls(box)) == stored
        for f in emls(box):  # the kernel's copy dropped: fsmount's own cache answers
            with open(f, "rb") as fd:
                os.posix_fadvise(fd.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert sorted(f.read_bytes() for f in emls(box)) == stored


def test_second_mount_reads_from_the_disk_cache(srv: Dovecot, tmp_path: Path) -> None:  # noqa: F811
    """Names and cache keys come from UIDLs, so they survive a remount (same cache dir)."""
    srv.append_many("alice", [message("Cached", "Kept on disk.\r\n"), message("Also cached")])
    stored = retrieved(srv)[::-1]  # sorted by name: "Also cached" first
    with proxied(srv, home=tmp_path) as (m, proxy):
        first = emls(m.path / "mail")
        assert [f.read_bytes() for f in first] == stored
        assert proxy.commands.count("RETR") == 2
    with proxied(srv, home=tmp_path) as (m, proxy):
        again = emls(m.path / "mail")
        assert [f.name for f in again] == [f.name for f in first]
        assert [f.read_bytes() for f in again] == stored
        assert "RETR" not in proxy.commands  # the server was asked for no message


def test_a_read_only_mount_takes_no_flush_per_close(srv: Dovecot) -> None:  # noqa: F811
    """Nothing is ever stored through a POP3 mount, so the kernel is told once that FLUSH is
    not needed and stops sending one per close (a round trip per file a grep reads)."""
    srv.append_many("alice", [message(f"Closed {i}") for i in range(5)])
    with mounted(config(srv)) as m:
        for _ in range(2):
            for f in emls(m.path / "mail"):
                assert f.read_bytes().startswith(b"From:")
        assert m.log_text().count("flush: nothing is ever stored") == 1


def test_cache_cleared_by_hand_is_refetched(srv: Dovecot, tmp_path: Path) -> None:  # noqa: F811
    """``rm -rf ~/.cache/fsmount`` under a live mount costs a download, never an error."""
    srv.append_many("alice", [message("Cleared", "Fetched twice.\r\n")])
    (stored,) = retrieved(srv)
    with proxied(srv, home=tmp_path) as (m, proxy):
        (f,) = emls(m.path / "mail")
        assert f.read_bytes() == stored
        assert any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
        shutil.rmtree(tmp_path / "cache")
        with open(f, "rb") as again:  # a new open: keep_cache off the kernel's pages
            os.posix_fadvise(again.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            assert again.read() == stored
        assert proxy.commands.count("RETR") == 2


def test_sizes_learned_by_a_scan_never_cut_a_later_read(srv: Dovecot) -> None:  # noqa: F811
    """A grep learns the exact sizes (LIST says 30 bytes less) before the kernel does: files
    opened right after must still read whole, whatever size the kernel holds."""
    srv.append_many("alice", [message(f"Short {i}", "A line of text.\r\n" * 20) for i in range(40)])
    stored = retrieved(srv)
    with misreporting(srv, -30) as m:
        files = emls(m.path / "mail")
        run("grep", "-rl", "no such words", m.path / "mail", check=False)
        for f in files[-5:]:
            for _ in range(3):
                assert run("cat", f).stdout in set(stored)


def test_list_sizes_below_the_message_still_read_whole_messages(srv: Dovecot) -> None:  # noqa: F811
    """A server whose LIST sizes are too small (counting LF line ends, say): readers get every
    byte, and the size is corrected. (Too large is a message cut short: the next test.)"""
    delta = -30
    srv.append_many("alice", [message("Misreported", "A line of text.\r\n" * 30), message("Other")])
    stored = retrieved(srv)
    with misreporting(srv, delta) as m:
        files = emls(m.path / "mail")
        assert [f.stat().st_size for f in files] == [len(s) + delta for s in stored]
        assert run("cat", files[0]).stdout == stored[0]
        assert run("cat", files[0]).stdout == stored[0]  # again: now from the cache
        assert files[0].stat().st_size == len(stored[0])
        assert run("cat", files[0]).stdout == stored[0]
        with open(files[1], "rb") as f:
            assert f.read() == stored[1]
        assert files[1].stat().st_size == len(stored[1])
        found = run("grep", "-rl", "A line of text", m.path / "mail").stdout.decode().split("\n")
        assert found[0] == str(files[0])


def test_a_message_cut_short_is_eio_never_a_short_file(srv: Dovecot) -> None:  # noqa: F811
    """RETR answers cut short but ended in good form (a proxy drops all but 10 lines): ``cat``
    fails with EIO, nothing short is cached, and once the server sends it whole it reads whole."""
    srv.append_many("alice", [message("Cut", "".join(f"line {i:04d} of the body\r\n" for i in range(300))),
                              message("Whole")])
    stored = retrieved(srv)
    proxy = Proxy(srv)
    proxy.shorten_retr = 10
    with through(proxy, expect_warnings=[r"bytes where it announced"]) as m:
        files = emls(m.path / "mail")
        done = run("cat", files[0], check=False)
        assert done.returncode != 0 and b"Input/output error" in done.stderr
        assert len(done.stdout) < len(stored[0])
        with pytest.raises(OSError) as failed, open(files[0], "rb") as f:
            f.read()
        assert failed.value.errno == errno.EIO
        assert proxy.shortened >= 2
        assert m.log_text().count(" WARNING ") == proxy.shortened  # one per message cut
        proxy.shorten_retr = None
        assert run("cat", files[0]).stdout == stored[0]
        assert run("cat", files[1]).stdout == stored[1]


def test_a_refused_dele_gets_its_errno_from_the_words(srv: Dovecot) -> None:  # noqa: F811
    """``-ERR Permission denied`` carries no code (RFC 2449 codes are optional): ``rm`` fails
    with EACCES, not EIO, and the message stays on the server."""
    srv.deliver("alice", message("Keep me"))
    proxy = Proxy(srv)
    proxy.refuse = {b"DELE": b"-ERR Permission denied"}
    with through(proxy) as m:
        [f] = emls(m.path / "mail")
        with pytest.raises(PermissionError):
            os.unlink(f)
        done = run("rm", f, check=False)
        assert done.returncode != 0 and b"Permission denied" in done.stderr
    assert proxy.refused == 2
    assert len(server_uidls(srv)) == 1


def test_mount_a_url_from_the_command_line(srv: Dovecot) -> None:  # noqa: F811
    """``fsmount pop3s://bob@host DIR``: the maildrop is the mount's top directory."""
    srv.deliver("bob", message("For Bob", "Only bob reads this.\r\n"))
    with mounted(source=f"pop3s://bob@127.0.0.1:{srv.pop3s_port}", options=[f"ca_file={srv.ca}"],
                 env={"FSMOUNT_PASSWORD": "secret2"}) as m:
        [f] = emls(m.path)
        assert "For Bob" in f.name
        assert run("cat", f).stdout.endswith(b"\r\n\r\nOnly bob reads this.\r\n")
        run("rm", f)
        assert emls(m.path) == []
    with direct(srv, "bob") as conn:
        assert conn.stat()[0] == 0
