"""The fast listing parser and name helpers give exactly what the old ones gave.

Names are stable across mounts (users rely on them), so every speed-up of the IMAP listing
parse, ``mailnames``, ``names.local_name``, ``attrs.make`` and ``InodeTable.ref`` is checked
here against a frozen copy of the code as it was at 6d81f17, on many generated inputs:
valid and invalid dates, folded and encoded subjects, hostile characters, long names.
"""
from __future__ import annotations

import calendar
import io
import random
import re
import stat
import time
import unicodedata
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime

import pytest

from fsmount.backends import imap, imapfetch, mailnames
from fsmount.backends.base import Capabilities, Entry
from fsmount.vfs import attrs, inodes, names

# ---------------------------------------------------------------------------------------
# Frozen copy of the old code (git show 6d81f17:…). Do not "fix" it: it is the reference.
# ---------------------------------------------------------------------------------------

OLD_SUFFIX = ".eml"
OLD_MAX_SUBJECT = 60
_OLD_KEY = re.compile(r" ?\[([0-9A-Za-z_-]{1,32})\]\.eml\Z")
_OLD_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|\[\]]+")
_OLD_SPACES = re.compile(r"\s+")
_OLD_DATE = re.compile(r"\s*(?:[A-Za-z]{3},\s*)?(\d{1,2}) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d)"
                       r" ([-+])(\d\d)(\d\d)\s*(?:\([^()]*\)\s*)?\Z", re.ASCII)
_OLD_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_OLD_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_OLD_DAYS: dict[int, str] = {}
_OLD_TWO_DIGITS = [f"{i:02d}" for i in range(60)]


def old_decode_subject(raw: str | bytes | None) -> str:
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if "=?" not in raw:
        return raw
    try:
        return str(make_header(decode_header(raw)))
    except (ValueError, LookupError, UnicodeError):
        return raw


def old_header_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("cp1252", "replace")


def old_header_date(raw: str | bytes | None) -> datetime | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    try:
        date = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    return date


def old_header_timestamp(raw: str | bytes | None) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    m = _OLD_DATE.match(raw)
    year = int(m[3]) if m is not None else 0
    if year < 1000:
        date = old_header_date(raw)
        return date.timestamp() if date is not None else None
    day, month = int(m[1]), _OLD_MONTHS.get(m[2].lower())
    hour, minute, second = int(m[4]), int(m[5]), int(m[6])
    offset = int(m[8]) * 3600 + int(m[9]) * 60
    if (month is None or day < 1 or hour > 23 or minute > 59 or second > 59 or offset >= 86400
            or day > _OLD_MONTH_DAYS[month] + (month == 2 and calendar.isleap(year))):
        return None
    stamp = calendar.timegm((year, month, day, hour, minute, second))
    return float(stamp - offset if m[7] == "+" else stamp + offset)


def old_clean(text: str, limit: int = OLD_MAX_SUBJECT) -> str:
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    text = _OLD_UNSAFE.sub(" ", text)
    text = _OLD_SPACES.sub(" ", text).strip(" .")
    if len(text) > limit:
        text = text[:limit].rstrip(" .") + "…"
    return text


def old_message_name(key: str, subject: str | bytes | None, date: datetime | float | None) -> str:
    if not _OLD_KEY.fullmatch(f"[{key}].eml"):
        raise ValueError(f"unusable message key {key!r}")
    parts = []
    if isinstance(date, int) or isinstance(date, float) and date.is_integer():
        day, second = divmod(int(date), 86400)
        prefix = _OLD_DAYS.get(day)
        if prefix is None:
            t = time.gmtime(day * 86400)
            prefix = f"{t.tm_year}-{t.tm_mon:02d}-{t.tm_mday:02d} " if 1000 <= t.tm_year <= 9999 else ""
            if len(_OLD_DAYS) >= 10_000:
                _OLD_DAYS.clear()
            _OLD_DAYS[day] = prefix
        if prefix:
            parts.append(prefix + _OLD_TWO_DIGITS[second // 3600]
                         + _OLD_TWO_DIGITS[second % 3600 // 60])
            date = None
    if isinstance(date, (int, float)):
        date = datetime.fromtimestamp(date, UTC)
    if date is not None:
        parts.append(date.astimezone(UTC).strftime("%Y-%m-%d %H%M"))
    title = old_clean(old_decode_subject(subject))  # (the old code had two equal branches)
    if title:
        parts.append(title)
    parts.append(f"[{key}]{OLD_SUFFIX}")
    return " ".join(parts)


_OLD_LISTED = re.compile(rb'\* \d+ FETCH \(UID (\d+) RFC822\.SIZE (\d+) INTERNALDATE "([^"]*)" '
                         rb"BODY\[HEADER\.FIELDS \(SUBJECT DATE\)\] \{\d+\}\Z")
_OLD_IMAP_MONTHS = {m.encode(): i for i, m in enumerate(
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1)}
_OLD_UID = re.compile(rb"\bUID (\d+)")
_OLD_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_OLD_IDATE = re.compile(rb'\bINTERNALDATE "([^"]*)"')
_OLD_DAY_STARTS: dict[bytes, int] = {}


def old_listing_rows(replies: Iterable[imapfetch.Reply]
                     ) -> Iterator[tuple[int, int | None, float | None, bytes]]:
    for reply in replies:
        if len(reply) == 3 and reply[2] == b")":
            m = _OLD_LISTED.match(reply[0])
            if m is not None:
                yield int(m[1]), int(m[2]), old_internaldate(m[3]), reply[1]
                continue
        yield from old_parse_listing(old_imaplib_shape(reply))


_OLD_FETCH = re.compile(rb"\* (\d+) FETCH ")


def old_imaplib_shape(reply: imapfetch.Reply) -> list:
    m = _OLD_FETCH.match(reply[0])
    lines = [m.group(1) + b" " + reply[0][m.end():] if m else reply[0], *reply[2::2]]
    items: list = [(lines[i], reply[2 * i + 1]) for i in range(len(reply) // 2)]
    items.append(lines[-1])
    return items


def old_parse_listing(data: list) -> list[tuple[int, int | None, float | None, bytes]]:
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
            uid = _OLD_UID.search(line)
            if uid is None:
                out.extend(imap._general([item, tail]))
                continue
            size = _OLD_SIZE.search(line)
            date = _OLD_IDATE.search(line)
            out.append((int(uid.group(1)), int(size.group(1)) if size else None,
                        old_internaldate(date.group(1)) if date else None, literal or b""))
        elif isinstance(item, bytes) and item.strip() not in (b")", b""):
            out.extend(imap._general([item]))
    return out


def old_internaldate(text: bytes) -> float | None:
    try:
        date, clock, zone = text.split()
        start = _OLD_DAY_STARTS.get(date)
        if start is None:
            day, month, year = date.split(b"-")
            start = calendar.timegm((int(year), _OLD_IMAP_MONTHS[month], int(day), 0, 0, 0))
            if len(_OLD_DAY_STARTS) >= 10_000:
                _OLD_DAY_STARTS.clear()
            _OLD_DAY_STARTS[date] = start
        h, m, s = clock.split(b":")
        offset = (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * (-1 if zone[:1] == b"-" else 1)
        return float(start + int(h) * 3600 + int(m) * 60 + int(s) - offset)
    except (ValueError, KeyError, IndexError):
        return None


def old_header_fields(raw: bytes) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    if b"\n " in raw or b"\n\t" in raw:
        raw = re.sub(rb"\r?\n[ \t]+", b" ", raw)
    for line in raw.split(b"\n"):
        name, colon, value = line.partition(b":")
        if colon:
            fields.setdefault(name.strip().lower(), value.strip())
    return fields


def old_entry(uidvalidity: int, uid: int, size: int | None, internal: float | None,
              header: bytes) -> Entry:
    fields = old_header_fields(header)
    date = old_header_timestamp(fields.get(b"date"))
    when = date if date is not None else internal
    return Entry(old_message_name(str(uid), old_header_text(fields.get(b"subject")), when), False,
                 size, internal if internal is not None else date, (uidvalidity, uid))


def old_replies(imap_: object, tag: bytes) -> Iterator[imapfetch.Reply]:
    readline, read = imap_.readline, imap_.read  # type: ignore[attr-defined]
    tagged = tag + b" "
    while True:
        line = readline()
        if not line:
            raise imap_.abort("socket error: EOF")  # type: ignore[attr-defined]
        if line.startswith(tagged):
            imap_.tagged_commands.pop(tag, None)  # type: ignore[attr-defined]
            rest = line[len(tagged):].rstrip(b"\r\n")
            if not rest.startswith(b"OK"):
                raise imap_.error(f"FETCH failed: {[rest]}")  # type: ignore[attr-defined]
            return
        if not line.endswith(b"}\r\n"):
            if line.startswith(b"* BYE"):
                raise imap_.abort(line.rstrip(b"\r\n").decode("utf-8", "replace"))  # type: ignore
            if line.startswith(b"* ") and _OLD_FETCH.match(line):
                yield [line.rstrip(b"\r\n")]
            continue
        pieces: imapfetch.Reply = []
        while line.endswith(b"}\r\n"):
            start = line.rfind(b"{")
            digits = line[start + 1:-3]
            if start < 0 or not digits.isdigit():
                break
            size = int(digits)
            literal = read(size)
            if len(literal) != size:
                raise imap_.abort("socket error: EOF inside a literal")  # type: ignore
            pieces += [line[:-2], literal]
            line = readline()
            if not line:
                raise imap_.abort("socket error: EOF")  # type: ignore[attr-defined]
        pieces.append(line.rstrip(b"\r\n"))
        if pieces[0].startswith(b"* ") and _OLD_FETCH.match(pieces[0]):
            yield pieces


_OLD_SLASH = "\u2215"
_OLD_DOTS = {".": "\uff0e", "..": "\uff0e\uff0e"}
_OLD_NAME_UNSAFE = re.compile("[\x00-\x1f/\x7f]")


def old_local_name(remote: str) -> str:
    import hashlib

    if remote in _OLD_DOTS:
        return _OLD_DOTS[remote]
    if _OLD_NAME_UNSAFE.search(remote):
        remote = "".join(
            _OLD_SLASH if c == "/" else chr(0x2400 + ord(c)) if c < " "
            else "\u2421" if c == "\x7f" else c
            for c in remote
        )
    if len(remote) <= 255 // 4:
        return remote
    raw = remote.encode("utf-8", "surrogateescape")
    if len(raw) > 255:
        digest = hashlib.sha1(raw).hexdigest()[:8]
        stem, dot, ext = remote.rpartition(".")
        tail = f"~{digest}" + (dot + ext if dot and len(ext) <= 10 else "")
        budget = 255 - len(tail.encode())
        head = raw[:budget].decode("utf-8", "ignore") if not dot or len(ext) > 10 else (
            stem.encode("utf-8", "surrogateescape")[:budget].decode("utf-8", "ignore")
        )
        remote = head + tail
    return remote


def old_make(inode: int, entry: Entry, caps: Capabilities, owner: attrs.Owner) -> dict:
    """The old ``attrs.make``, as a dict of the attributes it set (``now`` fixed by caller)."""
    a: dict = {"st_ino": inode}
    writable = not owner.readonly and (caps.write or caps.remove or caps.mkdir)
    if entry.symlink is not None:
        a["st_mode"] = stat.S_IFLNK | 0o777
        a["st_size"] = len(entry.symlink.encode())
    elif entry.is_dir:
        a["st_mode"] = stat.S_IFDIR | _old_perm(entry.mode, 0o755, writable)
        a["st_size"] = 0
    else:
        file_writable = writable and caps.write and (caps.overwrite or not caps.immutable)
        a["st_mode"] = stat.S_IFREG | _old_perm(entry.mode, 0o644, file_writable)
        a["st_size"] = entry.size or 0
    a["st_nlink"] = 2 if entry.is_dir else 1
    a["st_uid"], a["st_gid"] = owner.uid, owner.gid
    mtime_ns = int((entry.mtime if entry.mtime is not None else time.time()) * 1e9)
    a["st_mtime_ns"] = a["st_ctime_ns"] = a["st_atime_ns"] = mtime_ns
    a["st_blksize"] = 1024 * 1024
    a["st_blocks"] = (a["st_size"] + 511) // 512
    timeout = 300.0 if caps.immutable and entry.size_exact else 1.0
    a["attr_timeout"] = a["entry_timeout"] = timeout
    return a


def _old_perm(mode: int | None, default: int, writable: bool) -> int:
    perm = (mode if mode is not None else default) & 0o7777
    return perm if writable else perm & ~0o222


# ---------------------------------------------------------------------------------------
# Generated inputs
# ---------------------------------------------------------------------------------------

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
WORDS = ["Lunch", "on", "Friday", "report", "Re:", "Fwd:", "AW:", "meeting", "x", "Grüße",
         "日本語", "naïve", "e\u0301", "a/b", "c:\\d", "*?", '"q"', "<a>", "|", "[42].eml", "[",
         "]", "…", ".", "..", "...", "-", "_", "\u00a0", "\u2003", "\t", "€", "ſ", "K", "İ",
         "\x7f", "\x00", "\x1f", "\x1c", "\x85", "\u3000", "\u2028", "\u200b", "\x0b", "Ω",
         "🙂", "ß", "ǅ", "1", "2024"]
ENCODED = ["=?utf-8?q?Gr=C3=BC=C3=9Fe_/_hello?=", "=?ISO-8859-1?B?SGFsbPY=?=",
           "=?utf-8?b?5pel5pys6Kqe?=", "=?x-unknown?q?abc?=", "=?utf-8?b?!!!?=", "=?utf-8?q?a?= b",
           "=?windows-1252?q?=93quoted=94?=", "=?utf-8?Q?=E2=80=A6?=", "=?", "?=", "=?utf-8?q??="]


def rand_subject(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.05:
        return ""
    if kind < 0.25:
        return f"Bench message {rng.randrange(100000)}"
    parts = []
    for _ in range(rng.randrange(1, 40 if rng.random() < 0.2 else 8)):
        r = rng.random()
        parts.append(rng.choice(ENCODED) if r < 0.15 else rng.choice(WORDS) if r < 0.7
                     else "".join(rng.choice("abcXYZ019 .-") for _ in range(rng.randrange(1, 12))))
    seps = [" ", " ", " ", "  ", "", "\t", " . "]
    text = "".join(p + rng.choice(seps) for p in parts)
    if rng.random() < 0.2:
        text = rng.choice([" ", ".", " .", "\t", ". "]) + text
    if rng.random() < 0.3:
        text = text.rstrip()
    return text


def rand_date(rng: random.Random) -> str:
    if rng.random() < 0.04:
        return rng.choice(["", "garbage", "Mon", "06 May 2024", "Mon, 06 May 2024 10:00 EST",
                           "6 May 2024 10:00:00 GMT", "Tue, 07 May 24 1:02:03 +0100",
                           "Thu, 1 Jan 1970 00:00:00 +0000", "2024-05-06T10:00:00Z"])
    day = rng.choice([rng.randrange(1, 29), rng.randrange(0, 33), 29, 30, 31])
    days = rng.choice([str(day), f"{day:02d}", f"{day:03d}"] if rng.random() < 0.1
                      else [str(day), f"{day:02d}"])
    month = rng.choice(MONTHS + ["Foo"] if rng.random() < 0.05 else MONTHS)
    month = rng.choice([month, month.lower(), month.upper()])
    year = rng.choice([rng.randrange(1969, 2039)] * 6 + [rng.randrange(1000, 10000),
                                                         rng.randrange(0, 100), rng.randrange(100, 1000)])
    years = rng.choice([str(year), f"{year:04d}"] if year >= 100 else [f"{year:02d}", f"{year:04d}"])
    if year in (1900, 2000, 2100, 2024, 2023) and rng.random() < 0.5:
        days, month = rng.choice(["28", "29", "30"]), "Feb"
    hh = rng.choice([rng.randrange(24)] * 8 + [24, 25, 99])
    mm = rng.choice([rng.randrange(60)] * 8 + [60, 99])
    ss = rng.choice([rng.randrange(60)] * 8 + [60, 61])
    clock = f"{hh:02d}:{mm:02d}:{ss:02d}" if rng.random() < 0.95 else f"{hh:02d}:{mm:02d}"
    sign = rng.choice("+-")
    zone = rng.choice([f"{sign}{rng.randrange(15):02d}{rng.choice([0, 30, 45]):02d}"] * 6 + [
        "+0000", "-0000", f"{sign}{rng.randrange(100):02d}{rng.randrange(100):02d}", "GMT", "UT",
        "EST", "Z", "+000", "+00000", "CEST"])
    wd = rng.choice(["", "", "Mon, ", "Mon,", "mon,  ", "Xyz, ", "Mon , ", "Monday, "])
    text = f"{wd}{days} {month} {years} {clock} {zone}"
    if rng.random() < 0.15:
        text += rng.choice([" (UTC)", " (CEST)", "(x)", " (a (b))", " (é)", "  ", "\t", " x"])
    if rng.random() < 0.1:
        text = rng.choice([" ", "  ", "\t"]) + text
    if rng.random() < 0.03:
        text = text.replace(" ", "  ", 1)
    if rng.random() < 0.02:
        text = text.replace(" ", "\u00a0", 1)
    return text


def encode_header(text: str, rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.1:
        return text.encode("cp1252", "replace")
    if r < 0.13:
        return text.encode("latin-1", "replace") + b"\x81\x8d"
    return text.encode("utf-8")


def rand_header(rng: random.Random) -> bytes:
    """A BODY[HEADER.FIELDS (SUBJECT DATE)] literal: Dovecot's usual one, or something odd."""
    nl = b"\r\n" if rng.random() < 0.95 else b"\n"
    fields = []
    if rng.random() < 0.95:
        fields.append((rng.choice([b"Subject", b"Subject", b"SUBJECT", b"subject", b"Subject ",
                                   b" Subject", b"SubjecT"]), encode_header(rand_subject(rng), rng)))
    if rng.random() < 0.95:
        fields.append((rng.choice([b"Date", b"Date", b"DATE", b"date", b"Date\t"]),
                       encode_header(rand_date(rng), rng)))
    if rng.random() < 0.5:
        fields.reverse()
    if rng.random() < 0.05:
        fields.append(rng.choice(fields) if fields else (b"X-Foo", b"bar"))
    if rng.random() < 0.03:
        fields.insert(0, (b"X-Other", b"x"))
    lines = []
    for name, value in fields:
        sep = rng.choice([b": ", b": ", b": ", b":", b":  ", b":\t", b": \t "])
        tail = rng.choice([b"", b"", b"", b"", b" ", b"\t", b"\r", b"\x0b"])
        line = name + sep + value + tail
        if rng.random() < 0.15 and b" " in line[len(name) + 2:]:  # fold at a space
            cut = line.index(b" ", len(name) + 2)
            line = line[:cut] + nl + rng.choice([b" ", b"\t", b"  "]) + line[cut + 1:]
        lines.append(line)
    raw = b"".join(line + nl for line in lines)
    end = rng.random()
    if end < 0.9:
        raw += nl
    elif end < 0.93:
        raw = raw.rstrip(b"\r\n")
    elif end < 0.96:
        raw += nl + nl
    elif end < 0.98:
        raw = b""
    else:
        raw = raw.replace(b"\r\n", b"\r", 1)
    return raw


def rand_internaldate(rng: random.Random) -> bytes:
    if rng.random() < 0.03:
        return rng.choice([b"", b"garbage", b"06-May-2024 10:00:00", b"06-may-2024 10:00:00 +0000",
                           b"06-May-2024 10:00:00 +00", b"31-Feb-2024 10:00:00 +0000",
                           b"00-Jan-0000 00:00:00 +0000", b"06-May-2024 1:2:3 +0000",
                           b"06-May-2024  10:00:00 +0000", b"6-May-24 10:00:00 -0130",
                           b"06-May-2024 10:00:00 x0200", b"06-May-2024 10:00:00 +1_00",
                           b"1_0-May-2024 10:00:00 +0000", b"06-May-2024 99:99:99 +9999"])
    day = rng.randrange(0, 33) if rng.random() < 0.05 else rng.randrange(1, 29)
    days = rng.choice([f"{day:02d}", f"{day:2d}", str(day)])
    year = rng.randrange(1970, 2038) if rng.random() < 0.95 else rng.randrange(1, 10000)
    sign = rng.choice("+-")
    zone = f"{sign}{rng.randrange(15):02d}{rng.choice([0, 30, 45]):02d}"
    return (f"{days}-{rng.choice(MONTHS)}-{year:04d} {rng.randrange(24):02d}:{rng.randrange(60):02d}:"
            f"{rng.randrange(60):02d} {zone}").encode()


def rand_reply(rng: random.Random, seq: int) -> imapfetch.Reply:
    uid, size = rng.randrange(1, 1 << 32), rng.randrange(0, 1 << 26)
    date = b'INTERNALDATE "' + rand_internaldate(rng) + b'"'
    field = b"BODY[HEADER.FIELDS (SUBJECT DATE)]"
    header = rand_header(rng)
    lit = b"{%d}" % len(header)
    r = rng.random()
    if r < 0.9:
        return [b"* %d FETCH (UID %d RFC822.SIZE %d " % (seq, uid, size) + date + b" " + field
                + b" " + lit, header, b")"]
    if r < 0.94:
        return [b"* %d FETCH (" % seq + field + b" " + lit, header,
                b" UID %d RFC822.SIZE %d " % (uid, size) + date + b")"]
    if r < 0.96:
        return [b"* %d FETCH (UID %d RFC822.SIZE %d " % (seq, uid, size) + date + b" " + field
                + b" NIL)"]
    if r < 0.98:
        return [b"* %d FETCH (UID %d FLAGS (\\Seen))" % (seq, uid)]
    return [b"* %d FETCH (UID %d " % (seq, uid) + field + b" " + lit, header, b")"]


def outcome(fn, *args):  # type: ignore[no-untyped-def]
    """What ``fn(*args)`` returns, or the exception it raises (type and text)."""
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001 - an exception is an outcome to compare too
        return ("raised", type(e), str(e))


def same_float(a: object, b: object) -> bool:
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


def test_header_timestamp_matches_old() -> None:
    rng = random.Random(1)
    for i in range(60_000):
        text = rand_date(rng)
        raw: str | bytes = text if i % 3 == 0 else encode_header(text, rng)
        new, old = outcome(mailnames.header_timestamp, raw), outcome(old_header_timestamp, raw)
        assert new == old and type(new[1]) is type(old[1]), raw
    assert mailnames.header_timestamp(None) is None


def test_clean_and_decode_match_old() -> None:
    rng = random.Random(2)
    for _ in range(40_000):
        text = rand_subject(rng)
        limit = rng.choice([60, 60, 60, 5, 0, 1, 200])
        assert mailnames.clean(text, limit) == old_clean(text, limit), (text, limit)
        assert mailnames.clean(text) == old_clean(text), text
        assert mailnames.decode_subject(text) == old_decode_subject(text), text
    for text in ["", " ", ".", "a" * 60, "a" * 61, "a" * 59 + " b", "a" * 59 + ".", "a  b",
                 "a\x00b", "a\u00a0b", "é", "e\u0301", "a" * 60 + "é", " a", "a ", ".a", "a."]:
        assert mailnames.clean(text) == old_clean(text), text


def test_message_name_matches_old() -> None:
    rng = random.Random(3)
    keys = ["1", "42", "0", "9" * 32, "9" * 33, "", "²", "١٢", "１２", "abc-_Z", "a b", "[1]",
            "x" * 32, "x" * 33, "12\n", "007"]
    dates: list = [None, 0, 0.0, 1.5, -1.0, -86401, 1714989600.0, 1714989600, True,
                   253402300799.0, 253402300800.0, -62135596800.0, -62135596801.0, 1e20,
                   float("nan"), float("inf"), datetime(2024, 5, 6, 10, tzinfo=UTC),
                   datetime(2024, 5, 6, 10, tzinfo=timezone(timedelta(hours=2))),
                   datetime(999, 1, 1, tzinfo=UTC), 946684799.999]
    for i in range(40_000):
        key = rng.choice(keys) if i % 5 == 0 else str(rng.randrange(1, 1 << 32))
        date = rng.choice(dates) if i % 4 == 0 else rng.choice(
            [float(rng.randrange(-10**10, 10**10)), rng.randrange(-10**10, 10**10),
             rng.uniform(0, 2e9)])
        raw = rand_subject(rng)
        subject: str | bytes | None = (raw if i % 3 else raw.encode("utf-8") if i % 2
                                       else None if i % 7 == 0 else raw.encode("cp1252", "replace"))
        new = outcome(mailnames.message_name, key, subject, date)
        old = outcome(old_message_name, key, subject, date)
        assert new == old, (key, subject, date)


def test_header_fields_match_old() -> None:
    rng = random.Random(4)
    for _ in range(40_000):
        raw = rand_header(rng)
        fields = old_header_fields(raw)
        assert imap._header_fields(raw) == fields, raw
        if hasattr(imap, "_subject_date"):
            assert imap._subject_date(raw) == (fields.get(b"subject"), fields.get(b"date")), raw


def test_internaldate_matches_old() -> None:
    rng = random.Random(5)
    for _ in range(40_000):
        text = rand_internaldate(rng)
        new, old = imap._internaldate(text), old_internaldate(text)
        assert same_float(new, old) or new is old is None, text


def test_listing_rows_and_entries_match_old() -> None:
    rng = random.Random(6)
    for _ in range(20):
        replies = [rand_reply(rng, i + 1) for i in range(2000)]
        new_rows = list(imap._listing_rows(replies))
        old_rows = list(old_listing_rows(replies))
        assert new_rows == old_rows
        for row, old_row in zip(new_rows, old_rows):
            assert all(same_float(a, b) or a is b is None for a, b in zip(row[1:3], old_row[1:3]))
            uidvalidity = rng.randrange(1, 1 << 32)
            new, old = imap._entry(uidvalidity, *row), old_entry(uidvalidity, *old_row)
            assert new == old, row
            assert type(new.mtime) is type(old.mtime), row


class FakeImap:
    """What ``imapfetch.replies`` uses of an imaplib connection, over fixed bytes."""

    abort = EOFError
    error = LookupError

    def __init__(self, data: bytes) -> None:
        self.f = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]
        self.tagged_commands: dict = {b"t1": None}

    def readline(self) -> bytes:
        return self.f.readline()

    def read(self, n: int) -> bytes:
        return self.f.read(n)


def test_wire_replies_match_old() -> None:
    rng = random.Random(7)
    for round_ in range(300):
        chunks = []
        for i in range(rng.randrange(0, 30)):
            reply = rand_reply(rng, i + 1)
            chunks.append(b"".join(p if k % 2 else p + b"\r\n" for k, p in enumerate(reply)))
            if rng.random() < 0.05:
                chunks.append(rng.choice([b"* 5 EXISTS\r\n", b"* OK still here\r\n",
                                          b"* 3 FETCH (X {x}\r\n", b"* 4 FETCH (X {2}\r\nab)\r\n",
                                          b"* 4 FETCHX\r\n", b"+ go on\r\n", b"* 4 FETCH {1}\r\n",
                                          b"t1x OK\r\n", b"* x FETCH (A)\r\n"]))
        end = rng.choice([b"t1 OK done\r\n"] * 8 + [b"t1 NO nope\r\n", b"* BYE going\r\n", b"",
                                                   b"* 9 FETCH (A {5}\r\nab"])
        data = b"".join(chunks) + end
        if round_ % 50 == 0:
            data = data.replace(b"\r\n", b"\n", 1)
        new = outcome(lambda d: list(imapfetch.replies(FakeImap(d), b"t1")), data)
        old = outcome(lambda d: list(old_replies(FakeImap(d), b"t1")), data)
        assert new == old, data


def rand_remote_name(rng: random.Random) -> str:
    alphabet = ["a", "Z", "0", " ", ".", "/", "\x00", "\n", "\x1f", "\x7f", "é", "€", "日", "🙂",
                "\udcff", "~", "\u2215", "-"]
    n = rng.choice([rng.randrange(0, 20), rng.randrange(55, 70), rng.randrange(60, 300)])
    name = "".join(rng.choice(alphabet if rng.random() < 0.3 else ["a", "b", "x", " "])
                   for _ in range(n))
    if rng.random() < 0.4:
        name += rng.choice([".txt", ".eml", ".tar.gz", ".verylongextension", ".", ".日本"])
    return name


def test_local_name_matches_old() -> None:
    rng = random.Random(8)
    cases = ["", ".", "..", "...", "a" * 255, "a" * 256, "é" * 127, "é" * 128, "日" * 85, "日" * 86,
             "a" * 63, "a" * 64, "é" * 63, "é" * 64, "a" * 250 + ".txt", "a" * 252 + ".txt",
             "🙂" * 63, "🙂" * 64, "x" * 300 + ".verylongext", "a/b", "\x00", "\x7f" * 100]
    for name in cases + [rand_remote_name(rng) for _ in range(40_000)]:
        new, old = outcome(names.local_name, name), outcome(old_local_name, name)
        assert new == old, name
        if new[0] == "ok":
            assert len(names.to_fs(new[1])) <= 255


def rand_entry(rng: random.Random) -> Entry:
    kind = rng.random()
    return Entry(
        "n", kind < 0.2, rng.choice([None, 0, 1, 511, 512, 513, rng.randrange(1 << 40)]),
        rng.choice([None, 0.0, 1714989600.0, rng.uniform(-1e9, 3e9), 1.5e9 + 1e-7]),
        (), rng.choice([None, 0o644, 0o4755, 0o177777, 0]),
        "target/é" if 0.2 <= kind < 0.3 else None, rng.random() < 0.7)


def test_attrs_make_matches_old(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(9)
    monkeypatch.setattr(time, "time", lambda: 1714989600.123)
    keys = ["st_ino", "st_mode", "st_size", "st_nlink", "st_uid", "st_gid", "st_mtime_ns",
            "st_ctime_ns", "st_atime_ns", "st_blksize", "st_blocks", "attr_timeout",
            "entry_timeout", "st_rdev", "generation", "st_birthtime_ns"]
    fresh = attrs.pyfuse3.EntryAttributes()
    for _ in range(20_000):
        entry = rand_entry(rng)
        caps = Capabilities(**{k: rng.random() < 0.5 for k in
                               ["write", "overwrite", "mkdir", "remove", "immutable"]})
        owner = attrs.Owner(rng.randrange(2000), rng.randrange(2000), rng.random() < 0.3)
        inode = rng.randrange(1, 1 << 40)
        a, want = attrs.make(inode, entry, caps, owner), old_make(inode, entry, caps, owner)
        got = {k: getattr(a, k) for k in keys}
        want = {k: want.get(k, getattr(fresh, k)) for k in keys}
        assert got == want, entry


def test_inode_ref_matches_old() -> None:
    """``ref`` as before: same inode numbers, lookups, entries and lookups by path/inode."""

    def old_ref(table: inodes.InodeTable, vpath: tuple, entry: Entry) -> inodes.Node:
        node = table._by_path.get(vpath)
        if node is None:
            node = inodes.Node(table._next, vpath, entry)
            table._next += 1
            table._by_inode[node.inode] = node
            table._by_path[vpath] = node
        else:
            node.entry = entry
        node.lookups += 1
        return node

    rng = random.Random(10)
    root = Entry("", True)
    new, old = inodes.InodeTable(root), inodes.InodeTable(root)
    paths = [("d", f"{i}") for i in range(300)] + [("d",), ()]
    for _ in range(30_000):
        vpath = rng.choice(paths)
        op = rng.random()
        if op < 0.7:
            entry = Entry(vpath[-1] if vpath else "", False, rng.randrange(10))
            a, b = new.ref(vpath, entry), old_ref(old, vpath, entry)
            assert (a.inode, a.vpath, a.entry, a.lookups, a.handles) == (
                b.inode, b.vpath, b.entry, b.lookups, b.handles)
        elif op < 0.9:
            node = old.at(vpath)
            if node is not None:
                count = rng.randrange(1, 3)
                new.forget(node.inode, count)
                old.forget(node.inode, count)
        else:
            new.unlink(vpath)
            old.unlink(vpath)
        for p in rng.sample(paths, 5):
            a, b = new.at(p), old.at(p)
            assert (a and (a.inode, a.lookups, a.entry)) == (b and (b.inode, b.lookups, b.entry))
    assert sorted(new._by_inode) == sorted(old._by_inode)
