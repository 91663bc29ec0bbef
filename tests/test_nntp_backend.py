"""The NNTP backend against a real INN 2.7 (tests/servers/inn.py), without FUSE."""
from __future__ import annotations

import dataclasses
import errno
import logging
import socket
import tempfile
import threading
from typing import Any, TypeVar

import pytest

from fsmount.backends import nntp
from fsmount.backends.base import Entry
from fsmount.backends.mailnames import key_of
from fsmount.config import make_account
from fsmount.credentials import Secret
from fsmount.errors import (
    AlreadyExists, InvalidArgument, NotFound, NotPermitted, PermissionDenied, ReadOnly, SizeMismatch,
    TooLarge,
)
from tests.faultproxy import FaultProxy, Relay, cut, relay, relaying
from tests.servers.inn import HOST, USERS, InnServer, inn, inn_without_tls  # noqa: F401  (fixtures)
from tests.backend_support import remove_spools, run, spool  # noqa: F401  (autouse fixture)

T = TypeVar("T")


def backend_for(server: InnServer | None, *, user: str | None = "alice", port: int | None = None,
                scheme: str = "nntp", password: str | None = None, **options: Any) -> nntp.NntpBackend:
    who = f"{user}@" if user else ""
    if port is None:
        assert server is not None
        port = server.tls_port if scheme == "nntps" else server.port
    table = {"url": f"{scheme}://{who}127.0.0.1:{port}", "timeout": 30, "poll_interval": 60.0}
    if server is not None:
        table["ca_file"] = str(server.ca)
    table.update(options)
    account = make_account("news", table, where="test")
    secret = Secret(password if password is not None else USERS.get(user or "", None))
    return nntp.create(account, secret, None)


def through(relay: Relay, **options: Any) -> nntp.NntpBackend:
    """A backend whose commands the relay records: in clear, so that they can be read."""
    return backend_for(None, port=relay.port, tls="off", plaintext_auth=True, **options)


def names(entries: list[Entry]) -> list[str]:
    return [e.name for e in entries]


ALL_GROUPS = ["comp.lang", "comp.lang.c", "comp.lang.python", "de.comp.lang.python.misc",
              "local.moderated", "local.test"]


# -- wildmat (no server) -------------------------------------------------------------------


@pytest.mark.parametrize("patterns, name, expected", [
    (["*"], "comp.lang.python", True),
    (["comp.*"], "comp.lang.python", True),
    (["comp.*"], "de.comp.lang", False),
    (["comp.*", "!comp.lang.c"], "comp.lang.c", False),
    (["comp.*,!comp.lang.c"], "comp.lang.c", False),
    (["!comp.lang.c", "comp.*"], "comp.lang.c", True),  # the last match decides
    (["comp.lang.?"], "comp.lang.c", True),
    (["comp.lang.?"], "comp.lang.cc", False),
    (["comp.lang.[a-c]*"], "comp.lang.c", True),
    (["comp.lang.[^a-c]*"], "comp.lang.c", False),
    (["comp.lang.[^a-c]*"], "comp.lang.python", True),
    (["local.test"], "local.tests", False),
])
def test_wildmat(patterns: list[str], name: str, expected: bool) -> None:
    assert nntp.Wildmat(patterns).matches(name) is expected


def test_prepare_article_adds_headers_and_keeps_body() -> None:
    raw = b"From: a@b.example\nSubject: x\n\n.leading dot\r\nline2\n"
    art = nntp.prepare_article(raw, "local.test", "example.org")
    assert art.lines[:2] == [b"From: a@b.example", b"Subject: x"]
    assert b"Newsgroups: local.test" in art.lines
    assert b"Message-ID: " + art.message_id.encode() in art.lines
    assert art.lines[-3:] == [b"", b".leading dot", b"line2"]
    with pytest.raises(InvalidArgument, match="does not include local.test"):
        nntp.prepare_article(b"Newsgroups: comp.lang.c\nSubject: x\n\nbody\n", "local.test", "x")
    ok = nntp.prepare_article(b"Newsgroups: comp.lang.c, local.test\nMessage-ID: <a@b>\n\nb\n",
                              "local.test", "x")
    assert ok.message_id == "<a@b>"
    with pytest.raises(InvalidArgument):
        nntp.prepare_article(b"just some text\n", "local.test", "x")


def test_read_article_unstuffs_and_keeps_long_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(nntp, "LINE_LIMIT", 16)  # force lines to arrive in pieces
    long = b"y" * 40 + b"." * 3
    wire = (b"220 1 <a@b> article\r\nSubject: x\r\n\r\n..dot\r\n" + long + b"\r\n"
            b"bare lf\n" + b"z" * 15 + b"\r\n.\r\n430 no such article\r\n")
    f, out = io.BytesIO(wire), io.BytesIO()
    size = nntp.read_article(f, out)
    assert out.getvalue() == b"Subject: x\r\n\r\n.dot\r\n" + long + b"\r\nbare lf\r\n" + b"z" * 15 + b"\r\n"
    assert size == (len(out.getvalue()), 1)  # one dot unstuffed
    assert nntp.read_article(f, None) is None  # the next pipelined answer
    with pytest.raises(EOFError):
        nntp.read_article(io.BytesIO(b"220 ok\r\nbody\r\n"), None)


# -- groups --------------------------------------------------------------------------------


def test_lists_groups_flat_without_control_and_junk(inn: InnServer) -> None:
    async def scenario(b: nntp.NntpBackend) -> None:
        root = await b.list(())
        assert names(root) == ALL_GROUPS
        assert all(e.is_dir for e in root)
        assert (await b.stat(())).is_dir
        assert (await b.stat(("comp.lang.python",))).is_dir
        with pytest.raises(NotFound):
            await b.stat(("control",))
        with pytest.raises(NotFound):
            await b.list(("junk",))

    run(backend_for(inn, scheme="nntps"), scenario)


def test_wildmat_filters_groups_on_the_server(inn: InnServer) -> None:
    with relaying(HOST, inn.port) as relay:
        b = through(relay, groups=["comp.*", "!comp.lang.c", "local.test"])
        assert names(run(b, lambda b: b.list(()))) == ["comp.lang", "comp.lang.python", "local.test"]
    assert relay.commands("LIST") == ["LIST ACTIVE comp.*,!comp.lang.c,local.test"]


def test_hierarchy_mode(inn: InnServer) -> None:
    inn.post("comp.lang", "About languages")
    inn.post("comp.lang.python", "About Python")

    async def scenario(b: nntp.NntpBackend) -> None:
        assert names(await b.list(())) == ["comp", "de", "local"]
        assert names(await b.list(("comp",))) == ["lang"]  # only a parent: no articles
        lang = await b.list(("comp", "lang"))  # a group and a parent at once
        assert [e.name for e in lang if e.is_dir] == ["c", "python"]
        files = [e for e in lang if not e.is_dir]
        assert len(files) == 1 and "About languages" in files[0].name
        python = await b.list(("comp", "lang", "python"))
        assert len(python) == 1 and "About Python" in python[0].name
        assert names(await b.list(("de", "comp", "lang", "python", "misc"))) == []
        assert (await b.stat(("comp", "lang", files[0].name))).identity == files[0].identity
        with pytest.raises(NotFound):
            await b.stat(("comp", "lang", "java"))
        with pytest.raises(ReadOnly, match="not a newsgroup"):
            await b.commit(("comp", "new.eml"), spool(b"Subject: x\n\nbody\n"), None)

    run(backend_for(inn, scheme="nntps", hierarchy=True), scenario)


def test_new_group_appears_after_poll_interval(inn: InnServer) -> None:
    async def scenario(b: nntp.NntpBackend) -> None:
        assert "local.new" not in names(await b.list(()))
        assert not await b.changed(())  # the cached list is recent
        inn.new_group("local.new")
        b.poll_interval = 0
        assert await b.changed(())
        assert "local.new" in names(await b.list(()))

    run(backend_for(inn, scheme="nntps"), scenario)


# -- articles ------------------------------------------------------------------------------


def test_article_bytes_match_the_server(inn: InnServer) -> None:
    body = "First line\n.starts with a dot\n..two dots\n\nÜmlauts: grüße\n" + "x" * 5000 + "\n"
    mid = inn.post("local.test", "Grüße aus Köln", body)
    stored = inn.article(mid)
    assert b"\r\n.starts with a dot\r\n..two dots\r\n" in stored

    async def scenario(b: nntp.NntpBackend) -> None:
        [entry] = await b.list(("local.test",))
        assert key_of(entry.name) == "1"
        assert "Grüße aus Köln" in entry.name and entry.name.endswith("[1].eml")
        assert entry.identity == (mid,) and not entry.size_exact
        assert abs(entry.size - len(stored)) < 64 and entry.mtime
        with tempfile.NamedTemporaryFile() as out:
            exact = await b.download(("local.test", entry.name), out.name)
            with open(out.name, "rb") as f:
                data = f.read()
        assert data == stored
        assert exact.size == len(stored) and exact.size_exact and exact.identity == (mid,)
        with pytest.raises(NotFound):
            await b.stat(("local.test", "2020-01-01 0000 Nope [99].eml"))

    run(backend_for(inn, scheme="nntps"), scenario)


def test_download_many_pipelines_and_reports_each_item(
        inn: InnServer) -> None:
    """A scan's batch: the ARTICLEs in one write; an article the server lost is NotFound and
    one too big to hold is TooLarge, and the answers after them still line up."""
    mids = [inn.post("local.test", f"Batch {i}", f"..dotted {i}\n" + "y" * (3000 if i == 1 else 10) + "\n")
            for i in range(4)]

    async def scenario(b: nntp.NntpBackend) -> None:
        entries = await b.list(("local.test",))
        assert [e.identity[0] for e in entries] == mids
        state = b._states["local.test"]
        lost = min(state.entries)  # as if expired on the server
        state.entries[lost] = dataclasses.replace(state.entries[lost], identity=("<gone@example.org>",))
        mark = relay.mark()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(nntp, "BATCH_ITEM_LIMIT", 2000)
            got = await b.download_many([("local.test", e.name) for e in entries] + [("local.test", "x.eml")])
        assert isinstance(got[0], NotFound) and isinstance(got[1], TooLarge)
        assert got[2:4] == [inn.article(mids[2]), inn.article(mids[3])]
        assert isinstance(got[4], NotFound)
        assert relay.commands("ARTICLE", mark) == ["ARTICLE <gone@example.org>", *(
            f"ARTICLE {e.identity[0]}" for e in entries[1:])]
        assert relay.batches("ARTICLE", mark) == [4]  # all four before the first answer

    with relaying(HOST, inn.port) as relay:
        run(through(relay), scenario)


def test_new_articles_appear_and_changed_is_cheap(inn: InnServer) -> None:
    inn.post("comp.lang.python", "one")

    async def scenario(b: nntp.NntpBackend) -> None:
        assert len(await b.list(("comp.lang.python",))) == 1
        assert not await b.changed(("comp.lang.python",))
        inn.post("comp.lang.python", "two")
        assert await b.changed(("comp.lang.python",))
        listed = await b.list(("comp.lang.python",))
        assert [key_of(n) for n in names(listed)] == ["1", "2"]
        assert not await b.changed(("comp.lang.python",))

    run(backend_for(inn, scheme="nntps"), scenario)


def test_only_the_newest_articles_in_batches(inn: InnServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nntp, "BATCH", 3)
    inn.post_many("local.test", 12)

    async def scenario(b: nntp.NntpBackend) -> None:
        listed = await b.list(("local.test",))
        assert [key_of(n) for n in names(listed)] == [str(n) for n in range(6, 13)]
        assert relay.commands("OVER")[-3:] == ["OVER 6-8", "OVER 9-11", "OVER 12-12"]
        mark = relay.mark()
        inn.post("local.test", "thirteen")
        listed = await b.list(("local.test",))  # only the new one is fetched; 6 falls out
        assert [key_of(n) for n in names(listed)] == [str(n) for n in range(7, 14)]
        assert relay.commands("OVER", mark) == ["OVER 13-13"]

    with relaying(HOST, inn.port) as relay:
        run(through(relay, max_articles=7), scenario)


# -- posting -------------------------------------------------------------------------------


ARTICLE = b"From: Alice <alice@example.org>\nSubject: Posted by fsmount\n\nHello group.\n.dot\n"


def test_commit_posts_to_the_group(inn: InnServer) -> None:
    async def scenario(b: nntp.NntpBackend) -> Entry:
        await b.list(("local.test",))
        entry = await b.commit(("local.test", "whatever.eml"), spool(ARTICLE), None)
        assert key_of(entry.name) == "1" and "Posted by fsmount" in entry.name
        assert names(await b.list(("local.test",))) == [entry.name]
        return entry

    entry = run(backend_for(inn, scheme="nntps"), scenario)
    stored = inn.article(entry.identity[0])
    assert b"\r\nNewsgroups: local.test\r\n" in stored
    assert stored.endswith(b"\r\n\r\nHello group.\r\n.dot\r\n")


def test_commit_checks_newsgroups_and_posts_nothing_on_mismatch(inn: InnServer) -> None:
    article = b"Newsgroups: comp.lang.c\n" + ARTICLE

    async def scenario(b: nntp.NntpBackend) -> None:
        with pytest.raises(InvalidArgument, match="does not include local.test"):
            await b.commit(("local.test", "x.eml"), spool(article), None)
        crossposted = b"Newsgroups: comp.lang.c,local.test\n" + ARTICLE
        await b.commit(("local.test", "y.eml"), spool(crossposted), None)
        with pytest.raises(NotPermitted):
            await b.commit(("local.test", "y.eml"), spool(ARTICLE), Entry("y.eml", False))
        with pytest.raises(ReadOnly):
            await b.commit(("top.eml",), spool(ARTICLE), None)

    run(backend_for(inn, scheme="nntps"), scenario)
    assert inn.group_high("local.test") == 1 and inn.group_high("comp.lang.c") == 1


def test_anonymous_post_is_refused_with_the_servers_reason(
        inn: InnServer, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(b: nntp.NntpBackend) -> None:
        with pytest.raises(PermissionDenied, match="480"):  # INN: "480 Posting not allowed"
            await b.commit(("local.test", "x.eml"), spool(ARTICLE), None)

    run(backend_for(inn, user=None, scheme="nntps"), scenario)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "refused" in warnings[0].getMessage()
    assert inn.group_high("local.test") == 0


def test_moderated_group_sends_to_the_moderator(inn: InnServer) -> None:
    async def scenario(b: nntp.NntpBackend) -> Entry:
        entry = await b.commit(("local.moderated", "x.eml"), spool(ARTICLE), None)
        assert "Posted by fsmount" in entry.name and not entry.size_exact
        assert await b.list(("local.moderated",)) == []  # not approved yet
        return entry

    entry = run(backend_for(inn, scheme="nntps"), scenario)
    mail = inn.moderator_mail()
    assert "local-moderated@moderators.test.invalid" in mail and entry.identity[0] in mail
    assert inn.group_high("local.moderated") == 0


def test_post_returns_the_message_id(inn: InnServer) -> None:
    article = b"Newsgroups: comp.lang.python,local.test\n" + ARTICLE
    mid = run(backend_for(inn, scheme="nntps"), lambda b: b.post(article))
    assert mid.startswith("<") and mid.endswith(">")
    assert b"Hello group." in inn.article(mid)
    assert inn.group_high("comp.lang.python") == 1 and inn.group_high("local.test") == 1


def test_duplicate_message_id_is_refused(inn: InnServer) -> None:
    mid = inn.post("local.test", "first")
    article = f"Message-ID: {mid}\n".encode() + ARTICLE

    async def scenario(b: nntp.NntpBackend) -> None:
        with pytest.raises(AlreadyExists, match="435"):  # EEXIST: cp of an article already posted
            await b.commit(("local.test", "x.eml"), spool(article), None)

    run(backend_for(inn, scheme="nntps"), scenario)


# -- connections and errors ----------------------------------------------------------------


def test_starttls_then_authinfo(inn: InnServer) -> None:
    """As the wire shows it: on every connection STARTTLS is the last command in clear, then
    the client speaks only TLS; AUTHINFO and the password never pass in clear. That alice
    did log in, inside TLS: INN takes her post, which it refuses anonymously."""
    article = b"Newsgroups: local.test\n" + ARTICLE

    async def scenario(b: nntp.NntpBackend) -> str:
        assert names(await b.list(())) == ALL_GROUPS
        return await b.post(article)

    with relaying(HOST, inn.port) as relay:
        mid = run(backend_for(inn, port=relay.port, tls="require"), scenario)
    connections = list(range(1, relay.connections + 1))
    assert connections and sorted(relay.encrypted) == connections  # each one went on in TLS
    for c in connections:
        clear = [line.word for line in relay.sent if line.connection == c]
        assert clear[-1:] == ["STARTTLS"] and "AUTHINFO" not in clear, clear
    assert b"AUTHINFO" not in relay.from_client.upper()
    assert USERS["alice"].encode() not in relay.from_client
    assert b"Hello group." in inn.article(mid) and inn.group_high("local.test") == 1


def test_anonymous_plain_connection(inn: InnServer) -> None:
    assert names(run(backend_for(inn, user=None, tls="off"), lambda b: b.list(()))) == ALL_GROUPS


def test_no_password_without_encryption(inn: InnServer) -> None:
    with pytest.raises(PermissionDenied, match="unencrypted"):
        run(backend_for(inn, tls="off"), lambda b: b.list(()))
    allowed = backend_for(inn, tls="off", plaintext_auth=True)
    assert names(run(allowed, lambda b: b.list(()))) == ALL_GROUPS


def test_starttls_failing_sends_no_password(inn_without_tls: InnServer) -> None:
    """INN without a certificate offers STARTTLS and answers 580: never fall back silently."""
    for tls in ("require", "prefer"):
        with pytest.raises(PermissionDenied, match="STARTTLS failed: 580"):
            run(backend_for(inn_without_tls, tls=tls), lambda b: b.list(()))
    assert names(run(backend_for(inn_without_tls, tls="off", plaintext_auth=True),
                     lambda b: b.list(()))) == ALL_GROUPS


def test_starttls_not_offered() -> None:
    class NoStartTls:
        def getcapabilities(self) -> dict[str, list[str]]:
            return {"VERSION": ["2"], "READER": []}

    for tls, user, expected in (("require", "alice", "does not offer STARTTLS"),
                                ("prefer", "alice", "unencrypted")):
        b = backend_for(None, user=user, port=119, tls=tls)
        with pytest.raises(PermissionDenied, match=expected):
            encrypted = b._starttls(NoStartTls())  # type: ignore[arg-type]
            b._login(NoStartTls(), encrypted)  # type: ignore[arg-type]
    assert backend_for(None, user=None, port=119, tls="prefer")._starttls(NoStartTls()) is False  # type: ignore[arg-type]


def test_untrusted_certificate_fails(inn: InnServer) -> None:
    b = backend_for(None, scheme="nntps", port=inn.tls_port)  # no ca_file: system CAs only
    with pytest.raises(PermissionDenied, match="certificate"):
        run(b, lambda b: b.list(()))
    unverified = backend_for(None, scheme="nntps", port=inn.tls_port, tls_verify=False)
    assert names(run(unverified, lambda b: b.list(()))) == ALL_GROUPS


def test_dropped_connections_are_replaced_and_posts_not_doubled(inn: InnServer) -> None:
    inn.post("local.test", "before")

    async def scenario(b: nntp.NntpBackend) -> None:
        [entry] = await b.list(("local.test",))
        assert inn.drop_connections() >= 1
        assert len(await b.list(("local.test",))) == 1  # reconnected transparently
        assert inn.drop_connections() >= 1
        with tempfile.NamedTemporaryFile() as out:
            assert (await b.download(("local.test", entry.name), out.name)).size
        assert inn.drop_connections() >= 1
        posted = await b.commit(("local.test", "new.eml"), spool(ARTICLE), None)
        assert key_of(posted.name) == "2"

    run(backend_for(inn, scheme="nntps"), scenario)
    assert inn.group_high("local.test") == 2


def test_server_killed_mid_session_is_transient(inn: InnServer) -> None:
    from fsmount.errors import Transient

    async def scenario(b: nntp.NntpBackend) -> None:
        assert await b.list(())
        inn.stop()
        with pytest.raises(Transient):
            await b.list(("local.test",))

    # a loaded machine may take seconds to greet; once INN is gone, refused connections are
    # retried for min(timeout, 3 s)
    run(backend_for(inn, scheme="nntps", timeout=10), scenario)


# -- articles cut short ------------------------------------------------------------------


class ShortArticleProxy(FaultProxy):
    """A news server that cuts articles short: of every ARTICLE answer (``220``) only the first
    ``keep`` lines are relayed, then a proper ``.`` line, while OVER's :bytes stays what the
    real server says. ``keep = None`` relays everything; ``cut`` counts the answers cut."""

    def __init__(self, server: InnServer, keep: int | None = 8) -> None:
        self.keep = keep
        self.cut = 0
        super().__init__("127.0.0.1", server.port)

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=relay, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._shorten, args=(upstream, client), daemon=True).start()

    def _shorten(self, src: socket.socket, dst: socket.socket) -> None:
        kept: int | None = None  # lines of the ARTICLE answer relayed so far
        dropped = False
        try:
            for line in src.makefile("rb"):
                if kept is not None:
                    if line == b".\r\n":
                        kept = None
                        self.cut += dropped
                    elif self.keep is not None and kept >= self.keep:
                        dropped = True
                        continue
                    else:
                        kept += 1
                elif line.startswith(b"220 "):
                    kept, dropped = 0, False
                dst.sendall(line)
        except OSError:
            pass
        cut(dst)


def test_an_article_cut_short_is_an_error_never_a_short_file(inn: InnServer) -> None:
    """An ARTICLE answer ended in good form but short of OVER's :bytes is SizeMismatch (EIO),
    alone or in a batch; whole articles (one starting its body with a dot-stuffed line, which
    INN counts one byte more) still read whole."""
    cut_one = inn.post("local.test", "Long", "".join(f"line {i:04d} of the body\n" for i in range(200)))
    dotted = inn.post("local.test", "Dotted", ".first line dotted\n..two\n.\nend\n")
    proxy = ShortArticleProxy(inn)

    async def scenario(b: nntp.NntpBackend) -> None:
        entries = await b.list(("local.test",))
        paths = [("local.test", e.name) for e in entries]
        with tempfile.NamedTemporaryFile() as out:
            with pytest.raises(SizeMismatch) as failed:
                await b.download(paths[0], out.name)
            assert failed.value.errno == errno.EIO
            assert proxy.cut == 1
            got = await b.download_many(paths)
            assert isinstance(got[0], SizeMismatch)
            proxy.keep = None
            assert await b.download_many(paths) == [inn.article(cut_one), inn.article(dotted)]
            for path, mid in zip(paths, [cut_one, dotted]):
                exact = await b.download(path, out.name)
                assert open(out.name, "rb").read() == inn.article(mid)
                assert exact.size == len(inn.article(mid))

    try:
        run(backend_for(None, port=proxy.port, tls="off", plaintext_auth=True), scenario)
    finally:
        proxy.close()
