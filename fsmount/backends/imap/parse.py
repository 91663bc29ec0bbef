"""What the server sends, parsed: listing replies (sizes, dates, subjects), and the
checks of messages going in (APPEND) and coming out (their announced size)."""
from __future__ import annotations

import calendar
import gc
import logging
import re
import threading
from contextlib import contextmanager
from collections.abc import Iterable, Iterator
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32

from imapclient.response_parser import parse_fetch_response

from ...errors import InvalidArgument
from ..base import Entry, Path
from . import fetch as imapfetch
from .folders import FolderTree
from ..mailnames import header_date, header_text, header_timestamp, message_name
from ..sizecheck import check_size


log = logging.getLogger(__name__)

MESSAGE_HEADERS = {b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"received",
                   b"newsgroups", b"return-path", b"mime-version"}



_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_DATE = re.compile(rb'\bINTERNALDATE "([^"]*)"')
_MONTHS = {m.encode(): i for i, m in enumerate(
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1)}


# INTERNALDATE as servers write it (``" 6-May-2024 10:00:00 +0200"``), in pieces for
# _internal_time: day, hour, minute, second, zone.
_INTERNALDATE = rb"( ?\d?\d-[A-Za-z]{3}-\d{4}) (\d\d):(\d\d):(\d\d) ([-+]\d{4})"
_USUAL_INTERNALDATE = re.compile(_INTERNALDATE)
_LISTED_HEAD = rb"\* \d+ FETCH \(UID (\d+) RFC822\.SIZE (\d+) INTERNALDATE "
_LISTED_TAIL = rb" BODY\[HEADER\.FIELDS \(SUBJECT DATE\)\] \{\d+\}\Z"
_LISTED = re.compile(_LISTED_HEAD + rb'"' + _INTERNALDATE + rb'"' + _LISTED_TAIL)
_LISTED_ANY_DATE = re.compile(_LISTED_HEAD + rb'"([^"]*)"' + _LISTED_TAIL)


_paused = 0  # listings now pausing the collector
_paused_lock = threading.Lock()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a listing makes its entries: they all live on, and
    each collection CPython would start on the way walks every object made so far (cold
    ``ls -l`` of 10,000 messages: -10 %). At most FETCH_CHUNK messages long; counted, since
    listings of several folders run in threads at once."""
    global _paused
    with _paused_lock:
        _paused += 1
        gc.disable()
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if not _paused:
                gc.enable()


def _listing_rows(replies: Iterable[imapfetch.Reply]
                  ) -> Iterator[tuple[int, int | None, float | None, bytes]]:
    """(uid, size, internaldate, header bytes) from the listing FETCH's replies: Dovecot's
    order in one regex match (that also splits the INTERNALDATE), any other shape through
    ``_parse_listing``."""
    for reply in replies:
        if len(reply) == 3 and reply[2] == b")":
            m = _LISTED.match(reply[0])
            if m is not None:
                uid, size, day, hour, minute, second, zone = m.groups()
                yield int(uid), int(size), _internal_time(day, hour, minute, second, zone), reply[1]
                continue
            m = _LISTED_ANY_DATE.match(reply[0])
            if m is not None:
                yield int(m[1]), int(m[2]), _internaldate(m[3]), reply[1]
                continue
        yield from _parse_listing(imapfetch.imaplib_shape(reply))


_BODY = re.compile(rb"\* \d+ FETCH \(UID (\d+) BODY\[\] \{\d+\}\Z")


def _body_of(reply: imapfetch.Reply) -> tuple[int | None, bytes]:
    """(uid, BODY[] bytes) of one reply to ``UID FETCH … (BODY.PEEK[])``; (None, b"") for
    any other (an unsolicited FLAGS update)."""
    if len(reply) == 3 and reply[2] == b")":
        m = _BODY.match(reply[0])
        if m is not None:
            return int(m[1]), reply[1]
    try:
        parsed = parse_fetch_response(imapfetch.imaplib_shape(reply), False, True)
    except Exception as e:  # a garbled reply loses one message, not the batch
        log.debug("unparsable FETCH response %r: %s", reply[0][:200], e)
        return None, b""
    for uid, values in parsed.items():
        if b"BODY[]" in values:
            return uid, values[b"BODY[]"] or b""
    return None, b""


def _parse_listing(data: list) -> list[tuple[int, int | None, float | None, bytes]]:
    """(uid, size, internaldate, header bytes) from imaplib's raw FETCH response items.

    A response with a literal comes as a tuple (line up to the literal, literal) followed by
    the rest of its line as bytes (servers put UID before or after the literal); that shape
    takes a few regex searches. Anything else goes through imapclient's general parser.
    """
    out = []
    i = 0
    while i < len(data):
        item = data[i]
        i += 1
        if isinstance(item, tuple):
            head, literal = item
            tail = b""
            if i < len(data) and isinstance(data[i], bytes):
                tail = data[i]
                i += 1
            line = head + b" " + tail
            uid = _UID.search(line)
            if uid is None:
                out.extend(_general([item, tail]))
                continue
            size = _SIZE.search(line)
            date = _DATE.search(line)
            out.append((int(uid.group(1)), int(size.group(1)) if size else None,
                        _internaldate(date.group(1)) if date else None, literal or b""))
        elif isinstance(item, bytes) and item.strip() not in (b")", b""):
            out.extend(_general([item]))
    return out


def _general(items: list) -> list[tuple[int, int | None, float | None, bytes]]:
    out = []
    try:
        parsed = parse_fetch_response(items, False, True)
    except Exception as e:  # a garbled line loses one message, not the listing
        log.debug("unparsable FETCH response %r: %s", items, e)
        return out
    for uid, values in parsed.items():
        if b"RFC822.SIZE" not in values and b"INTERNALDATE" not in values:
            continue  # an unsolicited update (FLAGS of a message another client read)
        internal = values.get(b"INTERNALDATE")
        header = next((v for k, v in values.items() if k.startswith(b"BODY[HEADER")), b"") or b""
        out.append((uid, values.get(b"RFC822.SIZE"),
                    internal.timestamp() if isinstance(internal, datetime) else None, header))
    return out


def _internaldate(text: bytes) -> float | None:
    """``17-Jul-1996 02:44:25 -0700`` → POSIX time (10× faster than strptime; the day's
    start is remembered, since a folder's messages share few days)."""
    m = _USUAL_INTERNALDATE.fullmatch(text)
    if m is not None:
        return _internal_time(*m.groups())
    try:
        date, clock, zone = text.split()
        start = _DAY_STARTS.get(date)
        if start is None:
            day, month, year = date.split(b"-")
            start = calendar.timegm((int(year), _MONTHS[month], int(day), 0, 0, 0))
            if len(_DAY_STARTS) >= 10_000:
                _DAY_STARTS.clear()
            _DAY_STARTS[date] = start
        h, m, s = clock.split(b":")
        offset = (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * (-1 if zone[:1] == b"-" else 1)
        return float(start + int(h) * 3600 + int(m) * 60 + int(s) - offset)
    except (ValueError, KeyError, IndexError):
        return None


_DAY_STARTS: dict[bytes, int] = {}
_TWO_DIGITS = {b"%02d" % i: i for i in range(100)}
_DAYS_SEEN: dict[bytes, int | None] = {}  # b" 6-May-2024" → its midnight (None: no such day)
_ZONES_SEEN: dict[bytes, int] = {}  # b"+0200" → seconds east of UTC


def _internal_time(day: bytes, hour: bytes, minute: bytes, second: bytes, zone: bytes
                   ) -> float | None:
    """The pieces of an INTERNALDATE that _INTERNALDATE matched → what ``_internaldate``'s
    general code makes of them, with each day and zone worked out once."""
    start = _DAYS_SEEN.get(day, -1)  # -1: not seen yet (no midnight is -1 s)
    if start == -1:
        d, month, year = day.split(b"-")
        try:
            start = calendar.timegm((int(year), _MONTHS[month], int(d), 0, 0, 0))
        except (KeyError, ValueError):  # a month in another case, year 0000
            start = None
        if len(_DAYS_SEEN) >= 10_000:
            _DAYS_SEEN.clear()
        _DAYS_SEEN[day] = start
    if start is None:
        return None
    offset = _ZONES_SEEN.get(zone)
    if offset is None:
        offset = (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * (-1 if zone[:1] == b"-" else 1)
        if len(_ZONES_SEEN) >= 10_000:
            _ZONES_SEEN.clear()
        _ZONES_SEEN[zone] = offset
    return float(start + _TWO_DIGITS[hour] * 3600 + _TWO_DIGITS[minute] * 60
                 + _TWO_DIGITS[second] - offset)


def _header_fields(raw: bytes) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    if b"\n " in raw or b"\n\t" in raw:
        raw = _FOLD.sub(b" ", raw)
    for line in raw.split(b"\n"):
        name, colon, value = line.partition(b":")
        if colon:
            fields.setdefault(name.strip().lower(), value.strip())
    return fields


_FOLD = re.compile(rb"\r?\n[ \t]+")
# The listing's header literal as Dovecot sends it: Subject and Date, each on one line, in
# the message's order, then the blank line. Values are stripped as _header_fields does.
_SUBJECT_DATE = re.compile(rb"(?i:subject):([^\r\n]*)\r\n(?i:date):([^\r\n]*)\r\n\r\n")
_DATE_SUBJECT = re.compile(rb"(?i:date):([^\r\n]*)\r\n(?i:subject):([^\r\n]*)\r\n\r\n")


def _subject_date(raw: bytes) -> tuple[bytes | None, bytes | None]:
    """``_header_fields(raw)``'s Subject and Date, without building the dict for the usual
    literal; anything else (one field missing, odd names or line ends) goes there."""
    m = _SUBJECT_DATE.fullmatch(raw) or _DATE_SUBJECT.fullmatch(raw)
    if m is None and (b"\n " in raw or b"\n\t" in raw):  # a match has no folds to undo
        unfolded = _FOLD.sub(b" ", raw)
        m = _SUBJECT_DATE.fullmatch(unfolded) or _DATE_SUBJECT.fullmatch(unfolded)
    if m is None:
        fields = _header_fields(raw)  # raw, not unfolded: unfolding twice may differ from once
        return fields.get(b"subject"), fields.get(b"date")
    if m.re is _SUBJECT_DATE:
        return m[1].strip(), m[2].strip()
    return m[2].strip(), m[1].strip()


def _entry(uidvalidity: int, uid: int, size: int | None, internal: float | None,
           header: bytes) -> Entry:
    subject, date_text = _subject_date(header)
    date = header_timestamp(date_text)
    when = date if date is not None else internal
    return Entry(message_name(str(uid), header_text(subject), when), False, size,
                 internal if internal is not None else date, (uidvalidity, uid))


def _check_size(entry: Entry | None, received: bytes | int) -> None:
    """RFC 3501: RFC822.SIZE is the size of BODY[]; a literal that says otherwise lies."""
    if entry is not None:
        size = received if isinstance(received, int) else len(received)
        check_size(f"message {entry.name}", size, entry.size, exact=True)




def prepare_message(raw: bytes) -> tuple[bytes, datetime | None, str | None]:
    """The message as APPENDed (CRLF line ends), its Date and Message-ID; InvalidArgument if
    it is not a mail message, so nothing half-valid reaches the server."""
    if not raw.strip():
        raise InvalidArgument("an empty file is not a mail message")
    if b"\0" in raw:
        raise InvalidArgument("a mail message cannot contain NUL bytes (is this a binary file?)")
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
        tail = True
    else:
        tail = False
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    try:
        blank = lines.index(b"")
    except ValueError:
        blank = len(lines)
    head = lines[:blank]
    names = set()
    for i, line in enumerate(head):
        if line[:1] in (b" ", b"\t") and i > 0:
            continue
        m = re.match(rb"([\x21-\x39\x3b-\x7e]+):", line)
        if m is None:
            raise InvalidArgument(f"not a mail message: line {i + 1} of the header is not "
                                  f"'Name: value' ({line[:60]!r})")
        names.add(m.group(1).lower())
    if not names & MESSAGE_HEADERS:
        raise InvalidArgument("not a mail message: no From, To, Subject, Date or Message-ID header")
    message = b"\r\n".join(lines) + (b"\r\n" if tail else b"")
    headers = BytesHeaderParser(policy=compat32).parsebytes(b"\r\n".join(head) + b"\r\n\r\n")
    date = header_date(str(headers["Date"])) if headers["Date"] is not None else None
    message_id = str(headers["Message-ID"]).strip() if headers["Message-ID"] is not None else None
    return message, date, message_id or None


def _appenduid(response: bytes | str | None) -> tuple[int, int] | None:
    if isinstance(response, str):
        response = response.encode()
    m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", response or b"", re.I)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _copyuid(code: bytes | str | None) -> tuple[int, int] | None:
    """(uidvalidity, new uid) from a COPYUID code: ``[COPYUID v old new]`` in a COPY reply,
    or ``v old new`` as imaplib files it from MOVE's untagged OK."""
    if isinstance(code, str):
        code = code.encode()
    if not code:
        return None
    m = (re.search(rb"\[COPYUID (\d+) \S+ (\d+)\]", code, re.I)
         or re.fullmatch(rb"(\d+) \S+ (\d+)", code.strip()))
    return (int(m.group(1)), int(m.group(2))) if m else None


def _folder_name(tree: FolderTree, path: Path) -> str:
    try:
        return tree.name_for(path)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None






def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


