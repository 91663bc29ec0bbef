"""Listing ahead during a walk: when ``find``, ``du`` or ``rsync`` descends into a folder,
its subfolders are listed in the background, on the account's spare connections.

A cold walk is bound by round trips, not bandwidth: a walker lists one folder at a time, so
each folder costs a whole listing round trip (about 2 ms on a LAN: EPSV, a data connection,
MLSD, 226) while the other connections sit idle. A walk is recognised by a folder being read
right after its parent was (``ls`` of one folder lists nothing ahead); its subfolders are then
listed in listing order, which is the order the walker takes, and its readdir joins a listing
under way instead of starting its own. Listings fetched ahead live in the bounded listing cache
like any other. Touched only on the trio thread.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Protocol

import trio
from cachetools import TTLCache

from ..backends.base import Entry, Path
from ..errors import FsError
from .growing import GrowingListing
from .metadata import MetadataCache

log = logging.getLogger(__name__)

#: Seconds within which reading a subfolder of a folder read counts as a walk.
WALK_WINDOW = 10.0
#: Folders remembered as read lately.
MAX_READ = 1000
#: Subfolders waiting to be listed ahead (beyond, the walker lists them itself).
MAX_QUEUED = 256


class Lister(Protocol):
    """What listing ahead needs of the cache layer: its listings, and a way to fetch one."""

    account: str
    meta: MetadataCache
    nursery: trio.Nursery | None

    async def list(self, path: Path) -> list[Entry]: ...


class ListingAhead:
    def __init__(self, layer: Lister, workers: int) -> None:
        self.layer = layer
        self.workers = max(0, workers)
        self._read: TTLCache[Path, bool] = TTLCache(MAX_READ, WALK_WINDOW)
        self._queue: deque[Path] = deque()
        self._queued: set[Path] = set()
        self._running = 0

    def readdir(self, path: Path, listing: GrowingListing) -> None:
        """``path`` is being read (its listing is ``listing``, whole or arriving)."""
        walking = bool(path) and path[:-1] in self._read
        self._read[path] = True
        if not walking or not self.workers or self.layer.nursery is None:
            return
        if listing.done:  # from the cache (a warm walk): no task to wait in
            self._queue_subfolders(path, listing)
        else:
            self.layer.nursery.start_soon(self._after, path, listing)

    async def _after(self, path: Path, listing: GrowingListing) -> None:
        while not listing.done:
            await listing.wait_beyond(len(listing.entries))
        self._queue_subfolders(path, listing)

    def _queue_subfolders(self, path: Path, listing: GrowingListing) -> None:
        """The subfolders of ``path`` not in the cache, to be listed by the workers."""
        if listing.error is not None:
            return
        for entry in listing.entries:
            if len(self._queue) >= MAX_QUEUED:
                break
            sub = path + (entry.name,)
            if entry.is_dir and sub not in self._queued and self.layer.meta.get(sub) is None:
                self._queue.append(sub)
                self._queued.add(sub)
        while self._running < self.workers and self._queue and self.layer.nursery is not None:
            self._running += 1
            self.layer.nursery.start_soon(self._work)

    async def _work(self) -> None:
        try:
            while self._queue:
                sub = self._queue.popleft()
                try:
                    if self.layer.meta.get(sub) is None:
                        await self.layer.list(sub)
                except FsError as e:  # the walker will meet it, and say so, if it gets there
                    log.debug("%s: listing /%s ahead: %s", self.layer.account, "/".join(sub), e)
                finally:
                    self._queued.discard(sub)
        finally:
            self._running -= 1
