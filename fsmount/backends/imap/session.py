"""The IMAP session: connecting, STARTTLS and login, one command in a worker thread
through the connection pool, SELECT/EXAMINE, and the mapping of replies to errno."""
from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable
from typing import Any

from imapclient import IMAPClient
from imapclient import exceptions as imap_errors

from ...errors import (
    AlreadyExists, AuthenticationFailed, FsError, InvalidArgument, NoSpace,
    NotEmpty, NotFound, PermissionDenied, ReadOnly, Transient, Unsupported,
)
from ...net.tls import TlsMode, client_context
from ...net.failures import connection_failure
from ...net.replies import refusal_by_words


log = logging.getLogger(__name__)

# The socket reader's buffer: a 10k-message listing in a few dozen reads instead of ~250,
# each of which gives up the GIL and waits to get it back (cold ls -l: -10 %).
READ_BUFFER = 256 << 10


class ImapSession:
    """Connections and commands; mixed into ``ImapBackend``."""

    # -- connections (worker threads) ---------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        return client_context(self.account["ca_file"], self.account["tls_verify"])

    def _connect(self) -> IMAPClient:
        acc = self.account
        log.debug("%s: connecting (%s)", self.label, acc.tls.value)
        implicit = acc.tls is TlsMode.IMPLICIT
        conn = IMAPClient(acc.host, acc.port, ssl=implicit,
                          ssl_context=self._context() if implicit else None, timeout=acc["timeout"])
        conn._imap.debug = 0  # imaplib's own trace logs every line of every message: far too much
        conn.normalise_times = False
        _roomy_reader(conn)
        try:
            encrypted = implicit or self._starttls(conn)
            self._login(conn, encrypted)
        except BaseException:
            _close(conn)
            raise
        return conn

    def _starttls(self, conn: IMAPClient) -> bool:
        mode = self.account.tls
        if mode is TlsMode.OFF:
            return False
        if not conn.has_capability("STARTTLS"):
            if mode is TlsMode.REQUIRE:
                raise PermissionDenied(f"{self.label} does not offer STARTTLS (tls = require)")
            return False
        log.debug("%s: STARTTLS", self.label)
        conn.starttls(self._context())
        conn._cached_capabilities = None  # capabilities change after TLS
        _roomy_reader(conn)
        return True

    def _login(self, conn: IMAPClient, encrypted: bool) -> None:
        acc = self.account
        if not encrypted and not acc["plaintext_auth"]:
            raise PermissionDenied(
                f"{self.label}: refusing to send the password unencrypted (no TLS); use imaps://, "
                "a server with STARTTLS, or set plaintext_auth = true"
            )
        user = acc.user or ""
        method = (acc["auth"] or "login").lower()
        log.debug("%s: %s as %s (secret not logged)", self.label, method.upper(), user)
        if method == "xoauth2":
            conn.oauth2_login(user, self.secret.token())
        elif method == "oauthbearer":
            conn.oauthbearer_login(user, self.secret.token())
        elif method == "login":
            conn.login(user, self.secret.password or "")
        else:
            raise PermissionDenied(f"{self.label}: unknown auth method {method!r}")
        conn._cached_capabilities = None
        conn.fsm_selected = None

    async def _run(self, fn: Callable[[IMAPClient], Any], what: str, *, retry: bool = True) -> Any:
        def call(conn: IMAPClient) -> Any:
            conn._imap.untagged_responses.clear()  # unsolicited EXISTS/FETCH from earlier commands
            return fn(conn)

        return await self.pool.run(call, retry=retry, what=f"{self.label}: {what}")

    def _select(self, conn: IMAPClient, folder: str, *, write: bool = False,
                fresh: bool = False) -> dict:
        """SELECT ``folder`` unless it is already selected.

        Read-write even for reading (EXAMINE only on read-only accounts): reads use BODY.PEEK,
        so nothing is marked read, and a read-only session never lets Dovecot save its index —
        every EXAMINE of a 100,000-message Maildir then rescanned it (20 s instead of 1 ms).
        """
        writable = not self.account["readonly"]
        current = getattr(conn, "fsm_selected", None)
        if not fresh and current is not None and current[0] == folder and (current[1] or not write):
            return current[2]
        log.debug("%s: %s %s", self.label, "SELECT" if writable else "EXAMINE", folder)
        conn.fsm_selected = None
        try:
            info = conn.select_folder(folder, readonly=not writable)
        except imap_errors.IMAPClientReadOnlyError:
            # The server opened it read-only ([READ-ONLY]: ACLs, a shared folder): it can
            # still be read; a change is refused the way a read-only folder refuses it.
            if write:
                raise ReadOnly(f"{folder} is read-only on the server") from None
            log.debug("%s: %s is read-only on the server: EXAMINE %s", self.label, folder, folder)
            info = conn.select_folder(folder, readonly=True)
            writable = False
        conn.fsm_selected = (folder, writable, info)
        return info

    def _status(self, conn: IMAPClient, folder: str, items: tuple[str, ...]) -> dict:
        """STATUS; the selected folder is unselected first, since a server may answer STATUS
        for it from the session's own (stale) view."""
        current = getattr(conn, "fsm_selected", None)
        if current is not None and current[0] == folder:
            self._unselect(conn)
        log.debug("%s: STATUS %s (%s)", self.label, folder, " ".join(items))
        return conn.folder_status(folder, items)

    def _unselect(self, conn: IMAPClient) -> None:
        current, conn.fsm_selected = getattr(conn, "fsm_selected", None), None
        if current is None:
            return
        log.debug("%s: UNSELECT %s", self.label, current[0])
        if conn.has_capability("UNSELECT"):
            conn.unselect_folder()
        elif not current[1]:
            conn.close_folder()  # EXAMINEd: CLOSE expunges nothing
        else:
            conn.select_folder(current[0], readonly=True)  # swap to a read-only view: no expunge
            conn.fsm_selected = (current[0], False, {})

    def _check_validity(self, conn: IMAPClient, folder: str, uidvalidity: int, *,
                        write: bool) -> None:
        info = self._select(conn, folder, write=write)
        if int(info.get(b"UIDVALIDITY") or 0) != uidvalidity:
            info = self._select(conn, folder, write=write, fresh=True)
        if int(info.get(b"UIDVALIDITY") or 0) != uidvalidity:
            raise NotFound(f"{folder} was replaced on the server (UIDVALIDITY changed); "
                           "list it again")



def _roomy_reader(conn: IMAPClient) -> None:
    """Give the connection's socket reader a ``READ_BUFFER``. Called only where the server
    waits for our next command (after its greeting, after STARTTLS), so the old reader holds
    nothing unread."""
    imap = conn._imap
    old = imap.file
    try:
        imap.file = imap.sock.makefile("rb", buffering=READ_BUFFER)
    except AttributeError:  # Python 3.14 made the reader imaplib's own: keep it
        return
    old.close()  # the socket stays open: makefile() readers only count references


def _close(conn: IMAPClient) -> None:
    try:
        conn.logout()
    except Exception:
        try:
            conn.shutdown()
        except Exception:
            pass


def _check(conn: IMAPClient) -> None:
    """A cheap round trip before reusing an idle connection."""
    conn.noop()


def classify(exc: BaseException) -> FsError:
    """Map a client failure to the FsError the user sees; only Transient ones are retried."""
    if isinstance(exc, imap_errors.LoginError):
        return AuthenticationFailed(f"the server said: {_reason(exc)}")
    if isinstance(exc, imap_errors.CapabilityError):
        return Unsupported(f"the IMAP server lacks {exc}")
    if isinstance(exc, imap_errors.IMAPClientReadOnlyError):  # an abort error too: test it first
        return ReadOnly(f"the IMAP folder is read-only: {exc}")
    if isinstance(exc, imap_errors.IMAPClientAbortError):
        return Transient(f"connection to the IMAP server lost: {exc}")
    if isinstance(exc, imap_errors.IMAPClientError):
        reason = _reason(exc)
        coded = _by_code(reason)
        if coded is not None:
            return coded
        if "command error: BAD" not in str(exc):  # BAD: our command was wrong, whatever it says
            worded = refusal_by_words(reason)
            if worded is not None:
                return worded
        return FsError(f"IMAP server: {reason}")
    failure = connection_failure(exc, "the IMAP server")
    if failure is not None:
        return failure
    return FsError(repr(exc))


#: RFC 5530 response codes (and TRYCREATE, RFC 3501) → what they mean to the user.
_CODES: dict[str, type[FsError]] = {
    "AUTHENTICATIONFAILED": AuthenticationFailed, "AUTHORIZATIONFAILED": AuthenticationFailed,
    "EXPIRED": AuthenticationFailed,
    "NONEXISTENT": NotFound, "TRYCREATE": NotFound,
    "ALREADYEXISTS": AlreadyExists,
    "OVERQUOTA": NoSpace,
    "NOPERM": PermissionDenied, "PRIVACYREQUIRED": PermissionDenied,
    "HASCHILDREN": NotEmpty,
    "UNAVAILABLE": Transient, "INUSE": Transient, "SERVERBUG": Transient,
    "CANNOT": InvalidArgument, "PARSE": InvalidArgument,
}


def _by_code(reason: str) -> FsError | None:
    """The error a reply's response code names (``[NOPERM] …``), if it has a known one (a
    folder name in brackets, ``[Gmail]/Sent``, is none)."""
    for code in re.findall(r"\[([A-Za-z-]+)[\] ]", reason):
        error = _CODES.get(code.upper())
        if error is not None:
            return error(reason)
    return None


def _reason(exc: BaseException) -> str:
    """The server's words from an imapclient error (``b'[CODE] text'`` or ``cmd failed: …``)."""
    text = str(exc)
    m = re.search(r"""b(['"])(.*)\1\]?\s*$""", text)
    if m:
        text = text[:m.start()] + m.group(2)
    return text.strip()
