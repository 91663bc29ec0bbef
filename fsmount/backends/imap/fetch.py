"""Bulk FETCH replies read straight off the wire: the folder listing and message batches.

imaplib's response loop spends about 10 µs on each reply (several regexes, the untagged
response dict, BYE checks) and imapclient's general parser several times that; for a
10,000-message listing that was more than the server took to send it. ``fetch`` still sends
the command through imaplib (tags, quoting and state checks stay its own), then reads the
replies itself: one ``readline`` per line and one ``read`` per literal, until the tagged
completion, which it takes off imaplib's list of pending commands.

A reply is kept as its pieces: ``[line, literal, line, literal, …, line]`` (lines without
CRLF, the first one still starting ``* n FETCH``). ``imaplib_shape`` turns one back into the
items imaplib would have produced, for imapclient's parser on anything unusual.
"""
from __future__ import annotations

import imaplib
import re
from collections.abc import Callable, Iterator
from typing import Any

Reply = list[bytes]

_FETCH = re.compile(rb"\* (\d+) FETCH ")
# The usual reply's first line: one literal, at its end (a listing's or a message's).
_LITERAL_LINE = re.compile(rb"\* \d+ FETCH [^\r\n{]*\{(\d+)\}\r\n")


def fetch(imap: imaplib.IMAP4, *command: str) -> list[Reply]:
    """Send ``command`` (e.g. ``"UID", "FETCH", "1:5", "(BODY.PEEK[])"``) and return its
    untagged FETCH replies; raise ``imap.error`` on NO/BAD, ``imap.abort`` on BYE or EOF."""
    return list(replies(imap, imap._command(*command)))


def replies(imap: imaplib.IMAP4, tag: bytes) -> Iterator[Reply]:
    """The FETCH replies to the command tagged ``tag``, each as soon as it has arrived, so
    the caller works on one while the server sends the next (see ``fetch``).

    Other untagged replies (EXISTS, EXPUNGE, OK …) are dropped: the backend clears them
    before each command anyway, and asks again (SELECT, SEARCH) when it needs them. A caller
    that stops early leaves the rest unread: the pool's NOOP check then drops the connection.
    """
    readline, read = imap.readline, imap.read
    reader = getattr(imap, "file", None)
    peek = getattr(reader, "peek", None)  # None where imaplib keeps its reader to itself
    tagged = tag + b" "
    while True:
        if peek is not None:
            whole = _buffered_replies(reader, peek)
            if whole:
                yield from whole
                continue
        line = readline()
        if not line:
            raise imap.abort("socket error: EOF")
        if line.startswith(tagged):
            imap.tagged_commands.pop(tag, None)
            rest = line[len(tagged):].rstrip(b"\r\n")
            if not rest.startswith(b"OK"):
                raise imap.error(f"FETCH failed: {[rest]}")
            return
        if not line.endswith(b"}\r\n"):
            if line.startswith(b"* BYE"):
                raise imap.abort(line.rstrip(b"\r\n").decode("utf-8", "replace"))
            if line.startswith(b"* ") and _FETCH.match(line):
                yield [line.rstrip(b"\r\n")]
            continue
        pieces: Reply = []
        while True:  # line ends "}\r\n": a literal follows, unless the braces hold no size
            start = line.rfind(b"{")
            digits = line[start + 1:-3]
            if start < 0 or not digits.isdigit():
                break
            size = int(digits)
            literal = read(size)
            if len(literal) != size:
                raise imap.abort("socket error: EOF inside a literal")
            pieces.append(line[:-2])
            pieces.append(literal)
            line = readline()
            if not line:
                raise imap.abort("socket error: EOF")
            if not line.endswith(b"}\r\n"):
                break
        pieces.append(line.rstrip(b"\r\n"))
        if _FETCH.match(pieces[0]):
            yield pieces


def _buffered_replies(file: Any, peek: Callable[[], bytes]) -> list[Reply]:
    """The usual replies (a line ending in a literal, then ``)``) found whole in the reader's
    buffer, taken with one regex match each instead of a readline and a read: a 10,000
    message listing is 10,000 of them. Anything else is left to the line-by-line path."""
    buf = peek()
    pos, found = 0, []
    match = _LITERAL_LINE.match
    while (m := match(buf, pos)) is not None:
        start = m.end()
        end = start + int(m[1])
        if buf[end:end + 3] != b")\r\n":  # more after the literal, or not all here yet
            break
        found.append([buf[pos:start - 2], buf[start:end], b")"])
        pos = end + 3
    if pos:
        file.read(pos)
    return found


def imaplib_shape(reply: Reply) -> list:
    """The items imaplib's ``fetch`` would have returned for this reply: ``(line, literal)``
    tuples and a last line, the first line without its ``* `` and ``FETCH``."""
    m = _FETCH.match(reply[0])
    lines = [m.group(1) + b" " + reply[0][m.end():] if m else reply[0], *reply[2::2]]
    items: list = [(lines[i], reply[2 * i + 1]) for i in range(len(reply) // 2)]
    items.append(lines[-1])
    return items
