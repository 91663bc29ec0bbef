"""Scan detection: when files of one directory are opened in listing order (``grep -r``,
``find -exec``, a file manager's previews), fetch the next ones ahead.

A cold ``grep -r`` over a mail folder otherwise pays one full round trip per message, one
message at a time. Ahead of the reader, objects are fetched in batches of the backend's
``capabilities.batch`` (one pipelined round, one ``UID FETCH`` of a UID set), up to
``AHEAD_BYTES`` ahead: fetching outruns any reader, so a scan of a mailbox fits in a few
sessions (a POP3 maildrop is locked for as long as one lasts) and never waits on the server.
What arrives is stored, and offered to the VFS (``CachedBackend.on_fetched_ahead``), which
hands it to the kernel's page cache: the reader's read() then needs no request at all.
"""
from __future__ import annotations

import bisect
import logging
import time
from collections import deque
from typing import Protocol

import trio
from cachetools import LRUCache

from ..backends.base import Capabilities, Entry, Path
from .metadata import MetadataCache
from .views import DecodedView

log = logging.getLogger(__name__)

#: Only objects this small are fetched ahead: a scan of big files is served by read-ahead.
MAX_SIZE = 4 << 20
#: A batch stops growing at this many (hinted) bytes.
BATCH_BYTES = 8 << 20
#: How far ahead of the reader batches go, in (hinted) bytes.
AHEAD_BYTES = 64 << 20
#: Seconds after a listing in which the first file opened brings a batch along, of at
#: most this many (hinted) bytes: a click in a mail client must stay cheap on a slow link.
JUST_LISTED = 2.0
FIRST_BYTES = 1 << 20
#: Another connection joins the scan only for this many queued (hinted) bytes per worker:
#: a news or mail server may fork a process per connection, and logging in costs more than
#: fetching a few MiB of small articles on the connection already open.
PARALLEL_BYTES = 4 << 20
#: Folders whose scan position is remembered, and whose name order is kept (a copy of the
#: listing's names each).
MAX_DIRS = 1000
MAX_ORDERS = 16


class Fetcher(Protocol):
    """What the prefetcher needs of the cache layer: its listings, and a batch fetch."""

    capabilities: Capabilities
    meta: MetadataCache
    nursery: trio.Nursery | None
    view: DecodedView | None

    async def fetch_ahead(self, items: list[tuple[Path, Entry]]) -> None: ...

    def holds(self, path: Path, entry: Entry) -> bool: ...


class ScanPrefetcher:
    def __init__(self, layer: Fetcher, parallel: int) -> None:
        self.layer = layer
        self.batch = max(1, layer.capabilities.batch)
        self.window = max(4, 4 * parallel)  # objects ahead, when fetched one by one (FTP)
        self.parallel = parallel
        self._queue: deque[list[tuple[Path, Entry]]] = deque()  # batches, in reading order
        self._queued = 0  # their (hinted) bytes
        self._workers = 0
        # bounded: a scan reads on in a few folders at a time, and a tree-wide grep must not
        # keep a copy of every folder's names
        self._last: LRUCache[Path, int] = LRUCache(MAX_DIRS)  # directory → last file opened
        self._scheduled: LRUCache[Path, int] = LRUCache(MAX_DIRS)  # → first position not scheduled
        # directory → (listing id, names in readdir order, their positions, running total
        # of their sizes)
        self._orders: LRUCache[Path, tuple[int, list[str], dict[str, int], list[int]]] = LRUCache(MAX_ORDERS)

    def _order(self, directory: Path) -> tuple[list[str], dict[str, int], list[int]] | None:
        """Names in readdir order (the listing's own: the VFS shows it as it is), their
        positions, and ``sizes[k]``: the bytes of the first ``k`` that would be fetched ahead."""
        listing = self.layer.meta.get(directory)
        if listing is None:
            return None
        cached = self._orders.get(directory)
        if cached is None or cached[0] != id(listing.entries):
            names = list(listing.entries)
            sizes = [0]
            for entry in listing.entries.values():
                sizes.append(sizes[-1] + _fetched_size(entry))
            positions = {name: i for i, name in enumerate(names)}
            cached = self._orders[directory] = (id(listing.entries), names, positions, sizes)
        return cached[1], cached[2], cached[3]

    def _just_listed(self, directory: Path) -> bool:
        listing = self.layer.meta.get(directory)
        return listing is not None and time.monotonic() - listing.fetched < JUST_LISTED

    def opened(self, path: Path) -> None:
        if not path or self.layer.nursery is None:
            return
        view = self.layer.view
        if view is not None:  # a message's text is read with the message: not a step further
            path = view.source(path) or path
        directory = path[:-1]
        found = self._order(directory)
        if found is None:
            return
        order, positions, sizes = found
        i = positions.get(path[-1])
        if i is None:
            return
        previous = self._last.get(directory)
        self._last[directory] = i
        if previous is None or not 0 < i - previous <= 2:
            if previous is None or i < previous:  # a new scan from further up: start over
                self._scheduled.pop(directory, None)
            if not (previous is None and self.batch > 1 and self._just_listed(directory)):
                return
            # the first file opened right after a listing (grep -r, a mail client's first
            # message): it comes with the next few, in the one round trip it costs anyway
            reach = bisect.bisect_right(sizes, sizes[i] + FIRST_BYTES) - 1
            end = min(len(order), i + self.batch, max(reach, i + 1))
        elif self.batch == 1:
            end = min(len(order), i + 1 + self.window)
        else:  # as far as AHEAD_BYTES reach
            reach = bisect.bisect_right(sizes, sizes[i + 1] + AHEAD_BYTES) - 1
            end = min(len(order), max(reach, i + 1 + self.batch))
        # from this file on: its reader has not asked yet, and would queue behind the batches
        start = max(i, self._scheduled.get(directory, 0))
        if end - start < self.batch and end < len(order):
            return  # wait until a whole batch is due
        wanted: list[tuple[Path, Entry]] = []
        size = 0
        for name in order[start:end]:
            path = directory + (name,)
            entry = self.layer.meta.entry(path)
            if entry is None or not _fetched_size(entry) or self.layer.holds(path, entry):
                continue  # a scan read again (a second grep) fetches nothing, nor asks the store
            if len(wanted) == self.batch or size + (entry.size or 0) > BATCH_BYTES:
                self._enqueue(wanted)
                wanted, size = [], 0
            wanted.append((path, entry))
            size += entry.size or 0
        if wanted:
            self._enqueue(wanted)
        self._scheduled[directory] = end

    def _enqueue(self, batch: list[tuple[Path, Entry]]) -> None:
        """Batches start in the order the reader will want them, one per connection."""
        self._queue.append(batch)
        self._queued += _batch_size(batch)
        if self.layer.nursery is not None and self._workers < self.parallel and (
                self._workers == 0 or self._queued > self._workers * PARALLEL_BYTES):
            self._workers += 1
            self.layer.nursery.start_soon(self._work)

    async def _work(self) -> None:
        try:
            while self._queue:
                batch = self._queue.popleft()
                self._queued -= _batch_size(batch)
                await self.layer.fetch_ahead(batch)
        finally:
            self._workers -= 1


def _batch_size(batch: list[tuple[Path, Entry]]) -> int:
    return sum(_fetched_size(entry) for _, entry in batch)


def _fetched_size(entry: Entry) -> int:
    """The bytes a scan would fetch ahead for ``entry`` (0: not fetched ahead)."""
    if entry.is_dir or entry.symlink is not None or (entry.size or 0) > MAX_SIZE:
        return 0  # a link's bytes are its target's, fetched when the target is read
    if DecodedView.is_text(entry):
        return 0  # made from its message, which is fetched
    return max(entry.size or 0, 1)
