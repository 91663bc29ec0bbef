"""A directory listing as it arrives, so readdir can show a big folder before it is all in.

A cold listing of 10,000 IMAP messages takes about as long as ``ls`` then needs to take in
the entries; handing them over in parts lets the two overlap. Touched only on the trio thread.
"""
from __future__ import annotations

import trio

from ..backends.base import Entry
from ..errors import FsError


class GrowingListing:
    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.done = False
        self.error: FsError | None = None
        self._names: set[str] = set()
        self._more = trio.Event()

    @classmethod
    def whole(cls, entries: list[Entry]) -> GrowingListing:
        listing = cls()
        listing.finish(entries)
        return listing

    def add(self, entries: list[Entry]) -> None:
        """More entries; a name already there is not repeated (a retried fetch resends)."""
        names = self._names
        fresh = [e for e in entries if e.name not in names]
        if fresh:
            names.update(e.name for e in fresh)
            self.entries += fresh
            self._wake()

    def in_order(self, whole: list[Entry]) -> list[Entry]:
        """``whole`` in the order its entries came in parts, what no part held after."""
        if not self.entries:
            return whole
        if len(self.entries) == len(whole) and all(
                a.name == b.name for a, b in zip(self.entries, whole)):
            return whole  # the usual case: the parts were the whole, in its order
        by_name = {e.name: e for e in whole}
        ordered = [by_name.pop(e.name) for e in self.entries if e.name in by_name]
        return ordered + list(by_name.values())

    def finish(self, entries: list[Entry]) -> None:
        """The whole listing: whatever the parts did not hold is added at the end."""
        self.add(entries)
        self.done = True
        self._wake()

    def fail(self, error: FsError) -> None:
        self.error = error
        self.done = True
        self._wake()

    async def wait_beyond(self, count: int) -> None:
        """Until more than ``count`` entries are in, or no more will come."""
        while len(self.entries) <= count and not self.done:
            await self._more.wait()

    def _wake(self) -> None:
        self._more.set()
        self._more = trio.Event()
