"""The dot-terminated multi-line answers of POP3 (RETR, TOP) and NNTP (ARTICLE), copied as
the message's exact bytes: dot-unstuffed, with CRLF line ends, streamed (never in memory)."""
from __future__ import annotations

from io import BytesIO
from typing import BinaryIO, NamedTuple

from ..errors import FsError, NotFound, TooLarge

CRLF = b"\r\n"


class Copied(NamedTuple):
    """One answer as copied: its exact size, and how many lines were dot-stuffed on the wire
    (what a server counting its wire format adds to the size it announces)."""

    size: int
    stuffed: int


def copy_dot_terminated(f: BinaryIO, out: BinaryIO | None, limit: int,
                        what: str = "message") -> Copied:
    """Copy one answer's body from ``f`` to ``out`` up to the lone ``.`` line.

    Lines longer than ``limit`` arrive in pieces and are copied as they are: only the start of
    a line is unstuffed. A bare LF line end becomes CRLF, as the server holds the message.
    Reads nothing past the ``.`` line, so pipelined answers can be read one after another.

    Where ``f`` can ``peek`` (a buffered socket), the lines already buffered are handled a
    buffer at a time, not line by line: a message costs a few string operations per 8 KiB.
    """
    peek = getattr(f, "peek", None)
    size = stuffed = 0
    while True:
        if peek is not None:
            region = peek(1)  # may hold the next pipelined answers too: look no further than ours
            whole = region.rfind(b"\n") + 1  # complete lines only
            end, used, done = _split_at_terminator(region, whole)
            if whole and region.count(b"\n", 0, used) == region.count(CRLF, 0, used):
                f.read(used)
                body = region[:end]
                dots = body.count(b"\n.") + body.startswith(b".")
                if dots:
                    body = _unstuff(body)
                    stuffed += dots
                if out is not None and body:
                    out.write(body)
                size += len(body)
                if done:
                    return Copied(size, stuffed)
                continue
        # slow path: no peek, bare LFs, or a line longer than the buffer
        size, dots, done = _copy_line(f, out, limit, what, size)
        stuffed += dots
        if done:
            return Copied(size, stuffed)


def _split_at_terminator(region: bytes, whole: int) -> tuple[int, int, bool]:
    """In the complete lines ``region[:whole]``: (where the body lines before a lone ``.``
    line end, bytes to consume, whether that line was found)."""
    if region.startswith(b".\r\n"):
        return 0, 3, True
    end = region.find(b"\n.\r\n", 0, whole)
    if end < 0:
        return whole, whole, False
    return end + 1, end + 4, True


def _unstuff(body: bytes) -> bytes:
    """Drop the first dot of every line that starts with one (``body`` starts a line)."""
    body = body.replace(b"\n.", b"\n")
    return body[1:] if body.startswith(b".") else body


def _copy_line(f: BinaryIO, out: BinaryIO | None, limit: int, what: str,
               size: int) -> tuple[int, int, bool]:
    """One line (or the pieces of a line longer than ``limit``, up to its end), unstuffed and
    with a CRLF end; (new size, dots removed, whether it was the terminator)."""
    at_start = True  # is this piece the beginning of a line?
    after_cr = False
    stuffed = 0
    while True:
        piece = f.readline(limit)
        if not piece:
            raise EOFError(f"connection closed in the middle of a {what}")
        if at_start:
            if piece in (b".\r\n", b".\n"):
                return size, stuffed, True
            if piece.startswith(b"."):
                piece = piece[1:]
                stuffed = 1
        ended = piece.endswith(b"\n")
        if ended and not piece.endswith(CRLF) and not (piece == b"\n" and after_cr):
            piece = piece[:-1] + CRLF
        after_cr = piece.endswith(b"\r")
        at_start = ended
        if out is not None:
            out.write(piece)
        size += len(piece)
        if ended:
            return size, stuffed, False


class CappedBuffer(BytesIO):
    """An in-memory ``out`` that keeps at most ``limit`` bytes and notes an overflow, so a
    pipelined answer can still be read to its end when one message is too big to hold.

    Buffers made by one ``buffers()`` call also share a total: a server whose size hints lie
    cannot make a batch hold more than that in memory.
    """

    def __init__(self, limit: int, shared: list[int] | None = None) -> None:
        super().__init__()
        self.limit = limit
        self.shared = shared if shared is not None else [limit]  # bytes the batch may still hold
        self.overflow = False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.overflow or self.tell() + len(data) > self.limit or len(data) > self.shared[0]:
            self.overflow = True
            return len(data)
        self.shared[0] -= len(data)
        return super().write(data)


def buffers(count: int, item_limit: int, total_limit: int) -> list[CappedBuffer]:
    """``count`` buffers of at most ``item_limit`` bytes each and ``total_limit`` in all."""
    shared = [total_limit]
    return [CappedBuffer(item_limit, shared) for _ in range(count)]


def batch_result(out: CappedBuffer | None, what: str) -> bytes | FsError:
    """One item of a pipelined batch: its bytes, ``NotFound`` when the server had none, or
    ``TooLarge`` when it was more than the buffer holds."""
    if out is None:
        return NotFound(f"{what}: no longer on the server")
    if out.overflow:
        return TooLarge(what)
    return out.getvalue()
