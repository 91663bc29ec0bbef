"""The IMAP backend against a real Dovecot (tests/servers/dovecot.py), without FUSE.

Every check of a change is made from the server's side with a direct imaplib client.
Tests share one Dovecot per module and each works in folders of its own.
"""
from __future__ import annotations

import email.utils
import gc
import re
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import trio

from fsmount.backends import imap
from fsmount.backends.base import Entry
from fsmount.cache.decoded import decoded_text
from fsmount.backends.imap.folders import FolderTree
from fsmount.backends.imap import fetch as imapfetch
from fsmount.backends.mailnames import header_date, header_timestamp, key_of, message_name
from fsmount.config import make_account
from fsmount.credentials import Secret
from fsmount.errors import (
    AuthenticationFailed, InvalidArgument, IsADirectory, NotEmpty, NotFound, NotPermitted,
    PermissionDenied,
)
from tests.servers.dovecot import USERS, Dovecot, _quote, dovecot_server, fresh_dovecot  # noqa: F401
from tests.backend_support import remove_spools, run, scratch, spool  # noqa: F401  (autouse fixture)
from tests.faultproxy import FaultProxy, Relay, cut, relaying

T = TypeVar("T")


def backend_for(server: Dovecot, *, user: str = "alice", scheme: str = "imap",
                password: str | None = None, port: int | None = None, **options: Any) -> imap.ImapBackend:
    if port is None:
        port = server.imaps_port if scheme == "imaps" else server.imap_port
    table: dict[str, Any] = {"url": f"{scheme}://{user}@127.0.0.1:{port}", "timeout": 10,
                             "ca_file": str(server.ca)}
    table.update(options)
    account = make_account("mail", table, where="test")
    secret = Secret(password if password is not None else USERS[user], options.get("token_command"))
    return imap.create(account, secret, None)


def through(relay: Relay, server: Dovecot, **options: Any) -> imap.ImapBackend:
    """A backend whose commands the relay records: in clear, so that they can be read."""
    return backend_for(server, port=relay.port, tls="off", plaintext_auth=True, **options)


def commands(relay: Relay, since: int = 0) -> list[str]:
    """The IMAP commands the server received since ``relay.mark()``, without their tags."""
    return [line.split(" ", 1)[1] for line in relay.lines(since) if " " in line]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def files(entries: list[Entry], suffix: str = ".eml") -> list[Entry]:
    return sorted((e for e in entries if not e.is_dir and e.name.endswith(suffix)),
                  key=lambda e: e.identity)


def server_messages(server: Dovecot, folder: str, user: str = "alice") -> dict[int, tuple[bytes, bytes]]:
    """uid → (exact bytes, flags) as the server holds them, read with BODY.PEEK."""
    with server.imap(user) as conn:
        typ, _ = conn.select(_quote(folder), readonly=True)
        assert typ == "OK"
        typ, data = conn.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
        out = {}
        for item in data:
            if isinstance(item, tuple):
                uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1)
                out[uid] = (item[1], flags)
        return out


# -- a corpus of awkward messages -----------------------------------------------------------

PLAIN = (b"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: Plain hello\r\n"
         b"Date: Mon, 06 May 2024 10:00:00 +0200\r\nMessage-ID: <plain@example.org>\r\n\r\n"
         b"Just text, nothing encoded.\r\n")
ALTERNATIVE = (b"From: shop@example.org\r\nSubject: =?utf-8?q?Rechnung_f=C3=BCr_Mai?=\r\n"
               b"Date: Tue, 07 May 2024 09:30:00 +0000\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
               b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
               b"Ihre Rechnungsnummer: Zahlungsziel=20verl=C3=A4ngert\r\n"
               b"--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>HTML only <b>twin</b></p>\r\n--b1--\r\n")
ATTACHMENT = (b"From: office@example.org\r\nSubject: Report attached\r\nDate: Wed, 08 May 2024 08:00:00 +0000\r\n"
              b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="m"\r\n\r\n'
              b"--m\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: base64\r\n\r\n"
              b"U2VjcmV0IHdvcmQ6IHBpbmVhcHBsZXN0b3JtCg==\r\n"
              b'--m\r\nContent-Type: application/pdf; name="report.pdf"\r\n'
              b'Content-Disposition: attachment; filename="report.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
              + b"JVBERi0xLjQK" * 40 + b"\r\n--m--\r\n")
EIGHTBIT = ("From: Jörg <j@example.org>\r\nSubject: Grüße aus Köln\r\nDate: Thu, 09 May 2024 12:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Schöne Grüße, Straße\r\n").encode("utf-8")
BADHEADER = (b"From: x@example.org\r\nSubject: =?x-unknown?q?broken=ZZ?= \xe9t\xe9 caf\xe9\r\n"
             b"Date: not a date at all\r\n\r\nbody of the badly encoded one\r\n")
HTMLONLY = (b"From: news@example.org\r\nSubject: =?iso-8859-1?b?UHLkc2VudGF0aW9u?=\r\n"
            b"Date: Fri, 10 May 2024 07:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            b"<html><style>p{}</style><body><p>Gr=FC=DFe vom <i>Nachrichtendienst</i> &amp; mehr</p></body></html>\r\n")
CORPUS = [PLAIN, ALTERNATIVE, ATTACHMENT, EIGHTBIT, BADHEADER, HTMLONLY]


@pytest.fixture(scope="module")
def corpus(dovecot_server: Dovecot) -> tuple[Dovecot, str, list[int]]:
    folder = "Corpus/Mixed"
    dovecot_server.create_folder(folder)
    uids = dovecot_server.append_many("alice", CORPUS, folder)
    return dovecot_server, folder, uids


# -- no server ------------------------------------------------------------------------------

def test_folder_tree_hierarchy_noselect_special_and_hostile_names() -> None:
    listing = [
        ((b"\\HasChildren",), b".", "INBOX"),
        ((b"\\HasNoChildren",), b".", "INBOX.Archiv"),
        ((b"\\Noselect", b"\\HasChildren"), b".", "Projekte"),
        ((b"\\HasNoChildren",), b".", "Projekte.2024"),
        ((b"\\HasNoChildren", b"\\Sent"), b".", "Gesendete Objekte"),
        ((b"\\HasNoChildren",), b".", "a/b"),  # '/' inside a component: the VFS escapes it
        ((b"\\HasNoChildren",), b".", "..double"),  # empty components: skipped
        ((b"\\HasNoChildren",), b".", "trailing."),
        ((b"\\HasNoChildren",), b".", "ctl\x07bell"),
    ]
    tree = FolderTree.build(listing)
    assert tree.delimiter == "."
    assert tree.children[()] == {"INBOX", "Projekte", "Gesendete Objekte", "a/b", "ctl\x07bell"}
    assert tree.folder(("Projekte",)) is None and tree.is_dir(("Projekte",))
    assert tree.folder(("Projekte", "2024")) is not None
    assert tree.special("\\Sent") == ("Gesendete Objekte",)
    assert tree.special("\\Trash") is None
    assert tree.name_for(("INBOX", "Neu")) == "INBOX.Neu"
    with pytest.raises(ValueError):
        tree.name_for(("x.y",))


def test_decoded_text_of_the_corpus() -> None:
    alt = decoded_text(ALTERNATIVE).decode()
    assert "Subject: Rechnung für Mai" in alt and "Zahlungsziel verlängert" in alt
    assert "HTML only" not in alt  # the plain alternative is enough
    att = decoded_text(ATTACHMENT).decode()
    assert "pineapplestorm" in att and "report.pdf (application/pdf" in att and "JVBER" not in att
    assert "Straße" in decoded_text(EIGHTBIT).decode()
    html = decoded_text(HTMLONLY).decode()
    assert "Präsentation" in html and "Grüße vom Nachrichtendienst & mehr" in html and "p{}" not in html
    assert "body of the badly encoded one" in decoded_text(BADHEADER).decode()
    assert b"garbage" in decoded_text(b"\xff\xfe garbage without headers\n\nbody")


def test_single_part_shortcut_parses_as_the_email_parser_does() -> None:
    from email.parser import BytesParser
    from email.policy import compat32

    from fsmount.cache import decoded

    tricky = [b"A: b\r\rC: d\n\nbody", b"From x\nA: b\n\nbody\r\nmore", b"no headers at all\n\nbody",
              b"A: b\n \n\nbody", b"A: b\nContent-Type: message/rfc822\n\nB: c\n\nx", b"A: b\r\n\r\n",
              b"\n\nbody", b"A: b\x0cC: d\n\nx", b"Subject: \xff\xfe\n\nbody \xe9\r\n", b"X\n\nbody",
              b"A: b\r\nB:c\r\n\r\n\r\nbody\n\n\nx", b"A: b\r\r\n\r\nx", b"A: b\n\r\n\nx", b"A: b\r\nno end"]
    shortcuts = 0
    for raw in CORPUS + tricky:
        got = decoded._single_part(raw)
        if got is None:
            continue
        shortcuts += 1
        ref = BytesParser(policy=compat32).parsebytes(raw)
        assert (got.items(), got.get_payload(), got.get_unixfrom(), got.defects) == \
            (ref.items(), ref.get_payload(), ref.get_unixfrom(), ref.defects), raw
    assert shortcuts >= 6 and decoded._single_part(ALTERNATIVE) is None


def test_listing_parser_takes_every_response_shape() -> None:
    date = b'INTERNALDATE "06-May-2024 10:00:00 +0200"'
    field = b"BODY[HEADER.FIELDS (SUBJECT DATE)]"
    data = [
        b'1 (UID 5 RFC822.SIZE 10 ' + date + b" " + field + b' "Subject: quoted")',
        b"2 (UID 6 RFC822.SIZE 11 " + date + b" " + field + b" NIL)",
        (b"3 (" + field + b" {12}", b"Subject: y\r\n"), b" UID 7 RFC822.SIZE 12 " + date + b")",
        (b"4 (UID 8 RFC822.SIZE 3 " + field + b" {3}", b"a\r\n"), b")",
    ]
    assert imap.parse._parse_listing(data) == [
        (5, 10, 1714982400.0, b"Subject: quoted"), (6, 11, 1714982400.0, b""),
        (7, 12, 1714982400.0, b"Subject: y\r\n"), (8, 3, None, b"a\r\n")]
    assert imap.parse._internaldate(b"17-Jul-1996 02:44:25 -0700") == 837596665.0
    assert imap.parse._internaldate(b"garbage") is None


def test_wire_replies_parse_like_imaplib_items() -> None:
    """The listing reads replies off the wire; Dovecot's order takes one regex, any other
    order (or no literal) the general path, with the same results."""
    date = b'INTERNALDATE "06-May-2024 10:00:00 +0200"'
    field = b"BODY[HEADER.FIELDS (SUBJECT DATE)]"
    replies = [
        [b"* 1 FETCH (UID 4 RFC822.SIZE 9 " + date + b" " + field + b" {12}", b"Subject: x\r\n", b")"],
        [b"* 2 FETCH (" + field + b" {12}", b"Subject: y\r\n", b" UID 7 RFC822.SIZE 12 " + date + b")"],
        [b"* 3 FETCH (UID 6 RFC822.SIZE 11 " + date + b" " + field + b" NIL)"],
        [b"* 1 FETCH (UID 4 FLAGS (\\Seen))"],  # unsolicited: another client read it
    ]
    assert list(imap.parse._listing_rows(replies)) == [
        (4, 9, 1714982400.0, b"Subject: x\r\n"), (7, 12, 1714982400.0, b"Subject: y\r\n"),
        (6, 11, 1714982400.0, b"")]
    assert imapfetch.imaplib_shape([b"* 12 FETCH (A {1}", b"x", b" B {2}", b"yz", b")"]) == [
        (b"12 (A {1}", b"x"), (b" B {2}", b"yz"), b")"]


def test_fast_date_and_name_paths_agree_with_email_utils() -> None:
    samples = ["Mon, 06 May 2024 10:00:00 +0200", "6 May 2024 10:00:00 -0000 (UTC)",
               "Tue,7 jan 1969 23:59:59 -1130", "29 Feb 2023 10:00:00 +0000", "31 Apr 2024 00:00:00 +0000",
               "01 Jan 2024 24:00:00 +0000", "01 Jan 2024 10:00:00 +2400", "01 Jan 0099 10:00:00 +0000",
               "Mon, 06 May 24 10:00:00 +0200", "06 May 2024 10:00 EST", "garbage", ""]
    for raw in samples:
        date = header_date(raw)
        assert header_timestamp(raw) == (date.timestamp() if date else None), raw
        assert header_timestamp(raw.encode()) == header_timestamp(raw)
        if date is not None:
            assert message_name("1", "s", date.timestamp()) == message_name("1", "s", date), raw


def test_prepare_message_checks_and_normalises() -> None:
    message, date, mid = imap.parse.prepare_message(b"From: a@b\nSubject: x\nDate: Mon, 06 May 2024 10:00:00 +0200\n"
                                              b"Message-ID: <m@x>\n\nline\n")
    assert message == (b"From: a@b\r\nSubject: x\r\nDate: Mon, 06 May 2024 10:00:00 +0200\r\n"
                       b"Message-ID: <m@x>\r\n\r\nline\r\n")
    assert date is not None and date.timestamp() == 1714982400 and mid == "<m@x>"
    for bad in [b"", b"   \n", b"just some text\nmore\n", b"\x7fELF\x00\x01binary", b"Foo: bar\n\nno mail headers\n"]:
        with pytest.raises(InvalidArgument):
            imap.parse.prepare_message(bad)


# -- listing and reading ----------------------------------------------------------------------

def test_folders_nested_non_ascii_and_special(dovecot_server: Dovecot) -> None:
    dovecot_server.create_folder("Tree/Entwürfe/日本語")
    dovecot_server.create_folder("Tree/Überweisungen")

    async def scenario(b: imap.ImapBackend) -> None:
        root = await b.list(())
        assert {"INBOX", "Sent", "Trash", "Drafts", "Tree"} <= {e.name for e in root if e.is_dir}
        assert sorted(e.name for e in await b.list(("Tree",))) == ["Entwürfe", "Überweisungen"]
        assert [e.name for e in await b.list(("Tree", "Entwürfe"))] == ["日本語"]
        assert (await b.stat(("Tree", "Entwürfe", "日本語"))).is_dir
        assert (await b.get_xattrs(("Trash",)))["imap.special-use"] == b"\\Trash"
        assert (await b.get_xattrs(("Tree", "Entwürfe")))["imap.name"] == "Tree/Entwürfe".encode()
        assert await b.sent_folder() == ("Sent",)
        with pytest.raises(NotFound):
            await b.stat(("Tree", "nope"))
        with pytest.raises(NotFound):
            await b.list(("Tree", "nope"))

    run(backend_for(dovecot_server), scenario)


def test_listing_names_sizes_dates_and_exact_bytes(corpus: tuple[Dovecot, str, list[int]]) -> None:
    server, folder, uids = corpus
    held = server_messages(server, folder)

    async def scenario(b: imap.ImapBackend) -> None:
        path = tuple(folder.split("/"))
        entries = files(await b.list(path))
        assert [e.identity[1] for e in entries] == uids
        assert len({e.name for e in entries}) == len(entries)
        by_uid = {e.identity[1]: e for e in entries}
        assert by_uid[uids[0]].name == f"2024-05-06 0800 Plain hello [{uids[0]}].eml"
        assert by_uid[uids[1]].name.startswith("2024-05-07 0930 Rechnung für Mai [")
        assert "Grüße aus Köln" in by_uid[uids[3]].name
        assert key_of(by_uid[uids[4]].name) == str(uids[4])  # broken Subject/Date: still a name
        for e in entries:
            raw = held[e.identity[1]][0]
            assert e.size == len(raw) and e.size_exact and e.mtime is not None
            target = scratch()
            got = await b.download(path + (e.name,), target)
            assert open(target, "rb").read() == raw and got.size == len(raw)
            assert await b.read(path + (e.name,), 7, 50) == raw[7:57]
            assert await b.read(path + (e.name,), len(raw) - 3, 100) == raw[-3:]
            assert await b.stat(path + (e.name,)) == e

    run(backend_for(server), scenario)
    assert all(b"\\Seen" not in flags for _, flags in server_messages(server, folder).values())


def test_names_are_stable_across_mounts(corpus: tuple[Dovecot, str, list[int]]) -> None:
    server, folder, _ = corpus
    path = tuple(folder.split("/"))
    first = run(backend_for(server), lambda b: b.list(path))
    second = run(backend_for(server, scheme="imaps"), lambda b: b.list(path))
    assert sorted(e.name for e in first) == sorted(e.name for e in second)


def test_download_many_is_one_fetch(dovecot_server: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scan's batch: one UID FETCH of a UID set, BODY.PEEK only; a message expunged
    meanwhile, a name never listed and an object past the limit fail alone."""
    folder = unique("Batch")
    dovecot_server.create_folder(folder)
    uids = dovecot_server.append_many("alice", CORPUS, folder)
    big = b"From: a@example.org\r\nSubject: big\r\n\r\n" + b"x" * 5000 + b"\r\n"
    big_uid = dovecot_server.deliver("alice", big, folder)
    monkeypatch.setattr(imap, "BATCH_ITEM_LIMIT", 4000)

    async def scenario(b: imap.ImapBackend) -> None:
        assert b.capabilities.batch > 1
        listed = await b.list((folder,))
        emls = files(listed)
        with dovecot_server.imap() as conn:  # another client expunges the second message
            conn.select(_quote(folder))
            conn.uid("STORE", str(uids[1]), "+FLAGS", "(\\Deleted)")
            conn.expunge()
        paths = [(folder, e.name) for e in emls]
        paths.append((folder, "2024-01-01 0000 never [999999].eml"))
        mark = relay.mark()
        got = await b.download_many(paths)
        fetches = [c for c in commands(relay, mark) if "FETCH" in c]
        assert len(fetches) == 1 and fetches[0].startswith("UID FETCH ") and "BODY.PEEK[]" in fetches[0], fetches
        by_uid = dict(zip([e.identity[1] for e in emls], got))
        for i, uid in enumerate(uids):
            if i == 1:
                assert isinstance(by_uid[uid], NotFound)
            else:
                assert by_uid[uid] == CORPUS[i].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        assert isinstance(by_uid[big_uid], imap.TooLarge)
        assert isinstance(got[-1], NotFound)

    with relaying(dovecot_server.host, dovecot_server.imap_port) as relay:
        run(through(relay, dovecot_server), scenario)
    assert all(b"\\Seen" not in flags for _, flags in server_messages(dovecot_server, folder).values())


def test_partial_fetch_of_a_big_message(dovecot_server: Dovecot) -> None:
    folder = unique("Big")
    dovecot_server.create_folder(folder)
    body = b"".join(b"line %08d of a big message\r\n" % i for i in range(400_000))  # ~12 MiB
    big = b"From: a@example.org\r\nSubject: big one\r\n\r\n" + body
    dovecot_server.deliver("alice", big, folder)

    async def scenario(b: imap.ImapBackend) -> None:
        (entry,) = files(await b.list((folder,)))
        assert entry.size == len(big)
        mark = relay.mark()
        assert await b.read((folder, entry.name), 0, 4096) == big[:4096]
        fetches = [c for c in commands(relay, mark) if "FETCH" in c]
        assert fetches and all("BODY.PEEK[]<0.4096>" in f for f in fetches), fetches
        target = scratch()
        got = await b.download((folder, entry.name), target)
        assert got.size == len(big) and open(target, "rb").read() == big

    with relaying(dovecot_server.host, dovecot_server.imap_port) as relay:
        run(through(relay, dovecot_server), scenario)


# -- writing ------------------------------------------------------------------------------------

def test_append_sets_seen_and_date_and_returns_the_entry(dovecot_server: Dovecot) -> None:
    folder = unique("Append")
    dovecot_server.create_folder(folder)
    mid = email.utils.make_msgid(domain="example.org")
    message = (f"From: me@example.org\nSubject: Kopie\nDate: Tue, 07 May 2024 11:00:00 +0000\n"
               f"Message-ID: {mid}\n\nhello\n").encode()

    async def scenario(b: imap.ImapBackend) -> Entry:
        entry = await b.commit((folder, "anything.eml"), spool(message), None)
        assert entry.name == f"2024-05-07 1100 Kopie [{entry.identity[1]}].eml"
        assert entry.mtime == 1715079600 and entry.size == len(message.replace(b"\n", b"\r\n"))
        assert await b.contains_message_id((folder,), mid)
        assert not await b.contains_message_id((folder,), "<nope@example.org>")
        for bad in [b"hello world\n", b"\x00\x01\x02", b""]:
            with pytest.raises(InvalidArgument):
                await b.commit((folder, "bad.eml"), spool(bad), None)
        with pytest.raises(NotPermitted):
            await b.commit((folder, entry.name), spool(message), entry)
        return entry

    entry = run(backend_for(dovecot_server), scenario)
    held = server_messages(dovecot_server, folder)
    assert list(held) == [entry.identity[1]]
    raw, flags = held[entry.identity[1]]
    assert raw == message.replace(b"\n", b"\r\n") and b"\\Seen" in flags


def test_sent_filing_as_the_outbox_does(dovecot_server: Dovecot) -> None:
    mid = email.utils.make_msgid(domain="example.org")
    message = f"From: a@example.org\r\nTo: b@example.org\r\nSubject: sent\r\nMessage-ID: {mid}\r\n\r\nx\r\n".encode()

    async def scenario(b: imap.ImapBackend) -> None:
        sent = await b.sent_folder()
        assert sent == ("Sent",)
        await b.commit(sent + ("out.eml",), spool(message), None)
        assert await b.contains_message_id(sent, mid)

    run(backend_for(dovecot_server), scenario)
    flags = [f for raw, f in server_messages(dovecot_server, "Sent").values() if mid.encode() in raw]
    assert flags and b"\\Seen" in flags[0]


def test_move_between_folders(dovecot_server: Dovecot) -> None:
    a, z = unique("MoveA"), unique("MoveZ")
    for f in (a, z):
        dovecot_server.create_folder(f)
    uid = dovecot_server.deliver("alice", PLAIN, a)
    other = dovecot_server.deliver("alice", EIGHTBIT, a)

    async def scenario(b: imap.ImapBackend) -> Entry:
        entry = next(e for e in files(await b.list((a,))) if e.identity[1] == uid)
        moved = await b.rename((a, entry.name), (z, entry.name))
        assert moved is not None and moved.size == entry.size and key_of(moved.name) == str(moved.identity[1])
        assert [e.name for e in files(await b.list((z,)))] == [moved.name]
        assert uid not in [e.identity[1] for e in files(await b.list((a,)))]
        same = await b.rename((z, moved.name), (z, "renamed.eml"))
        assert same == moved  # names come from the message: a rename in place changes nothing
        return moved

    moved = run(backend_for(dovecot_server), scenario)
    assert list(server_messages(dovecot_server, a)) == [other]
    assert server_messages(dovecot_server, z)[moved.identity[1]][0] == PLAIN


def test_remove_to_trash_then_expunge_from_trash(dovecot_server: Dovecot) -> None:
    folder = unique("Rm")
    dovecot_server.create_folder(folder)
    mid = email.utils.make_msgid(domain="example.org")
    message = f"From: a@example.org\r\nSubject: to be trashed\r\nMessage-ID: {mid}\r\n\r\nx\r\n".encode()
    dovecot_server.deliver("alice", message, folder)

    async def scenario(b: imap.ImapBackend) -> None:
        (entry,) = files(await b.list((folder,)))
        await b.remove((folder, entry.name))
        assert files(await b.list((folder,))) == []
        trashed = [e for e in files(await b.list(("Trash",))) if "to be trashed" in e.name]
        assert len(trashed) == 1 and await b.contains_message_id(("Trash",), mid)
        await b.remove(("Trash", trashed[0].name))  # in Trash already: expunged for good
        assert not await b.contains_message_id(("Trash",), mid)
        with pytest.raises(IsADirectory):
            await b.remove((folder,))

    run(backend_for(dovecot_server), scenario)
    assert server_messages(dovecot_server, folder) == {}


def test_expunge_takes_only_that_message(dovecot_server: Dovecot) -> None:
    folder = unique("Expunge")
    dovecot_server.create_folder(folder)
    mine, theirs, keep = dovecot_server.append_many("alice", [PLAIN, EIGHTBIT, HTMLONLY], folder)
    with dovecot_server.imap() as conn:  # another client marked one deleted but did not expunge
        conn.select(_quote(folder))
        conn.uid("STORE", str(theirs), "+FLAGS", "(\\Deleted)")

    async def scenario(b: imap.ImapBackend) -> None:
        entry = next(e for e in files(await b.list((folder,))) if e.identity[1] == mine)
        await b.remove((folder, entry.name))

    run(backend_for(dovecot_server, delete="expunge"), scenario)
    held = server_messages(dovecot_server, folder)
    assert sorted(held) == [theirs, keep] and b"\\Deleted" in held[theirs][1]


def test_flags_as_extended_attributes(dovecot_server: Dovecot) -> None:
    folder = unique("Flags")
    dovecot_server.create_folder(folder)
    uid = dovecot_server.deliver("alice", PLAIN, folder)

    async def scenario(b: imap.ImapBackend) -> None:
        (entry,) = files(await b.list((folder,)))
        path = (folder, entry.name)
        x = await b.get_xattrs(path)
        assert x["imap.seen"] == b"0" and x["imap.flags"] == b"" and x["imap.uid"] == str(uid).encode()
        await b.set_xattr(path, "imap.seen", b"1")
        await b.set_xattr(path, "imap.flagged", b"1")
        x = await b.get_xattrs(path)
        assert x["imap.seen"] == x["imap.flagged"] == b"1" and x["imap.answered"] == b"0"
        await b.set_xattr(path, "imap.seen", b"0")
        await b.set_xattr(path, "imap.flags", b"\\Answered $Work")
        x = await b.get_xattrs(path)
        assert set(x["imap.flags"].split()) == {b"\\Answered", b"$Work"} and x["imap.seen"] == b"0"
        with pytest.raises(InvalidArgument):
            await b.set_xattr(path, "imap.seen", b"maybe")
        with pytest.raises(NotPermitted):
            await b.set_xattr(path, "imap.uid", b"7")
        assert (await b.get_xattrs((folder,)))["imap.messages"] == b"1"

    run(backend_for(dovecot_server), scenario)
    assert set(server_messages(dovecot_server, folder)[uid][1].split()) == {b"\\Answered", b"$Work"}


def test_folders_create_rename_delete(dovecot_server: Dovecot) -> None:
    top = unique("Dirs")
    dovecot_server.create_folder(top)

    async def scenario(b: imap.ImapBackend) -> None:
        await b.mkdir((top, "Neu ü"))
        await b.mkdir((top, "Neu ü", "tief"))
        assert [e.name for e in await b.list((top,))] == ["Neu ü"]
        await b.rename((top, "Neu ü"), (top, "Alt ö"))
        assert [e.name for e in await b.list((top, "Alt ö"))] == ["tief"]
        with pytest.raises(NotEmpty):
            await b.rmdir((top, "Alt ö"))
        await b.commit((top, "Alt ö", "tief", "m.eml"), spool(PLAIN), None)
        with pytest.raises(NotEmpty):
            await b.rmdir((top, "Alt ö", "tief"))
        assert files(await b.list((top, "Alt ö", "tief")))
        with pytest.raises(InvalidArgument):
            await b.mkdir((top, "a/b"))

    run(backend_for(dovecot_server), scenario)
    with dovecot_server.imap() as conn:
        _, names = conn.list()
    text = b"\n".join(names)
    assert f"{top}/Alt &APY-/tief".encode() in text and b"Neu" not in text


# -- changes made by others ---------------------------------------------------------------------

def test_change_detection(dovecot_server: Dovecot) -> None:
    folder = unique("Changes")
    dovecot_server.create_folder(folder)
    first = dovecot_server.deliver("alice", PLAIN, folder)

    async def scenario(b: imap.ImapBackend) -> None:
        assert len(files(await b.list((folder,)))) == 1
        await b.list(())
        assert not await b.changed((folder,))
        new = dovecot_server.deliver("alice", EIGHTBIT, folder)
        assert await b.changed((folder,))
        assert [e.identity[1] for e in files(await b.list((folder,)))] == [first, new]
        assert not await b.changed((folder,))
        with dovecot_server.imap() as conn:  # expunged elsewhere
            conn.select(_quote(folder))
            conn.uid("STORE", str(first), "+FLAGS", "(\\Deleted)")
            conn.expunge()
        assert await b.changed((folder,))
        assert [e.identity[1] for e in files(await b.list((folder,)))] == [new]
        assert not await b.changed(())
        dovecot_server.create_folder(unique("Appeared"))
        assert await b.changed(())

    run(backend_for(dovecot_server), scenario)


def test_uidvalidity_change_never_serves_stale_content(dovecot_server: Dovecot) -> None:
    folder = unique("Reborn")
    dovecot_server.create_folder(folder)
    dovecot_server.deliver("alice", PLAIN, folder)

    async def scenario(b: imap.ImapBackend) -> None:
        (old,) = files(await b.list((folder,)))
        with dovecot_server.imap() as conn:
            conn.delete(_quote(folder))
        dovecot_server.create_folder(folder)
        dovecot_server.deliver("alice", EIGHTBIT, folder)
        with pytest.raises(NotFound):
            await b.read((folder, old.name), 0, 100)
        assert await b.changed((folder,))
        (new,) = files(await b.list((folder,)))
        assert new.identity != old.identity
        assert await b.read((folder, new.name), 0, 1 << 20) == EIGHTBIT

    run(backend_for(dovecot_server), scenario)


# -- security and errors --------------------------------------------------------------------------

def test_imaps_and_starttls_and_plaintext_rules(dovecot_server: Dovecot) -> None:
    for options in [{"scheme": "imaps"}, {"tls": "require"}, {"tls": "off", "plaintext_auth": True}]:
        assert run(backend_for(dovecot_server, **options), lambda b: b.stat(())).is_dir
    with pytest.raises(PermissionDenied, match="unencrypted"):
        run(backend_for(dovecot_server, tls="off"), lambda b: b.stat(()))
    account = make_account("m", {"url": f"imaps://alice@127.0.0.1:{dovecot_server.imaps_port}",
                                 "timeout": 10}, where="test")
    with pytest.raises(PermissionDenied, match="certificate"):
        run(imap.create(account, Secret("secret1"), None), lambda b: b.stat(()))


def test_oauth_refusal(dovecot_server: Dovecot) -> None:
    """(A wrong password: tests/contract.)"""
    with pytest.raises(AuthenticationFailed):  # Dovecot here offers no XOAUTH2
        run(backend_for(dovecot_server, auth="xoauth2", token_command="echo tok"),
            lambda b: b.stat(()))


def test_folder_deleted_by_another_client(dovecot_server: Dovecot) -> None:
    folder = unique("Vanish")
    dovecot_server.create_folder(folder)
    dovecot_server.deliver("alice", PLAIN, folder)

    async def scenario(b: imap.ImapBackend) -> None:
        (entry,) = files(await b.list((folder,)))
        with dovecot_server.imap() as conn:
            conn.delete(_quote(folder))
        assert await b.changed(())
        with pytest.raises(NotFound):
            await b.read((folder, entry.name), 0, 100)
        assert folder not in [e.name for e in await b.list(())]
        with pytest.raises(NotFound):
            await b.list((folder,))

    run(backend_for(dovecot_server), scenario)


def test_hostile_subjects_make_safe_names(dovecot_server: Dovecot) -> None:
    folder = unique("Hostile")
    dovecot_server.create_folder(folder)
    subjects = [b"../../etc/passwd", b"a/b\\c: d*?\"<>|", b"bell\x07 and tab\there", b"..", b"",
                b"=?utf-8?b?Li4vLi4v?=", b"x" * 300]
    dovecot_server.append_many("alice", [b"From: a@example.org\r\nSubject: " + s + b"\r\n\r\nx\r\n"
                                         for s in subjects], folder)

    async def scenario(b: imap.ImapBackend) -> None:
        names = [e.name for e in files(await b.list((folder,)))]
        assert len(set(names)) == len(subjects)
        for name in names:
            assert "/" not in name and not re.search(r"[\x00-\x1f]", name) and name not in (".", "..")
            assert len(name.encode()) < 255 and key_of(name) is not None
            assert (await b.stat((folder, name))).name == name

    run(backend_for(dovecot_server), scenario)


def test_idle_reports_new_mail_without_polling(fresh_dovecot: Dovecot) -> None:
    async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
        with trio.fail_after(10):
            while not await condition():
                await trio.sleep(0.02)

    async def scenario(b: imap.ImapBackend) -> None:
        assert b.capabilities.metadata_ttl == imap.IDLE_TTL
        await b.list(())
        assert files(await b.list(("INBOX",))) == []
        watcher = b._watcher
        assert watcher is not None

        async def idling() -> bool:
            return watcher.idling

        await wait_until(idling, "IDLE")
        mark = relay.mark()
        assert not await b.changed(("INBOX",))
        fresh_dovecot.deliver("alice", PLAIN)
        await wait_until(lambda: b.changed(("INBOX",)), "IDLE to report the new message")
        asked = commands(relay, mark)
        assert not [c for c in asked if c.upper().startswith("STATUS")], asked
        assert len(files(await b.list(("INBOX",)))) == 1
        assert not await b.changed(("INBOX",))

    with relaying(fresh_dovecot.host, fresh_dovecot.imap_port) as relay:
        run(through(relay, fresh_dovecot), scenario)


class CuttingProxy(FaultProxy):
    """A byte proxy to Dovecot's plain IMAP port that cuts connections in the middle of a
    server answer: once, after ``cut_after`` more bytes from the server, or, while
    ``cut_each`` is set, every connection after that many bytes of its own."""

    def __init__(self, server: Dovecot) -> None:
        self.server = server
        self.cut_after: int | None = None
        self.cut_each: int | None = None
        self.cuts = 0
        self.from_client = bytearray()  # every command the server was sent, in order
        super().__init__(server.host, server.imap_port)

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
        threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        sent = 0  # from the server on this connection, while cut_each was set
        try:
            while data := src.recv(65536):
                keep = self._keep(len(data), sent) if from_server else None
                if keep is not None:
                    dst.sendall(data[:keep])
                    self.cuts += 1
                    cut(src, dst)
                    return
                if from_server and self.cut_each is not None:
                    sent += len(data)
                if not from_server:
                    self.from_client += data
                dst.sendall(data)
        except OSError:
            pass
        cut(dst)

    def _keep(self, n: int, sent: int) -> int | None:
        """How many of ``n`` more bytes pass before the cut; None: no cut."""
        if self.cut_each is not None and sent + n > self.cut_each:
            return self.cut_each - sent
        if self.cut_after is not None:
            if n >= self.cut_after:
                keep, self.cut_after = self.cut_after, None
                return keep
            self.cut_after -= n
        return None


def test_move_without_the_move_extension(dovecot_server: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server without MOVE: COPY, then flag and UID EXPUNGE only that message."""
    from imapclient import IMAPClient

    original = IMAPClient.has_capability
    monkeypatch.setattr(IMAPClient, "has_capability",
                        lambda self, cap: cap.upper() != "MOVE" and original(self, cap))
    a, z = unique("CopyA"), unique("CopyZ")
    for f in (a, z):
        dovecot_server.create_folder(f)
    uid, other = dovecot_server.append_many("alice", [PLAIN, EIGHTBIT], a)
    with dovecot_server.imap() as conn:
        conn.select(_quote(a))
        conn.uid("STORE", str(other), "+FLAGS", "(\\Deleted)")  # another client's, not expunged

    async def scenario(b: imap.ImapBackend) -> Entry | None:
        entry = next(e for e in files(await b.list((a,))) if e.identity[1] == uid)
        return await b.rename((a, entry.name), (z, entry.name))

    with relaying(dovecot_server.host, dovecot_server.imap_port) as relay:
        moved = run(through(relay, dovecot_server), scenario)
    asked = [c.upper() for c in commands(relay)]
    assert any(c.startswith("UID COPY ") for c in asked), asked
    assert not any(c.startswith(("UID MOVE ", "MOVE ")) for c in asked), asked
    assert moved is not None and server_messages(dovecot_server, z)[moved.identity[1]][0] == PLAIN
    assert list(server_messages(dovecot_server, a)) == [other]


def test_a_big_fresh_listing_comes_in_parts_and_whole(dovecot_server: Dovecot) -> None:
    """A folder listed afresh hands its entries over while they arrive (so ``ls`` can start
    before the FETCH ends); the parts hold exactly the whole listing, subfolders first."""
    folder = unique("Parts")
    count = imap.listing.PARTS_FROM + imap.listing.LIST_PART // 2
    dovecot_server.create_folder(folder)  # through IMAP: Dovecot's folder list knows it
    dovecot_server.create_folder(f"{folder}/Sub")
    dovecot_server.write_maildir("alice", folder, (
        f"From: a@example.org\r\nSubject: part {i}\r\n\r\nbody {i}\r\n".encode() for i in range(count)))

    async def scenario(b: imap.ImapBackend) -> None:
        parts: list[list[Entry]] = []
        whole = await b.list_in_parts((folder,), parts.append)
        assert [len(p) for p in parts] == [251, 500, 1000, 750] and parts[0][0] == Entry("Sub", True)
        streamed = [e for part in parts for e in part]
        assert sorted(e.name for e in streamed) == sorted(e.name for e in whole)
        assert len({e.name for e in whole}) == count + 1
        again: list[list[Entry]] = []  # known now: only what changed is fetched, no parts
        assert await b.list_in_parts((folder,), again.append) == whole and again == []
        assert gc.isenabled()  # paused while the entries were made, not after

    run(backend_for(dovecot_server, decoded_view=False), scenario)


def test_the_collector_pause_nests_and_always_ends() -> None:
    with imap.parse._collector_paused():
        with pytest.raises(ValueError):
            with imap.parse._collector_paused():
                raise ValueError("a listing that failed")
        assert not gc.isenabled()  # the outer listing still runs
    assert gc.isenabled()
