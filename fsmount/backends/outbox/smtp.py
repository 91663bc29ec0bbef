"""A message as SMTP sees it: validation, envelope, and one submission through smtplib.

``prepare`` turns the bytes a user wrote into a ``Prepared`` message or raises ``Refused``
with an explanation meant for the user. It changes the user's bytes only by *prepending*
missing ``From``/``Date``/``Message-ID`` lines, so the body (8-bit, signed, whatever) is never
re-encoded. ``submit`` runs in a worker thread and makes one attempt; its ``Outcome`` says per
recipient what the server answered, and ``SendFailure`` covers a whole attempt.

The end of DATA is written by hand (not ``smtplib.SMTP.data``) so that the caller can record
durably, just before the final ``.`` leaves, that the server may accept the message from then
on; a missing answer to that ``.`` is ``Unconfirmed``, never a plain failure to retry.
"""
from __future__ import annotations

import email.errors
import logging
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import Message
from email.parser import HeaderParser
from email.utils import format_datetime, make_msgid

from ...errors import InvalidArgument
from ...net.tls import TlsMode

log = logging.getLogger(__name__)

_FIELD = re.compile(rb"[!-9;-~]+:")
_EOL = re.compile(rb"\r\n|\r|\n")
SENDER_FIELDS = ("Sender", "From")
RECIPIENT_FIELDS = ("To", "Cc", "Bcc")
HIDDEN_FIELDS = (b"bcc", b"resent-bcc")


class Refused(InvalidArgument):
    """The bytes cannot be sent as written; ``str(e)`` tells the user why and what to do."""


@dataclass(frozen=True)
class Prepared:
    data: bytes  # as stored and filed: the user's bytes, maybe with header lines prepended
    sender: str
    recipients: tuple[str, ...]
    newsgroups: tuple[str, ...]
    message_id: str
    subject: str
    eight_bit: bool  # some byte is not ASCII: BODY=8BITMIME
    utf8_addresses: bool  # an envelope address is not ASCII: SMTPUTF8 is required
    utf8_headers: bool  # a header is not ASCII: SMTPUTF8 when offered


# -- the header block, raw -----------------------------------------------------------------


def split_header(raw: bytes) -> tuple[list[bytes], bytes]:
    """→ (header fields, each with its continuation lines and line ends; the rest).

    Raises ``Refused`` when the bytes do not start with header fields.
    """
    fields: list[bytes] = []
    pos = 0
    for m in _line_ends(raw):
        line = raw[pos:m]
        if line.strip(b"\r\n") == b"":
            if not fields:
                break
            return fields, raw[pos:]
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        elif _FIELD.match(line):
            fields.append(line)
        elif not fields and line.startswith(b"From "):
            pass  # an mbox separator line left by a mail client's "save as"
        else:
            if not fields:
                raise Refused("this is not a mail message: it must start with header lines "
                              "such as 'From: ...' and 'To: ...', then a blank line, then the text")
            number = raw[:pos].count(b"\n") + 1
            raise Refused(f"line {number} of the header is not a header field "
                          "(a blank line must separate the header from the text)")
        pos = m
    if not fields:
        raise Refused("this is not a mail message: it has no header lines")
    return fields, b""


def _line_ends(raw: bytes) -> Iterable[int]:
    """Positions just after each line end, then the end of the data."""
    for m in _EOL.finditer(raw):
        yield m.end()
    yield len(raw)


def field_name(field_bytes: bytes) -> bytes:
    return field_bytes.split(b":", 1)[0].strip().lower()


def without_hidden(raw: bytes) -> bytes:
    """The message minus Bcc and Resent-Bcc, which recipients must never see."""
    fields, rest = split_header(raw)
    kept = [f for f in fields if field_name(f) not in HIDDEN_FIELDS]
    if not fields[-1].endswith((b"\n", b"\r")):  # header-only message without a final newline
        return b"".join(kept)
    return b"".join(kept) + rest


def wire_format(raw: bytes) -> bytes:
    """What goes after DATA: no Bcc, CRLF line ends (bare LF is refused by strict servers)."""
    data = _EOL.sub(b"\r\n", without_hidden(raw))
    return data if data.endswith(b"\r\n") else data + b"\r\n"


# -- validation and envelope ---------------------------------------------------------------


def prepare(raw: bytes, default_from: str | None, now: float | None = None) -> Prepared:
    """Validate ``raw`` and build its envelope; raise ``Refused`` explaining any problem."""
    if not raw.strip():
        raise Refused("the file is empty")
    fields, _ = split_header(raw)
    header_bytes = b"".join(fields)
    if b"\0" in header_bytes:
        raise Refused("the header contains NUL bytes: this is not a text message")
    try:
        header_text = header_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("the header is neither ASCII nor UTF-8; encode non-ASCII words as "
                      "=?utf-8?...?= or save the file as UTF-8") from None
    msg = HeaderParser(policy=policy.default).parsestr(header_text)
    problems: list[str] = []
    resent = _resent_block(fields)
    if resent:
        senders = _addresses(resent, ("Resent-Sender", "Resent-From"), problems)
        recipients = _addresses(resent, ("Resent-To", "Resent-Cc", "Resent-Bcc"), problems)
    else:
        senders = _addresses(msg, SENDER_FIELDS, problems)
        recipients = _addresses(msg, RECIPIENT_FIELDS, problems)
    newsgroups = tuple(g.strip() for g in str(msg.get("Newsgroups", "")).split(",") if g.strip())
    if problems:
        raise Refused("; ".join(problems))
    eol = b"\r\n" if fields[0].endswith(b"\r\n") else b"\n"
    added: list[bytes] = []
    if msg.get("From") is None:
        if not default_from:
            raise Refused("no sender: add a 'From: you@example.org' line "
                          "(or set 'from' for this account in the config)")
        added.append(b"From: " + default_from.encode() + eol)
        if not resent:
            senders = _addresses(_one("From", default_from), ("From",), problems) or [default_from]
    if not senders:
        raise Refused("no sender: the From: line holds no address")
    if not recipients and not newsgroups:
        raise Refused("no recipient: To:, Cc: and Bcc: hold no address")
    stamp = time.time() if now is None else now
    if msg.get("Date") is None:
        added.append(b"Date: " + format_datetime(_local(stamp)).encode() + eol)
    message_id = str(msg.get("Message-ID", "")).strip()
    if not message_id:
        message_id = make_msgid(domain=_id_domain(senders[0]))
        added.append(b"Message-ID: " + message_id.encode() + eol)
    data = b"".join(added) + raw
    return Prepared(
        data=data,
        sender=senders[0],
        recipients=tuple(_unique(recipients)),
        newsgroups=newsgroups,
        message_id=message_id,
        subject=str(msg.get("Subject", "")),
        eight_bit=not data.isascii(),
        utf8_addresses=not all(a.isascii() for a in (senders[0], *recipients)),
        utf8_headers=not header_bytes.isascii(),
    )


def _resent_block(fields: list[bytes]) -> Message | None:
    """The newest Resent-* block (they are prepended): its fields up to a repeated name."""
    seen: set[bytes] = set()
    block: list[bytes] = []
    for f in fields:
        name = field_name(f)
        if name.startswith(b"resent-"):
            if name in seen:
                break
            seen.add(name)
            block.append(f)
        elif block:
            break
    if not block:
        return None
    return HeaderParser(policy=policy.default).parsestr(b"".join(block).decode("utf-8"))


def _one(name: str, value: str) -> Message:
    return HeaderParser(policy=policy.default).parsestr(f"{name}: {value}\n")


def _addresses(msg: Message, names: Iterable[str], problems: list[str]) -> list[str]:
    found: list[str] = []
    for name in names:
        for value in msg.get_all(name, []):
            defects = [d for d in getattr(value, "defects", ())
                       if isinstance(d, email.errors.InvalidHeaderDefect)]
            addresses = getattr(value, "addresses", ())
            bad = [a for a in addresses if not a.username or not a.domain or " " in a.addr_spec]
            if defects or bad:
                problems.append(f"{name}: cannot read the address list {str(value).strip()!r} "
                                "(write name@domain, separate several with commas)")
                continue
            found.extend(a.addr_spec for a in addresses)
    return found


def _unique(addresses: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for a in addresses:
        if a.lower() not in seen:
            seen.add(a.lower())
            out.append(a)
    return out


def _local(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp).astimezone()


def _id_domain(address: str) -> str:
    domain = address.rpartition("@")[2]
    try:
        return domain.encode("idna").decode() if domain else "fsmount.invalid"
    except UnicodeError:
        return "fsmount.invalid"


# -- submission ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """How to reach and log in to the submission server (one account)."""

    host: str
    port: int
    tls: TlsMode
    context: ssl.SSLContext
    user: str | None
    password: str | None
    timeout: float
    plaintext_auth: bool
    helo_name: str = field(default_factory=socket.gethostname)

    def __repr__(self) -> str:  # no password in logs or tracebacks
        return f"Server({self.host}:{self.port}, tls={self.tls.value}, user={self.user})"


class SendFailure(Exception):
    """A whole attempt failed. ``permanent``: a 5xx that retrying cannot change.

    ``account`` marks a problem with the account rather than the message (a wrong password,
    an untrusted certificate): retried, since fixing the config must not lose the message.
    """

    def __init__(self, reply: str, *, permanent: bool = False, account: bool = False) -> None:
        super().__init__(reply)
        self.reply = reply
        self.permanent = permanent
        self.account = account


class Unconfirmed(SendFailure):
    """The final ``.`` of DATA was sent (or was about to be) and no answer came back: the
    server may have accepted the message for ``recipients``. Sending again could deliver it
    twice, so the caller must not retry on its own."""

    def __init__(self, reply: str, recipients: list[str]) -> None:
        super().__init__(reply)
        self.recipients = recipients


#: Called in the sending thread just before the final "." with the recipients the server
#: accepted; it must return only once that fact is durable (it may raise to abort).
FinalDotHook = Callable[[list[str]], None]


@dataclass
class Outcome:
    """Per-recipient replies of one attempt: accepted, refused for now, refused for good."""

    accepted: dict[str, str] = field(default_factory=dict)
    temporary: dict[str, str] = field(default_factory=dict)
    permanent: dict[str, str] = field(default_factory=dict)
    reply: str = ""


def submit(server: Server, message: Prepared, recipients: Iterable[str],
           before_final_dot: FinalDotHook | None = None) -> Outcome:
    """One attempt to hand ``message`` to ``server`` for ``recipients`` (blocking)."""
    try:
        conn = _connect(server)
    except SendFailure:
        raise
    except Exception as e:
        raise _failure(e) from e
    try:
        return _transaction(conn, message, list(recipients), before_final_dot)
    except SendFailure:
        raise
    except Exception as e:
        raise _failure(e) from e
    finally:
        try:
            conn.quit()
        except Exception:  # the server hung up first; nothing left to say
            conn.close()


def _failure(e: BaseException) -> SendFailure:
    if isinstance(e, smtplib.SMTPAuthenticationError):
        return SendFailure(f"login refused: {_reply(e.smtp_code, e.smtp_error)}", account=True)
    if isinstance(e, ssl.SSLCertVerificationError):
        return SendFailure(f"untrusted server certificate: {e.verify_message}", account=True)
    if isinstance(e, smtplib.SMTPResponseException):
        return SendFailure(_reply(e.smtp_code, e.smtp_error), permanent=500 <= e.smtp_code < 600)
    if isinstance(e, (socket.timeout, TimeoutError)):
        return SendFailure("the server did not answer in time")
    if isinstance(e, ConnectionRefusedError):
        return SendFailure("connection refused")
    if isinstance(e, (OSError, smtplib.SMTPException, EOFError)):
        return SendFailure(f"connection failed: {e}")
    return SendFailure(f"unexpected failure: {e!r}")


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"


def _connect(server: Server) -> smtplib.SMTP:
    log.debug("connecting to %s:%d (%s)", server.host, server.port, server.tls.value)
    if server.tls is TlsMode.IMPLICIT:
        conn: smtplib.SMTP = smtplib.SMTP_SSL(server.host, server.port, local_hostname=server.helo_name,
                                              timeout=server.timeout, context=server.context)
        encrypted = True
    else:
        conn = smtplib.SMTP(server.host, server.port, local_hostname=server.helo_name,
                            timeout=server.timeout)
        encrypted = False
    # The final "." goes in a write of its own, after the attempt is recorded: Nagle would
    # hold it until the server acknowledged the body (a delayed ACK: ~40 ms a message).
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        conn.ehlo()
        if not encrypted and server.tls is not TlsMode.OFF:
            if conn.has_extn("starttls"):
                log.debug("STARTTLS")
                conn.starttls(context=server.context)
                conn.ehlo()
                encrypted = True
            elif server.tls is TlsMode.REQUIRE:
                raise SendFailure("the server does not offer STARTTLS (tls = require)", account=True)
        if server.user:
            _login(conn, server, encrypted)
    except BaseException:
        conn.close()
        raise
    return conn


def _login(conn: smtplib.SMTP, server: Server, encrypted: bool) -> None:
    if not encrypted and not server.plaintext_auth:
        raise SendFailure("refusing to send the password over an unencrypted connection "
                          "(use STARTTLS/smtps, or set plaintext_auth = true)", account=True)
    if not conn.has_extn("auth"):
        raise SendFailure("the server offers no AUTH, but a user is configured", account=True)
    offered = conn.esmtp_features["auth"].upper().split()
    mechanism = next((m for m in ("PLAIN", "LOGIN") if m in offered), None)
    if mechanism is None:
        raise SendFailure(f"the server offers neither AUTH PLAIN nor LOGIN ({' '.join(offered)})",
                          account=True)
    log.debug("AUTH %s as %s", mechanism, server.user)
    conn.user, conn.password = server.user, server.password or ""
    handler = conn.auth_plain if mechanism == "PLAIN" else conn.auth_login
    conn.auth(mechanism, handler)


def _transaction(conn: smtplib.SMTP, message: Prepared, recipients: list[str],
                 before_final_dot: FinalDotHook | None = None) -> Outcome:
    options = []
    if message.utf8_addresses or message.utf8_headers:
        if conn.has_extn("smtputf8"):
            options.append("SMTPUTF8")
        elif message.utf8_addresses:
            raise SendFailure("an address is not ASCII and the server does not offer SMTPUTF8",
                              permanent=True)
    if message.eight_bit and conn.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    payload = wire_format(message.data)
    if conn.has_extn("size"):
        options.append(f"SIZE={len(payload)}")
    log.debug("MAIL FROM:<%s> %s", message.sender, " ".join(options))
    code, text = conn.mail(message.sender, options)
    if code != 250:
        conn.rset()
        raise SendFailure(_reply(code, text), permanent=500 <= code < 600)
    outcome = Outcome()
    for rcpt in recipients:
        code, text = conn.rcpt(rcpt)
        log.debug("RCPT TO:<%s> → %d", rcpt, code)
        reply = _reply(code, text)
        if code in (250, 251):
            outcome.accepted[rcpt] = reply
        elif 500 <= code < 600:
            outcome.permanent[rcpt] = reply
        else:
            outcome.temporary[rcpt] = reply
    if not outcome.accepted:
        conn.rset()
        outcome.reply = next(iter({**outcome.temporary, **outcome.permanent}.values()), "")
        return outcome
    code, text = _data(conn, payload, list(outcome.accepted), before_final_dot)
    reply = _reply(code, text)
    log.debug("DATA → %s", reply)
    outcome.reply = reply
    if code != 250:
        target = outcome.permanent if 500 <= code < 600 else outcome.temporary
        target.update(dict.fromkeys(outcome.accepted, reply))
        outcome.accepted.clear()
    else:
        outcome.accepted = dict.fromkeys(outcome.accepted, reply)
    return outcome


_LINE_START_DOT = re.compile(rb"^\.", re.M)


def _data(conn: smtplib.SMTP, payload: bytes, accepted: list[str],
          before_final_dot: FinalDotHook | None) -> tuple[int, bytes]:
    """DATA, the dot-stuffed payload, then the final "." once ``before_final_dot`` returned.

    ``payload`` ends with CRLF (``wire_format``). After the hook ran, an attempt that gets no
    reply raises ``Unconfirmed``: the server may hold the whole message by then.
    """
    code, text = conn.docmd("data")
    log.debug("DATA → %d", code)
    if code != 354:
        raise smtplib.SMTPDataError(code, text)
    conn.send(_LINE_START_DOT.sub(b"..", payload))
    if before_final_dot is not None:
        try:
            before_final_dot(accepted)
        except BaseException as e:  # not recorded: the server must not get the dot
            conn.close()  # a QUIT now would be read as message text: hang up (it drops it all)
            if isinstance(e, OSError):
                raise SendFailure(f"cannot record the attempt locally: {e.strerror or e}") from e
            raise
    try:
        conn.send(b".\r\n")
        return conn.getreply()
    except (OSError, smtplib.SMTPServerDisconnected) as e:
        conn.close()
        raise Unconfirmed(f"no answer after the end of the message was sent ({e})", accepted) from e
