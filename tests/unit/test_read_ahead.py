"""Read-ahead of ranged objects (FTP): a sequential reader gets a window that doubles up to
``MAX_WINDOW``, fetched by one stream ahead of it; a random reader gets what it asked for."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from fsmount.backends.base import Capabilities
from fsmount.cache.content import BLOCK
from fsmount.cache.layer import CHUNK, FIRST_WINDOW, MAX_WINDOW

from .harness import cached, settle, trio_test
from .memory_backend import MemoryBackend

RANGED = Capabilities(ranged_read=True)
MIB = 1 << 20


@pytest.fixture(scope="module")
def data() -> bytes:
    return os.urandom(40 * MIB)


def fetched_end(backend: MemoryBackend) -> int:
    return max((offset + size for _, offset, size in backend.args("read")), default=0)


@trio_test
async def test_a_slow_sequential_reader_gets_a_growing_window(tmp_path: Path, data: bytes) -> None:
    """A reader slower than the server (a player, a checksum): the stream ahead of it runs
    dry between its reads, and each time it goes on it gets a window twice as large. It never
    waits on a read of its own: every byte comes from a stream, in ``CHUNK``-sized reads."""
    backend = MemoryBackend({"big": data}, RANGED)
    async with cached(backend, tmp_path) as layer:
        reader = layer.open_reader(("big",), await layer.stat(("big",)))
        leads = []
        for offset in range(0, len(data), MIB):
            assert bytes(await reader.read(offset, MIB)) == data[offset:offset + MIB]
            await settle()
            leads.append(fetched_end(backend) - (offset + MIB))
        reader.close()
        reads = backend.args("read")
        assert [size for _, _, size in reads] == [CHUNK] * len(reads)
        assert [offset for _, offset, _ in reads] == list(range(0, len(data), CHUNK))
        assert leads[0] >= 2 * FIRST_WINDOW and max(leads) >= MAX_WINDOW, leads


@trio_test
async def test_random_reads_fetch_only_their_blocks(tmp_path: Path, data: bytes) -> None:
    backend = MemoryBackend({"big": data}, RANGED)
    async with cached(backend, tmp_path) as layer:
        reader = layer.open_reader(("big",), await layer.stat(("big",)))
        spots = [30 * MIB + 100, 5 * MIB, 20 * MIB + 4096, 12 * MIB - 10]
        for offset in spots:
            assert bytes(await reader.read(offset, 4096)) == data[offset:offset + 4096]
            await settle()
        expected = []  # the blocks each read touches, in one backend read
        for offset in spots:
            first, last = offset // BLOCK, (offset + 4096 - 1) // BLOCK
            expected.append((("big",), first * BLOCK, (last - first + 1) * BLOCK))
        assert expected[3][2] == 2 * BLOCK
        assert backend.args("read") == expected
        for offset in spots:  # read again: from the cache
            assert bytes(await reader.read(offset, 4096)) == data[offset:offset + 4096]
        assert len(backend.args("read")) == len(expected)
        reader.close()


@trio_test
async def test_a_jump_starts_a_stream_of_its_own(tmp_path: Path, data: bytes) -> None:
    """``file(1)`` reads the head, then the tail: the tail's sequence gets a stream of its
    own, never the head's stretched across everything in between."""
    backend = MemoryBackend({"big": data}, RANGED)
    head = backend.block("read", only=lambda path, offset, size: 0 < offset < 36 * MIB)
    async with cached(backend, tmp_path) as layer:
        reader = layer.open_reader(("big",), await layer.stat(("big",)))
        with trio.fail_after(5):  # the head's stream is held up: the tail must not wait on it
            for offset in (0, BLOCK, 36 * MIB, 36 * MIB + BLOCK, 36 * MIB + 2 * BLOCK):
                assert bytes(await reader.read(offset, BLOCK)) == data[offset:offset + BLOCK]
        head.set()
        await settle()
        reader.close()
        gap = [(o, s) for _, o, s in backend.args("read") if o < 36 * MIB and o + s > 4 * MIB]
        assert gap == []
        assert fetched_end(backend) > 38 * MIB  # the tail's sequence was read ahead too


@trio_test
async def test_a_whole_read_through_the_layer_is_exact(tmp_path: Path, data: bytes) -> None:
    backend = MemoryBackend({"big": data[:5 * MIB + 17]}, RANGED)
    async with cached(backend, tmp_path) as layer:
        reader = layer.open_reader(("big",), await layer.stat(("big",)))
        got = bytearray()
        while chunk := bytes(await reader.read(len(got), 300_000)):
            got += chunk
        reader.close()
        assert got == data[:5 * MIB + 17]
        assert sum(size for _, _, size in backend.args("read")) < 6 * MIB + 2 * CHUNK
