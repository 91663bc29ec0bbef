"""Scan detection: when files of one directory are opened in listing order (``grep -r``,
``find -exec``, a file manager's previews), fetch the next few ahead, in parallel.

A cold ``grep -r`` over a mail folder otherwise pays one full round trip per message, one
message at a time; with a window of downloads in flight it runs at the server's pace.
"""
from __future__ import annotations

import bisect
import logging
from typing import TYPE_CHECKING

import trio

from ..backends.base import Entry, Path
from ..errors import FsError

if TYPE_CHECKING:
    from .layer import CachedBackend

log = logging.getLogger(__name__)

#: Only objects this small are fetched ahead: a scan of big files is served by read-ahead.
MAX_SIZE = 4 << 20


class ScanPrefetcher:
    def __init__(self, layer: CachedBackend, parallel: int) -> None:
        self.layer = layer
        self.window = max(4, 4 * parallel)
        self._limiter = trio.CapacityLimiter(parallel)
        self._last: dict[Path, int] = {}  # directory → position of the last file opened
        self._scheduled: dict[Path, int] = {}  # directory → first position not yet scheduled
        self._orders: dict[Path, tuple[int, list[str]]] = {}  # directory → (listing id, names)

    def _order(self, directory: Path) -> list[str] | None:
        """Names in readdir order (the VFS lists sorted by name)."""
        listing = self.layer.meta.get(directory)
        if listing is None:
            return None
        cached = self._orders.get(directory)
        if cached is None or cached[0] != id(listing.entries):
            cached = self._orders[directory] = (id(listing.entries), sorted(listing.entries))
        return cached[1]

    def opened(self, path: Path) -> None:
        if not path or self.layer.nursery is None:
            return
        directory = path[:-1]
        order = self._order(directory)
        if order is None:
            return
        i = bisect.bisect_left(order, path[-1])
        if i == len(order) or order[i] != path[-1]:
            return
        previous = self._last.get(directory)
        self._last[directory] = i
        if previous is None or not 0 < i - previous <= 2:
            return
        start = max(i + 1, self._scheduled.get(directory, 0))
        end = min(len(order), i + 1 + self.window)
        for name in order[start:end]:
            entry = self.layer.meta.entry(directory + (name,))
            if entry is not None and not entry.is_dir and (entry.size or 0) <= MAX_SIZE:
                self.layer.nursery.start_soon(self._fetch, directory + (name,), entry)
        self._scheduled[directory] = max(end, self._scheduled.get(directory, 0))

    async def _fetch(self, path: Path, entry: Entry) -> None:
        async with self._limiter:
            obj = self.layer.store.open(self.layer._key(path, entry), entry.size if entry.size_exact else None)
            try:
                await self.layer._download_whole(path, entry, obj)
            except FsError as e:  # the reader will fetch it itself, and report the error
                log.debug("prefetch of %s failed: %s", "/".join(path), e)
            finally:
                self.layer.store.release(obj)
