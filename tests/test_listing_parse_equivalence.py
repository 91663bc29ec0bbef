"""The IMAP listing parser and the name helpers give the names they always gave.

Names are stable across mounts (users rely on them), so the outputs of the listing parse
(``imap.parse._listing_rows``, ``_entry``, ``_internaldate``, ``_header_fields``), of ``mailnames``
(``header_timestamp``, ``clean``, ``decode_subject``, ``message_name``), of
``imapfetch.replies`` and of ``names.local_name`` are compared, case by case, with golden
data: ``tests/data/listing_names.json.gz`` holds inputs made by the generators below (fixed
seeds, weighted to the tricky shapes: invalid dates, 2-digit years, odd zones, folded,
RFC 2047 and cp1252 subjects, unsafe characters, names near 255 bytes) and what the code at
6d81f17 returned for them.

A deliberate change of naming shows up here as failures; once they are the intended ones,
``python3 -m tests.test_listing_parse_equivalence --rewrite`` (from the repository root)
recomputes every golden output with the current code, keeping the inputs.

The same generators also drive a few property checks of the current code, and
``attrs.make`` and ``InodeTable.ref`` (not about names) are tested directly.
"""
from __future__ import annotations

import functools
import gzip
import io
import json
import random
import stat
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from fsmount.backends import imap, mailnames
from fsmount.backends.imap import fetch as imapfetch
from fsmount.backends.base import Capabilities, Entry
from fsmount.vfs import attrs, inodes, names

GOLDEN = Path(__file__).parent / "data" / "listing_names.json.gz"

# ---------------------------------------------------------------------------------------
# Golden data: JSON with bytes as {"b": latin-1 text}, floats as {"f": repr}, datetimes as
# {"dt": isoformat}, dicts as {"d": sorted [key, value] pairs}, an Entry as {"entry": its
# fields}, a raised exception as {"raised": its type name}; tuples become lists.
# ---------------------------------------------------------------------------------------

_ENTRY_FIELDS = ("name", "is_dir", "size", "mtime", "identity", "mode", "symlink", "size_exact")


def enc(x: object) -> object:
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return {"f": repr(x)}
    if isinstance(x, bytes):
        return {"b": x.decode("latin-1")}
    if isinstance(x, datetime):
        return {"dt": x.isoformat()}
    if isinstance(x, Entry):
        return {"entry": [enc(getattr(x, f)) for f in _ENTRY_FIELDS]}
    if isinstance(x, dict):
        return {"d": [[enc(k), enc(v)] for k, v in sorted(x.items())]}
    if isinstance(x, (list, tuple)):
        return [enc(v) for v in x]
    raise TypeError(f"no golden encoding for {type(x).__name__}")


def dec(x: object) -> object:
    if isinstance(x, list):
        return [dec(v) for v in x]
    if not isinstance(x, dict):
        return x
    (tag, value), = x.items()
    if tag == "b":
        return value.encode("latin-1")
    if tag == "f":
        return float(value)
    if tag == "dt":
        return datetime.fromisoformat(value)
    if tag == "d":
        return {dec(k): dec(v) for k, v in value}
    if tag == "entry":
        fields = dict(zip(_ENTRY_FIELDS, dec(value)))
        return Entry(**{**fields, "identity": tuple(fields["identity"])})
    if tag == "raised":
        return f"<raises {value}>"
    raise ValueError(f"unknown golden tag {tag!r}")


def outcome(fn: Callable, *args: object) -> object:
    """``fn(*args)`` encoded, or the type of what it raised."""
    try:
        return enc(fn(*args))
    except Exception as e:  # noqa: BLE001 - an exception is an outcome to compare too
        return {"raised": type(e).__name__}


@functools.cache
def golden() -> dict:
    with gzip.open(GOLDEN, "rt", encoding="ascii") as f:
        return json.load(f)


def wire_replies(data: bytes) -> list:
    return list(imapfetch.replies(FakeImap(data), b"t1"))


def listing_rows(replies: list) -> list:
    return list(imap.parse._listing_rows(replies))


#: Section of the golden file → the function whose outputs it holds (cases: [args, output]).
SIMPLE: dict[str, Callable] = {
    "header_timestamp": mailnames.header_timestamp,
    "clean": mailnames.clean,
    "decode_subject": mailnames.decode_subject,
    "message_name": mailnames.message_name,
    "header_fields": imap.parse._header_fields,
    "internaldate": imap.parse._internaldate,
    "wire_replies": wire_replies,
    "local_name": names.local_name,
}


def recompute(section: str, case: list) -> list:
    """``case`` with its outputs as the current code gives them."""
    if section in SIMPLE:
        args, _ = case
        return [args, outcome(SIMPLE[section], *dec(args))]
    # "listing": [replies, rows, a uidvalidity per row, the Entry of each row]
    replies, _, uidvalidities, _ = case
    rows = outcome(listing_rows, dec(replies))
    if isinstance(rows, dict) or len(rows) != len(uidvalidities):
        return [replies, rows, uidvalidities, []]
    entries = [outcome(imap.parse._entry, uv, *dec(row)) for uv, row in zip(uidvalidities, rows)]
    return [replies, rows, uidvalidities, entries]


def check(section: str) -> None:
    cases = golden()[section]
    assert len(cases) > 50, f"{GOLDEN.name} has only {len(cases)} {section} cases"
    misses = []
    for case in cases:
        now = recompute(section, case)
        if now != case:
            shown = ", ".join(repr(a) for a in dec(case[0]))
            if section in SIMPLE:
                misses.append(f"{SIMPLE[section].__name__}({shown})\n"
                              f"    now    {dec(now[1])!r}\n    golden {dec(case[1])!r}")
            else:
                misses.append(f"_listing_rows([{shown}]) with uidvalidities {case[2]}\n"
                              f"    now    {dec(now[1])!r} {dec(now[3])!r}\n"
                              f"    golden {dec(case[1])!r} {dec(case[3])!r}")
    assert not misses, (f"{len(misses)} of {len(cases)} {section} cases differ from "
                        f"{GOLDEN.name}; the first:\n" + "\n".join(misses[:8]))


# ---------------------------------------------------------------------------------------
# Generated inputs (the golden inputs came from these, with fixed seeds)
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



class FakeImap:
    """What ``imapfetch.replies`` uses of an imaplib connection, over fixed bytes."""

    abort = EOFError
    error = LookupError

    def __init__(self, data: bytes, buffer: int = 256) -> None:
        # a small buffer: replies often straddle its end, as they do a socket reader's
        self.file = io.BufferedReader(io.BytesIO(data), buffer)  # type: ignore[arg-type]
        self.tagged_commands: dict = {b"t1": None}

    def readline(self) -> bytes:
        return self.file.readline()

    def read(self, n: int) -> bytes:
        return self.file.read(n)



def rand_remote_name(rng: random.Random) -> str:
    alphabet = ["a", "Z", "0", " ", ".", "/", "\x00", "\n", "\x1f", "\x7f", "é", "€", "日", "🙂",
                "\udcff", "~", "\u2215", "-"]
    n = rng.choice([rng.randrange(0, 20), rng.randrange(55, 70), rng.randrange(60, 300)])
    name = "".join(rng.choice(alphabet if rng.random() < 0.3 else ["a", "b", "x", " "])
                   for _ in range(n))
    if rng.random() < 0.4:
        name += rng.choice([".txt", ".eml", ".tar.gz", ".verylongextension", ".", ".日本"])
    return name



def rand_entry(rng: random.Random) -> Entry:
    kind = rng.random()
    return Entry(
        "n", kind < 0.2, rng.choice([None, 0, 1, 511, 512, 513, rng.randrange(1 << 40)]),
        rng.choice([None, 0.0, 1714989600.0, rng.uniform(-1e9, 3e9), 1.5e9 + 1e-7]),
        (), rng.choice([None, 0o644, 0o4755, 0o177777, 0]),
        "target/é" if 0.2 <= kind < 0.3 else None, rng.random() < 0.7)


# ---------------------------------------------------------------------------------------
# Golden comparisons
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["header_timestamp", "clean", "decode_subject", "message_name",
                                     "internaldate", "local_name"])
def test_names_match_golden(section: str) -> None:
    check(section)


def test_header_fields_match_golden() -> None:
    check("header_fields")
    for (raw,), fields in golden()["header_fields"]:
        raw, fields = dec(raw), dec(fields)
        assert imap.parse._subject_date(raw) == (fields.get(b"subject"), fields.get(b"date")), raw


def test_listing_rows_and_entries_match_golden() -> None:
    check("listing")


def test_wire_replies_match_golden() -> None:
    check("wire_replies")


# ---------------------------------------------------------------------------------------
# Properties of the current code, on generated inputs
# ---------------------------------------------------------------------------------------


def test_generated_local_names_are_safe() -> None:
    rng = random.Random(8)
    for _ in range(5000):
        remote = rand_remote_name(rng)
        local = names.local_name(remote)
        assert local not in (".", "..") and "/" not in local, remote
        assert all(c >= " " and c != "\x7f" for c in local), remote
        assert len(names.to_fs(local)) <= 255, remote


def test_generated_message_names_keep_their_key() -> None:
    rng = random.Random(3)
    for _ in range(5000):
        key, subject = str(rng.randrange(1, 1 << 32)), rand_subject(rng)
        name = mailnames.message_name(key, subject, mailnames.header_timestamp(rand_date(rng)))
        assert mailnames.key_of(name) == key, (subject, name)
        assert "/" not in name and all(c >= " " for c in name), (subject, name)
        title = mailnames.clean(subject)
        assert len(title) <= 61 and title == title.strip(" ."), subject


def test_subject_date_is_what_header_fields_say() -> None:
    rng = random.Random(4)
    for _ in range(5000):
        raw = rand_header(rng)
        fields = imap.parse._header_fields(raw)
        assert imap.parse._subject_date(raw) == (fields.get(b"subject"), fields.get(b"date")), raw


def test_listing_fast_path_agrees_with_the_general_parse() -> None:
    rng = random.Random(6)
    for i in range(5000):
        reply = rand_reply(rng, i + 1)
        assert listing_rows([reply]) == imap.parse._parse_listing(imapfetch.imaplib_shape(reply)), reply


def test_wire_replies_come_back_as_sent() -> None:
    rng = random.Random(7)
    for _ in range(300):
        sent = [rand_reply(rng, i + 1) for i in range(rng.randrange(0, 10))]
        data = b"".join(p if k % 2 else p + b"\r\n" for reply in sent for k, p in enumerate(reply))
        assert wire_replies(data + b"t1 OK done\r\n") == sent, data


# ---------------------------------------------------------------------------------------
# attrs.make and InodeTable.ref
# ---------------------------------------------------------------------------------------

ALL = Capabilities(write=True, overwrite=True, mkdir=True, remove=True)
MESSAGES = Capabilities(write=True, remove=True, immutable=True)  # no overwrite
ME = attrs.Owner(1000, 100)


def test_attrs_of_files_directories_and_links() -> None:
    a = attrs.make(7, Entry("f", False, 513, 1.5e9), ALL, ME)
    assert (a.st_ino, a.st_mode, a.st_size, a.st_blocks, a.st_nlink) == (
        7, stat.S_IFREG | 0o644, 513, 2, 1)
    assert (a.st_uid, a.st_gid, a.st_blksize) == (1000, 100, 1024 * 1024)
    assert a.st_mtime_ns == a.st_ctime_ns == a.st_atime_ns == 1_500_000_000 * 10**9
    assert a.attr_timeout == a.entry_timeout == attrs.MUTABLE_TIMEOUT
    a = attrs.make(8, Entry("f", False, None, None, mode=0o177777), ALL, ME)
    assert (a.st_mode, a.st_size, a.st_blocks) == (stat.S_IFREG | 0o7777, 0, 0)
    assert a.st_mtime_ns == attrs._MOUNTED_NS  # no mtime: the mount's time, the same at every stat
    assert attrs.make(8, Entry("f", False, None, None), ALL, ME).st_mtime_ns == a.st_mtime_ns
    d = attrs.make(9, Entry("d", True, 4096, mode=0o700), ALL, ME)
    assert (d.st_mode, d.st_size, d.st_nlink, d.st_blocks) == (stat.S_IFDIR | 0o700, 0, 2, 0)
    link = attrs.make(10, Entry("l", False, 99, symlink="target/é"), ALL, ME)
    assert (link.st_mode, link.st_size, link.st_blocks) == (stat.S_IFLNK | 0o777, 9, 1)


def test_attrs_write_bits_and_timeouts() -> None:
    message = Entry("m", False, 10, 0.0, mode=0o4755)
    a = attrs.make(2, message, MESSAGES, ME)  # immutable, no overwrite: read-only file
    assert a.st_mode == stat.S_IFREG | 0o4555
    assert a.attr_timeout == a.entry_timeout == attrs.IMMUTABLE_TIMEOUT
    hint = Entry("m", False, 10, 0.0, size_exact=False)
    assert attrs.make(2, hint, MESSAGES, ME).attr_timeout == 0  # asked again: exact once known
    assert attrs.make(3, Entry("d", True), MESSAGES, ME).st_mode == stat.S_IFDIR | 0o755
    readonly = attrs.Owner(1000, 100, readonly=True)
    assert attrs.make(3, Entry("d", True), ALL, readonly).st_mode == stat.S_IFDIR | 0o555
    assert attrs.make(4, message, ALL, readonly).st_mode == stat.S_IFREG | 0o4555
    assert attrs.make(4, message, Capabilities(), ME).st_mode == stat.S_IFREG | 0o4555
    rng = random.Random(9)
    readonly = attrs.Owner(1000, 100, readonly=True)
    for _ in range(2000):
        entry = rand_entry(rng)
        a = attrs.make(5, entry, ALL, ME)
        kind = (stat.S_IFLNK if entry.symlink is not None else
                stat.S_IFDIR if entry.is_dir else stat.S_IFREG)
        assert stat.S_IFMT(a.st_mode) == kind and a.st_blocks == -(-a.st_size // 512), entry
        assert a.st_nlink == (2 if entry.is_dir else 1), entry
        if entry.symlink is None:  # a link is always 0o777
            assert attrs.make(5, entry, ALL, readonly).st_mode & 0o222 == 0, entry


def test_inode_ref_counts_lookups_and_keeps_one_node_per_path() -> None:
    table = inodes.InodeTable(Entry("", True))
    first, second = Entry("a", False, 1), Entry("a", False, 2)
    a = table.ref(("d", "a"), first)
    assert (a.inode, a.vpath, a.entry, a.lookups, a.handles) == (2, ("d", "a"), first, 1, 0)
    assert table.ref(("d", "a"), second) is a and (a.lookups, a.entry) == (2, second)
    b = table.ref(("d", "b"), first)
    assert b.inode == 3 and table.at(("d", "b")) is b and table[3] is b and table.get(2) is a
    table.forget(a.inode, 1)
    assert table.at(("d", "a")) is a and a.lookups == 1
    table.forget(a.inode, 1)  # the kernel's last reference: the node goes
    assert table.at(("d", "a")) is None and table.get(2) is None
    again = table.ref(("d", "a"), first)
    assert again is not a and again.inode == 4 and again.lookups == 1
    table.unlink(("d", "b"))  # gone from the path, still known by inode until forgotten
    c = table.ref(("d", "b"), second)
    assert c is not b and c.inode == 5 and table.get(3) is b
    table.forget(1, 5)  # the root is never forgotten
    assert table.get(1) is not None and table.ref((), first).inode == 1


# ---------------------------------------------------------------------------------------


def rewrite() -> None:
    """Recompute every golden output with the current code (inputs unchanged)."""
    data = {section: cases if section == "about" else [recompute(section, c) for c in cases]
            for section, cases in golden().items()}
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode()
    GOLDEN.write_bytes(gzip.compress(text, 9, mtime=0))
    print(f"rewrote {GOLDEN}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--rewrite"]:
        sys.exit("usage: python3 -m tests.test_listing_parse_equivalence --rewrite")
    rewrite()
