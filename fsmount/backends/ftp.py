"""FTP and FTPS: a server's directory tree as files.

Every call runs on a pooled, logged-in control connection in a worker thread (``net.pool``).
Paths are absolute remote paths built from the account's root, so no call depends on a
connection's working directory.

Reads are ranged: ``REST offset`` + ``RETR``. After a read the transfer is *paused*, not
closed: its data socket stays open on its connection, so the next read at the exact next
offset (the cache layer's read-ahead) continues on the same socket without a round trip. A
read elsewhere, a different command on that connection, two seconds of idleness (``run``) or
``aclose`` end it: the client closes the data socket and reads the one reply the server sends
for the transfer (226 or 426), which costs far less than a new connection.

Uploads go to a hidden temporary name in the same directory and are renamed over the final
name, so a half-uploaded file never appears under its real name. The rename's round trip
(RNFR, RNTO, MLST pipelined) also carries the next transfer's EPSV, whose data connection is
opened at once: in a run of uploads (``cp -r``) each one then starts with its STOR.

FTPS: implicit (``ftps://``, TLS from the first byte) or explicit (``AUTH TLS``), data channel
protected (``PROT P``), and every data connection resumes the control connection's TLS
session, which vsftpd (``require_ssl_reuse``) and FileZilla Server insist on and ftplib does
not do by itself.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import ftplib
import logging
import re
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import trio

from ..config import Account
from ..credentials import Secret
from ..errors import (
    AlreadyExists, AuthenticationFailed, FsError, InvalidArgument, IsADirectory, NoSpace,
    NotADirectory, NotEmpty, NotFound, PermissionDenied, Transient, Unsupported,
)
from ..net.pool import STALE_AFTER, ConnectionPool
from ..net.tls import TlsMode, client_context
from . import ftplist
from .uploadlog import UploadLog
from ..net.failures import connection_failure
from . import ftplinks
from .ftplinks import mlst_entry as _mlst_entry
from .base import BackendBase, Capabilities, Content, Entry, PartialListing, Path, ReadAt

log = logging.getLogger(__name__)
T = TypeVar("T")

BLOCKSIZE = 1 << 20  # upload/download chunk: few system calls, still little memory
PAUSE_IDLE = 2.0  # a paused read transfer idle this long is closed
ABORT_TIMEOUT = 5.0  # how long the server may take to confirm an abandoned transfer
READY_FOR = 2.0  # a data connection opened ahead is used this long (servers wait 30 s or more)
SWEEP_EVERY = 60.0  # how often to retry removing temporary names while the server is away


def create(account: Account, secret: Secret, env: Any) -> FtpBackend:
    uploads = None if env is None else UploadLog(env.state_dir, "ftp", account.host, account.port,
                                                 account.user)
    return FtpBackend(account, secret, uploads)


# -- errors ---------------------------------------------------------------------------------

_MISSING = re.compile(r"no such|not found|does not exist|doesn'?t exist|not exist|cannot find|"
                      r"can'?t find|unknown file|no files found|file unavailable", re.I)
_TRUNCATED = re.compile(r"truncat|incomplete|partial|too many", re.I)  # in a listing's 226
_DENIED = re.compile(r"denied|permission|privilege|not allowed|forbidden|read-only|read only|"
                     r"access|not authori[sz]ed|refused", re.I)


def reply_error(reply: str) -> FsError:
    """An FTP error reply → the FsError the user sees (context-free; see ``_resolve_550``)."""
    code, text = reply[:3], reply.strip()
    if code == "550":
        if re.search(r"not empty", text, re.I):
            return NotEmpty(text)
        if re.search(r"not a directory", text, re.I):
            return NotADirectory(text)
        if re.search(r"is a directory", text, re.I):
            return IsADirectory(text)
        if re.search(r"exists", text, re.I) and not _MISSING.search(text):
            return AlreadyExists(text)
        if _DENIED.search(text) and not _MISSING.search(text):
            return PermissionDenied(text)
        return NotFound(text)
    if code in ("501", "553", "450") and _MISSING.search(text):
        return NotFound(text)
    if code == "552":
        return NoSpace(text)
    if code == "553":
        return PermissionDenied(text) if _DENIED.search(text) else InvalidArgument(text)
    if code == "530":
        return PermissionDenied(text)
    if code in ("500", "502", "504"):
        return Unsupported(text)
    if code == "501":
        return InvalidArgument(text)
    if code[:1] == "4":
        return Transient(f"FTP server: {text}")
    return FsError(f"FTP server: {text}")


def classify(exc: BaseException) -> FsError:
    """Map a client failure; only ``Transient`` ones are retried (on a new connection)."""
    if isinstance(exc, FsError):
        return exc
    if isinstance(exc, ftplib.error_proto):
        return Transient(f"garbled answer from the FTP server: {exc}")
    if isinstance(exc, ftplib.Error):
        return reply_error(str(exc))
    failure = connection_failure(exc, "the FTP server")
    if failure is not None:
        return failure
    if isinstance(exc, ValueError) and "newline" in str(exc):
        return InvalidArgument("a name with a line break cannot be sent to an FTP server")
    if isinstance(exc, UnicodeError):
        return InvalidArgument(f"name not representable in the server's encoding: {exc}")
    return FsError(repr(exc))


# -- the client -----------------------------------------------------------------------------


LOWAT = 1 << 20


class _Transfer:
    """A RETR whose data socket stays open between reads."""

    def __init__(self, rpath: str, pos: int, sock: socket.socket) -> None:
        self.rpath = rpath
        self.pos = pos
        self.sock = sock
        self.used = time.monotonic()
        self.flags = 0
        self.lowat = 1
        timeout = sock.gettimeout()
        if not isinstance(sock, ssl.SSLSocket) and timeout:
            # One system call per read instead of one per arrival: each of those took the
            # GIL back, which stalled the thread answering the kernel (loopback: -40 %).
            # The timeout then is the kernel's; MSG_WAITALL needs a blocking socket.
            sec = int(timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                            struct.pack("ll", sec, int((timeout - sec) * 1e6)))
            sock.settimeout(None)
            self.flags = socket.MSG_WAITALL

    def read_into(self, view: memoryview) -> int:
        """Fill ``view``; fewer bytes only at the end."""
        size = len(view)
        got = 0
        if self.flags:
            # Woken once per LOWAT bytes instead of once per arriving packet (loopback: 16
            # wake-ups per MiB, each taking a CPU from the reader being answered).
            lowat = min(size, LOWAT)
            if lowat != self.lowat:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
                self.lowat = lowat
        while got < size:
            try:
                n = self.sock.recv_into(view[got:], size - got, self.flags)
            except BlockingIOError:  # SO_RCVTIMEO ran out with nothing received
                raise socket.timeout("timed out") from None
            if n == 0:
                break
            got += n
        self.pos += got
        self.used = time.monotonic()
        return got


class Client(ftplib.FTP_TLS):
    """ftplib with implicit TLS, TLS session reuse, EPSV-then-PASV, byte-safe names and
    command logging that never shows a password. Also holds what fsmount knows about the
    connection: features, the remote root, a paused read transfer."""

    def __init__(self, context: ssl.SSLContext, *, implicit: bool, encoding: str, timeout: float,
                 label: str) -> None:
        super().__init__(context=context, timeout=timeout, encoding=encoding)
        self.implicit = implicit
        self.label = label
        self.feats: set[str] = set()
        self.root = "/"
        self.transfer: _Transfer | None = None
        self.epsv: bool | None = None  # unknown until tried
        self.ready: tuple[socket.socket, float] | None = None  # a data connection opened ahead
        self.list_args: str | None = "-a"  # LIST -a shows dot files; dropped if refused

    # -- wire --------------------------------------------------------------------------

    def connect(self, host: str = "", port: int = 0, timeout: float = -999,  # type: ignore[override]
                source_address: Any = None) -> str:
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), self.timeout)
        self.af = self.sock.family
        if self.implicit:
            self.sock = self.context.wrap_socket(self.sock, server_hostname=host)
        self.file = self.sock.makefile("r", encoding=self.encoding, errors="surrogateescape")
        self.welcome = self.getresp()
        return self.welcome

    def start_tls(self) -> None:
        """AUTH TLS on the control connection (ftplib's ``auth`` loses the byte-safe reader)."""
        resp = self.sendcmd("AUTH TLS")
        if not resp.startswith("234"):
            raise ftplib.error_reply(resp)
        self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host)
        self.file = self.sock.makefile("r", encoding=self.encoding, errors="surrogateescape")

    @property
    def secure(self) -> bool:
        return isinstance(self.sock, ssl.SSLSocket)

    def putline(self, line: str) -> None:
        self.sock.sendall(self._line(line))

    def _line(self, line: str) -> bytes:
        if "\r" in line or "\n" in line:
            raise ValueError("an illegal newline character should not be contained")
        log.debug("%s > %s", self.label, "PASS ****" if line[:5].upper() == "PASS " else line)
        return (line + "\r\n").encode(self.encoding, "surrogateescape")

    def makepasv(self) -> tuple[str, int]:
        peer = self.sock.getpeername()
        if self.epsv is not False:
            try:
                _, port = ftplib.parse229(self.sendcmd("EPSV"), peer)
                self.epsv = True
                return peer[0], port
            except ftplib.error_perm:
                if self.epsv:
                    raise
                self.epsv = False
        _, port = ftplib.parse227(self.sendcmd("PASV"))
        return peer[0], port  # never trust the address in a 227 reply

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        ready = self._take_ready()
        if ready is None:
            conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        else:  # a server that forgot it answers 425 or fails the transfer: retried (Transient)
            conn, size = self._transfer_on(ready, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            session = self.sock.session if isinstance(self.sock, ssl.SSLSocket) else None
            try:
                conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
            except BaseException:
                conn.close()
                raise
        return conn, size

    def pipeline_with_epsv(self, *cmds: str) -> list[str]:
        """``pipeline``, with an EPSV in the same round trip whose data connection is opened
        at once and kept for the next transfer: a run of uploads (``cp -r``) then waits for
        one round trip less each."""
        if self.epsv is not True or self.ready is not None:
            return self.pipeline(*cmds)
        replies = self.pipeline(*cmds, "EPSV")
        if replies[-1][:3] == "229":
            try:
                host, port = ftplib.parse229(replies[-1], self.sock.getpeername())
                self.ready = (socket.create_connection((host, port), self.timeout), time.monotonic())
            except (OSError, ftplib.Error) as e:
                log.debug("%s: no data connection ahead: %s", self.label, e)
        return replies[:-1]

    def _take_ready(self) -> socket.socket | None:
        ready, self.ready = self.ready, None
        if ready is None:
            return None
        if time.monotonic() - ready[1] < READY_FOR:
            return ready[0]
        _close_socket(ready[0])  # the server may have given up on it
        return None

    def _transfer_on(self, conn: socket.socket, cmd: str,
                     rest: int | str | None) -> tuple[socket.socket, int | None]:
        """A transfer command on a data connection opened before it (passive mode)."""
        try:
            if rest is not None:
                self.sendcmd(f"REST {rest}")
            resp = self.sendcmd(cmd)
            if resp[:1] == "2":  # some servers send a 2xx before the 1xx
                resp = self.getresp()
            if resp[:1] != "1":
                raise ftplib.error_reply(resp)
        except BaseException:
            conn.close()
            raise
        return conn, ftplib.parse150(resp) if resp[:3] == "150" else None

    def close(self) -> None:
        ready, self.ready = self.ready, None
        if ready is not None:
            _close_socket(ready[0])
        super().close()

    # -- helpers -----------------------------------------------------------------------

    def path(self, path: Path) -> str:
        return self.root.rstrip("/") + "/" + "/".join(path) if path else self.root

    @property
    def mlst(self) -> bool:
        return "MLST" in self.feats

    def read_data(self, cmd: str, sink: Callable[[bytes], None]) -> str:
        """Run a listing command, handing its data connection's bytes to ``sink`` as they
        come; returns the server's final reply. A transfer the server aborted after sending
        some of it (426, 451) returns its reply too: the caller takes it as cut short."""
        got = 0
        with self.transfercmd(cmd) as conn:
            while True:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                got += len(chunk)
                sink(chunk)
        resp = self.getresp_any()
        if resp[:1] == "2" or (got and resp[:3] in ("426", "451")):
            return resp
        raise {"4": ftplib.error_temp, "5": ftplib.error_perm}.get(resp[:1], ftplib.error_reply)(resp)

    def end_transfer(self) -> None:
        """Abandon a paused read: close its socket, then read the transfer's final reply."""
        t, self.transfer = self.transfer, None
        if t is None:
            return
        _close_socket(t.sock)
        old = self.sock.gettimeout()
        self.sock.settimeout(min(ABORT_TIMEOUT, old or ABORT_TIMEOUT))
        try:
            resp = self.getresp_any()
        finally:
            self.sock.settimeout(old)
        if resp[:1] not in ("2", "4"):
            raise ftplib.error_proto(resp)

    def getmultiline(self) -> str:
        resp = super().getmultiline()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s < %s", self.label, resp.replace("\n", " | ")[:300])
        return resp

    def getresp_any(self) -> str:
        """One reply, whatever its code (ftplib's ``getresp`` raises on 4xx/5xx)."""
        resp = self.getmultiline()
        self.lastresp = resp[:3]
        return resp

    def pipeline(self, *cmds: str) -> list[str]:
        """Send commands in one write without waiting, then read one reply each (saves
        round trips)."""
        self.sock.sendall(b"".join(self._line(cmd) for cmd in cmds))
        return [self.getresp_any() for _ in cmds]

    def close_quietly(self) -> None:
        t, self.transfer = self.transfer, None
        if t is not None:
            _close_socket(t.sock)
        try:
            if t is None and self.sock is not None:
                self.sock.settimeout(2.0)
                self.quit()
        except Exception as e:
            log.debug("%s: QUIT failed: %s", self.label, e)
        finally:
            self.close()


def _close_socket(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


# -- connection pool preferring the connection that holds a transfer ----------------------

_PREFER: contextvars.ContextVar[Callable[[Client], bool] | None] = contextvars.ContextVar(
    "ftp_prefer", default=None)


@contextlib.contextmanager
def _preferring(path: Path, offset: int | None) -> Iterator[None]:
    """Calls in this context take the connection whose paused transfer reads ``path`` (at
    ``offset``, if given), so a sequence of reads goes on on one RETR."""
    def holds(c: Client) -> bool:
        t = c.transfer
        return t is not None and t.rpath == c.path(path) and (offset is None or t.pos == offset)
    token = _PREFER.set(holds)
    try:
        yield
    finally:
        _PREFER.reset(token)


class _Pool(ConnectionPool[Client]):
    """A pool that hands a read the connection holding its paused transfer, and other calls a
    connection without one (or a new one while under the limit), so ``ls`` elsewhere in the
    mount does not abort a sequential read."""

    def _take(self) -> tuple[Client | None, bool]:
        prefer = _PREFER.get()
        idle = self._idle
        pick = None
        for i in range(len(idle) - 1, -1, -1):
            conn = idle[i][0]
            if prefer is not None and prefer(conn):
                pick = i
                break
            if pick is None and conn.transfer is None:
                pick = i
                if prefer is None:
                    break
        if pick is None:
            existing = self._slots.borrowed_tokens - 1 + len(idle)
            if not idle or existing < self.limit:
                return None, False
            pick = len(idle) - 1
        conn, used, needs_check = idle.pop(pick)
        return conn, needs_check or time.monotonic() - used > STALE_AFTER

    async def settle_idle(self, max_idle: float) -> None:
        """End paused transfers nobody has continued for ``max_idle`` seconds."""
        now = time.monotonic()
        for conn, _, _ in list(self._idle):
            t = conn.transfer
            if t is not None and now - t.used > max_idle:
                await self.settle(conn)

    async def settle(self, conn: Client) -> None:
        async with self._slots:
            for i, item in enumerate(self._idle):
                if item[0] is conn:
                    del self._idle[i]
                    break
            else:
                return
            try:
                await trio.to_thread.run_sync(conn.end_transfer, limiter=self._threads)
            except Exception as e:
                log.debug("%s: dropping a connection after an abandoned transfer: %s", self.name, e)
                await trio.to_thread.run_sync(conn.close_quietly, limiter=self._threads)
                return
            self._idle.append((conn, time.monotonic(), False))


# -- the backend ----------------------------------------------------------------------------


class FtpBackend(BackendBase):
    def __init__(self, account: Account, secret: Secret, uploads: UploadLog | None = None) -> None:
        self.account = account
        self.secret = secret
        self.uploads = uploads  # temporary names this client put on the server
        self._sweep_at = 0.0  # when to try removing the temporary names killed uploads left
        self.capabilities = Capabilities(
            ranged_read=True, write=True, overwrite=True, mkdir=True, remove=True, rename=True,
            set_mode=True, set_mtime=True, immutable=False,
        )
        self.context = client_context(account["ca_file"], account["tls_verify"]) \
            if account.tls != TlsMode.OFF else ssl.create_default_context()
        self.pool = _Pool(
            f"ftp {account.host}", self._connect, Client.close_quietly, classify,
            limit=account["connections"], timeout=account["timeout"], check=self._check,
        )
        self._closed = False
        self._warned: set[str] = set()  # folders whose incomplete listing was warned about

    # -- connections -------------------------------------------------------------------

    def _connect(self) -> Client:
        acc = self.account
        c = Client(self.context, implicit=acc.tls == TlsMode.IMPLICIT, encoding=acc["encoding"],
                   timeout=float(acc["timeout"]), label=f"ftp {acc.host}")
        try:
            self._open(c)
        except BaseException:
            c.close()
            raise
        return c

    def _open(self, c: Client) -> None:
        acc = self.account
        log.debug("connecting to %s", acc.label)
        try:
            c.connect(acc.host, acc.port)
        except ftplib.error_temp as e:
            if str(e).startswith("421"):
                trio.from_thread.run_sync(self.pool.reduce_limit)
                raise Transient(f"FTP server refused a connection: {e}") from None
            raise
        if acc.tls in (TlsMode.REQUIRE, TlsMode.PREFER):
            try:
                c.start_tls()
            except (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply) as e:
                if acc.tls == TlsMode.REQUIRE:
                    raise PermissionDenied(f"{acc.label} does not offer TLS (AUTH TLS: {e}); "
                                           "tls = \"require\" forbids a clear-text login") from None
                log.debug("%s: no TLS (%s); continuing in clear", acc.label, e)
        user, password = self._credentials()
        if not c.secure and user != "anonymous" and not acc["plaintext_auth"]:
            raise PermissionDenied(
                f"{acc.label} offers no TLS; refusing to send the password in clear "
                "(set plaintext_auth = true to allow it)")
        self._login(c, user, password)
        if c.secure:
            c.voidcmd("PBSZ 0")
            c.voidcmd("PROT P")
            c._prot_p = True  # type: ignore[attr-defined]
        c.feats = self._features(c)
        if "UTF8" in c.feats and acc["encoding"].lower().replace("-", "") in ("utf8",):
            _quietly(c, "OPTS UTF8 ON")
        c.voidcmd("TYPE I")
        c.set_pasv(bool(acc["passive"]))
        c.root = self._root(c)
        if "MFMT" not in c.feats and self.capabilities.set_mtime:
            self.capabilities = dataclasses.replace(self.capabilities, set_mtime=False)

    def _credentials(self) -> tuple[str, str]:
        user = self.account.user
        if user is None or (self.secret.password is None and user in ("anonymous", "ftp")):
            return "anonymous", "anonymous@"
        return user, self.secret.password or ""

    def _login(self, c: Client, user: str, password: str) -> None:
        try:
            ftplib.FTP.login(c, user, password)
        except ftplib.error_perm as e:
            text = str(e)
            if text.startswith(("530", "430", "331", "332")):
                raise AuthenticationFailed(f"{self.account.label}: {text}") from None
            raise
        except ftplib.error_reply as e:
            raise AuthenticationFailed(f"{self.account.label}: {e}") from None

    @staticmethod
    def _features(c: Client) -> set[str]:
        try:
            resp = c.sendcmd("FEAT")
        except ftplib.Error:
            return set()
        feats = set()
        for line in resp.splitlines()[1:-1]:
            word, _, args = line.strip().partition(" ")
            word = word.upper()
            if word:
                feats.add(word)
            if word == "MLST":  # ask for the facts we use (servers omit unix.mode by default)
                offered = {f.rstrip("*").lower() for f in args.split(";") if f}
                wanted = [f for f in ("type", "size", "modify", "unix.mode") if f in offered]
                if wanted and any(not f.endswith("*") for f in args.split(";") if f):
                    _quietly(c, "OPTS MLST " + ";".join(wanted) + ";")
        return feats

    def _root(self, c: Client) -> str:
        want = self.account.path.rstrip("/")
        try:
            home = c.pwd() or "/"
        except ftplib.Error:  # a server without PWD: absolute paths still work
            home = "/"
        if not want:
            root = home
        elif want.startswith("/"):
            root = want
        else:
            root = home.rstrip("/") + "/" + want
        if root != home:
            try:
                c.cwd(root)
            except ftplib.error_perm as e:
                raise NotFound(f"{self.account.label}: remote folder {root}: {e}") from None
        return root

    def _check(self, c: Client) -> None:
        c.end_transfer()
        c.voidcmd("NOOP")

    # -- running calls -----------------------------------------------------------------

    async def _run(self, fn: Callable[[Client], T], *, retry: bool = True, what: str = "") -> T:
        def call(c: Client) -> T:
            c.end_transfer()
            return fn(c)

        return await self.pool.run(call, retry=retry, what=what)

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Background upkeep while mounted: close read transfers nobody continues."""
        task_status.started()
        while not self._closed:
            if self.uploads is not None and self.uploads.has_leftovers and time.monotonic() >= self._sweep_at:
                await self._sweep_leftovers()
            await trio.sleep(PAUSE_IDLE / 2)
            await self.pool.settle_idle(PAUSE_IDLE)

    async def _sweep_leftovers(self) -> None:
        """Remove the temporary names of uploads this client left (killed, or cut off with
        the server); retried every ``SWEEP_EVERY`` s while the server is away, and at once
        after an upload succeeds (the server is back)."""
        assert self.uploads is not None
        self._sweep_at = time.monotonic() + SWEEP_EVERY
        names = self.uploads.leftovers()
        log.info("%s: removing %d temporary file(s) of interrupted uploads", self.account.label, len(names))
        await self._remove_temps(names)
        self.uploads.forget_finished_journals()

    async def probe(self) -> None:
        await self.pool.probe()

    async def aclose(self) -> None:
        self._closed = True
        await self.pool.aclose()
        if self.uploads is not None:
            self.uploads.close()

    # -- metadata ----------------------------------------------------------------------

    async def list(self, path: Path) -> list[Entry]:
        return await self._run(lambda c: self._list(c, path), what="list")

    def _list(self, c: Client, path: Path) -> list[Entry]:
        rpath = c.path(path)
        mlsd = c.mlst
        parser = ftplist.ListingParser(mlsd, c.encoding)
        try:
            if mlsd:
                final = c.read_data("MLSD " + rpath, parser.feed)
            else:
                final = self._list_raw(c, rpath, parser.feed)
        except ftplib.error_perm as e:
            if mlsd and str(e)[:3] in ("500", "502"):  # FEAT promised MLST, MLSD is missing
                c.feats.discard("MLST")
                return self._list(c, path)
            raise self._resolve_550(c, path, e) from None
        entries = parser.entries()
        if any(e.symlink is not None for e in entries):
            if mlsd and any(e.symlink == "" for e in entries):
                entries = self._link_targets(c, rpath, entries)
            entries = ftplinks.resolve(c, path, entries, parser.here)
        if final[:1] != "2" or _TRUNCATED.search(final) or parser.cut:
            self._cut_short(path, final, parser.cut, len(entries))
            return PartialListing(entries)
        return entries

    def _link_targets(self, c: Client, rpath: str, entries: list[Entry]) -> list[Entry]:
        """MLSD without the links' targets (ProFTPD): LIST of the folder says them, for all
        links in one round trip, so they can be shown as links (``readlink``; ``find`` and
        ``grep -r`` do not follow a link to ``.``)."""
        parser = ftplist.ListingParser(False, c.encoding)
        try:
            self._list_raw(c, rpath, parser.feed)
        except (ftplib.error_perm, ftplib.error_temp, ftplib.error_reply) as e:
            log.debug("%s: no LIST for the links' targets: %s", c.label, e)
            return entries
        targets = {e.name: e.symlink for e in parser.entries() if e.symlink}
        return [dataclasses.replace(e, symlink=targets[e.name])
                if e.symlink == "" and e.name in targets else e for e in entries]

    def _cut_short(self, path: Path, final: str, cut: bool, count: int) -> None:
        """Say once per folder that its listing is incomplete (a server's cap, an aborted
        transfer): the user should know that ``ls`` does not show everything."""
        where = "/" + "/".join(path)
        first = where not in self._warned
        if first:
            if len(self._warned) >= 1000:
                self._warned.clear()
            self._warned.add(where)
        why = "its last line was cut off" if cut and final[:1] == "2" else repr(final.strip()[:200])
        log.log(logging.WARNING if first else logging.DEBUG,
                "%s: the server's listing of %s is incomplete (%s): showing the %d entries it "
                "sent; other names are looked up on the server", self.account.label, where, why, count)

    @staticmethod
    def _list_raw(c: Client, rpath: str, sink: Callable[[bytes], None]) -> str:
        """LIST of a directory, entered with CWD so that no name is mistaken for an option."""
        c.cwd(rpath)
        if c.list_args:
            try:
                return c.read_data("LIST " + c.list_args, sink)
            except ftplib.error_perm:
                c.list_args = None
        return c.read_data("LIST", sink)

    async def stat(self, path: Path) -> Entry:
        if not path:
            return await self._run(self._stat_root, what="login")
        return await self._run(lambda c: self._stat(c, path), what="stat")

    def _stat_root(self, c: Client) -> Entry:
        return Entry("", True, None, None, identity=())

    def _stat(self, c: Client, path: Path) -> Entry:
        if not path:
            return self._stat_root(c)
        if c.mlst:
            rpath = c.path(path)
            # SIZE in the same round trip: a server's MLST of a link may give the link's own
            # length as the size of the file it points at (ProFTPD)
            sized = "SIZE" in c.feats
            replies = c.pipeline("MLST " + rpath, *(["SIZE " + rpath] if sized else []))
            resp = replies[0]
            if resp[:3] in ("500", "502"):
                c.feats.discard("MLST")
                return self._stat(c, path)
            if resp[:1] != "2":
                raise reply_error(resp)
            entry = _mlst_entry(resp, path[-1])
            if entry is None:
                raise FsError(f"unreadable MLST answer for {rpath}")
            if entry.symlink is not None:
                return ftplinks.resolve(c, path[:-1], [entry])[0]
            size = ftplinks.size_reply(replies[1]) if sized else None
            if not entry.is_dir and size is not None and size != entry.size:
                entry = dataclasses.replace(entry, size=size, identity=(size, entry.mtime))
            return entry
        listing = self._list(c, path[:-1])
        for entry in listing:
            if entry.name == path[-1]:
                return entry
        if isinstance(listing, PartialListing):  # cut short: ask about the name itself
            entry = ftplinks.follow(c, path[:-1], [Entry(path[-1], False, symlink="")])[0]
            if entry.symlink is None:
                return entry
        raise NotFound("/".join(path))

    def _exists(self, c: Client, path: Path) -> bool:
        try:
            self._stat(c, path)
            return True
        except NotFound:
            return False
        except FsError:
            return True

    def _resolve_550(self, c: Client, path: Path, e: ftplib.Error) -> FsError:
        """550 means missing *or* forbidden; where the text does not say which, look."""
        error = reply_error(str(e))
        text = str(e)
        if str(e)[:3] == "550" and not _MISSING.search(text) and not _DENIED.search(text) \
                and isinstance(error, NotFound) and path:
            try:
                if self._exists(c, path):
                    return PermissionDenied(text)
            except Exception:
                pass
        return error

    # -- content -----------------------------------------------------------------------

    async def read(self, path: Path, offset: int, size: int) -> bytes:
        """A fresh ``bytearray`` (copying 1 MiB into ``bytes`` halved the throughput)."""
        if size <= 0:
            return b""
        buf = bytearray(size)
        with memoryview(buf) as view:
            got = await self.read_into(path, offset, view)
        if got < size:
            del buf[got:]
        return buf  # type: ignore[return-value]

    async def read_into(self, path: Path, offset: int, view: memoryview) -> int:
        if not len(view):
            return 0
        with _preferring(path, offset):
            return await self.pool.run(lambda c: self._read(c, path, offset, view), what="read")

    async def read_in_thread(self, path: Path, work: Callable[[ReadAt], None]) -> None:
        """One connection for the whole run; a retry hands ``work`` a new one (it goes on
        from where it is)."""
        def on(c: Client) -> None:
            work(lambda offset, view: self._read(c, path, offset, view))

        with _preferring(path, None):
            await self.pool.run(on, what="read")

    def _read(self, c: Client, path: Path, offset: int, view: memoryview) -> int:
        rpath = c.path(path)
        t = c.transfer
        if t is not None and (t.rpath != rpath or t.pos != offset):
            c.end_transfer()
            t = None
        if t is None:
            log.debug("%s: reading %s from %d", c.label, rpath, offset)
            try:
                sock, _ = c.ntransfercmd("RETR " + rpath, rest=offset or None)
            except ftplib.error_perm as e:
                error = self._resolve_550(c, path, e)
                if offset and not isinstance(error, (NotFound, PermissionDenied)) and self._beyond_end(c, path, offset):
                    return 0  # servers refuse a REST past the end (554) instead of sending nothing
                raise error from None
            t = c.transfer = _Transfer(rpath, offset, sock)
        try:
            got = t.read_into(view)
        except BaseException:
            c.transfer = None
            _close_socket(t.sock)
            raise
        if got < len(view):  # end of file: the server's 226 follows
            c.transfer = None
            _close_socket(t.sock)
            c.voidresp()
        return got

    def _beyond_end(self, c: Client, path: Path, offset: int) -> bool:
        try:
            entry = self._stat(c, path)
        except FsError:
            return False
        return not entry.is_dir and entry.size is not None and offset >= entry.size

    async def download(self, path: Path, into: str) -> Entry:
        return await self._run(lambda c: self._download(c, path, into), what="download")

    def _download(self, c: Client, path: Path, into: str) -> Entry:
        entry = self._stat(c, path)
        if entry.is_dir:
            raise IsADirectory("/".join(path))
        size = 0
        with open(into, "wb") as out:
            try:
                conn, _ = c.ntransfercmd("RETR " + c.path(path))
            except ftplib.error_perm as e:
                raise self._resolve_550(c, path, e) from None
            with conn:
                buf = bytearray(BLOCKSIZE)
                view = memoryview(buf)
                while True:
                    n = conn.recv_into(view)
                    if not n:
                        break
                    out.write(view[:n])
                    size += n
            c.voidresp()
        if size != entry.size:
            entry = dataclasses.replace(entry, size=size, identity=(size, entry.mtime))
        return entry

    async def commit(self, path: Path, content: Content, replacing: Entry | None) -> Entry:
        temps: list[str] = []  # partial uploads of failed attempts, removed afterwards
        try:
            entry = await self._run(lambda c: self._commit(c, path, content, temps), what="upload")
        finally:
            if temps:
                with trio.CancelScope(shield=True):
                    await self._remove_temps(temps)
        if self.uploads is not None and self.uploads.has_leftovers:
            self._sweep_at = 0.0  # the server is here: the next upkeep round removes them
        return entry

    def _commit(self, c: Client, path: Path, content: Content, temps: list[str]) -> Entry:
        final = c.path(path)
        temp = c.path(path[:-1] + (f".fsmount-{secrets.token_hex(6)}.part",))
        temps.append(temp)
        if self.uploads is not None:
            self.uploads.started(temp)  # before the server may hold it: a kill cannot lose it
        with content.open() as f:
            try:
                self._store(c, temp, f)
            except ftplib.error_perm as e:
                raise self._resolve_550(c, path[:-1], e) from None
        try:
            entry = self._move_into_place(c, temp, final, path)
        except BaseException:
            if _delete(c, temp):
                temps.remove(temp)
                self._temp_gone(temp)
            raise
        temps.remove(temp)
        self._temp_gone(temp)
        return entry or self._stat(c, path)

    def _temp_gone(self, temp: str) -> None:
        if self.uploads is not None:
            self.uploads.ended(temp, removed=True)

    def _move_into_place(self, c: Client, temp: str, final: str, path: Path) -> Entry | None:
        """RNFR, RNTO and MLST in one round trip; the slow path for servers refusing to
        rename over an existing file."""
        cmds = ["RNFR " + temp, "RNTO " + final] + (["MLST " + final] if c.mlst else [])
        replies = c.pipeline_with_epsv(*cmds)
        if replies[0][:1] == "3" and replies[1][:1] == "2":
            if len(replies) > 2 and replies[2][:1] == "2":
                return _mlst_entry(replies[2], path[-1])
            return None
        bad = replies[0] if replies[0][:1] != "3" else replies[1]
        log.debug("%s: rename into place failed (%s); retrying step by step", c.label, bad.strip())
        if bad[:1] != "5":
            raise ftplib.error_temp(bad) if bad[:1] == "4" else ftplib.error_reply(bad)
        self._rename(c, temp, final, path)
        return None

    @staticmethod
    def _store(c: Client, rpath: str, f: Any) -> None:
        with c.transfercmd("STOR " + rpath) as conn:
            while True:
                buf = f.read(BLOCKSIZE)
                if not buf:
                    break
                conn.sendall(buf)
            if isinstance(conn, ssl.SSLSocket):
                conn.unwrap()
        c.voidresp()

    def _rename(self, c: Client, old: str, new: str, new_path: Path) -> None:
        try:
            c.rename(old, new)
        except ftplib.error_perm as e:
            # A server that refuses to rename over an existing file: delete it first.
            if str(e)[:3] not in ("550", "553") or not self._exists_file(c, new_path):
                raise
            c.delete(new)
            c.rename(old, new)

    def _exists_file(self, c: Client, path: Path) -> bool:
        try:
            return not self._stat(c, path).is_dir
        except FsError:
            return False

    async def _remove_temps(self, temps: list[str]) -> None:
        """Remove partial uploads; one that cannot be removed now stays in the upload log,
        and is removed when the server is back (or by the next mount)."""
        for temp in list(temps):
            removed = False
            try:
                with trio.fail_after(min(5.0, float(self.account["timeout"]))):
                    removed = await self._run(lambda c, t=temp: _delete(c, t), retry=False)
            except (FsError, trio.TooSlowError) as e:
                log.debug("could not remove the partial upload %s: %s", temp, e)
            if self.uploads is not None:
                self.uploads.ended(temp, removed=removed)

    # -- changes -----------------------------------------------------------------------

    async def remove(self, path: Path) -> None:
        await self._run(lambda c: self._simple(c, path, "DELE"), what="remove")

    async def rmdir(self, path: Path) -> None:
        await self._run(lambda c: self._simple(c, path, "RMD"), what="rmdir")

    async def mkdir(self, path: Path) -> None:
        def mkd(c: Client) -> None:
            try:
                c.sendcmd("MKD " + c.path(path))
            except ftplib.error_perm as e:
                error = reply_error(str(e))
                if isinstance(error, (NotFound, PermissionDenied, FsError)) and self._exists(c, path):
                    raise AlreadyExists("/".join(path)) from None
                raise error from None
        await self._run(mkd, what="mkdir")

    def _simple(self, c: Client, path: Path, cmd: str) -> None:
        try:
            c.sendcmd(f"{cmd} {c.path(path)}")
        except ftplib.error_perm as e:
            raise self._resolve_550(c, path, e) from None

    async def rename(self, old: Path, new: Path) -> Entry | None:
        def mv(c: Client) -> None:
            try:
                self._rename(c, c.path(old), c.path(new), new)
            except ftplib.error_perm as e:
                raise self._resolve_550(c, old, e) from None
        await self._run(mv, what="rename")
        return None

    async def set_mode(self, path: Path, mode: int) -> None:
        def chmod(c: Client) -> None:
            try:
                c.sendcmd(f"SITE CHMOD {mode & 0o7777:o} {c.path(path)}")
            except ftplib.error_perm as e:
                error = self._resolve_550(c, path, e)
                if isinstance(error, (Unsupported, InvalidArgument)) or str(e)[:3] in ("500", "502", "504"):
                    raise Unsupported(f"this server cannot change permissions ({e})") from None
                raise error from None
        await self._run(chmod, what="chmod")

    async def set_mtime(self, path: Path, mtime: float) -> None:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(mtime))

        def mfmt(c: Client) -> None:
            if "MFMT" not in c.feats:
                raise Unsupported("this server cannot set modification times (no MFMT)")
            try:
                c.sendcmd(f"MFMT {stamp} {c.path(path)}")
            except ftplib.error_perm as e:
                raise self._resolve_550(c, path, e) from None
        await self._run(mfmt, what="touch")


def _delete(c: Client, rpath: str) -> bool:
    """DELE a temporary name; True once it is gone (550: it never was, or is no more)."""
    try:
        c.sendcmd("DELE " + rpath)
    except ftplib.error_perm as e:
        gone = str(e)[:3] == "550"
        log.debug("%s: DELE %s: %s", c.label, rpath, e)
        return gone
    except (ftplib.Error, OSError, EOFError) as e:
        log.debug("%s: DELE %s failed: %s", c.label, rpath, e)
        return False
    return True


def _quietly(c: Client, cmd: str) -> None:
    try:
        c.sendcmd(cmd)
    except (ftplib.Error, OSError, EOFError) as e:
        log.debug("%s: %s failed: %s", c.label, cmd.split(" ", 1)[0], e)
