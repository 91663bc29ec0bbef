"""POP3: a maildrop as one directory of ``.eml`` files, read-only except for ``rm``.

Names. ``message_name(key, subject, date)`` with Subject and Date from ``TOP n 0`` and ``key``
a 12-character base32 hash of the message's UIDL, so a name is the same at every mount and
never depends on message numbers (which change between sessions). Headers are kept in memory
per UIDL: a relisting asks UIDL and LIST and TOPs only new messages (pipelined where the
server offers PIPELINING). A server without UIDL still mounts, read-only: its keys are
``<number>-<header hash>``, which change when earlier messages go away (a WARNING says so).

Sessions. A POP3 server locks the maildrop for a whole session, so fsmount never keeps one
idle: a session opens for an operation, stays open only while further operations wait for
it (a ``grep -r`` with read-ahead uses one session for many RETRs), and ends with QUIT the
moment nothing waits (or after ``MAX_SESSION`` seconds of a long scan, so that another
client gets its turn). There is one session at a time per account (``connections`` does not
apply): a second one would only wait for the first one's lock. A maildrop locked by another
client (``[IN-USE]``, or a server like Dovecot that makes the login wait) is ``Transient``
and retried until the account's ``timeout``.

Numbers are only valid within their session: every RETR/DELE first maps the UIDL to its
number in the same session (``UIDL n`` to confirm the number from the last listing, a full
UIDL when it moved).

Content. ``download`` streams RETR to the file, undoing dot-stuffing, with CRLF line ends as
the server sends them (the IMAP backend also gives the server's CRLF bytes), and returns the
exact size. LIST sizes are hints (``size_exact=False``) until then, but a RETR shorter than
LIST said is a message cut short: ``SizeMismatch`` (EIO), never a short file. ``download_many`` (a scan
fetching ahead) sends the RETRs of a batch in one write where the server offers PIPELINING.

Deleting. ``remove`` sends DELE and QUIT at once: the deletion is committed before ``rm``
returns, and a retry after a lost QUIT reply sees the message gone and succeeds.

Polling. ``changed`` asks UIDL (STAT without UIDL) and compares with the last listing; the
listing TTL is the account's ``poll_interval``, so new mail and deletions made elsewhere show
within that interval.

Login. APOP when the account sets ``apop``, else AUTH PLAIN where CAPA's SASL offers it, else
USER/PASS; ``pop3s://`` is TLS from the first byte, ``pop3://`` upgrades with STLS per ``tls``.
A password never crosses an unencrypted connection unless ``plaintext_auth`` allows it (APOP
sends only a digest).
"""
from __future__ import annotations

import base64
import hashlib
import logging
import poplib
import re
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, BinaryIO, TypeVar

import trio

from ..config import Account
from ..credentials import Secret
from ..errors import (
    AuthenticationFailed, ConfigError, FsError, IsADirectory, NotADirectory, NotFound,
    PermissionDenied, ReadOnly, TimedOut, Transient,
)
from ..net.pool import ConnectionPool
from ..net.tls import TlsMode, client_context
from ..net.dotstream import CappedBuffer, Copied, batch_result, buffers, copy_dot_terminated
from ..net.failures import connection_failure
from ..net.replies import refusal_by_words
from .base import BATCH_ITEM_LIMIT, BATCH_LIMIT, BackendBase, Capabilities, Entry, Path
from .mailnames import header_text, header_timestamp, key_of, message_name
from .sizecheck import check_size, dot_slack

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY_LENGTH = 12  # base32 characters of sha1(UIDL): 60 bits, unique among any real maildrop
LONG_KEY_LENGTH = 26  # used for both messages in the (theoretical) case of a collision
TOP_BATCH = 200  # pipelined TOP commands per write
BATCH = 32  # messages a scan fetches ahead in one pipelined round of RETRs
MAX_SESSION = 10.0  # seconds: a long scan still ends its session (and lock) this often
LINE_LIMIT = 1 << 20  # longer lines are copied in pieces; only whole lines are unstuffed
CRLF = b"\r\n"
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def create(account: Account, secret: Secret, env: Any) -> Pop3Backend:
    if not account.user:
        raise ConfigError(f"{account.origin}: a POP3 account needs a user name "
                          f"(pop3s://USER@{account.host})")
    return Pop3Backend(account, secret)


class MaildropLocked(Transient):
    """Another client holds the maildrop (a POP3 session elsewhere): retried."""


# -- pure helpers -----------------------------------------------------------------------


def uidl_key(uidl: str, length: int = KEY_LENGTH) -> str:
    """A short, stable, file-name-safe key for a UIDL (which may hold any printable ASCII):
    the first ``length`` base32 digits of its SHA-1 (by shifts: ``base64`` is slow here)."""
    n = int.from_bytes(hashlib.sha1(uidl.encode("utf-8", "surrogateescape")).digest(), "big")
    return "".join(BASE32[(n >> (155 - 5 * i)) & 31] for i in range(length))


@dataclass(frozen=True)
class Headers:
    """What a listing needs from a message's header section."""

    subject: str | None
    date: float | None  # the Date header as a timestamp
    digest: str  # identifies the header section (message keys without UIDL)

    @classmethod
    def parse(cls, raw: bytes) -> Headers:
        head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0].rstrip(b"\r\n")
        unfolded = re.sub(rb"\r?\n(?=[ \t])", b"", head)
        fields: dict[bytes, bytes] = {}
        for line in re.split(rb"\r?\n", unfolded):
            name, sep, value = line.partition(b":")
            if sep:
                fields.setdefault(name.strip().lower(), value.strip())
        return cls(header_text(fields.get(b"subject")), header_timestamp(fields.get(b"date")),
                   hashlib.sha1(head).hexdigest()[:10])


NO_HEADERS = Headers(None, None, "0" * 10)



def copy_multiline(f: BinaryIO, out: BinaryIO | None) -> Copied:
    """Copy one multi-line answer's body (after its +OK) to ``out``, dot-unstuffed, CRLF ends.

    Lines longer than ``LINE_LIMIT`` arrive in pieces and are copied as they are. Returns the
    number of bytes written (the message's exact size) and of dots unstuffed.
    """
    return copy_dot_terminated(f, out, LINE_LIMIT)


# -- one session ------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A message as the last listing saw it; ``uidl`` is None on a server without UIDL."""

    number: int
    uidl: str | None
    digest: str


@dataclass
class Scan:
    """One listing's raw material, fetched in one session."""

    uidls: dict[int, str] | None  # number → UIDL; None without UIDL
    sizes: dict[int, int]
    heads: dict[int, Headers]  # only for messages whose headers were not known


class NoUidl(Exception):
    """The server refused UIDL: names fall back to message numbers."""


class Session:
    """One POP3 session: opened when first needed, ended by QUIT as soon as no work waits.

    Lives in the pool (one at a time) and is only touched from the worker thread running it.
    ``uidls`` maps UIDL → number for *this* session only.
    """

    def __init__(self, backend: Pop3Backend) -> None:
        self.backend = backend
        self.conn: poplib.POP3 | None = None
        self.pipelining = False
        self.uidls: dict[str, int] | None = None
        self.opened = 0.0

    def open(self) -> poplib.POP3:
        if self.conn is None:
            self.conn, caps = self.backend._connect()
            self.opened = time.monotonic()
            self.pipelining = "PIPELINING" in caps
            self.uidls = None
        return self.conn

    def quit(self) -> None:
        """QUIT: the server commits deletions and releases the lock."""
        conn, self.conn, self.uidls = self.conn, None, None
        if conn is not None:
            log.debug("%s: QUIT", self.backend.account.label)
            try:
                conn.quit()
            finally:
                _close(conn)

    def abort(self) -> None:
        """Close without QUIT (a broken session: nothing of it is committed)."""
        conn, self.conn, self.uidls = self.conn, None, None
        if conn is not None:
            _close(conn)

    # -- commands --------------------------------------------------------------------

    def _debug(self, command: str) -> None:
        log.debug("%s: %s", self.backend.account.label, command)

    def uidl_map(self) -> dict[str, int]:
        """UIDL → number for this session (asked once per session)."""
        if self.uidls is None:
            conn = self.open()
            self._debug("UIDL")
            try:
                _, lines, _ = conn.uidl()
            except poplib.error_proto as e:
                if _reply(e).startswith("-ERR") and "EOF" not in _reply(e):
                    raise NoUidl(_reply(e)) from None
                raise
            self.uidls = {}
            for line in lines:
                number, _, uidl = line.decode("utf-8", "surrogateescape").partition(" ")
                self.uidls[uidl.strip()] = int(number)
        return self.uidls

    def sizes(self) -> dict[int, int]:
        self._debug("LIST")
        _, lines, _ = self.open().list()
        sizes = {}
        for line in lines:
            number, size = line.split()[:2]
            sizes[int(number)] = int(size)
        return sizes

    def stat(self) -> tuple[int, int]:
        self._debug("STAT")
        return self.open().stat()

    def tops(self, numbers: list[int]) -> dict[int, Headers]:
        """TOP n 0 for each number, pipelined in batches where the server allows it."""
        conn = self.open()
        heads: dict[int, Headers] = {}
        batch = TOP_BATCH if self.pipelining else 1
        for i in range(0, len(numbers), batch):
            part = numbers[i:i + batch]
            self._debug(f"TOP {part[0]} 0" + (f" … TOP {part[-1]} 0 (pipelined)" if len(part) > 1 else ""))
            conn.sock.sendall(b"".join(b"TOP %d 0\r\n" % n for n in part))
            for n in part:
                if _status(conn.file):
                    raw = BytesIO()
                    copy_multiline(conn.file, raw)
                    heads[n] = Headers.parse(raw.getvalue())
                else:
                    heads[n] = NO_HEADERS
        return heads

    def current_number(self, message: Message) -> int | None:
        """The message's number in this session for one of many (one full UIDL serves all)."""
        if message.uidl is None:
            return self.number_of(message, message.number)
        return self.uidl_map().get(message.uidl)

    def number_of(self, message: Message, hint: int | None) -> int | None:
        """The message's number in this session, or None when it is gone."""
        if message.uidl is None:  # no UIDL: the number holds if the headers still match
            heads = self.tops([message.number])
            return message.number if heads[message.number].digest == message.digest else None
        if self.uidls is None and hint is not None and self.backend._waiting <= 1:
            # One message: confirm its number with one short UIDL. When more operations wait
            # for this session (a scan), one full UIDL serves them all.
            conn = self.open()
            self._debug(f"UIDL {hint}")
            try:
                reply = conn.uidl(hint)
            except poplib.error_proto as e:
                if "EOF" in _reply(e):
                    raise
                reply = b""
            parts = reply.split()
            if len(parts) >= 3 and parts[2].decode("utf-8", "surrogateescape") == message.uidl:
                return hint
        return self.uidl_map().get(message.uidl)

    def retrieve(self, number: int, into: str) -> Copied:
        with open(into, "wb") as out:
            copied = self.retrieve_many([number], [out])[0]
            if copied is None:
                raise NotFound(f"message {number}: the server refused RETR")
            return copied

    def retrieve_many(self, numbers: list[int], outs: list[BinaryIO]) -> list[Copied | None]:
        """RETR each message into its ``out``, pipelined where the server allows it; None
        for a message the server refused."""
        conn = self.open()
        batch = len(numbers) if self.pipelining else 1
        found: list[Copied | None] = []
        for i in range(0, len(numbers), batch):
            part = numbers[i:i + batch]
            more = f" … RETR {part[-1]} ({len(part)}, pipelined)" if len(part) > 1 else ""
            self._debug(f"RETR {part[0]}{more}")
            conn.sock.sendall(b"".join(b"RETR %d\r\n" % n for n in part))
            for out in outs[i:i + batch]:
                found.append(copy_multiline(conn.file, out) if _status(conn.file) else None)
        return found

    def delete(self, number: int) -> None:
        self._debug(f"DELE {number}")
        self.open().dele(number)


def _status(f: BinaryIO) -> bool:
    """Read a status line: True for +OK, False for -ERR; a lost connection raises."""
    line = f.readline(1 << 16)
    if not line.endswith(b"\n"):
        raise EOFError("connection closed before an answer")
    if line.startswith(b"+OK"):
        return True
    if line.startswith(b"-ERR"):
        log.debug("server: %s", line.decode("utf-8", "replace").rstrip())
        if b"[IN-USE]" in line or b"[SYS/TEMP]" in line:
            raise poplib.error_proto(line.rstrip())
        return False
    raise poplib.error_proto(line.rstrip())


def _reply(e: BaseException) -> str:
    arg = e.args[0] if e.args else ""
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


# -- the backend ------------------------------------------------------------------------


class Pop3Backend(BackendBase):
    def __init__(self, account: Account, secret: Secret) -> None:
        self.account = account
        self.secret = secret
        self.poll_interval = float(account["poll_interval"])
        self.capabilities = Capabilities(
            immutable=True, remove=not account["readonly"],
            metadata_ttl=max(self.poll_interval, 0.01), batch=BATCH,
        )
        # One session at a time: the maildrop lock makes a second one wait for the first.
        self.pool: ConnectionPool[Session] = ConnectionPool(
            account.label, lambda: Session(self), Session.abort, classify,
            limit=1, timeout=account["timeout"],
        )
        self._waiting = 0  # operations queued for or running in the session
        self._headers: dict[str, Headers] = {}  # UIDL → headers, so relistings TOP only new mail
        self._messages: dict[str, Message] = {}  # name → message, from the last listing
        self._by_name: dict[str, Entry] = {}
        self._entries: list[Entry] | None = None
        self._signature: tuple | None = None  # the last listing's UIDLs (or STAT without UIDL)
        self._has_uidl: bool | None = None
        self._list_lock = trio.Lock()

    # -- connections (worker threads) ---------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        return client_context(self.account["ca_file"], self.account["tls_verify"])

    def _connect(self) -> tuple[poplib.POP3, dict[str, list[str]]]:
        acc = self.account
        log.debug("%s: connecting (%s)", acc.label, acc.tls.value)
        if acc.tls is TlsMode.IMPLICIT:
            conn: poplib.POP3 = poplib.POP3_SSL(acc.host, acc.port, timeout=acc["timeout"],
                                                context=self._context())
        else:
            conn = poplib.POP3(acc.host, acc.port, timeout=acc["timeout"])
        try:
            encrypted = acc.tls is TlsMode.IMPLICIT
            caps = _capa(conn)
            if not encrypted:
                encrypted = self._stls(conn, caps)
                if encrypted:
                    caps = _capa(conn)
            self._login(conn, caps, encrypted)
            return conn, caps
        except BaseException:
            _close(conn)
            raise

    def _stls(self, conn: poplib.POP3, caps: dict[str, list[str]]) -> bool:
        mode = self.account.tls
        if mode is TlsMode.OFF:
            return False
        if "STLS" not in caps:
            if mode is TlsMode.REQUIRE:
                raise PermissionDenied("the server does not offer STLS (tls = require)")
            return False
        log.debug("%s: STLS", self.account.label)
        try:
            conn.stls(self._context())
        except poplib.error_proto as e:
            raise PermissionDenied(f"STLS failed: {_reply(e)}") from None
        return True

    def _login(self, conn: poplib.POP3, caps: dict[str, list[str]], encrypted: bool) -> None:
        acc = self.account
        user, password = acc.user or "", self.secret.password or ""
        try:
            if acc["apop"]:
                if not re.search(rb"<[^>]+>", conn.getwelcome()):
                    raise PermissionDenied("the server does not offer APOP (no timestamp in "
                                           "its greeting); remove 'apop' from the account")
                log.debug("%s: APOP %s (digest not logged)", acc.label, user)
                conn.apop(user, password)
                return
            if not encrypted and not acc["plaintext_auth"]:
                raise PermissionDenied(
                    "refusing to send the password unencrypted (no TLS); use "
                    "pop3s://, a server with STLS, apop = true, or set plaintext_auth = true")
            if "PLAIN" in (m.upper() for m in caps.get("SASL", [])):
                log.debug("%s: AUTH PLAIN %s (credentials not logged)", acc.label, user)
                _auth_plain(conn, user, password)
            else:
                log.debug("%s: USER %s / PASS (not logged)", acc.label, user)
                conn.user(user)
                conn.pass_(password)
        except poplib.error_proto as e:
            raise self._login_error(_reply(e)) from None
        except (TimeoutError, socket.timeout):
            raise TimedOut(f"no answer to the login within {acc['timeout']:g} s "
                           "(is the maildrop locked by another POP3 client?)") from None

    @staticmethod
    def _login_error(reply: str) -> FsError:
        """A refused login: locked (``[IN-USE]``, or an older server's "unable to lock"
        without ``[AUTH]``), temporary, or a wrong user name or password."""
        if "[IN-USE]" in reply or ("[AUTH]" not in reply and re.search(r"lock", reply, re.I)):
            return MaildropLocked(f"the maildrop is in use by another POP3 session ({reply})")
        if "[SYS/TEMP]" in reply or "EOF" in reply:
            return Transient(f"login failed for now: {reply}")
        return AuthenticationFailed(f"login refused: {reply}")

    async def _session(self, fn: Callable[[Session], T], what: str, *, retry: bool = True) -> T:
        """Run ``fn`` in the session; QUIT as soon as no other operation waits for it."""
        def call(session: Session) -> T:
            try:
                return fn(session)
            finally:
                if session.conn is not None and time.monotonic() - session.opened > MAX_SESSION:
                    session.quit()  # let another client have the maildrop between our bursts

        self._waiting += 1
        try:
            return await self.pool.run(call, retry=retry, what=f"{self.account.label}: {what}")
        finally:
            self._waiting -= 1
            if self._waiting == 0:
                with trio.CancelScope(shield=True):
                    try:
                        await self.pool.run(Session.quit, retry=False)
                    except FsError as e:
                        log.debug("%s: QUIT failed: %s", self.account.label, e)

    # -- listing ------------------------------------------------------------------------

    async def stat(self, path: Path) -> Entry:
        if not path:
            if self._entries is None:  # the mount's first contact: log in, learn the size
                await self._session(lambda s: s.stat(), "STAT")
            return Entry("", True)
        if len(path) == 1:
            if await self._find(path[-1]) is not None:
                return self._by_name[path[-1]]
        elif path[0] in self._messages:
            raise NotADirectory(path[0])
        raise NotFound("/".join(path))

    async def _find(self, name: str) -> Message | None:
        """The message of a name, relisting once for a name newer than the last listing."""
        message = self._messages.get(name)
        if message is None and key_of(name) is not None:
            await self.list(())
            message = self._messages.get(name)
        return message

    async def list(self, path: Path) -> list[Entry]:
        if path:
            if len(path) == 1 and path[0] in self._messages:
                raise NotADirectory(path[0])
            raise NotFound("/".join(path))
        async with self._list_lock:
            known = frozenset(self._headers)
            scan = await self._session(lambda s: self._scan(s, known), "listing")
            self._apply(scan)
            assert self._entries is not None
            return list(self._entries)

    def _scan(self, session: Session, known: frozenset[str]) -> Scan:
        """UIDL, LIST and TOP for the messages whose headers are not known (worker thread)."""
        try:
            numbers: dict[int, str] | None = {n: u for u, n in session.uidl_map().items()}
        except NoUidl:
            numbers = None
        sizes = session.sizes()
        if numbers is None:
            wanted = sorted(sizes)
        else:
            wanted = sorted(n for n in sizes if numbers.get(n) not in known)
        return Scan(numbers, sizes, session.tops(wanted))

    def _apply(self, scan: Scan) -> None:
        """Turn a scan into entries (trio thread): names, header cache, signature."""
        if scan.uidls is None and self._has_uidl is not False:
            log.warning("%s: the server does not support UIDL: message names are not stable "
                        "across mounts, and the mailbox is read-only", self.account.label)
        self._has_uidl = scan.uidls is not None
        rows: list[tuple[int, Message, Headers, str]] = []
        for number in sorted(scan.sizes):
            uidl = scan.uidls.get(number) if scan.uidls is not None else None
            if scan.uidls is not None and uidl is None:
                continue  # listed by LIST but not by UIDL: skip until both agree
            if uidl is not None:
                headers = scan.heads.get(number) or self._headers.get(uidl) or NO_HEADERS
                key = uidl_key(uidl)
            else:
                headers = scan.heads.get(number, NO_HEADERS)
                key = f"{number}-{headers.digest[:6]}"
            rows.append((number, Message(number, uidl, headers.digest), headers, key))
        duplicated = {k for k, n in Counter(r[3] for r in rows).items() if n > 1}
        messages: dict[str, Message] = {}
        entries: list[Entry] = []
        headers_by_uidl: dict[str, Headers] = {}
        for number, message, headers, key in rows:
            if key in duplicated and message.uidl is not None:
                key = uidl_key(message.uidl, LONG_KEY_LENGTH)
            name = message_name(key, headers.subject, headers.date)
            identity = (message.uidl,) if message.uidl is not None else ("", number, message.digest)
            entries.append(Entry(name, False, scan.sizes[number],
                                 headers.date,
                                 identity, size_exact=False))
            messages[name] = message
            if message.uidl is not None:
                headers_by_uidl[message.uidl] = headers
        self._headers = headers_by_uidl  # messages gone from the server are forgotten
        self._messages = messages
        self._entries = entries
        self._by_name = {e.name: e for e in entries}
        self._signature = self._signature_of(scan)

    @staticmethod
    def _signature_of(scan: Scan) -> tuple:
        if scan.uidls is not None:
            return tuple(scan.uidls[n] for n in sorted(scan.uidls))
        return (len(scan.sizes), sum(scan.sizes.values()))

    async def changed(self, path: Path) -> bool:
        """New mail or deletions elsewhere: UIDL (STAT without it) against the last listing."""
        if path or self._signature is None:
            return True
        if self._has_uidl:
            def uidls(session: Session) -> tuple:
                by_number = {n: u for u, n in session.uidl_map().items()}
                return tuple(by_number[n] for n in sorted(by_number))
            now = await self._session(uidls, "UIDL")
        else:
            now = await self._session(lambda s: s.stat(), "STAT")
        return now != self._signature

    # -- reading ------------------------------------------------------------------------

    async def _message(self, path: Path) -> Message:
        if len(path) != 1:
            if not path:
                raise IsADirectory("the maildrop")
            raise NotFound("/".join(path))
        message = await self._find(path[0])
        if message is None:
            raise NotFound(path[0])
        return message

    async def download(self, path: Path, into: str) -> Entry:
        message = await self._message(path)
        entry = await self.stat(path)

        def fetch(session: Session) -> Copied | None:
            number = session.number_of(message, message.number)
            return None if number is None else session.retrieve(number, into)

        copied = await self._session(fetch, f"RETR {path[0]}")
        if copied is None:
            self._gone(path[0])
            raise NotFound(f"{path[0]}: no longer on the server")
        _check_size(entry, copied)
        return Entry(entry.name, False, copied.size, entry.mtime, entry.identity)

    async def download_many(self, paths: Sequence[Path]) -> list[bytes | FsError]:
        """One session, one UIDL, and the RETRs pipelined."""
        results: list[bytes | FsError] = []
        wanted: list[tuple[int, Message]] = []  # (index in results, message)
        for path in paths:
            try:
                wanted.append((len(results), await self._message(path)))
                results.append(NotFound(path[-1]))
            except FsError as e:
                results.append(e)

        def fetch(session: Session) -> list[tuple[CappedBuffer, Copied] | None]:
            numbers = [session.current_number(message) for _, message in wanted]
            present = [n for n in numbers if n is not None]
            outs = buffers(len(present), BATCH_ITEM_LIMIT, BATCH_LIMIT)
            found = session.retrieve_many(present, outs)
            got = iter([None if c is None else (out, c) for c, out in zip(found, outs)])
            return [None if n is None else next(got) for n in numbers]

        if wanted:
            fetched = await self._session(fetch, f"RETR of {len(wanted)} messages")
            for (index, _), item in zip(wanted, fetched):
                name = paths[index][-1]
                if item is None:
                    self._gone(name)
                    results[index] = batch_result(None, name)
                    continue
                out, copied = item
                result = batch_result(out, name)
                if isinstance(result, bytes):
                    try:
                        _check_size(self._by_name.get(name), copied)
                    except FsError as e:
                        result = e
                results[index] = result
        return results

    def _gone(self, name: str) -> None:
        """Forget a message the server no longer has (the next listing confirms it)."""
        message = self._messages.pop(name, None)
        if message is None:
            return
        self._by_name.pop(name, None)
        if self._entries is not None:
            self._entries = [e for e in self._entries if e.name != name]
        if message.uidl is not None:
            self._headers.pop(message.uidl, None)
            if self._signature is not None:
                self._signature = tuple(u for u in self._signature if u != message.uidl)
        else:
            self._signature = None

    # -- deleting -----------------------------------------------------------------------

    async def remove(self, path: Path) -> None:
        if not self.capabilities.remove:
            raise ReadOnly("this POP3 account is read-only")
        message = await self._message(path)
        if message.uidl is None:
            raise ReadOnly("the server has no UIDL, so fsmount cannot tell messages apart "
                           "safely: the mailbox is read-only")
        sent = [False]

        def delete(session: Session) -> None:
            number = session.number_of(message, message.number)
            if number is None:
                if sent[0]:
                    return  # an earlier attempt's QUIT went through before its reply was lost
                raise NotFound(f"{path[0]}: no longer on the server")
            session.delete(number)
            sent[0] = True
            session.quit()  # commits the deletion and releases the lock at once

        try:
            await self._session(delete, f"DELE {path[0]}")
        finally:
            if sent[0]:
                self._gone(path[0])

    async def probe(self) -> None:
        await self._session(lambda s: s.stat(), "STAT", retry=False)

    async def aclose(self) -> None:
        await self.pool.aclose()


# -- protocol helpers -------------------------------------------------------------------


def _check_size(entry: Entry | None, copied: Copied) -> None:
    """RFC 1939: LIST gives the message's exact size (Dovecot's is the RETR bytes, unstuffed,
    with CRLF ends). Only a short RETR is an error: a message not ending in a line end gets
    one from the server (Dovecot: 2 bytes more than LIST), and a server counting fewer bytes
    (LF line ends) has not cut anything. The terminating dot-line ends the answer in any case.
    """
    if entry is not None:
        check_size(f"message {entry.name}", copied.size, entry.size,
                   slack=dot_slack(copied.stuffed))


def _close(conn: poplib.POP3) -> None:
    """Close the socket; one already broken (a failed TLS handshake) raises nothing."""
    try:
        conn.close()
    except OSError as e:
        log.debug("closing a POP3 connection: %s", e)


def _capa(conn: poplib.POP3) -> dict[str, list[str]]:
    """CAPA, or nothing on a server without it (RFC 1939 servers)."""
    try:
        return conn.capa()
    except poplib.error_proto as e:
        if "EOF" in _reply(e):
            raise
        return {}


def _auth_plain(conn: poplib.POP3, user: str, password: str) -> None:
    """AUTH PLAIN (RFC 5034) in two steps, which every SASL-capable server understands."""
    token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
    conn.sock.sendall(b"AUTH PLAIN\r\n")
    line = conn.file.readline(1 << 16)
    if not line.startswith(b"+ ") and line.rstrip() != b"+":
        raise poplib.error_proto(line.rstrip() or b"-ERR EOF")
    conn.sock.sendall(token + CRLF)
    line = conn.file.readline(1 << 16)
    if not line.startswith(b"+OK"):
        raise poplib.error_proto(line.rstrip() or b"-ERR EOF")


def classify(exc: BaseException) -> FsError:
    """Map a client failure to the FsError the user sees; only Transient ones are retried."""
    if isinstance(exc, poplib.error_proto):
        reply = _reply(exc)
        if "EOF" in reply:
            return Transient(f"connection to the POP3 server lost: {reply}")
        if "[IN-USE]" in reply:
            return MaildropLocked(f"the maildrop is in use by another POP3 session: {reply}")
        if "[SYS/TEMP]" in reply:
            return Transient(f"POP3 server: {reply}")
        if "[AUTH]" in reply:
            return AuthenticationFailed(f"POP3 server: {reply}")
        if reply.startswith("-ERR"):  # no code for what went wrong: its words may say
            worded = refusal_by_words(f"POP3 server: {reply}")
            if worded is not None:
                return worded
        return FsError(f"POP3 server: {reply}")
    failure = connection_failure(exc, "the POP3 server")
    if failure is not None:
        return failure
    return FsError(repr(exc))

