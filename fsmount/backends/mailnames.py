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
_SPACES = re.compile(r"\s+")
# The usual Date header (``Mon, 6 May 2024 10:00:00 +0200 (CEST)``), read without
# email.utils (whose general parser is most of a listing's cost); anything else goes there.
_DATE = re.compile(r"\s*(?:[A-Za-z]{3},\s*)?(\d{1,2}) ([A-Za-z]{3}) (\d{4}) (\d\d):(\d\d):(\d\d)"
                   r" ([-+])(\d\d)(\d\d)\s*(?:\([^()]*\)\s*)?\Z", re.ASCII)
_MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DAYS: dict[int, str] = {}  # days since 1970 → "YYYY-MM-DD " (a folder's mail shares few days)
_TWO_DIGITS = [f"{i:02d}" for i in range(60)]


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
    """``header_date(raw).timestamp()`` (None where that is None), several times faster for
    the usual form of the header."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    m = _DATE.match(raw)
    year = int(m[3]) if m is not None else 0
    if year < 1000:  # not the usual form, or a year email.utils reads as two digits
        date = header_date(raw)
        return date.timestamp() if date is not None else None
    day, month = int(m[1]), _MONTHS.get(m[2].lower())
    hour, minute, second = int(m[4]), int(m[5]), int(m[6])
    offset = int(m[8]) * 3600 + int(m[9]) * 60
    if (month is None or day < 1 or hour > 23 or minute > 59 or second > 59 or offset >= 86400
            or day > _MONTH_DAYS[month] + (month == 2 and calendar.isleap(year))):
        return None  # what datetime() refuses, so header_date is None too
    stamp = calendar.timegm((year, month, day, hour, minute, second))
    return float(stamp - offset if m[7] == "+" else stamp + offset)


def clean(text: str, limit: int = MAX_SUBJECT) -> str:
    """Text safe in a file name on any filesystem: no separators, controls or reserved marks."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    text = _UNSAFE.sub(" ", text)
    text = _SPACES.sub(" ", text).strip(" .")
    if len(text) > limit:
        text = text[:limit].rstrip(" .") + "…"
    return text


def message_name(key: str, subject: str | bytes | None, date: datetime | float | None) -> str:
    """``YYYY-MM-DD HHMM Subject [key].eml`` (date in UTC; parts left out when unknown)."""
    if not _KEY.fullmatch(f"[{key}].eml"):
        raise ValueError(f"unusable message key {key!r}")
    parts = []
    if isinstance(date, int) or isinstance(date, float) and date.is_integer():
        day, second = divmod(int(date), 86400)
        prefix = _DAYS.get(day)
        if prefix is None:
            t = time.gmtime(day * 86400)
            prefix = f"{t.tm_year}-{t.tm_mon:02d}-{t.tm_mday:02d} " if 1000 <= t.tm_year <= 9999 else ""
            if len(_DAYS) >= 10_000:
                _DAYS.clear()
            _DAYS[day] = prefix
        if prefix:  # else strftime's own padding rules for years outside 1000-9999
            parts.append(prefix + _TWO_DIGITS[second // 3600] + _TWO_DIGITS[second % 3600 // 60])
            date = None
    if isinstance(date, (int, float)):
        date = datetime.fromtimestamp(date, timezone.utc)
    if date is not None:
        parts.append(date.astimezone(timezone.utc).strftime("%Y-%m-%d %H%M"))
    title = clean(decode_subject(subject) if not isinstance(subject, str) else decode_subject(subject))
    if title:
        parts.append(title)
    parts.append(f"[{key}]{SUFFIX}")
    return " ".join(parts)


def key_of(name: str) -> str | None:
    """The key at the end of a name made by ``message_name``; None for any other name."""
    m = _KEY.search(name)
    return m.group(1) if m else None
