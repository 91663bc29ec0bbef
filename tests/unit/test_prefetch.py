"""Scan detection (``ScanPrefetcher``): files of one folder opened in listing order bring
the next ones along, in batches of ``download_many`` in that order; other orders do not."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from fsmount.backends.base import Capabilities
from fsmount.cache.layer import CachedBackend

from .harness import Clock, cached, settle, trio_test
from .memory_backend import MemoryBackend

BATCH = 4
# the folder's listing order is not the order of the names: the scan follows the listing
NAMES = [f"m{i:02}.eml" for i in random.Random(14).sample(range(20), 20)]
FILES = {f"F/{name}": f"Subject: {name}\r\n\r\n{name * 10}\r\n".encode() for name in NAMES}


def mail(batch: int = BATCH) -> MemoryBackend:
    return MemoryBackend(FILES, Capabilities(immutable=True, batch=batch))


async def open_and_read(layer: CachedBackend, name: str) -> bytes:
    """What ``cat`` does through the VFS: open (the kernel's reply lets the mount's other
    tasks run before the read arrives), read, close."""
    path = ("F", name)
    reader = layer.open_reader(path, await layer.stat(path))
    try:
        await settle()
        return bytes(await reader.read(0, 1 << 20))
    finally:
        reader.close()
        await settle()


def batched(backend: MemoryBackend) -> list[list[str]]:
    return [[p[-1] for p in paths] for (paths,) in backend.args("download_many")]


@trio_test
async def test_files_opened_in_listing_order_come_in_batches_in_that_order(tmp_path: Path) -> None:
    backend = mail()
    async with cached(backend, tmp_path) as layer:
        assert [e.name for e in await layer.list(("F",))] == NAMES
        for name in NAMES:
            assert await open_and_read(layer, name) == FILES[f"F/{name}"]
        batches = batched(backend)
        assert [name for batch in batches for name in batch] == NAMES
        assert all(len(batch) == BATCH for batch in batches)
        assert backend.count("download") == 0  # no reader fetched on its own


@trio_test
async def test_a_scan_read_again_asks_for_no_batch(tmp_path: Path) -> None:
    """A second ``grep -r`` of a folder the first one put on disk: no batch is even made (each
    would open every object in the store only to find it complete)."""
    backend = mail()
    async with cached(backend, tmp_path) as layer:
        await layer.list(("F",))
        for name in NAMES:
            await open_and_read(layer, name)
        fetched = len(batched(backend))
        asked: list[object] = []
        real = layer.fetch_ahead

        async def fetch_ahead(items: list) -> None:
            asked.append(items)
            await real(items)

        layer.fetch_ahead = fetch_ahead  # type: ignore[method-assign]
        for name in NAMES:
            assert await open_and_read(layer, name) == FILES[f"F/{name}"]
        assert asked == []
        assert len(batched(backend)) == fetched and backend.count("download") == 0


@trio_test
async def test_the_first_file_after_a_listing_brings_a_batch_along(tmp_path: Path) -> None:
    """A mail client's first click right after the listing: the one round trip it costs
    brings the next few messages too (and only a few)."""
    backend = mail()
    async with cached(backend, tmp_path) as layer:
        await layer.list(("F",))
        await open_and_read(layer, NAMES[5])
        assert batched(backend) == [NAMES[5:5 + BATCH]]


@trio_test
async def test_files_opened_out_of_order_are_not_a_scan(tmp_path: Path, clock: Clock) -> None:
    backend = mail()
    async with cached(backend, tmp_path) as layer:
        await layer.list(("F",))
        clock.advance(60)  # long after the listing: no first batch
        order = [NAMES[i] for i in (10, 3, 17, 0, 12, 6, 19)]
        for name in order:
            assert await open_and_read(layer, name) == FILES[f"F/{name}"]
        assert backend.count("download_many") == 0
        assert [p[-1] for (p,) in backend.args("download")] == order


@trio_test
async def test_a_scan_fetched_one_by_one_goes_in_listing_order(tmp_path: Path, clock: Clock) -> None:
    """A backend without batches (FTP): the files ahead are downloaded one by one, in the
    order the reader will want them, each once."""
    backend = mail(batch=1)
    async with cached(backend, tmp_path) as layer:
        await layer.list(("F",))
        clock.advance(60)
        for name in NAMES:
            assert await open_and_read(layer, name) == FILES[f"F/{name}"]
        assert backend.count("download_many") == 0
        assert [p[-1] for (p,) in backend.args("download")] == NAMES


@pytest.mark.parametrize("step", ["text", "next message"])
@trio_test
async def test_a_message_then_its_text_is_not_a_scan(tmp_path: Path, clock: Clock, step: str) -> None:
    """With the decoded view, ``grep -r`` reads ``X.eml`` then ``X.txt``: the text is made
    from the message, so it is no step further down the folder. The next message is."""
    backend = mail()
    async with cached(backend, tmp_path, decoded_view=True) as layer:
        await layer.list(("F",))
        clock.advance(60)
        await open_and_read(layer, NAMES[0])
        await open_and_read(layer, NAMES[0].replace(".eml", ".txt"))
        if step == "text":
            assert backend.count("download_many") == 0
            assert backend.count("download") == 1  # once for both files
        else:
            await open_and_read(layer, NAMES[1])
            assert batched(backend)[0] == NAMES[1:1 + BATCH]  # messages only, in order
