"""File names for messages and articles, shared by IMAP, POP3 and NNTP.

A name reads well in a file manager and sorts by date — ``2024-05-01 1330 Lunch on Friday
[42].eml`` — and ends with a short key the backend chose (a UID, an article number, a hash of a
UIDL) that makes it unique and stable across mounts. ``key_of`` recovers the key, so a name
resolves without a listing.
"""
from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timezone
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime

SUFFIX = ".eml"
MAX_SUBJECT = 60  # characters: enough to recognise, short enough for narrow windows
_KEY = re.compile(r" ?\[([0-9A-Za-z_-]{1,32})\]\.eml\Z")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|\[\]]+")
_SPACES = re.compile(r"\s+")


def decode_subject(raw: str | bytes | None) -> str:
    """An RFC 2047 header value as text; anything undecodable is kept as-is, never raised."""
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
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


def clean(text: str, limit: int = MAX_SUBJECT) -> str:
    """Text safe in a file name on any filesystem: no separators, controls or reserved marks."""
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
