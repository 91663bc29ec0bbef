"""File names for messages and articles, shared by IMAP, POP3 and NNTP.

A name reads well in a file manager and sorts by date — ``2024-05-01 1330 Lunch on Friday
[42].eml`` — and ends with a short key the backend chose (a UID, an article number, a hash of a
UIDL) that makes it unique and stable across mounts. ``key_of`` recovers the key, so a name
resolves without a listing.
"""
from __future__ import annotations

import calendar
import re
import time
import unicodedata
from datetime import datetime, timezone
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime

SUFFIX = ".eml"
MAX_SUBJECT = 60  # characters: enough to recognise, short enough for narrow windows
_KEY = re.compile(r" ?\[([0-9A-Za-z_-]{1,32})\]\.eml\Z")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|\[\]]+")
# The usual Date header (``Mon, 6 May 2024 10:00:00 +0200 (CEST)``), read without
# email.utils (whose general parser is most of a listing's cost); anything else goes there.
# Matched as bytes (the listing's own type); groups: "6 May 2024", "10", "00", "00", "+0200".
_DATE = re.compile(rb"\s*(?:[A-Za-z]{3},\s*)?(\d{1,2} [A-Za-z]{3} \d{4}) (\d\d):(\d\d):(\d\d)"
                   rb" ([-+]\d{4})\s*(?:\([^()]*\)\s*)?\Z")
_MONTHS = {m.encode(): i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_FALLBACK = object()  # a day text with a year below 1000: email.utils decides (two-digit years)
_UNKNOWN = object()  # a day text not seen yet
# Date-header pieces already worked out (a folder's mail shares few days and zones); None
# marks a piece datetime() refuses. Each is cleared when it reaches _CACHED entries.
_DAY_STARTS: dict[bytes, int | object | None] = {}  # b"6 May 2024" → timegm of its midnight
_ZONES: dict[bytes, int | None] = {}  # b"+0200" → seconds east of UTC
_CACHED = 10_000
# Two digits of hour, minute, second → seconds (None where datetime() refuses the value).
_HOURS = {b"%02d" % i: i * 3600 if i < 24 else None for i in range(100)}
_MINUTES = {b"%02d" % i: i * 60 if i < 60 else None for i in range(100)}
_SECONDS = {b"%02d" % i: i if i < 60 else None for i in range(100)}
_DAYS: dict[int, str] = {}  # days since 1970 → "YYYY-MM-DD " (a folder's mail shares few days)
_CLOCKS = [f"{h:02d}{m:02d} " for h in range(24) for m in range(60)]  # minute of day → "HHMM "


def decode_subject(raw: str | bytes | None) -> str:
    """An RFC 2047 header value as text; anything undecodable is kept as-is, never raised."""
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if "=?" not in raw:  # no encoded word: decode_header would return it unchanged
        return raw
    try:
        return str(make_header(decode_header(raw)))
    except (ValueError, LookupError, UnicodeError):
        return raw


def header_text(value: bytes | None) -> str | None:
    """A raw header value: UTF-8 where it is, else Windows-1252 (never an error)."""
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("cp1252", "replace")


def header_date(raw: str | bytes | None) -> datetime | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    try:
        date = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if date.tzinfo is None:
        date = date.replace(tzinfo=timezone.utc)
    return date


def header_timestamp(raw: str | bytes | None) -> float | None:
    """``header_date(raw).timestamp()`` (None where that is None), many times faster for
    the usual form of the header: each day and zone text is checked and converted once, and
    hours, minutes and seconds come from tables."""
    if raw is None:
        return None
    # A str is matched as ASCII bytes: a non-ASCII character could only match inside the
    # (comment), where its "?" stand-in matches too.
    m = _DATE.match(raw if isinstance(raw, bytes) else raw.encode("ascii", "replace"))
    if m is None:
        date = header_date(raw)
        return date.timestamp() if date is not None else None
    day_text, hour_text, minute_text, second_text, zone_text = m.groups()
    start = _DAY_STARTS.get(day_text, _UNKNOWN)
    if start is _UNKNOWN:
        start = _day_start(day_text)
    if start is _FALLBACK:  # a year email.utils reads as two digits, or below 1000
        date = header_date(raw)
        return date.timestamp() if date is not None else None
    hour, minute, second = _HOURS[hour_text], _MINUTES[minute_text], _SECONDS[second_text]
    zone = _ZONES.get(zone_text, -1)  # -1: not seen yet (a zone is a whole number of minutes)
    if zone == -1:
        zone = _zone(zone_text)
    if start is None or hour is None or minute is None or second is None or zone is None:
        return None  # what datetime() refuses, so header_date is None too
    return float(start + hour + minute + second - zone)


def _day_start(text: bytes) -> int | object | None:
    """``b"6 May 2024"`` → POSIX time of its midnight (None for a day datetime() refuses,
    _FALLBACK for a year below 1000), remembered in _DAY_STARTS."""
    day_s, month_s, year_s = text.split(b" ")
    day, month, year = int(day_s), _MONTHS.get(month_s.lower()), int(year_s)
    start: int | object | None
    if year < 1000:
        start = _FALLBACK
    elif (month is None or day < 1
          or day > _MONTH_DAYS[month] + (month == 2 and calendar.isleap(year))):
        start = None
    else:
        start = calendar.timegm((year, month, day, 0, 0, 0))
    if len(_DAY_STARTS) >= _CACHED:
        _DAY_STARTS.clear()
    _DAY_STARTS[text] = start
    return start


def _zone(text: bytes) -> int | None:
    """``b"+0200"`` → seconds east of UTC (None for a day or more), remembered in _ZONES."""
    offset = int(text[1:3]) * 3600 + int(text[3:5]) * 60
    zone = None if offset >= 86400 else offset if text[:1] == b"+" else -offset
    if len(_ZONES) >= _CACHED:
        _ZONES.clear()
    _ZONES[text] = zone
    return zone


def clean(text: str, limit: int = MAX_SUBJECT) -> str:
    """Text safe in a file name on any filesystem: no separators, controls or reserved marks."""
    ascii_only = text.isascii()
    if not ascii_only:
        text = unicodedata.normalize("NFC", text)
    text = _UNSAFE.sub(" ", text)
    # Runs of whitespace become one space. split() and \s agree on what whitespace is, and
    # the spaces split() also drops at either end are stripped below anyway. ASCII text has
    # no whitespace but " " left (controls are unsafe), so it needs this only for "  ".
    if not ascii_only or "  " in text:
        text = " ".join(text.split())
    text = text.strip(" .")
    if len(text) > limit:
        text = text[:limit].rstrip(" .") + "…"
    return text


def message_name(key: str, subject: str | bytes | None, date: datetime | float | None) -> str:
    """``YYYY-MM-DD HHMM Subject [key].eml`` (date in UTC; parts left out when unknown)."""
    # A UID or article number needs no regex: 1-32 ASCII digits is what _KEY accepts of them.
    if not (len(key) <= 32 and key.isdigit() and key.isascii()) and not _KEY.fullmatch(
            f"[{key}].eml"):
        raise ValueError(f"unusable message key {key!r}")
    head = ""  # "YYYY-MM-DD HHMM " when the date is known
    if isinstance(date, float):
        stamp = int(date) if date.is_integer() else None
    else:
        stamp = int(date) if isinstance(date, int) else None
    if stamp is not None:
        day, second = divmod(stamp, 86400)
        prefix = _DAYS.get(day)
        if prefix is None:
            t = time.gmtime(day * 86400)
            prefix = f"{t.tm_year}-{t.tm_mon:02d}-{t.tm_mday:02d} " if 1000 <= t.tm_year <= 9999 else ""
            if len(_DAYS) >= 10_000:
                _DAYS.clear()
            _DAYS[day] = prefix
        if prefix:  # else strftime's own padding rules for years outside 1000-9999
            head = prefix + _CLOCKS[second // 60]
            date = None
    if isinstance(date, (int, float)):
        date = datetime.fromtimestamp(date, timezone.utc)
    if date is not None:
        head = date.astimezone(timezone.utc).strftime("%Y-%m-%d %H%M") + " "
    title = clean(decode_subject(subject))
    return f"{head}{title} [{key}]{SUFFIX}" if title else f"{head}[{key}]{SUFFIX}"


def key_of(name: str) -> str | None:
    """The key at the end of a name made by ``message_name``; None for any other name."""
    m = _KEY.search(name)
    return m.group(1) if m else None
