"""The dot-terminated answer reader: its buffer-at-a-time path gives exactly what the
line-by-line path gives, for every shape of input and every buffer boundary."""
from __future__ import annotations

import io
import random

import pytest

from fsmount.net.dotstream import CappedBuffer, buffers, copy_dot_terminated


class LineReader(io.RawIOBase):
    """A source without ``peek``: forces the line-by-line path."""

    def __init__(self, data: bytes) -> None:
        self.f = io.BytesIO(data)

    def readline(self, limit: int = -1) -> bytes:  # type: ignore[override]
        return self.f.readline(limit)


def answers(seed: int) -> bytes:
    rng = random.Random(seed)
    shapes = [b"plain text", b"..", b"..x", b"...dots", b".x", b"", b"x" * 300, b"\r", b" .", b"..\r"]
    out = []
    for _ in range(3):
        end = rng.choice([b"\r\n", b"\r\n", b"\r\n", b"\n"]) if seed % 3 else b"\r\n"
        lines = [rng.choice(shapes) for _ in range(rng.randrange(0, 40))]
        out.append(b"".join(line + end for line in lines) + b".\r\n")
    return b"".join(out) + b"+OK next answer\r\n"


@pytest.mark.parametrize("seed", range(60))
def test_buffered_path_equals_line_path(seed: int) -> None:
    data = answers(seed)
    for buffer_size in (7, 64, 256, 8192):
        fast = io.BufferedReader(io.BytesIO(data), buffer_size)
        slow = LineReader(data)
        for _ in range(3):
            a, b = io.BytesIO(), io.BytesIO()
            assert copy_dot_terminated(fast, a, 100) == copy_dot_terminated(slow, b, 100)
            assert a.getvalue() == b.getvalue()
        assert fast.read() == slow.f.read() == b"+OK next answer\r\n"  # nothing read past "."


def test_unstuffs_and_normalises() -> None:
    data = b"..leading\r\n.single\r\nbare lf\nend\r\n.\r\nrest"
    out = io.BytesIO()
    f = io.BufferedReader(io.BytesIO(data))
    assert copy_dot_terminated(f, out, 1 << 20) == (len(out.getvalue()), 2)  # 2 dots unstuffed
    assert out.getvalue() == b".leading\r\nsingle\r\nbare lf\r\nend\r\n"
    assert f.read() == b"rest"


def test_a_closed_connection_is_an_error() -> None:
    with pytest.raises(EOFError):
        copy_dot_terminated(io.BufferedReader(io.BytesIO(b"body\r\nno end\r\n")), None, 100)


def test_capped_buffer_notes_overflow_and_keeps_reading() -> None:
    out = CappedBuffer(10)
    f = io.BufferedReader(io.BytesIO(b"0123456789abc\r\n.\r\nnext"))
    copy_dot_terminated(f, out, 100)
    assert out.overflow and f.read() == b"next"


def test_buffers_of_a_batch_share_a_total() -> None:
    """Size hints may lie: a batch never holds more than its total, whatever each item is."""
    outs = buffers(3, 100, 150)
    data = io.BufferedReader(io.BytesIO((b"x" * 78 + b"\r\n" + b".\r\n") * 3 + b"next"))
    for out in outs:
        copy_dot_terminated(data, out, 1000)
    assert [o.overflow for o in outs] == [False, True, True]  # 80 + 80 > 150
    assert data.read() == b"next"
