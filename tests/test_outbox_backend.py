"""The outbox backend against a real aiosmtpd server: envelopes, refusals, retries, crashes."""
from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from fsmount.backends import Environment
from fsmount.backends.base import Content, KeepsSentMail
from fsmount.cache.links import Links
from fsmount.backends.outbox import OutboxBackend, create
from fsmount.backends.outbox.queue import OutQueue
from fsmount.config import make_account
from fsmount.credentials import Secret
from fsmount.errors import InvalidArgument, NotFound, NotPermitted
from tests.backend_support import remove_spools, spool  # noqa: F401  (autouse fixture)
from tests.servers.smtp import SmtpServer, smtp_server  # noqa: F401 - the fixture

MSG = (
    "From: Alice <alice@example.org>\n"
    "To: Bob <bob@example.org>, carol@example.org\n"
    "Cc: dave@example.org\n"
    "Bcc: hidden@example.org\n"
    "Subject: Lunch\n"
    "\n"
    "Friday at noon?\n"
)


@pytest.fixture
def state() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="outbox-state-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def account(server: SmtpServer, scheme: str = "smtp", **options: Any):
    port = server.tls_port if scheme == "smtps" else server.port
    table = {"url": f"{scheme}://alice@127.0.0.1:{port}", "ca_file": server.ca, "timeout": 20,
             "retry_first": 0.05, "retry_max": 0.2, "send_delay": 0, **options}
    if scheme == "smtp":
        table.setdefault("tls", "require")
    return make_account("out", table, where="test")


def run(state: Path, acc: Any, body: Callable[[OutboxBackend], Awaitable[None]], *,
        sender: bool = True, peers: dict | None = None, password: str = "secret1",
        deadline: float = 30) -> None:
    """Run ``body`` with a backend (and its sender task) inside ``trio.run``."""

    async def main() -> None:
        env = Environment(state, Links(peers or {}))
        backend = create(acc, Secret(password), env)
        try:
            async with trio.open_nursery() as nursery:
                if sender:
                    await nursery.start(backend.run)
                with trio.fail_after(deadline):
                    await body(backend)
                nursery.cancel_scope.cancel()
        finally:
            await backend.aclose()

    trio.run(main)


async def put(backend: OutboxBackend, name: str, data: str | bytes) -> Any:
    return await backend.commit((name,), spool(data.encode() if isinstance(data, str) else data), None)


async def names(backend: OutboxBackend, path: tuple = ()) -> set[str]:
    return {e.name for e in await backend.list(path)}


async def text(backend: OutboxBackend, path: tuple) -> str:
    return (await backend.read(path, 0, 1 << 20)).decode()


def test_send_with_starttls_strips_bcc_and_files_a_copy(smtp_server: SmtpServer, state: Path) -> None:
    async def body(b: OutboxBackend) -> None:
        entry = await put(b, "lunch.eml", MSG)
        assert entry.name == "lunch.eml"
        await b.flush_queue()
        assert await names(b) == {"sent"}
        sent = await names(b, ("sent",))
        assert len(sent) == 1 and "Lunch" in next(iter(sent))
        copy = await text(b, ("sent", next(iter(sent))))
        assert "Bcc: hidden@example.org" in copy  # the sender's copy keeps it

    run(state, account(smtp_server), body)
    [d] = smtp_server.deliveries
    assert d.mail_from == "alice@example.org"
    assert set(d.rcpt_tos) == {"bob@example.org", "carol@example.org", "dave@example.org",
                               "hidden@example.org"}
    assert d.user == "alice" and d.encrypted
    head = d.content.split(b"\r\n\r\n")[0]
    assert b"Bcc" not in head and b"hidden" not in d.content
    assert b"\r\nDate: " in b"\r\n" + head and b"\r\nMessage-ID: <" in b"\r\n" + head
    assert d.content.endswith(b"Friday at noon?\r\n")
    assert b"\n" not in d.content.replace(b"\r\n", b"")  # CRLF only on the wire


def test_implicit_tls_and_auth_login(smtp_server: SmtpServer, state: Path) -> None:
    run(state, account(smtp_server, "smtps"), lambda b: _put_and_flush(b, "a.eml", MSG))
    [d] = smtp_server.deliveries
    assert d.encrypted and d.user == "alice"


async def _put_and_flush(b: OutboxBackend, name: str, data: str | bytes) -> None:
    await put(b, name, data)
    await b.flush_queue()


def test_utf8_addresses_and_8bit_body(smtp_server: SmtpServer, state: Path) -> None:
    msg = ("From: Jörg <jörg@exämple.de>\nTo: Zoë <zoë@example.org>\nSubject: Grüße\n\n"
           "Schöne Grüße aus Köln\n")
    run(state, account(smtp_server), lambda b: _put_and_flush(b, "umlaut.eml", msg))
    [d] = smtp_server.deliveries
    assert d.mail_from == "jörg@exämple.de" and d.rcpt_tos == ("zoë@example.org",)
    assert "SMTPUTF8" in d.mail_options and "BODY=8BITMIME" in d.mail_options
    assert "Schöne Grüße".encode() in d.content


def test_8bit_body_without_utf8_addresses(smtp_server: SmtpServer, state: Path) -> None:
    msg = b"From: a@example.org\nTo: b@example.org\nSubject: x\n\n\xe4\xf6\xfc latin-1 body\n"
    run(state, account(smtp_server), lambda b: _put_and_flush(b, "8bit.eml", msg))
    [d] = smtp_server.deliveries
    assert "BODY=8BITMIME" in d.mail_options and "SMTPUTF8" not in d.mail_options
    assert b"\xe4\xf6\xfc latin-1" in d.content


@pytest.mark.parametrize("data, reason", [
    ("From: a@example.org\nSubject: no one\n\nhi\n", "no recipient"),
    ("To: b@example.org\nSubject: anonymous\n\nhi\n", "no sender"),
    ("From: a@example.org\nTo: bob@, not an address\n\nhi\n", "cannot read the address"),
    ("Just some notes I typed\nwithout any header.\n", "not a mail message"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00binary", "not a mail message"),
    ("", "empty"),
])
def test_bad_messages_are_refused_and_explained(smtp_server: SmtpServer, state: Path,
                                                data: str | bytes, reason: str) -> None:
    async def body(b: OutboxBackend) -> None:
        with pytest.raises(InvalidArgument, match=reason):
            await put(b, "bad.eml", data)
        await b.flush_queue()
        assert {"bad.eml", "bad.eml.status"} <= await names(b)
        status = await text(b, ("bad.eml.status",))
        assert "status: refused" in status and reason in status
        xattrs = await b.get_xattrs(("bad.eml",))
        assert xattrs["outbox.status"] == b"refused"
        # fixing the file and saving it again sends it
        await put(b, "bad.eml", MSG)
        await b.flush_queue()
        assert "bad.eml" not in await names(b)

    run(state, account(smtp_server), body)
    [d] = smtp_server.deliveries  # only the fixed version
    assert b"Friday at noon" in d.content


def test_temporary_failure_is_retried_until_accepted(smtp_server: SmtpServer, state: Path) -> None:
    smtp_server.fail_data(2, "451 4.3.0 try again later")
    seen: list[str] = []

    async def body(b: OutboxBackend) -> None:
        await put(b, "retry.eml", MSG)
        while not smtp_server.deliveries:
            xattrs = await b.get_xattrs(("retry.eml",))
            if xattrs:
                seen.append(xattrs["outbox.status"].decode())
                if xattrs["outbox.status"] == b"retrying":
                    assert b"451" in xattrs["outbox.last_reply"]
                    assert xattrs["outbox.next_retry"]
            await trio.sleep(0.01)
        await b.flush_queue()
        assert "retry.eml" not in await names(b)

    run(state, account(smtp_server), body)
    assert len(smtp_server.deliveries) == 1
    assert "retrying" in seen


def test_permanent_failure_stops(smtp_server: SmtpServer, state: Path) -> None:
    smtp_server.refuse("nobody@", "550 5.1.1 <nobody@example.org>: Recipient address rejected")
    msg = "From: a@example.org\nTo: nobody@example.org\nSubject: x\n\nhi\n"

    async def body(b: OutboxBackend) -> None:
        await put(b, "dead.eml", msg)
        await b.flush_queue()
        assert "dead.eml" in await names(b)
        status = await text(b, ("dead.eml.status",))
        assert "status: failed" in status and "nobody@example.org: failed (550 5.1.1" in status
        assert await names(b, ("sent",)) == set()
        await b.remove(("dead.eml",))
        assert await names(b) == {"sent"}

    run(state, account(smtp_server), body)
    assert smtp_server.deliveries == []
    assert smtp_server.handler.rcpt_attempts == ["nobody@example.org"]


def test_data_5xx_fails_the_whole_message(smtp_server: SmtpServer, state: Path) -> None:
    smtp_server.fail_data(5, "554 5.6.0 message content rejected")

    async def body(b: OutboxBackend) -> None:
        await _put_and_flush(b, "spam.eml", MSG)
        attrs = await b.get_xattrs(("spam.eml",))
        assert attrs["outbox.status"] == b"failed" and attrs["outbox.last_reply"].startswith(b"554")

    run(state, account(smtp_server), body)
    assert smtp_server.handler.data_failures == 4  # tried once, never again


def test_partial_recipient_failure(smtp_server: SmtpServer, state: Path) -> None:
    smtp_server.refuse("later@", "450 4.2.0 mailbox busy", times=1)
    smtp_server.refuse("nobody@", "550 5.1.1 no such user")
    msg = ("From: a@example.org\nTo: ok@example.org, later@example.org\n"
           "Cc: nobody@example.org\nSubject: x\n\nhi\n")

    async def body(b: OutboxBackend) -> None:
        await _put_and_flush(b, "part.eml", msg)
        status = await text(b, ("part.eml.status",))
        assert "status: failed" in status
        assert "ok@example.org: sent" in status and "later@example.org: sent" in status
        assert "nobody@example.org: failed (550 5.1.1 no such user)" in status
        assert "copy filed in: sent/" in status
        assert len(await names(b, ("sent",))) == 1  # delivered to some: filed once

    run(state, account(smtp_server), body)
    first, second = smtp_server.deliveries
    assert first.rcpt_tos == ("ok@example.org",)
    assert second.rcpt_tos == ("later@example.org",)  # only the temporarily refused one
    assert smtp_server.handler.rcpt_attempts.count("nobody@example.org") == 1


def test_queue_survives_a_crash(smtp_server: SmtpServer, state: Path) -> None:
    acc = account(smtp_server)
    # mount 1 takes the message and dies before sending anything (no sender task ran)
    run(state, acc, lambda b: put(b, "crash.eml", MSG), sender=False)
    assert smtp_server.deliveries == []
    assert len(OutQueue(state / "outbox" / "out" / "queue").load()) == 1
    # debris of an interrupted enqueue is cleaned up, not sent
    (state / "outbox" / "out" / "queue" / "ffff.msg").write_bytes(MSG.encode())

    async def later(b: OutboxBackend) -> None:
        await b.flush_queue()
        assert await names(b) == {"sent"}

    run(state, acc, later)
    assert len(smtp_server.deliveries) == 1
    assert not (state / "outbox" / "out" / "queue" / "ffff.msg").exists()


def test_unreachable_server_keeps_message_queued(state: Path) -> None:
    server = SmtpServer()
    server.stop()  # its port now refuses connections
    acc = account(server)

    async def body(b: OutboxBackend) -> None:
        await put(b, "wait.eml", MSG)
        while (await b.get_xattrs(("wait.eml",)))["outbox.status"] != b"retrying":
            await b._progress.wait()
        attrs = await b.get_xattrs(("wait.eml",))
        assert b"connection refused" in attrs["outbox.last_reply"]
        await b.remove(("wait.eml",))  # rm cancels a queued message
        with pytest.raises(NotFound):
            await b.stat(("wait.eml",))

    run(state, acc, body)


def test_editor_files_are_kept_locally_and_never_sent(smtp_server: SmtpServer, state: Path) -> None:
    async def body(b: OutboxBackend) -> None:
        for name in (".draft.eml.swp", "4913", "draft.eml~", "#draft.eml#", "notes.txt"):
            await put(b, name, MSG)
        await b.flush_queue()
        assert await text(b, ("notes.txt",)) == MSG
        # gedit/vim style: write a temporary file, then rename it over the final name
        await put(b, ".goutputstream-X1Y2", MSG.replace("Lunch", "Dinner"))
        await b.rename((".goutputstream-X1Y2",), ("draft.eml",))
        await b.flush_queue()
        await b.remove(("4913",))
        left = await names(b)
        assert left == {".draft.eml.swp", "draft.eml~", "#draft.eml#", "notes.txt", "sent"}

    run(state, account(smtp_server), body)
    [d] = smtp_server.deliveries
    assert b"Subject: Dinner" in d.content


def test_plaintext_auth_when_allowed(smtp_server: SmtpServer, state: Path) -> None:
    run(state, account(smtp_server, tls="off", plaintext_auth=True),
        lambda b: _put_and_flush(b, "p.eml", MSG))
    [d] = smtp_server.deliveries
    assert d.user == "alice" and not d.encrypted


def test_wrong_password_keeps_the_message(smtp_server: SmtpServer, state: Path) -> None:
    async def body(b: OutboxBackend) -> None:
        await put(b, "p.eml", MSG)
        while b"535" not in (await b.get_xattrs(("p.eml",)))["outbox.last_reply"]:
            await b._progress.wait()
        assert (await b.get_xattrs(("p.eml",)))["outbox.status"] in (b"retrying", b"sending")

    run(state, account(smtp_server), body, password="wrong")
    assert smtp_server.deliveries == []


def test_default_from_and_existing_ids_are_kept(smtp_server: SmtpServer, state: Path) -> None:
    msg = "To: b@example.org\nMessage-ID: <fixed@example.org>\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n\nx\n"
    run(state, account(smtp_server, **{"from": "Me <me@example.org>"}),
        lambda b: _put_and_flush(b, "f.eml", msg))
    [d] = smtp_server.deliveries
    assert d.mail_from == "me@example.org"
    assert d.content.startswith(b"From: Me <me@example.org>\r\nTo: b@example.org\r\n"
                                b"Message-ID: <fixed@example.org>\r\n")


def test_rename_queued_message_to_other_name_unqueues_it(state: Path) -> None:
    server = SmtpServer()
    server.stop()

    async def body(b: OutboxBackend) -> None:
        await put(b, "m.eml", MSG)
        await b.rename(("m.eml",), ("n.eml",))
        assert {"n.eml", "n.eml.status"} <= await names(b)
        await b.rename(("n.eml",), ("n.txt",))
        assert await text(b, ("n.txt",)) == (await text(b, ("n.txt",)))
        assert "n.eml" not in await names(b) and "n.txt" in await names(b)

    run(state, account(server), body, sender=False)


class FakeSentAccount(KeepsSentMail):
    """Stands in for the IMAP backend's Sent-folder calls (the real one is tested mounted)."""

    def __init__(self, ids: set[str]) -> None:
        self.ids = ids
        self.appended: list[tuple[tuple, bytes]] = []

    async def sent_folder(self) -> tuple[str, ...]:
        return ("Sent",)

    async def contains_message_id(self, folder: tuple, message_id: str) -> bool:
        return message_id in self.ids

    async def commit(self, path: tuple, content: Content, replacing: Any) -> Any:
        self.appended.append((path, await content.read_all()))


def test_files_into_linked_sent_folder(smtp_server: SmtpServer, state: Path) -> None:
    peer = FakeSentAccount(set())
    run(state, account(smtp_server, sent_account="mail"), lambda b: _put_and_flush(b, "s.eml", MSG),
        peers={"mail": peer})
    [(path, data)] = peer.appended
    assert path == ("Sent", "s.eml") and b"Bcc: hidden@example.org" in data
    assert len(smtp_server.deliveries) == 1


def test_crash_during_send_is_not_resent_when_in_sent_folder(smtp_server: SmtpServer, state: Path) -> None:
    acc = account(smtp_server, sent_account="mail", provider_files_sent=True)
    run(state, acc, lambda b: put(b, "c.eml", MSG), sender=False)
    queue = OutQueue(state / "outbox" / "out" / "queue")
    [record] = queue.load()
    record.in_flight = True  # as if killed after DATA, before the outcome was recorded
    queue.save(record)
    peer = FakeSentAccount({record.message_id})

    async def body(b: OutboxBackend) -> None:
        await b.flush_queue()
        assert "c.eml" not in await names(b)

    run(state, acc, body, peers={"mail": peer})
    assert smtp_server.deliveries == [] and peer.appended == []


def test_rename_into_a_message_name_is_validated(smtp_server: SmtpServer, state: Path) -> None:
    async def body(b: OutboxBackend) -> None:
        await put(b, ".tmp-1", "To: b@example.org\n\nno sender\n")
        with pytest.raises(InvalidArgument, match="no sender"):
            await b.rename((".tmp-1",), ("x.eml",))
        assert "status: refused" in await text(b, ("x.eml.status",))
        assert ".tmp-1" not in await names(b)  # its bytes live on as the refused x.eml
        assert await text(b, ("x.eml",)) == "To: b@example.org\n\nno sender\n"

    run(state, account(smtp_server), body)
    assert smtp_server.deliveries == []


def test_gives_up_after_max_lifetime(smtp_server: SmtpServer, state: Path) -> None:
    """No success within ``max_lifetime``: retried meanwhile, then failed with the server's
    last reply. The server answers the second attempt only once the lifetime is over, so the
    test does not depend on how many attempts a machine makes meanwhile: exactly two (and a
    generous timeout: a loaded machine must not turn the 421 into "did not answer"). The
    lifetime leaves the first attempt time to finish on a loaded machine: at 1 s, one run in
    four processes in the Debian 13 chroot gave up after it."""
    lifetime = 3.0
    smtp_server.fail_data(1000, "421 4.7.0 too busy")
    smtp_server.hold_failure(2, math.inf)

    async def body(b: OutboxBackend) -> None:
        await put(b, "old.eml", MSG)
        smtp_server.hold_failure(2, time.time() + lifetime)  # queued before: over by then
        await b.flush_queue()
        status = await text(b, ("old.eml.status",))
        assert "status: failed" in status and "gave up: no success within" in status
        assert "last reply: 421 4.7.0 too busy" in status
        assert "(2 attempts)" in status

    run(state, account(smtp_server, max_lifetime=lifetime, timeout=60), body)
    assert smtp_server.deliveries == []
    assert smtp_server.handler.data_failed == 2, "the first attempt took the whole lifetime"


def test_resent_headers_make_the_envelope(smtp_server: SmtpServer, state: Path) -> None:
    msg = ("Resent-From: carol@example.org\nResent-To: erin@example.org\nResent-Bcc: f@example.org\n"
           + MSG)
    run(state, account(smtp_server), lambda b: _put_and_flush(b, "fwd.eml", msg))
    [d] = smtp_server.deliveries
    assert d.mail_from == "carol@example.org"
    assert d.rcpt_tos == ("erin@example.org", "f@example.org")
    assert b"f@example.org" not in d.content and b"hidden@example.org" not in d.content


def test_newsgroups_need_a_linked_news_account(smtp_server: SmtpServer, state: Path) -> None:
    msg = "From: a@example.org\nNewsgroups: local.test\nSubject: x\n\nhi\n"

    async def body(b: OutboxBackend) -> None:
        with pytest.raises(InvalidArgument, match="news_account"):
            await put(b, "n.eml", msg)

    run(state, account(smtp_server), body)


def test_many_messages_in_parallel(smtp_server: SmtpServer, state: Path) -> None:
    async def body(b: OutboxBackend) -> None:
        start = trio.current_time()
        for i in range(30):
            await put(b, f"m{i:02}.eml", MSG.replace("Lunch", f"Lunch {i}"))
        queued = trio.current_time() - start
        await b.flush_queue()
        print(f"30 messages: enqueued (fsync'd) in {queued:.2f} s, "
              f"all sent after {trio.current_time() - start:.2f} s")
        assert await names(b) == {"sent"} and len(await names(b, ("sent",))) == 30

    # 30 STARTTLS sessions against an aiosmtpd sharing this process's GIL: on a machine busy
    # with other test processes that took over 30 s
    run(state, account(smtp_server, connections=4), body, deadline=120)
    subjects = sorted(d.content.split(b"Subject: ")[1].split(b"\r\n")[0] for d in smtp_server.deliveries)
    assert subjects == sorted(f"Lunch {i}".encode() for i in range(30))


def test_mail_and_news_through_real_inn(smtp_server: SmtpServer, state: Path) -> None:
    from fsmount.backends import create as create_backend
    from tests.servers.inn import available, running_inn

    if not available():
        pytest.skip("inn2 is not installed")
    msg = ("From: Alice <alice@example.org>\nTo: bob@example.org\nBcc: secret@example.org\n"
           "Newsgroups: local.test\nSubject: Both ways\n\nTo the list and to Bob.\n")
    with running_inn() as inn:
        news_acc = make_account("news", {"url": f"nntps://alice@127.0.0.1:{inn.tls_port}",
                                         "ca_file": str(inn.ca)}, where="test")
        holder: dict[str, Any] = {}

        async def body(b: OutboxBackend) -> None:
            await _put_and_flush(b, "both.eml", msg)
            holder["status"] = await names(b)

        async def main() -> None:
            env = Environment(state)
            news = create_backend(news_acc, Secret("secret1"), env)
            env.links = Links({"news": news})
            outbox = create(account(smtp_server, news_account="news"), Secret("secret1"), env)
            async with trio.open_nursery() as nursery:
                await nursery.start(outbox.run)
                with trio.fail_after(30):
                    await body(outbox)
                nursery.cancel_scope.cancel()
            await outbox.aclose()
            await news.aclose()

        trio.run(main)
        assert holder["status"] == {"sent"}
        [d] = smtp_server.deliveries
        assert d.rcpt_tos == ("bob@example.org", "secret@example.org")
        mid = d.content.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode()
        article = inn.article(mid)
        assert b"To the list and to Bob." in article and b"secret@example.org" not in article


def test_linked_account_without_sent_folder_falls_back_to_local(smtp_server: SmtpServer,
                                                                state: Path) -> None:
    class NoSent(FakeSentAccount):
        async def sent_folder(self) -> None:
            return None

    async def body(b: OutboxBackend) -> None:
        await _put_and_flush(b, "s.eml", MSG)
        assert await names(b) == {"sent"} and len(await names(b, ("sent",))) == 1

    run(state, account(smtp_server, sent_account="mail"), body, peers={"mail": NoSent(set())})


# -- the Sent folder of a real Dovecot, through the real IMAP backend ----------------------


def _sent_messages(srv: Any) -> list[tuple[bytes, bytes]]:
    """(flags, message) of every message in alice's Sent folder, seen from the server."""
    conn = srv.imap()
    try:
        conn.select("Sent", readonly=True)
        _, data = conn.search(None, "ALL")
        out = []
        for num in data[0].split():
            _, parts = conn.fetch(num, "(FLAGS BODY.PEEK[])")
            out.append((parts[0][0], parts[0][1]))
        return out
    finally:
        conn.logout()


def _with_imap(state: Path, srv: Any, outbox_acc: Any, body: Callable[[OutboxBackend], Awaitable[None]]) -> None:
    from fsmount.backends import create as create_backend

    mail_acc = make_account("mail", {"url": f"imaps://alice@127.0.0.1:{srv.imaps_port}",
                                     "ca_file": str(srv.ca)}, where="test")

    async def main() -> None:
        env = Environment(state)
        mail = create_backend(mail_acc, Secret("secret1"), env)
        env.links = Links({"mail": mail})
        outbox = create(outbox_acc, Secret("secret1"), env)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(outbox.run)
                with trio.fail_after(30):
                    await body(outbox)
                nursery.cancel_scope.cancel()
        finally:
            await outbox.aclose()
            await mail.aclose()

    trio.run(main)


def test_files_into_dovecot_sent_folder(smtp_server: SmtpServer, state: Path) -> None:
    from tests.servers.dovecot import available, dovecot

    if not available():
        pytest.skip("dovecot is not installed")
    with dovecot() as srv:
        async def body(b: OutboxBackend) -> None:
            await _put_and_flush(b, "filed.eml", MSG)
            assert await names(b) == set()  # nothing left, and no local sent/ folder

        _with_imap(state, srv, account(smtp_server, sent_account="mail"), body)
        [d] = smtp_server.deliveries
        [(flags, copy)] = _sent_messages(srv)
        assert b"\\Seen" in flags
        assert b"Bcc: hidden@example.org" in copy and b"Friday at noon?" in copy
        mid = d.content.split(b"Message-ID: ")[1].split(b"\r\n")[0]
        assert b"Message-ID: " + mid in copy


def test_crash_after_acceptance_is_not_resent_with_dovecot(smtp_server: SmtpServer, state: Path) -> None:
    """The provider filed the message itself; fsmount died before recording the success."""
    from tests.servers.dovecot import available, dovecot

    if not available():
        pytest.skip("dovecot is not installed")
    acc = account(smtp_server, sent_account="mail", provider_files_sent=True)
    run(state, acc, lambda b: put(b, "once.eml", MSG), sender=False)
    queue = OutQueue(state / "outbox" / "out" / "queue")
    [record] = queue.load()
    record.in_flight = True
    queue.save(record)
    with dovecot() as srv:
        srv.deliver("alice", queue.read(record), folder="Sent", flags="\\Seen")

        async def body(b: OutboxBackend) -> None:
            await b.flush_queue()
            assert await names(b) == set()

        _with_imap(state, srv, acc, body)
        assert smtp_server.deliveries == []
        assert len(_sent_messages(srv)) == 1  # and not filed a second time


def test_only_one_sender_per_outbox(smtp_server: SmtpServer, state: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr("fsmount.backends.outbox.sender.LOCK_POLL", 0.05)
    acc = account(smtp_server)

    async def main() -> None:
        first = create(acc, Secret("secret1"), Environment(state))
        second = create(acc, Secret("secret1"), Environment(state))
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            await nursery.start(second.run)  # finds the lock taken: sends nothing for now
            await put(second, "one.eml", MSG)
            await put(first, "two.eml", MSG.replace("Lunch", "Dinner"))
            await first.flush_queue()
            assert len(smtp_server.deliveries) == 1  # only its own
            # the first mount ends: the second takes over and sends what is left
            first_done = trio.Event()

            async def stop_first() -> None:
                await first.aclose()
                first_done.set()

            nursery.start_soon(stop_first)
            await first_done.wait()
            with trio.fail_after(10):
                while len(smtp_server.deliveries) < 2:
                    await second._progress.wait()
                await second.flush_queue()
            nursery.cancel_scope.cancel()
        await second.aclose()

    trio.run(main)
    subjects = sorted(d.content.split(b"Subject: ")[1].split(b"\r\n")[0] for d in smtp_server.deliveries)
    assert subjects == [b"Dinner", b"Lunch"]


def _as_if_killed_after_the_final_dot(state: Path) -> Any:
    """The queue as a process leaves it when killed after sending the final "." of DATA."""
    queue = OutQueue(state / "outbox" / "out" / "queue")
    [record] = queue.load()
    record.in_flight, record.attempts = True, 1
    record.final_dot, record.final_dot_at = list(record.recipients), 1_700_000_000.0
    queue.save(record)
    return record


def test_crash_after_the_final_dot_counts_as_sent_when_in_sent_folder(smtp_server: SmtpServer,
                                                                      state: Path) -> None:
    acc = account(smtp_server, sent_account="mail")
    run(state, acc, lambda b: put(b, "c.eml", MSG), sender=False)
    record = _as_if_killed_after_the_final_dot(state)
    peer = FakeSentAccount({record.message_id})

    async def body(b: OutboxBackend) -> None:
        await b.flush_queue()
        assert await names(b) == set()

    run(state, acc, body, peers={"mail": peer})
    assert smtp_server.deliveries == [] and peer.appended == []


def test_crash_after_the_final_dot_waits_for_the_user(smtp_server: SmtpServer, state: Path) -> None:
    acc = account(smtp_server, sent_account="mail")
    run(state, acc, lambda b: put(b, "c.eml", MSG), sender=False)
    record = _as_if_killed_after_the_final_dot(state)
    peer = FakeSentAccount(set())  # not in Sent: that proves nothing, so no resend

    async def body(b: OutboxBackend) -> None:
        await b.flush_queue()
        status = await text(b, ("c.eml.status",))
        assert "status: may-have-been-sent" in status
        assert f"message-id: {record.message_id}" in status
        assert "sent check: not in mail:Sent, which does not prove" in status
        assert (await b.get_xattrs(("c.eml",)))["outbox.status"] == b"may-have-been-sent"
        assert smtp_server.deliveries == []
        with pytest.raises(NotPermitted):
            await b.set_xattr(("c.eml",), "outbox.status", b"sent")
        await b.set_xattr(("c.eml",), "outbox.send", b"1")
        await b.flush_queue()
        assert await names(b) == set()

    run(state, acc, body, peers={"mail": peer})
    assert len(smtp_server.deliveries) == 1 and len(peer.appended) == 1


def test_final_dot_not_sent_unless_recorded(smtp_server: SmtpServer, state: Path,
                                            monkeypatch: Any) -> None:
    """Recording "the final dot is leaving" fails (a full disk): the dot is not sent."""
    def full_disk(self: OutboxBackend, record: Any, accepted: list[str]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(OutboxBackend, "_before_final_dot", full_disk)

    async def body(b: OutboxBackend) -> None:
        await put(b, "d.eml", MSG)
        while "retrying" not in await text(b, ("d.eml.status",)):
            await b._progress.wait()
        assert "cannot record the attempt locally: No space left" in await text(b, ("d.eml.status",))

    run(state, account(smtp_server, retry_first=60), body)
    assert smtp_server.deliveries == []


def test_send_delay_holds_a_message_until_asked(smtp_server: SmtpServer, state: Path) -> None:
    async def body(b: OutboxBackend) -> None:
        await put(b, "w.eml", MSG)
        await b.rename(("w.eml",), ("v.eml",))
        status = await text(b, ("v.eml.status",))
        assert "status: queued" in status and "leaves at: " in status
        assert smtp_server.deliveries == []
        await b.set_xattr(("v.eml",), "outbox.send", b"1")  # "send it now"
        await b.flush_queue()

    run(state, account(smtp_server, send_delay=3600), body)
    assert len(smtp_server.deliveries) == 1
