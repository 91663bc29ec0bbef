"""Directory listings from FTP servers → ``Entry`` values.

MLSD (RFC 3659) is machine-readable; LIST is whatever ``ls -l`` (Unix servers) or IIS
("MS-DOS" style) prints. Both come from the server, which may be hostile or broken: every
parser here returns ``None`` for a line it cannot trust (logged at DEBUG) and never raises, so
one bad line costs one entry, not the directory. Names that cannot be addressed in a later
command — empty, ``.``/``..``, containing ``/``, NUL, CR or LF — are skipped too.
"""
from __future__ import annotations

import calendar
import functools
import logging
import re
import time
from collections.abc import Iterable

from .base import Entry

log = logging.getLogger(__name__)

MAX_SIZE = (1 << 63) - 1  # larger is a lie (or an attack on arithmetic further up)
MONTHS = {m: i for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}

_UNIX = re.compile(
    r"^(?P<type>[-dlbcpsDL])(?P<perm>[-rwxsStTlL]{9})\S*\s+"
    r"(?:.*?\s)??"  # links, owner, group (any of them may be missing)
    r"(?P<size>\d+)\s+"
    r"(?:(?P<mon>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+(?:(?P<hh>\d{1,2}):(?P<mm>\d{2})|(?P<year>\d{4}))"
    r"|(?P<iso>\d{4})-(?P<imon>\d{2})-(?P<iday>\d{2})\s+(?P<ihh>\d{2}):(?P<imm>\d{2}))"
    r" (?P<name>.*)$"
)
_WINDOWS = re.compile(
    r"^(?P<mon>\d{2})-(?P<day>\d{2})-(?P<year>\d{2}|\d{4})\s+(?P<hh>\d{1,2}):(?P<mm>\d{2})\s*"
    r"(?P<ampm>[AaPp][Mm])?\s+(?:(?P<dir><DIR>)|(?P<size>\d+))\s+(?P<name>.*)$"
)


_UNUSABLE = re.compile(r"[/\0\r\n]")


def valid_name(name: str) -> bool:
    """Whether a name can be used in a later command and means one object in this directory."""
    return bool(name) and name not in (".", "..") and _UNUSABLE.search(name) is None


def _skip(line: str, why: str) -> None:
    log.debug("skipping listing line (%s): %r", why, line[:300])


def _entry(name: str, is_dir: bool, size: int | None, mtime: float | None, mode: int | None = None,
           symlink: str | None = None) -> Entry:
    size = None if is_dir else size
    return Entry(name, is_dir, size, mtime, identity=(size, mtime), mode=mode, symlink=symlink)


# -- MLSD ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _day(ymd: str) -> int | None:
    """Days since the epoch of ``YYYYMMDD`` (cached: a directory's files share few days)."""
    try:
        return calendar.timegm((int(ymd[:4]), int(ymd[4:6]), int(ymd[6:8]), 0, 0, 0, 0, 0, 0)) // 86400 \
            if 1 <= int(ymd[4:6]) <= 12 and 1 <= int(ymd[6:8]) <= 31 else None
    except (ValueError, OverflowError):
        return None


def parse_mlsx_time(value: str) -> float | None:
    """``YYYYMMDDHHMMSS[.sss]`` in UTC (RFC 3659 ``modify``)."""
    if len(value) == 14 and value.isdigit():  # the common case, fast
        day = _day(value[:8])
        hh, mm, ss = int(value[8:10]), int(value[10:12]), int(value[12:14])
        if day is None or hh > 23 or mm > 59 or ss > 60:
            return None
        return float(day * 86400 + hh * 3600 + mm * 60 + ss)
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\.\d{1,9})?", value.strip())
    if not m:
        return None
    try:
        t = calendar.timegm(tuple(int(g) for g in m.groups()[:6]) + (0, 0, 0))  # type: ignore[arg-type]
    except (ValueError, OverflowError):
        return None
    return float(t) + (float(m.group(7)) if m.group(7) else 0.0)


def parse_facts(text: str) -> dict[str, str]:
    facts = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            facts[key.strip().lower()] = value
    return facts


def parse_mlsd_line(line: str) -> Entry | None:
    """One MLSD/MLST line: ``fact=value;...; name``; ``None`` for cdir/pdir and bad lines."""
    facts_text, sep, name = line.partition(" ")
    if not sep or "=" not in facts_text:
        _skip(line, "no facts")
        return None
    facts = parse_facts(facts_text)
    raw_type = facts.get("type", "")
    kind = raw_type.lower()
    if kind == "cdir" or kind == "pdir":
        return None
    if not valid_name(name):
        _skip(line, "unusable name")
        return None
    symlink = None
    is_dir = kind == "dir"
    if kind.startswith(("os.unix=slink", "os.unix=symlink")):
        symlink = raw_type.partition(":")[2]  # "": a link whose target the server did not say
    size = None
    raw_size = facts.get("size") or facts.get("sizd")
    if raw_size is not None:
        if not raw_size.isdigit() or len(raw_size) > 19 or int(raw_size) > MAX_SIZE:
            _skip(line, "bad size")
            return None
        size = int(raw_size)
    modify = facts.get("modify")
    mtime = parse_mlsx_time(modify) if modify is not None else None
    mode = None
    raw_mode = facts.get("unix.mode")
    if raw_mode is not None:
        try:
            mode = int(raw_mode, 8) & 0o7777
        except ValueError:
            mode = None
    if symlink is not None:
        size = None  # the length of the link's text, not the size of what it points at
    return _entry(name, is_dir, None if is_dir else size, mtime, mode, symlink)


# -- symlinks --------------------------------------------------------------------------


def contained_target(directory: tuple[str, ...], target: str, root: str) -> str | None:
    """A link's ``target`` as the kernel must see it, or ``None`` where it would leave the
    account.

    The kernel follows a link's text itself, on the local machine: an absolute target
    (``/etc/passwd``) or one climbing above the account (``../../x``) would reach files outside
    the mount. So an absolute target inside the account's remote ``root`` becomes a path
    relative to the link's ``directory`` (both remote, the account root being ``()``); a
    relative one is normalized, and one that climbs above the root is refused. The result
    holds ``..`` only at its start, never more of them than ``directory`` is deep.
    """
    if not target or "\0" in target:
        return None
    if target.startswith("/"):
        base = [p for p in root.split("/") if p]
        dest: list[str] = []
        for part in target.split("/"):
            if part == "..":
                if dest:
                    dest.pop()  # ".." above "/" stays at "/"
            elif part and part != ".":
                dest.append(part)
        if dest[:len(base)] != base:
            return None
        dest = dest[len(base):]
    else:
        dest = list(directory)
        for part in target.split("/"):
            if part == "..":
                if not dest:
                    return None
                dest.pop()
            elif part and part != ".":
                dest.append(part)
    common = 0
    while common < min(len(dest), len(directory)) and dest[common] == directory[common]:
        common += 1
    rel = [".."] * (len(directory) - common) + dest[common:]
    return "/".join(rel) or "."


# -- LIST ---------------------------------------------------------------------------------


def unix_mode(perm: str) -> int:
    """``rwxr-sr-t`` → permission bits, including setuid/setgid/sticky."""
    mode = 0
    for i, (bit, special) in enumerate(((0o400, 0), (0o200, 0), (0o100, 0o4000),
                                        (0o040, 0), (0o020, 0), (0o010, 0o2000),
                                        (0o004, 0), (0o002, 0), (0o001, 0o1000))):
        c = perm[i]
        if c in "rwx":
            mode |= bit
        elif c in "sst":
            mode |= bit | special
        elif c in "STlL":
            mode |= special
    return mode


def _guess_year(month: int, day: int, now: float) -> int:
    """``ls`` omits the year for dates within six months: pick the year that is not in the future."""
    this = time.gmtime(now).tm_year
    try:
        t = calendar.timegm((this, month, day, 0, 0, 0, 0, 0, 0))
    except (ValueError, OverflowError):
        return this
    return this - 1 if t > now + 2 * 86400 else this


def _utc(year: int, month: int, day: int, hour: int, minute: int) -> float | None:
    if not (1 <= month <= 12 and 1 <= day <= 31 and 0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    try:
        return float(calendar.timegm((year, month, day, hour, minute, 0, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def parse_unix_line(line: str, now: float | None = None) -> Entry | None:
    m = _UNIX.match(line)
    if not m:
        return None
    now = time.time() if now is None else now
    if m.group("iso"):
        mtime = _utc(int(m.group("iso")), int(m.group("imon")), int(m.group("iday")),
                     int(m.group("ihh")), int(m.group("imm")))
    else:
        month = MONTHS.get(m.group("mon").lower())
        if month is None:
            _skip(line, "bad month")
            return None
        day = int(m.group("day"))
        if m.group("year"):
            mtime = _utc(int(m.group("year")), month, day, 0, 0)
        else:
            mtime = _utc(_guess_year(month, day, now), month, day, int(m.group("hh")), int(m.group("mm")))
    if mtime is None:
        _skip(line, "impossible date")
        return None
    size = int(m.group("size"))
    if size > MAX_SIZE:
        _skip(line, "absurd size")
        return None
    kind = m.group("type").lower()
    name, symlink = m.group("name"), None
    if kind == "l":
        name, arrow, target = name.partition(" -> ")
        symlink = target if arrow else ""  # "": the server did not say where it points
        size = None  # the link's own length
    if not valid_name(name):
        _skip(line, "unusable name")
        return None
    return _entry(name, kind == "d", size, mtime, unix_mode(m.group("perm")), symlink)


def parse_windows_line(line: str) -> Entry | None:
    m = _WINDOWS.match(line)
    if not m:
        return None
    year = int(m.group("year"))
    if year < 100:
        year += 2000 if year < 70 else 1900
    hour = int(m.group("hh"))
    ampm = (m.group("ampm") or "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            _skip(line, "bad hour")
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    mtime = _utc(year, int(m.group("mon")), int(m.group("day")), hour, int(m.group("mm")))
    if mtime is None:
        _skip(line, "impossible date")
        return None
    name = m.group("name")
    if not valid_name(name):
        _skip(line, "unusable name")
        return None
    if m.group("dir"):
        return _entry(name, True, None, mtime)
    size = int(m.group("size"))
    if size > MAX_SIZE:
        _skip(line, "absurd size")
        return None
    return _entry(name, False, size, mtime)


def parse_list_line(line: str, now: float | None = None) -> Entry | None:
    """One LIST line in Unix or Windows/IIS format; ``None`` for totals and anything odd."""
    try:
        if not line.strip() or line.lower().startswith("total "):
            return None
        entry = parse_unix_line(line, now) or parse_windows_line(line)
        if entry is None:
            _skip(line, "unknown format")
        return entry
    except Exception as e:  # a parser bug must not cost the whole listing
        _skip(line, f"parser error {e!r}")
        return None


def _is_fragment(line: str, mlsd: bool) -> bool:
    """A line that is no entry at all: the rest of the previous line's name, cut at a line
    break inside the name (the previous entry then has a wrong name and must go too)."""
    if mlsd:
        facts, sep, _ = line.partition(" ")
        return not sep or "=" not in facts
    stripped = line.strip()
    return bool(stripped) and not stripped.lower().startswith("total ") \
        and _UNIX.match(line) is None and _WINDOWS.match(line) is None


class ListingParser:
    """Parses a listing while it arrives, so parsing overlaps the server's sending.

    ``feed`` raw bytes in any pieces; ``entries()`` at the end. Lines end with CRLF when the
    server uses CRLF (decided from the first line break seen), so a bare LF inside a name
    makes the rest of that name a separate, unparsable line (and both parts are dropped).
    """

    def __init__(self, mlsd: bool, encoding: str = "utf-8", now: float | None = None) -> None:
        self.mlsd = mlsd
        self.encoding = encoding
        self.now = now
        self.seen: dict[str, Entry] = {}
        self.previous: str | None = None  # the name the previous line produced
        self._sep: str | None = None
        self._pending = b""
        self.cut = False  # the last line had no line end: the data connection ended early
        # MLSD's "unique" of the folder itself and of its parent ("." and ".."): a link with
        # the same one points there (a loop a walk must not follow)
        self.here: dict[str, str] = {}

    def feed(self, data: bytes) -> None:
        buf = self._pending + data
        if self._sep is None:
            if b"\n" not in buf:
                self._pending = buf
                return
            self._sep = "\r\n" if b"\r\n" in buf else "\n"
        cut = buf.rfind(self._sep.encode())
        if cut < 0:
            self._pending = buf
            return
        self._pending = buf[cut + len(self._sep):]
        text = buf[:cut].decode(self.encoding, "surrogateescape")
        self.lines(text.split(self._sep))

    def _note_here(self, line: str) -> None:
        facts = parse_facts(line.partition(" ")[0])
        kind, unique = facts.get("type", "").lower(), facts.get("unique")
        if unique and kind in ("cdir", "pdir"):
            self.here["." if kind == "cdir" else ".."] = unique

    def entries(self) -> list[Entry]:
        if self._pending:
            rest = self._pending.decode(self.encoding, "surrogateescape")
            self._pending = b""
            self.cut = not rest.endswith("\n")
            self.lines([rest[:-1] if rest.endswith("\n") else rest])
        return list(self.seen.values())

    def lines(self, lines: Iterable[str]) -> None:
        mlsd, seen = self.mlsd, self.seen
        for line in lines:
            if len(line) > 16384:
                _skip(line, "line too long")
                self.previous = None
                continue
            try:
                entry = parse_mlsd_line(line) if mlsd else parse_list_line(line, self.now)
                fragment = entry is None and _is_fragment(line, mlsd)
                if entry is None and mlsd and not fragment:
                    self._note_here(line)
            except Exception as e:
                _skip(line, f"parser error {e!r}")
                entry, fragment = None, False
            if fragment and self.previous is not None:
                _skip(line, f"continues the name {self.previous!r}, dropped too")
                seen.pop(self.previous, None)
            self.previous = None
            if entry is not None and entry.name not in seen:
                seen[entry.name] = entry
                self.previous = entry.name


def parse_lines(lines: Iterable[str], mlsd: bool, now: float | None = None) -> list[Entry]:
    """All usable entries; the first of duplicate names wins (a broken server repeating one)."""
    parser = ListingParser(mlsd, now=now)
    parser.lines(lines)
    return list(parser.seen.values())


def split_lines(data: bytes) -> list[bytes]:
    """A listing's raw bytes → lines. Only CRLF ends a line when the server uses CRLF, so a
    bare LF inside a name makes the rest of that name a separate (unparsable) line."""
    if b"\r\n" in data:
        lines = data.split(b"\r\n")
    else:
        lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def split_text(text: str) -> list[str]:
    """``split_lines`` for a listing already decoded as a whole (cheaper than per line)."""
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines
