"""The services of the contract suite: every real server we claim to work with, each reached
one way (plain, STARTTLS/explicit TLS, implicit TLS), behind one small interface.

A ``Service`` says how to configure fsmount for it (an account TOML), what it can do
(``caps``, the table the tests skip by), and makes ``Area``s: a place of a test's own on the
server (an FTP folder, an IMAP folder, a newsgroup, the POP3 maildrop emptied first, the
outbox), where the test puts objects and reads back what the SERVER holds, never through
fsmount.

Capabilities (a test needs all it names):

- ``login``: logs in with a user and password (not anonymous);
- ``checked_at_mount``: the mount connects and logs in before it is ready (the outbox only
  queues, and meets its server when it sends);
- ``cleartext``: the service's port speaks without TLS unless asked (a password could go in
  clear);
- ``lists``: what the server holds is listed in the mount, one file per object;
- ``same_names``: file names are the server's own names (FTP), not made from headers;
- ``writes``: ``cp`` into the area reaches the server;
- ``removes``: ``rm`` removes the object from the server;
- ``mkdir``: ``mkdir`` makes a folder on the server;
- ``inband_data``: objects travel on the connection the account's URL names (not on FTP's
  separate data connections), so a relay there can cut one in the middle.
"""
from __future__ import annotations

import os
import poplib
import re
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from imapclient import imap_utf7

from tests.servers.dovecot import Dovecot, _quote
from tests.servers.ftp import FtpServer, Vsftpd
from tests.servers.inn import InnServer
from tests.servers.proftpd import ProFtpd
from tests.servers.smtp import SmtpServer

ACCOUNT = "acct"


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def message(subject: str, body: str, *, newsgroups: str | None = None) -> bytes:
    """A plain RFC 5322 message, CRLF lines (what IMAP, POP3, NNTP and SMTP all carry)."""
    lines = ["From: Alice <alice@example.org>", "To: bob@example.org",
             *([f"Newsgroups: {newsgroups}"] if newsgroups else []),
             f"Subject: {subject}", "Date: Mon, 06 May 2024 10:00:00 +0000",
             f"Message-ID: <{uuid.uuid4().hex}@contract.test>", "", *body.split("\n")]
    return "\r\n".join(lines).encode() + b"\r\n"


class Area(ABC):
    """A place of one test's own on the server; ``rel`` is its path in the mount."""

    rel: tuple[str, ...]

    @abstractmethod
    def put(self, hint: str, payload: str) -> bytes:
        """Put one object on the server, named (FTP) or titled (mail, news) ``hint``;
        returns the exact bytes the server now holds for it."""

    def put_many(self, items: list[tuple[str, str]]) -> list[bytes]:
        """``put`` of each (hint, payload)."""
        return [self.put(hint, payload) for hint, payload in items]

    @abstractmethod
    def held(self) -> list[bytes]:
        """The bytes of every object the server holds here, as its own client reads them."""

    def names(self) -> list[str]:
        """The server's own names of the objects (services with ``same_names``)."""
        raise NotImplementedError

    def folders(self) -> list[str]:
        """The names of the folders in the area (services with ``mkdir``)."""
        raise NotImplementedError

    def can_hold(self, hint: str) -> bool:
        """Whether the server can hold an object named or titled ``hint`` at all."""
        return True

    def writable(self, subject: str, body: str) -> bytes:
        """Bytes that ``cp`` into this area makes into one object (a message, an article)."""
        return message(subject, body)

    def holds_written(self, data: bytes) -> bool:
        """Whether the server holds what ``cp`` of ``data`` into the area should make."""
        return data in self.held()


@dataclass
class Service(ABC):
    id: str
    caps: frozenset[str]
    host: str = "127.0.0.1"
    port: int = 0  # the port the account's URL names (a relay may stand in front of it)
    password: str | None = None
    plain_port: int = 0  # the same server without TLS, for services with ``cleartext``
    ca: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @abstractmethod
    def url(self, port: int) -> str: ...

    def account(self, *, port: int | None = None, password: str | None = None,
                url: str | None = None, **options: object) -> str:
        """The config file for one account named ``acct``; options override (None drops)."""
        table: dict[str, object] = {"url": url or self.url(port or self.port)}
        if self.ca is not None:
            table["ca_file"] = str(self.ca)
        if self.password is not None:
            table["password"] = password if password is not None else self.password
        table.update({"timeout": 15, **self.extra, **options})  # a loaded machine greets slowly
        lines = [f"[accounts.{ACCOUNT}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()
                                              if v is not None]
        return "\n".join(lines) + "\n"

    @abstractmethod
    def cleartext_url(self, port: int) -> str:
        """A URL of the plain port, for ``tls = "off"``."""

    stock: list[Area] = field(default_factory=list)

    @abstractmethod
    def make_area(self) -> Area: ...

    def new_area(self) -> Area:
        return self.stock.pop() if self.stock else self.make_area()

    def stock_areas(self, count: int) -> None:
        """Make areas ahead, for a mount about to start: its listing of their parent is
        trusted for a moment (``metadata_ttl``, IMAP's folder list, NNTP's group list), so
        an area made later would not show at once."""
        self.stock += [self.make_area() for _ in range(count)]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- FTP -----------------------------------------------------------------------------------


class FtpArea(Area):
    """A folder of its own under the server's root, written and read on the server's disk
    (what pyftpdlib, ProFTPD and vsftpd serve)."""

    def can_hold(self, hint: str) -> bool:
        return hint not in ("", ".", "..") and "/" not in hint and len(hint.encode()) <= 255

    def __init__(self, root: Path) -> None:
        name = unique("t")
        self.dir = root / name
        self.dir.mkdir()
        os.chmod(self.dir, 0o755)
        self.rel = (name,)

    def put(self, hint: str, payload: str) -> bytes:
        data = payload.encode()
        (self.dir / hint).write_bytes(data)
        return data

    def held(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.dir.iterdir()) if p.is_file()]

    def names(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir() if p.is_file())

    def folders(self) -> list[str]:
        return sorted(p.name for p in self.dir.iterdir() if p.is_dir())

    def holds_written(self, data: bytes) -> bool:
        return data in self.held()


@dataclass
class FtpService(Service):
    scheme: str = "ftp"
    root: Path = Path("/nonexistent")
    user: str | None = "alice"

    def url(self, port: int) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"{self.scheme}://{who}{self.host}:{port}"

    def cleartext_url(self, port: int) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"ftp://{who}{self.host}:{port}"

    def make_area(self) -> Area:
        return FtpArea(self.root)


def pyftpdlib_service(server: FtpServer, scheme: str) -> FtpService:
    caps = {"login", "checked_at_mount", "lists", "same_names", "writes", "removes", "mkdir"}
    port = {"ftp": server.port, "ftpes": server.tls_port, "ftps": server.implicit_port}[scheme]
    extra: dict[str, object] = {"plaintext_auth": True, "tls": "off"} if scheme == "ftp" else {}
    return FtpService(f"pyftpdlib-{scheme}", frozenset(caps | ({"cleartext"} if scheme == "ftp" else set())),
                      port=port, password="secret", plain_port=server.port, ca=server.ca,
                      extra=extra, scheme=scheme, root=server.root)


def proftpd_service(server: ProFtpd, scheme: str) -> FtpService:
    caps = {"login", "checked_at_mount", "lists", "same_names", "writes", "removes", "mkdir"}
    port = server.implicit_port if scheme == "ftps" else server.port
    extra: dict[str, object] = {"plaintext_auth": True, "tls": "off"} if scheme == "ftp" else {}
    return FtpService(f"proftpd-{scheme}", frozenset(caps | ({"cleartext"} if scheme == "ftp" else set())),
                      port=port, password="secret", plain_port=server.port, ca=server.ca,
                      extra=extra, scheme=scheme, root=server.root)


def vsftpd_service(server: Vsftpd) -> FtpService:
    """Anonymous and read-only, as vsftpd is mostly run; LIST only (no MLSD)."""
    scheme = "ftpes" if server.tls else "ftp"
    return FtpService(f"vsftpd-{scheme}", frozenset({"checked_at_mount", "lists", "same_names"}),
                      port=server.port, ca=server.ca, scheme=scheme, root=server.root, user=None)


# -- IMAP ------------------------------------------------------------------------------------


class ImapArea(Area):
    def __init__(self, server: Dovecot, user: str) -> None:
        self.server, self.user = server, user
        self.folder = unique("C")
        server.create_folder(self.folder, user)
        self.rel = (self.folder,)

    def put(self, hint: str, payload: str) -> bytes:
        data = message(hint, payload)
        self.server.deliver(self.user, data, self.folder)
        return data

    def held(self) -> list[bytes]:
        with self.server.imap(self.user) as conn:
            typ, _ = conn.select(_quote(self.folder), readonly=True)
            assert typ == "OK"
            typ, data = conn.uid("FETCH", "1:*", "(BODY.PEEK[])")
            return [item[1] for item in data if isinstance(item, tuple)]

    def folders(self) -> list[str]:
        with self.server.imap(self.user) as conn:
            typ, data = conn.list('""', _quote(self.folder + "/%"))
            assert typ == "OK"
            names = [imap_utf7.decode(re.search(rb'"((?:[^"\\]|\\.)*)"$|(\S+)$', line).group(1) or b"")  # type: ignore[union-attr]
                     for line in data if line]
            return [n.split("/")[-1] for n in names]


@dataclass
class ImapService(Service):
    server: Dovecot | None = None
    scheme: str = "imap"
    user: str = "alice"

    def url(self, port: int) -> str:
        return f"{self.scheme}://{self.user}@{self.host}:{port}"

    def cleartext_url(self, port: int) -> str:
        return f"imap://{self.user}@{self.host}:{port}"

    def make_area(self) -> Area:
        assert self.server is not None
        return ImapArea(self.server, self.user)


def imap_service(server: Dovecot, scheme: str) -> ImapService:
    caps = {"login", "checked_at_mount", "lists", "inband_data", "writes", "removes", "mkdir"}
    if scheme == "imap":
        caps.add("cleartext")
    return ImapService(f"dovecot-{scheme}", frozenset(caps),
                       port=server.imaps_port if scheme == "imaps" else server.imap_port,
                       password=server.users["alice"], plain_port=server.imap_port, ca=server.ca,
                       extra={"tls": "require"} if scheme == "imap" else {},
                       server=server, scheme=scheme)


# -- POP3 ------------------------------------------------------------------------------------


class Pop3Area(Area):
    """The one maildrop there is (bob's, which no other service touches), emptied first."""

    rel = ()

    def __init__(self, server: Dovecot, user: str) -> None:
        self.server, self.user = server, user
        with self._direct() as conn:
            for n in range(1, conn.stat()[0] + 1):
                conn.dele(n)

    def _direct(self) -> poplib.POP3:
        conn = poplib.POP3(self.server.host, self.server.pop3_port, timeout=10)
        conn.stls(self.server.ssl_context())
        conn.user(self.user)
        conn.pass_(self.server.users[self.user])
        return _Quitting(conn)

    def put(self, hint: str, payload: str) -> bytes:
        data = message(hint, payload)
        self.server.deliver(self.user, data)
        return data

    def held(self) -> list[bytes]:
        with self._direct() as conn:
            return [b"\r\n".join(conn.retr(n)[1]) + b"\r\n" for n in range(1, conn.stat()[0] + 1)]


class _Quitting:
    """A poplib session that QUITs when the ``with`` ends."""

    def __init__(self, conn: poplib.POP3) -> None:
        self.conn = conn

    def __enter__(self) -> poplib.POP3:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.quit()
        finally:
            self.conn.close()


@dataclass
class Pop3Service(Service):
    server: Dovecot | None = None
    scheme: str = "pop3"
    user: str = "bob"

    def url(self, port: int) -> str:
        return f"{self.scheme}://{self.user}@{self.host}:{port}"

    def cleartext_url(self, port: int) -> str:
        return f"pop3://{self.user}@{self.host}:{port}"

    def make_area(self) -> Area:
        assert self.server is not None
        return Pop3Area(self.server, self.user)

    def stock_areas(self, count: int) -> None:
        """The maildrop is the one area, emptied when a test takes it."""


def pop3_service(server: Dovecot, scheme: str) -> Pop3Service:
    caps = {"login", "checked_at_mount", "lists", "inband_data", "removes"}
    if scheme == "pop3":
        caps.add("cleartext")
    return Pop3Service(f"dovecot-{scheme}", frozenset(caps),
                       port=server.pop3s_port if scheme == "pop3s" else server.pop3_port,
                       password=server.users["bob"], plain_port=server.pop3_port, ca=server.ca,
                       extra={"tls": "require"} if scheme == "pop3" else {},
                       server=server, scheme=scheme)


# -- NNTP ------------------------------------------------------------------------------------


class NntpArea(Area):
    """A newsgroup of its own (``ctlinnd newgroup``), with one article in it from the start:
    INN's nnrpd does not see the first article of a group that was empty when its session
    opened the overview (tradindexed adds the group to its index only then), whoever asks."""

    def __init__(self, server: InnServer) -> None:
        self.server = server
        self.group = f"contract.{unique('g').replace('-', '')}"
        server.new_group(self.group)
        server.post(self.group, "Seed", "The group's first article.\n")
        self.rel = (self.group,)

    def can_hold(self, hint: str) -> bool:
        """INN refuses an empty Subject and control characters in one (441)."""
        return bool(hint) and not re.search(r"[\x00-\x1f\x7f]", hint)

    def put(self, hint: str, payload: str) -> bytes:
        return self.put_many([(hint, payload)])[0]

    def put_many(self, items: list[tuple[str, str]]) -> list[bytes]:
        """Over one connection: each of INN's costs a new nnrpd."""
        with self.server.client() as c:
            mids = [self.server.post(self.group, hint, payload, conn=c) for hint, payload in items]
            return [b"".join(line + b"\r\n" for line in c.article(mid)[1].lines) for mid in mids]

    def held(self) -> list[bytes]:
        with self.server.client() as c:
            _, count, first, last, _ = c.group(self.group)
            if not count:
                return []
            return [b"".join(line + b"\r\n" for line in c.article(str(n))[1].lines)
                    for n in range(first, last + 1)]

    def writable(self, subject: str, body: str) -> bytes:
        return message(subject, body, newsgroups=self.group)

    def holds_written(self, data: bytes) -> bool:
        """INN adds its headers (Path, Xref, ...): the same Message-ID and body arrived."""
        mid = re.search(rb"^Message-ID: (<[^>]+>)", data, re.M | re.I).group(1)  # type: ignore[union-attr]
        body = data.split(b"\r\n\r\n", 1)[1]
        return any(mid in a and a.split(b"\r\n\r\n", 1)[1] == body for a in self.held())


@dataclass
class NntpService(Service):
    server: InnServer | None = None
    scheme: str = "nntp"

    def url(self, port: int) -> str:
        return f"{self.scheme}://alice@{self.host}:{port}"

    def cleartext_url(self, port: int) -> str:
        return f"nntp://alice@{self.host}:{port}"

    def make_area(self) -> Area:
        assert self.server is not None
        return NntpArea(self.server)


def nntp_service(server: InnServer, scheme: str) -> NntpService:
    caps = {"login", "checked_at_mount", "lists", "inband_data", "writes"}
    if scheme == "nntp":
        caps.add("cleartext")
    return NntpService(f"inn-{scheme}", frozenset(caps),
                       port=server.tls_port if scheme == "nntps" else server.port,
                       password="secret1", plain_port=server.port, ca=server.ca,
                       extra={"tls": "require"},
                       server=server, scheme=scheme)


# -- SMTP (the outbox) ---------------------------------------------------------------------------


class OutboxArea(Area):
    """The outbox's root: what the server holds is what it received."""

    rel = ()

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    def put(self, hint: str, payload: str) -> bytes:
        raise NotImplementedError("an SMTP server holds only what it received")

    def held(self) -> list[bytes]:
        return [d.content for d in self.server.deliveries]

    def holds_written(self, data: bytes) -> bool:
        """The outbox adds nothing a message already has, but the server's copy has CRLF
        lines and may differ in headers the submission adds; the same Message-ID and body."""
        mid = re.search(rb"^Message-ID: (<[^>]+>)", data, re.M | re.I).group(1)  # type: ignore[union-attr]
        body = data.split(b"\r\n\r\n", 1)[1]
        return any(mid in d and d.split(b"\r\n\r\n", 1)[1] == body for d in self.held())


@dataclass
class SmtpService(Service):
    server: SmtpServer | None = None
    scheme: str = "smtp"

    def url(self, port: int) -> str:
        return f"{self.scheme}://alice@{self.host}:{port}"

    def cleartext_url(self, port: int) -> str:
        return f"smtp://alice@{self.host}:{port}"

    def make_area(self) -> Area:
        assert self.server is not None
        return OutboxArea(self.server)

    def stock_areas(self, count: int) -> None:
        """The outbox is the one area."""


def smtp_service(server: SmtpServer, scheme: str) -> SmtpService:
    caps = {"login", "writes"}
    if scheme == "smtp":
        caps.add("cleartext")
    extra: dict[str, object] = {"send_delay": 0, "retry_first": 0.1, "retry_max": 0.5}
    if scheme == "smtp":
        extra["tls"] = "require"
    return SmtpService(f"aiosmtpd-{scheme}", frozenset(caps),
                       port=server.tls_port if scheme == "smtps" else server.port,
                       password="secret1", plain_port=server.port, ca=Path(server.ca),
                       extra=extra, server=server, scheme=scheme)

