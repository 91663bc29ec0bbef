"""The POP3 backend against a real Dovecot (tests/servers/dovecot.py), without FUSE.

The module's Dovecot locks the maildrop for a POP3 session (``pop3_lock_session``), as many
servers do, and offers APOP; a session fsmount forgot to end would block the direct client
these tests use to check the server's side. Faults (no UIDL, no STLS, ``[IN-USE]``, a
connection cut in the middle of RETR) come from a small line proxy in front of Dovecot.
"""
from __future__ import annotations

import base64
import errno
import io
import logging
import os
import poplib
import re
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
import trio

from fsmount.backends import pop3
from fsmount.backends.base import Entry
from fsmount.backends.mailnames import header_date, key_of, message_name
from fsmount.config import make_account
from fsmount.credentials import Secret
from fsmount.errors import (
    AuthenticationFailed, NotFound, PermissionDenied, ReadOnly, SizeMismatch, TimedOut, TooLarge,
    Unreachable,
)
from tests.mounting import wait_for
from tests.servers.dovecot import Dovecot, available, dovecot
from tests.backend_support import run
from tests.faultproxy import FaultProxy, Relay, cut, relaying

T = TypeVar("T")

EXTRA_CONFIG = """
protocol pop3 {
  pop3_lock_session = yes
}
auth_mechanisms = plain login apop
"""


@pytest.fixture(scope="module")
def srv() -> Iterator[Dovecot]:
    """One Dovecot for the module, with session locking and APOP switched on."""
    if not available():
        pytest.skip("dovecot is not installed")
    with dovecot() as server:
        with open(server.dir / "dovecot.conf", "a") as f:
            f.write(EXTRA_CONFIG)
        server.restart()
        yield server


@pytest.fixture(autouse=True)
def _empty_maildrop(request: pytest.FixtureRequest) -> None:
    """Each test starts with alice's maildrop empty (and unlocked: this logs in)."""
    if "srv" in request.fixturenames:
        server = request.getfixturevalue("srv")
        with direct(server) as conn:
            for n in range(1, conn.stat()[0] + 1):
                conn.dele(n)


@contextmanager
def direct(server: Dovecot, user: str = "alice", timeout: float = 10) -> Iterator[poplib.POP3]:
    """A plain poplib client over STLS: the view from the server's side. QUITs on exit."""
    conn = poplib.POP3(server.host, server.pop3_port, timeout=timeout)
    try:
        conn.stls(server.ssl_context())
        conn.user(user)
        conn.pass_(server.users[user])
        yield conn
        if conn.sock is not None:  # not ended by the test itself
            conn.quit()
    finally:
        conn.close()


def server_uidls(server: Dovecot) -> list[str]:
    with direct(server) as conn:
        return [line.split()[1].decode() for line in conn.uidl()[1]]


def backend_for(server: Dovecot | None, *, scheme: str = "pop3", port: int | None = None,
                password: str | None = None, user: str = "alice", **options: Any) -> pop3.Pop3Backend:
    if port is None:
        assert server is not None
        port = server.pop3s_port if scheme == "pop3s" else server.pop3_port
    table: dict[str, Any] = {"url": f"{scheme}://{user}@127.0.0.1:{port}", "timeout": 10}
    if server is not None:
        table["ca_file"] = str(server.ca)
    table.update(options)
    account = make_account("mail", table, where="test")
    return pop3.create(account, Secret(password if password is not None else "secret1"), None)


def through(relay: Relay, **options: Any) -> pop3.Pop3Backend:
    """A backend whose commands the relay records: in clear, so that they can be read."""
    return backend_for(None, port=relay.port, tls="off", plaintext_auth=True, **options)


def message(subject: str, body: str = "Hello.\r\n", date: str = "Mon, 01 Jan 2024 10:00:00 +0000",
            extra: str = "") -> bytes:
    return (f"From: Carol <carol@example.org>\r\nTo: alice@example.org\r\nSubject: {subject}\r\n"
            f"Date: {date}\r\nMessage-ID: <{abs(hash((subject, body, time.time())))}@example.org>\r\n"
            f"{extra}\r\n{body}").encode()


def download(b: pop3.Pop3Backend, entry: Entry) -> Awaitable[tuple[Entry, bytes]]:
    async def go() -> tuple[Entry, bytes]:
        fd, path = tempfile.mkstemp(prefix="pop3-dl-")
        os.close(fd)
        try:
            got = await b.download((entry.name,), path)
            with open(path, "rb") as f:
                return got, f.read()
        finally:
            os.unlink(path)
    return go()


def login_count(server: Dovecot) -> int:
    """Dovecot 2.3 logs ``Login: user=<alice>``, 2.4 ``Logged in: user=<alice>``."""
    return len(re.findall(r"(?:Login|Logged in): user=<alice>", server.log()))


# -- pure helpers (no server) ----------------------------------------------------------


def test_uidl_key_is_short_stable_and_safe() -> None:
    key = pop3.uidl_key("000000016b08e210")
    assert key == pop3.uidl_key("000000016b08e210") and len(key) == 12
    assert re.fullmatch(r"[a-z2-7]{12}", key)
    assert pop3.uidl_key("000000026b08e210") != key
    assert key_of(message_name(pop3.uidl_key("x/y:z\\*"), "s", None)) == pop3.uidl_key("x/y:z\\*")


def test_headers_parse_folded_encoded_and_8bit() -> None:
    raw = (b"Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n and more\r\nDate: Tue, 2 Jan 2024 03:04:05"
           b" +0100\r\nX-Latin: caf\xe9\r\n\r\n")
    h = pop3.Headers.parse(raw)
    assert message_name("k", h.subject, h.date) == "2024-01-02 0204 grüße and more [k].eml"
    assert pop3.Headers.parse(b"Subject: caf\xe9\r\n\r\n").subject == "café"
    assert pop3.Headers.parse(b"\r\n").subject is None
    assert h.digest != pop3.Headers.parse(raw.replace(b"more", b"less")).digest


def test_copy_multiline_unstuffs_keeps_long_lines_and_ends_lines_with_crlf(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pop3, "LINE_LIMIT", 16)  # force lines to arrive in pieces
    long = b"y" * 40 + b"." * 3
    wire = (b"Subject: x\r\n\r\n..dot\r\n" + long + b"\r\nbare lf\n" + b"z" * 15 + b"\r\n.\r\n"
            b"+OK next answer\r\n")
    f, out = io.BytesIO(wire), io.BytesIO()
    size = pop3.copy_multiline(f, out)
    assert out.getvalue() == b"Subject: x\r\n\r\n.dot\r\n" + long + b"\r\nbare lf\r\n" + b"z" * 15 + b"\r\n"
    assert size == (len(out.getvalue()), 1)  # one dot unstuffed
    assert f.readline() == b"+OK next answer\r\n"
    with pytest.raises(EOFError):
        pop3.copy_multiline(io.BytesIO(b"body\r\n"), None)


def test_colliding_keys_get_longer_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names must be unique even if two UIDLs' short hashes collide."""
    real = pop3.uidl_key
    monkeypatch.setattr(pop3, "uidl_key", lambda u, length=12: real("x" if length == 12 else u, length))
    b = backend_for(None, port=110)
    h = pop3.Headers.parse(b"Subject: s\r\n\r\n")
    b._apply(pop3.Scan({1: "u1", 2: "u2"}, {1: 10, 2: 20}, {1: h, 2: h}))
    names = [e.name for e in b._entries or []]
    assert len(set(names)) == 2 and all(len(key_of(n) or "") == 26 for n in names)


def test_classify() -> None:
    assert isinstance(pop3.classify(poplib.error_proto("-ERR EOF")), pop3.Transient)
    assert isinstance(pop3.classify(poplib.error_proto(b"-ERR [IN-USE] locked")), pop3.MaildropLocked)
    assert isinstance(pop3.classify(poplib.error_proto(b"-ERR [AUTH] no")), AuthenticationFailed)
    assert isinstance(pop3.classify(ConnectionRefusedError()), Unreachable)
    assert isinstance(pop3.classify(socket.timeout()), TimedOut)
    assert not isinstance(pop3.classify(poplib.error_proto(b"-ERR no such message")), pop3.Transient)
    login_error = pop3.Pop3Backend._login_error
    assert isinstance(login_error("-ERR unable to lock maildrop"), pop3.MaildropLocked)
    assert isinstance(login_error("-ERR [AUTH] Authentication failed."), AuthenticationFailed)
    assert isinstance(login_error("-ERR invalid password"), AuthenticationFailed)
    assert isinstance(login_error("-ERR [SYS/TEMP] try later"), pop3.Transient)


# -- listing and reading ---------------------------------------------------------------


def test_listing_names_sizes_and_identity(srv: Dovecot) -> None:
    srv.deliver("alice", message("Lunch on Friday", date="Fri, 03 May 2024 12:30:00 +0200"))
    srv.deliver("alice", message("=?utf-8?q?Gr=C3=BC=C3=9Fe?= / aus: =?utf-8?q?K=C3=B6ln?="))
    srv.deliver("alice", message("Lunch on Friday"))  # same subject: the key tells them apart
    with direct(srv) as conn:
        uidls = [line.split()[1].decode() for line in conn.uidl()[1]]
        sizes = [int(line.split()[1]) for line in conn.list()[1]]
    entries = run(backend_for(srv), lambda b: b.list(()))
    assert [e.name for e in entries] == [
        f"2024-05-03 1030 Lunch on Friday [{pop3.uidl_key(uidls[0])}].eml",
        f"2024-01-01 1000 Grüße aus Köln [{pop3.uidl_key(uidls[1])}].eml",
        f"2024-01-01 1000 Lunch on Friday [{pop3.uidl_key(uidls[2])}].eml",
    ]
    assert [e.identity for e in entries] == [(u,) for u in uidls]
    assert [e.size for e in entries] == sizes and not any(e.size_exact for e in entries)
    assert entries[0].mtime == header_date("Fri, 03 May 2024 12:30:00 +0200").timestamp()  # type: ignore[union-attr]
    # a second mount sees the same names
    assert [e.name for e in run(backend_for(srv, scheme="pop3s"), lambda b: b.list(()))] == \
        [e.name for e in entries]


def test_stat_root_logs_in_and_files_resolve_by_name(srv: Dovecot) -> None:
    srv.deliver("alice", message("One"))

    async def scenario(b: pop3.Pop3Backend) -> None:
        assert (await b.stat(())).is_dir
        entries = await b.list(())
        assert await b.stat((entries[0].name,)) == entries[0]
        with pytest.raises(NotFound):
            await b.stat(("nothing [zzzzzzzzzzzz].eml",))
        with pytest.raises(NotFound):
            await b.list(("folder",))

    run(backend_for(srv), scenario)


def test_content_is_byte_for_byte_what_was_delivered(srv: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poplib, "_MAXLINE", 1 << 16)  # the direct client's limit is 2 KiB
    body = ("First line\r\n.starts with a dot\r\n..two dots\r\n.\r\n\r\nÜmlauts: grüße\r\n"
            + "x" * 5000 + "\r\n" + "last line\r\n")
    raw = message("Dots and long lines", body, extra="Content-Type: text/plain; charset=utf-8\r\n")
    srv.deliver("alice", raw)
    srv.deliver("alice", message("Empty body", ""))

    async def scenario(b: pop3.Pop3Backend) -> None:
        entries = await b.list(())
        got, data = await download(b, entries[0])
        assert data == raw
        assert got.size == len(raw) and got.size_exact and got.identity == entries[0].identity
        assert got.name == entries[0].name
        with direct(srv) as conn:
            assert data == b"\r\n".join(conn.retr(1)[1]) + b"\r\n"
        got, data = await download(b, entries[1])
        assert data.endswith(b"\r\n\r\n") and got.size == len(data)

    run(backend_for(srv), scenario)


def test_download_many_pipelines_one_session_and_reports_each_item(
        srv: Dovecot) -> None:
    """A scan's batch: one UIDL, the RETRs in one write, exact bytes; a message deleted
    elsewhere is NotFound on its own; one too big to hold is TooLarge, and the rest still
    arrive in order (the pipelined answers stay in step)."""
    raws = [message(f"Batch {i}", f"..dotted {i}\r\n" + ("y" * 98 + "\r\n") * (30 if i == 2 else 1)) for i in range(5)]
    srv.append_many("alice", raws)

    async def scenario(b: pop3.Pop3Backend) -> None:
        entries = await b.list(())
        by_subject = {key_of(e.name): e for e in entries}
        assert len(by_subject) == 5
        paths = [(e.name,) for e in entries]
        with direct(srv) as conn:
            stored = {conn.uidl(n).split()[2].decode(): b"\r\n".join(conn.retr(n)[1]) + b"\r\n"
                      for n in range(1, 6)}
            conn.dele(4)
        mark = relay.mark()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(pop3, "BATCH_ITEM_LIMIT", 2000)
            got = await b.download_many([*paths, ("no such.eml",)])
        assert isinstance(got[-1], NotFound)
        for entry, result in zip(entries, got):
            raw = stored[entry.identity[0]]
            if isinstance(result, bytes):
                assert result == raw
            elif len(raw) > 2000:
                assert isinstance(result, TooLarge)
            else:
                assert isinstance(result, NotFound)  # the one deleted elsewhere
        assert sum(isinstance(r, bytes) for r in got) == 3
        assert relay.commands("UIDL", mark) == ["UIDL"]
        assert len(relay.commands("RETR", mark)) == 4
        assert relay.batches("RETR", mark) == [4]  # all four before the first answer

    with relaying(srv.host, srv.pop3_port) as relay:
        run(through(relay), scenario)


def test_relisting_asks_top_only_for_new_mail(srv: Dovecot) -> None:
    srv.append_many("alice", [message(f"Old {i}") for i in range(5)])
    seen = 0

    def tops() -> tuple[list[str], list[int]]:
        """The TOP commands the server got since the last call, and how they were pipelined."""
        nonlocal seen
        found = relay.commands("TOP", seen), relay.batches("TOP", seen)
        seen = relay.mark()
        return found

    async def scenario(b: pop3.Pop3Backend) -> None:
        await b.list(())
        assert tops() == ([f"TOP {n} 0" for n in range(1, 6)], [5])
        await b.list(())
        assert tops() == ([], [])
        srv.deliver("alice", message("New"))
        assert any("New" in e.name for e in await b.list(()))
        assert tops() == (["TOP 6 0"], [1])

    with relaying(srv.host, srv.pop3_port) as relay:
        run(through(relay), scenario)


def test_many_messages_list_and_read(srv: Dovecot) -> None:
    """500 messages: one pipelined listing; each read maps its UIDL in its own session."""
    srv.write_maildir("alice", "INBOX", [message(f"Bulk {i}", f"body {i}\r\n") for i in range(500)])

    async def scenario(b: pop3.Pop3Backend) -> None:
        start = time.monotonic()
        entries = await b.list(())
        assert len(entries) == 500 and len({e.name for e in entries}) == 500
        assert time.monotonic() - start < 10
        _, data = await download(b, entries[321])
        assert b"body 321\r\n" in data

    run(backend_for(srv), scenario)


# -- sessions and locking --------------------------------------------------------------


def test_no_session_is_left_open_between_operations(srv: Dovecot) -> None:
    """With session locking on, a direct login would wait if fsmount still held the maildrop."""
    srv.deliver("alice", message("Probe"))

    async def scenario(b: pop3.Pop3Backend) -> None:
        entries = await b.list(())
        with direct(srv, timeout=3):
            pass
        await download(b, entries[0])
        with direct(srv, timeout=3):
            pass
        assert not await b.changed(())
        with direct(srv, timeout=3):
            pass

    run(backend_for(srv), scenario)


def test_concurrent_reads_share_one_session(srv: Dovecot) -> None:
    srv.append_many("alice", [message(f"Parallel {i}", f"text {i}\r\n") for i in range(8)])

    async def scenario(b: pop3.Pop3Backend) -> None:
        entries = await b.list(())
        before = relay.connections
        results: dict[str, bytes] = {}

        async def one(e: Entry) -> None:
            results[e.name] = (await download(b, e))[1]

        async with trio.open_nursery() as nursery:
            for e in entries:
                nursery.start_soon(one, e)
        assert all(f"text {i}\r\n".encode() in results[entries[i].name] for i in range(8))
        assert relay.connections - before == 1  # queued reads reuse the open session
        with direct(srv, timeout=3):  # and it ended with the last of them
            pass

    with relaying(srv.host, srv.pop3_port) as relay:
        run(through(relay), scenario)


def test_a_long_scan_ends_its_session_now_and_then(srv: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pop3, "MAX_SESSION", 0.0)
    srv.append_many("alice", [message(f"Scan {i}") for i in range(4)])

    async def scenario(b: pop3.Pop3Backend) -> None:
        entries = await b.list(())
        before = relay.connections
        async with trio.open_nursery() as nursery:
            for e in entries:
                nursery.start_soon(download, b, e)
        assert relay.connections - before == 4  # one session per read

    with relaying(srv.host, srv.pop3_port) as relay:
        run(through(relay), scenario)


def test_locked_maildrop_waits_then_works(srv: Dovecot) -> None:
    srv.deliver("alice", message("Locked"))

    async def scenario(b: pop3.Pop3Backend) -> None:
        with direct(srv) as holder:
            holder.stat()
            before = login_count(srv)
            result: list[list[Entry]] = []

            async def listing() -> None:
                result.append(await b.list(()))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(listing)
                # fsmount's login reached the server and waits for the lock ...
                await trio.to_thread.run_sync(
                    lambda: wait_for(lambda: login_count(srv) > before, 10, "fsmount's login"))
                assert not result
                holder.quit()  # ... until the other client ends its session
        assert [("Locked" in e.name) for e in result[0]] == [True]

    run(backend_for(srv), scenario)


def test_locked_maildrop_fails_cleanly_after_the_timeout(srv: Dovecot) -> None:
    srv.deliver("alice", message("Still locked"))
    with direct(srv) as holder:
        holder.stat()
        start = time.monotonic()
        with pytest.raises(TimedOut, match="locked by another POP3 client"):
            run(backend_for(srv, timeout=1.5), lambda b: b.list(()))
        assert time.monotonic() - start < 10
    assert len(run(backend_for(srv), lambda b: b.list(()))) == 1


# -- deleting and polling --------------------------------------------------------------


def test_remove_deletes_on_the_server_at_once(srv: Dovecot) -> None:
    srv.append_many("alice", [message("Keep"), message("Delete me"), message("Keep too")])
    uidls = server_uidls(srv)

    async def scenario(b: pop3.Pop3Backend) -> None:
        entries = await b.list(())
        victim = next(e for e in entries if "Delete me" in e.name)
        await b.remove((victim.name,))
        assert server_uidls(srv) == [uidls[0], uidls[2]]  # committed: the backend QUIT
        assert not await b.changed(())
        assert [e.name for e in await b.list(())] == [e.name for e in entries if e != victim]
        with pytest.raises(NotFound):
            await b.remove((victim.name,))

    run(backend_for(srv), scenario)


def test_new_mail_and_deletions_elsewhere_show(srv: Dovecot) -> None:
    srv.append_many("alice", [message("First"), message("Second")])

    async def scenario(b: pop3.Pop3Backend) -> None:
        assert b.capabilities.metadata_ttl == 5.0  # the poll interval is the listing TTL
        entries = await b.list(())
        assert not await b.changed(())
        srv.deliver("alice", message("Third"))
        assert await b.changed(())
        names = [e.name for e in await b.list(())]
        assert len(names) == 3 and "Third" in names[2]
        with direct(srv) as conn:
            conn.dele(1)
        assert await b.changed(())
        assert [e.name for e in await b.list(())] == names[1:]
        with pytest.raises(NotFound):
            await download(b, entries[0])

    run(backend_for(srv, poll_interval=5), scenario)


def test_message_deleted_elsewhere_after_listing(srv: Dovecot) -> None:
    srv.append_many("alice", [message("Going"), message("Staying")])

    async def scenario(b: pop3.Pop3Backend) -> None:
        entries = await b.list(())
        with direct(srv) as conn:
            conn.dele(1)
        with pytest.raises(NotFound):
            await download(b, entries[0])
        _, data = await download(b, entries[1])  # its number moved from 2 to 1
        assert b"Subject: Staying" in data
        with pytest.raises(NotFound):
            await b.remove((entries[0].name,))
        assert len(server_uidls(srv)) == 1

    run(backend_for(srv), scenario)


# -- login and TLS ---------------------------------------------------------------------


def test_stls_and_pop3s_with_verification(srv: Dovecot) -> None:
    """STLS as the wire shows it: the last command in clear on every connection, then only
    TLS; no login command and no form of the password in clear. Dovecot logs alice's
    logins as made inside TLS."""
    srv.deliver("alice", message("Secure"))
    tls_logins = re.compile(  # Dovecot 2.3 says "Login:", 2.4 "Logged in:"
        r"pop3-login: Info: (?:Login|Logged in): user=<alice>, method=PLAIN, .*, TLS, ")
    before = len(tls_logins.findall(srv.log()))
    with relaying(srv.host, srv.pop3_port) as relay:
        b = backend_for(srv, port=relay.port, tls="require")
        assert len(run(b, lambda b: b.list(()))) == 1
    connections = list(range(1, relay.connections + 1))
    assert connections and sorted(relay.encrypted) == connections  # each one went on in TLS
    for c in connections:
        clear = [line.word for line in relay.sent if line.connection == c]
        assert clear[-1:] == ["STLS"] and not {"USER", "PASS", "AUTH", "APOP"} & set(clear), clear
    password, plain = b"secret1", b"\0alice\0secret1"
    for form in (password, base64.b64encode(password), base64.b64encode(plain)):
        assert form not in relay.from_client, form
    wait_for(lambda: len(tls_logins.findall(srv.log())) >= before + len(connections), 5,
             "Dovecot's log of the logins inside TLS")
    assert len(tls_logins.findall(srv.log())) == before + len(connections)
    assert len(run(backend_for(srv, scheme="pop3s"), lambda b: b.list(()))) == 1
    for scheme in ("pop3", "pop3s"):  # the system CAs do not know the test CA
        b = backend_for(None, scheme=scheme, port=srv.pop3s_port if scheme == "pop3s" else srv.pop3_port)
        with pytest.raises(PermissionDenied, match="not trusted"):
            run(b, lambda b: b.list(()))
    b = backend_for(None, scheme="pop3s", port=srv.pop3s_port, tls_verify=False)
    assert len(run(b, lambda b: b.list(()))) == 1


def test_no_password_without_encryption(srv: Dovecot, proxy: Proxy) -> None:
    with pytest.raises(PermissionDenied, match="unencrypted"):
        run(backend_for(None, port=proxy.port, tls="off"), lambda b: b.stat(()))
    assert not {"USER", "PASS", "AUTH", "APOP"} & set(proxy.commands)
    assert len(run(via(proxy), lambda b: b.list(()))) == 0  # plaintext_auth = true allows it


def test_apop_without_tls(srv: Dovecot) -> None:
    srv.deliver("alice", message("Digest"))
    assert len(run(backend_for(srv, tls="off", apop=True), lambda b: b.list(()))) == 1
    assert "method=APOP" in srv.log()


def test_wrong_password_is_final(srv: Dovecot) -> None:
    before = srv.log().count("auth failed")
    start = time.monotonic()
    with pytest.raises(AuthenticationFailed, match="Authentication failed"):
        run(backend_for(srv, password="wrong"), lambda b: b.stat(()))
    assert time.monotonic() - start < 5
    wait_for(lambda: srv.log().count("auth failed") > before, 5, "the failed login in the log")
    assert srv.log().count("auth failed") == before + 1  # never retried


# -- faults from a proxy ---------------------------------------------------------------


class Proxy(FaultProxy):
    """A line proxy to Dovecot's plain POP3 port that can misbehave on purpose.

    ``hide`` drops those CAPA lines; ``refuse`` answers those commands itself with ``-ERR``
    (``refuse_times`` times, -1 for always); ``cut_retr`` closes the connection after that
    many bytes of the next RETR answer; ``lose_quit`` loses the next QUIT (``"request"``: never
    forwarded; ``"reply"``: forwarded, its answer not relayed) and cuts the connection;
    ``list_delta`` is added to every size LIST reports; ``shorten_retr`` keeps only that many
    lines of every RETR answer (Dovecot's ``+OK n octets``) and ends it with a proper ``.``
    line, as a server cutting messages short would (``shortened`` counts the answers cut).
    ``commands`` records every command's first word.
    """

    def __init__(self, server: Dovecot) -> None:
        self.server = server
        self.hide: set[bytes] = set()
        self.refuse: dict[bytes, bytes] = {}
        self.refuse_times = -1
        self.refused = 0
        self.cut_retr: int | None = None
        self.cuts = 0
        self.list_delta = 0
        self.shorten_retr: int | None = None
        self.shortened = 0
        self.lose_quit: str | None = None
        self.commands: list[str] = []
        super().__init__(server.host, server.pop3_port)

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        lock = threading.Lock()
        state = {"retr": False, "list": False, "swallow": False}
        threading.Thread(target=self._up, args=(client, upstream, lock, state), daemon=True).start()
        threading.Thread(target=self._down, args=(client, upstream, lock, state), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, lock: threading.Lock,
            state: dict) -> None:
        f = client.makefile("rb")
        try:
            for line in f:
                word = line.split(b" ", 1)[0].strip().upper()
                self.commands.append(word.decode(errors="replace"))
                if word in self.refuse and self.refuse_times != 0:
                    self.refuse_times -= 1
                    self.refused += 1
                    with lock:
                        client.sendall(self.refuse[word] + b"\r\n")
                    continue
                if word == b"QUIT" and self.lose_quit is not None:
                    how, self.lose_quit = self.lose_quit, None
                    if how == "request":
                        cut(client, upstream)
                        return
                    state["swallow"] = True
                if word == b"RETR":
                    state["retr"] = True
                state["list"] = word == b"LIST"
                upstream.sendall(line)
        except OSError:
            pass

    def _down(self, client: socket.socket, upstream: socket.socket, lock: threading.Lock,
              state: dict) -> None:
        f = upstream.makefile("rb")
        sent = 0
        kept: int | None = None  # lines of the RETR answer being shortened, relayed so far
        dropped = False
        try:
            for line in f:
                if line.rstrip(b"\r\n").split(b" ")[0] in self.hide:
                    continue
                if kept is not None:
                    if line == b".\r\n":
                        kept = None
                        self.shortened += dropped
                    elif kept >= (self.shorten_retr or 0):
                        dropped = True
                        continue
                    else:
                        kept += 1
                elif self.shorten_retr is not None and re.fullmatch(rb"\+OK \d+ octets\r\n", line):
                    kept, dropped = 0, False
                if state["swallow"]:  # the server answered QUIT (and committed): lose it
                    cut(client, upstream)
                    return
                if state["list"] and self.list_delta and re.fullmatch(rb"\d+ \d+\r\n", line):
                    number, size = line.split()
                    line = b"%s %d\r\n" % (number, int(size) + self.list_delta)
                if state["retr"] and self.cut_retr is not None:
                    if sent + len(line) > self.cut_retr:
                        with lock:
                            client.sendall(line[: self.cut_retr - sent])
                        self.cut_retr = None
                        self.cuts += 1
                        cut(client, upstream)
                        return
                    sent += len(line)
                with lock:
                    client.sendall(line)
        except OSError:
            pass


@pytest.fixture
def proxy(srv: Dovecot) -> Iterator[Proxy]:
    p = Proxy(srv)
    yield p
    p.close()


def via(proxy: Proxy, **options: Any) -> pop3.Pop3Backend:
    return backend_for(None, port=proxy.port, tls="off", plaintext_auth=True, **options)


def test_connection_cut_mid_retr_is_retried(srv: Dovecot, proxy: Proxy) -> None:
    raw = message("Big", "".join(f"line {i:05d} of a long message\r\n" for i in range(3000)))
    srv.deliver("alice", raw)

    async def scenario(b: pop3.Pop3Backend) -> None:
        entry = (await b.list(()))[0]
        proxy.cut_retr = 20000
        got, data = await download(b, entry)
        assert proxy.cuts == 1 and proxy.commands.count("RETR") == 2
        assert data == raw and got.size == len(raw)

    run(via(proxy), scenario)


def test_connection_cut_mid_batch_retries_the_batch(srv: Dovecot, proxy: Proxy) -> None:
    """A scan's pipelined batch cut in its third answer: the whole batch is asked again on a
    new session, and every message arrives whole (none half, none shifted by one)."""
    raws = [message(f"Batch {i}", "".join(f"line {j:04d} of message {i}\r\n" for j in range(100)))
            for i in range(5)]
    srv.append_many("alice", raws)

    async def scenario(b: pop3.Pop3Backend) -> None:
        entries = await b.list(())
        with direct(srv) as conn:
            stored = {conn.uidl(n).split()[2].decode(): b"\r\n".join(conn.retr(n)[1]) + b"\r\n"
                      for n in range(1, 6)}
        proxy.cut_retr = 2 * len(raws[0]) + 1000
        got = await b.download_many([(e.name,) for e in entries])
        assert proxy.cuts == 1 and proxy.commands.count("RETR") == 10
        assert got == [stored[e.identity[0]] for e in entries]

    run(via(proxy), scenario)


def test_in_use_reply_is_retried_then_fails_cleanly(srv: Dovecot, proxy: Proxy) -> None:
    srv.deliver("alice", message("Busy"))
    proxy.refuse = {b"AUTH": b"-ERR [IN-USE] Mailbox is locked by another POP3 session"}
    proxy.refuse_times = 2
    assert len(run(via(proxy), lambda b: b.list(()))) == 1
    assert proxy.refused == 2
    proxy.refuse_times = -1
    with pytest.raises(pop3.MaildropLocked, match="in use by another POP3 session"):
        run(via(proxy, timeout=1), lambda b: b.list(()))


def test_user_pass_without_sasl_and_stls_required_but_missing(srv: Dovecot, proxy: Proxy) -> None:
    proxy.hide = {b"SASL", b"STLS"}
    run(via(proxy), lambda b: b.stat(()))
    assert "USER" in proxy.commands and "PASS" in proxy.commands and "AUTH" not in proxy.commands
    proxy.commands.clear()
    with pytest.raises(PermissionDenied, match="does not offer STLS"):
        run(backend_for(None, port=proxy.port, tls="require"), lambda b: b.stat(()))
    assert "USER" not in proxy.commands and "AUTH" not in proxy.commands


def test_server_without_uidl_mounts_read_only(srv: Dovecot, proxy: Proxy,
                                              caplog: pytest.LogCaptureFixture) -> None:
    proxy.hide = {b"UIDL"}
    proxy.refuse = {b"UIDL": b"-ERR Unknown command: UIDL"}
    srv.append_many("alice", [message("No uidl one", "1\r\n"), message("No uidl two", "2\r\n")])

    async def scenario(b: pop3.Pop3Backend) -> None:
        entries = await b.list(())
        assert [key_of(e.name).split("-")[0] for e in entries] == ["1", "2"]  # type: ignore[union-attr]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "not stable" in warnings[0].getMessage()
        _, data = await download(b, entries[1])
        assert data.endswith(b"\r\n2\r\n")
        with pytest.raises(ReadOnly, match="UIDL"):
            await b.remove((entries[0].name,))
        assert not await b.changed(())
        srv.deliver("alice", message("No uidl three"))
        assert await b.changed(())
        assert len(await b.list(())) == 3
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        with direct(srv) as conn:
            conn.dele(1)
        with pytest.raises(NotFound):  # number 2 now holds another message
            await download(b, entries[1])

    run(via(proxy), scenario)
    assert len(server_uidls(srv)) == 2


def test_a_message_longer_than_list_said_is_read_whole(srv: Dovecot, proxy: Proxy) -> None:
    """LIST counting fewer bytes (a server counting LF line ends) cuts nothing: the message is
    read whole and its size corrected."""
    raw = message("Sized", "Some text.\r\n" * 20)
    srv.deliver("alice", raw)
    proxy.list_delta = -25

    async def scenario(b: pop3.Pop3Backend) -> None:
        [entry] = await b.list(())
        assert entry.size == len(raw) - 25 and not entry.size_exact
        got, data = await download(b, entry)
        assert data == raw and got.size == len(raw) and got.size_exact

    run(via(proxy), scenario)


def test_list_sizes_match_retr_on_dovecot_also_with_dots_and_without_a_final_line_end(
        srv: Dovecot) -> None:
    """What the size check relies on: Dovecot's LIST is the RETR bytes unstuffed with CRLF
    ends; a message without a final line end gets one in RETR (2 bytes more than LIST)."""
    dotted = message("Dots", ".dot line\r\n..two dots\r\n.\r\nend\r\n")
    unended = message("Unended", "no line end at the end")
    srv.append_many("alice", [dotted, unended])

    async def scenario(b: pop3.Pop3Backend) -> None:
        entries = await b.list(())
        for entry, raw, extra in zip(entries, [dotted, unended], [0, 2]):
            got, data = await download(b, entry)
            assert data == raw + b"\r\n" * (extra // 2)
            assert got.size == entry.size + extra

    run(backend_for(srv), scenario)


@pytest.mark.parametrize("how", ["RETR cut short", "LIST says more"])
def test_a_message_shorter_than_list_said_is_an_error(srv: Dovecot, proxy: Proxy,
                                                      how: str) -> None:
    """A RETR answer that ends in good form but short of LIST's size is SizeMismatch (EIO),
    never a short message; it is not retried, and a batch reports it for that item only."""
    raws = [message("Cut", "".join(f"line {i:04d} of the body\r\n" for i in range(200))),
            message("Whole")]
    srv.append_many("alice", raws)

    async def scenario(b: pop3.Pop3Backend) -> None:
        entries = await b.list(())
        if how == "RETR cut short":
            proxy.shorten_retr = 10
        else:
            proxy.list_delta = 50
            entries = await b.list(())
        with pytest.raises(SizeMismatch) as failed:
            await download(b, entries[0])
        assert failed.value.errno == errno.EIO
        assert proxy.commands.count("RETR") == 1
        if how == "RETR cut short":
            assert proxy.shortened == 1
            got = await b.download_many([(e.name,) for e in entries])
            assert isinstance(got[0], SizeMismatch) and got[1] == raws[1]  # short: not cut
            proxy.shorten_retr = None
            assert await b.download_many([(e.name,) for e in entries]) == raws
        else:
            got = await b.download_many([(e.name,) for e in entries])
            assert isinstance(got[0], SizeMismatch) and isinstance(got[1], SizeMismatch)

    run(via(proxy), scenario)
    assert len(server_uidls(srv)) == 2


@pytest.mark.parametrize("lost", ["request", "reply"])
def test_remove_survives_a_lost_quit(srv: Dovecot, proxy: Proxy, lost: str) -> None:
    """QUIT lost before the server saw it (nothing committed: DELE again) or its answer lost
    (committed: the retry finds the message gone): either way one message is deleted."""
    srv.append_many("alice", [message("Stays"), message("Goes")])
    uidls = server_uidls(srv)

    async def scenario(b: pop3.Pop3Backend) -> None:
        entries = await b.list(())
        proxy.lose_quit = lost
        await b.remove((entries[1].name,))
        assert proxy.lose_quit is None  # the fault happened
        assert proxy.commands.count("DELE") == (2 if lost == "request" else 1)

    run(via(proxy), scenario)
    assert server_uidls(srv) == [uidls[0]]
