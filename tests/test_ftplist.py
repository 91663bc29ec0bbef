"""Listing parsers (no server): MLSD, Unix and Windows/IIS LIST, and hostile lines."""
from __future__ import annotations

import calendar
import logging

import pytest

from fsmount.backends import ftplist

NOW = calendar.timegm((2024, 6, 15, 12, 0, 0, 0, 0, 0))


def utc(*t: int) -> float:
    return float(calendar.timegm((*t, 0, 0, 0, 0)[:9]))


def test_mlsd_file_dir_and_facts() -> None:
    lines = [
        "type=cdir;modify=20240101000000; .",
        "type=pdir;modify=20240101000000; ..",
        "type=file;size=200000;modify=20231126190500;unix.mode=0644; big.bin",
        "Type=dir;Modify=20240102030405.123;UNIX.mode=0755; sub dir",
        "type=file;size=0;modify=20240101000000; name;with;semicolons and  spaces ",
    ]
    entries = {e.name: e for e in ftplist.parse_lines(lines, mlsd=True)}
    assert set(entries) == {"big.bin", "sub dir", "name;with;semicolons and  spaces "}
    big = entries["big.bin"]
    assert (big.is_dir, big.size, big.mtime, big.mode) == (False, 200000, utc(2023, 11, 26, 19, 5, 0), 0o644)
    assert big.identity == (200000, big.mtime)
    sub = entries["sub dir"]
    assert sub.is_dir and sub.size is None and sub.mode == 0o755
    assert sub.mtime == pytest.approx(utc(2024, 1, 2, 3, 4, 5) + 0.123)


def test_mlsd_symlink() -> None:
    [e] = ftplist.parse_lines(["type=OS.unix=slink:/etc/target;size=11;modify=20240101000000; ln"], mlsd=True)
    assert e.symlink == "/etc/target" and not e.is_dir
    assert e.size is None  # 11 is the length of the link's text, not of what it points at
    [e] = ftplist.parse_lines(["modify=20240101000000;size=5;type=OS.unix=symlink; lnk"], mlsd=True)
    assert e.symlink == "" and e.size is None  # a link whose target the server did not say


@pytest.mark.parametrize("directory, target, root, expected", [
    ((), "a.txt", "/", "a.txt"),
    (("sub",), "../a.txt", "/", "../a.txt"),
    (("sub",), "/a.txt", "/", "../a.txt"),
    (("sub", "deep"), "/sub/x/../y", "/", "../y"),
    (("sub",), "./b/./c", "/", "b/c"),
    ((), "/etc/passwd", "/", "etc/passwd"),  # the server's /etc, inside the account
    ((), "/etc/passwd", "/home/alice", None),  # outside the account's remote root
    ((), "/home/alice/f", "/home/alice", "f"),
    ((), "/home/alicex/f", "/home/alice", None),
    ((), "/../../home/alice/f", "/home/alice", "f"),  # ".." above "/" stays at "/"
    ((), "../x", "/", None),  # climbs above the account
    (("a", "b"), "../../../x", "/", None),
    (("a", "b"), "../../x", "/", "../../x"),
    (("a",), "..", "/", ".."),
    ((), "", "/", None),
    ((), "bad\0name", "/", None),
])
def test_contained_target(directory: tuple[str, ...], target: str, root: str,
                          expected: str | None) -> None:
    got = ftplist.contained_target(directory, target, root)
    assert got == expected
    if got is not None:  # never more ".." than the link is deep: it cannot leave the account
        assert not got.startswith("/") and got.split("/").count("..") <= len(directory)


def test_unix_list_formats() -> None:
    lines = [
        "total 12",
        "-rw-r--r--   1 root root 200000 Nov 26 19:05 big.bin",  # pyftpdlib (recent: no year)
        "-rw-r--r--    1 0        0            5000 Jan 02  2019 data.bin",  # vsftpd, old file
        "drwxr-xr-x    2 1000     1000         4096 Jun 14 08:30 a dir with  spaces",
        "lrwxrwxrwx    1 0        0               7 Jun 14 08:30 link -> target/x",
        "-rwsr-sr-t+   1 user     group          10 2024-06-01 10:11 iso.txt",
        "-rw-r--r--   1 ftp ftp 5 Mar 01 00:00  leading space",
        "-rw-r--r-- 1 owner 12 Jun 10 10:10 no-group",
    ]
    entries = {e.name: e for e in ftplist.parse_lines(lines, mlsd=False, now=NOW)}
    assert set(entries) == {"big.bin", "data.bin", "a dir with  spaces", "link", "iso.txt",
                            " leading space", "no-group"}
    assert entries["big.bin"].mtime == utc(2023, 11, 26, 19, 5, 0)  # Nov is after June: last year
    assert entries["big.bin"].size == 200000 and entries["big.bin"].mode == 0o644
    assert entries["data.bin"].mtime == utc(2019, 1, 2, 0, 0, 0)
    assert entries["a dir with  spaces"].is_dir and entries["a dir with  spaces"].mtime == utc(2024, 6, 14, 8, 30, 0)
    assert entries["link"].symlink == "target/x"
    assert entries["iso.txt"].mode == 0o7755 and entries["iso.txt"].mtime == utc(2024, 6, 1, 10, 11, 0)
    assert entries["no-group"].size == 12


def test_windows_iis_list() -> None:
    lines = [
        "01-05-24  03:04PM       <DIR>          Program Files",
        "12-31-99  11:59AM                 1234 readme.txt",
        "06-15-2024  00:05                    7 twentyfour.txt",
    ]
    entries = {e.name: e for e in ftplist.parse_lines(lines, mlsd=False, now=NOW)}
    assert entries["Program Files"].is_dir and entries["Program Files"].mtime == utc(2024, 1, 5, 15, 4, 0)
    assert entries["readme.txt"].size == 1234 and entries["readme.txt"].mtime == utc(1999, 12, 31, 11, 59, 0)
    assert entries["twentyfour.txt"].mtime == utc(2024, 6, 15, 0, 5, 0)


@pytest.mark.parametrize("line", [
    "-rw-r--r--   1 u g 5 Jun 10 10:10 a/b",  # a slash: would address another directory
    "-rw-r--r--   1 u g 5 Jun 10 10:10 ..",
    "-rw-r--r--   1 u g 5 Jun 10 10:10 .",
    "-rw-r--r--   1 u g 5 Jun 10 10:10 bad\rname",
    "-rw-r--r--   1 u g 5 Jun 10 10:10 nul\0name",
    "-rw-r--r--   1 u g 99999999999999999999999 Jun 10 10:10 huge",  # absurd size
    "-rw-r--r--   1 u g 5 Foo 10 10:10 badmonth",
    "-rw-r--r--   1 u g 5 Jun 99 10:10 badday",
    "-rw-r--r--   1 u g 5 Jun 10 99:99 badtime",
    "garbage line",
    "",
    "x" * 20000,
    "13-45-24  03:04PM       <DIR>          badwindate",
    "type=file;size=-5; negative",
    "type=file;size=1e3; notanumber",
    "nofacts",
])
def test_hostile_lines_are_skipped_not_fatal(line: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "fsmount.backends.ftplist")
    good = "-rw-r--r--   1 u g 5 Jun 10 10:10 good"
    for mlsd in (False, True):
        listing = [line, good if not mlsd else "type=file;size=5;modify=20240101000000; good"]
        entries = ftplist.parse_lines(listing, mlsd=mlsd, now=NOW)
        assert [e.name for e in entries] == ["good"]


def test_bad_dates_give_no_entry_or_no_time() -> None:
    [e] = ftplist.parse_lines(["type=file;size=3;modify=2024xx; weird-date"], mlsd=True)
    assert e.mtime is None and e.size == 3


def test_duplicates_keep_the_first() -> None:
    entries = ftplist.parse_lines(["type=file;size=1; a", "type=file;size=2; a"], mlsd=True)
    assert [(e.name, e.size) for e in entries] == [("a", 1)]


def test_split_lines_crlf_and_lf() -> None:
    assert ftplist.split_lines(b"a\r\nb\nc\r\n") == [b"a", b"b\nc"]
    assert ftplist.split_lines(b"a\nb\n") == [b"a", b"b"]
    assert ftplist.split_lines(b"") == []
    assert ftplist.split_text("a\r\nb\nc\r\n") == ["a", "b\nc"]
    assert ftplist.split_text("a\nb\n") == ["a", "b"]


@pytest.mark.parametrize("mlsd", [True, False])
def test_a_line_break_inside_a_name_drops_both_parts(mlsd: bool) -> None:
    first = "type=file;size=5;modify=20240101000000; " if mlsd else "-rw-r--r--   1 u g 5 Jun 10 10:10 "
    data = (first + "good\r\n" + first + "evil\r\nname\r\n" + first + "also good\r\n").encode()
    lines = [line.decode() for line in ftplist.split_lines(data)]
    names = [e.name for e in ftplist.parse_lines(lines, mlsd=mlsd, now=NOW)]
    assert names == ["good", "also good"]


@pytest.mark.parametrize("piece", [1, 7, 64, 100000])
def test_streaming_parser_any_pieces(piece: int) -> None:
    data = ("type=file;size=5;modify=20240101000000; grüße\r\n"
            "type=file;size=5;modify=20240101000000; evil\r\nname\r\n"
            "type=dir;modify=20240101000000; d\r\n"
            "type=file;size=7;modify=20240101000000; last").encode()
    parser = ftplist.ListingParser(mlsd=True)
    for i in range(0, len(data), piece):
        parser.feed(data[i:i + piece])
    assert [(e.name, e.is_dir) for e in parser.entries()] == [("grüße", False), ("d", True), ("last", False)]


def test_streaming_parser_lf_and_other_encodings() -> None:
    parser = ftplist.ListingParser(mlsd=False, encoding="cp1251", now=NOW)
    for line in ["total 2", "-rw-r--r-- 1 u g 3 Jun 10 10:10 привет", "drwxr-xr-x 2 u g 0 Jun 10 10:10 папка"]:
        parser.feed(line.encode("cp1251") + b"\n")
    assert [e.name for e in parser.entries()] == ["привет", "папка"]
