"""The dot-terminated multi-line answers of POP3 (RETR, TOP) and NNTP (ARTICLE), copied as
the message's exact bytes: dot-unstuffed, with CRLF line ends, streamed (never in memory)."""
from __future__ import annotations

from io import BytesIO
from typing import BinaryIO

CRLF = b"\r\n"


def copy_dot_terminated(f: BinaryIO, out: BinaryIO | None, limit: int, what: str = "message") -> int:
    """Copy one answer's body from ``f`` to ``out`` up to the lone ``.`` line; return its size.

    Lines longer than ``limit`` arrive in pieces and are copied as they are: only the start of
    a line is unstuffed. A bare LF line end becomes CRLF, as the server holds the message.
    """
    size = 0
    at_start = True  # is this piece the beginning of a line?
    after_cr = False
    while True:
        piece = f.readline(limit)
        if not piece:
            raise EOFError(f"connection closed in the middle of a {what}")
        if at_start:
            if piece in (b".\r\n", b".\n"):
                return size
            if piece.startswith(b"."):
                piece = piece[1:]
        if piece.endswith(b"\n"):
            if not piece.endswith(CRLF) and not (piece == b"\n" and after_cr):
                piece = piece[:-1] + CRLF
            at_start = True
        else:
            at_start = False
        after_cr = piece.endswith(b"\r")
        if out is not None:
            out.write(piece)
        size += len(piece)


class CappedBuffer(BytesIO):
    """An in-memory ``out`` that keeps at most ``limit`` bytes and notes an overflow, so a
    pipelined answer can still be read to its end when one message is too big to hold."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.overflow = False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.overflow or self.tell() + len(data) > self.limit:
            self.overflow = True
            return len(data)
        return super().write(data)
