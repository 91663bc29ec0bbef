"""Directory listings in memory, with a TTL and a write generation per directory.

Touched only from the trio thread (no locks needed, and cachetools is not thread-safe). A
listing that started before a change of ours finished is dropped rather than stored, so a stale
answer cannot undo our own write (sshfs's ``write_ctr``).

Listings are bounded by the entries they hold, not by their number (a folder may hold one name
or 100,000): every account's listings share one ``ListingBudget``, the least recently used
evicted first. A walk of a million files therefore keeps the last ``cache_entries`` of them,
not all; a listing evicted is fetched again when next needed.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from cachetools import LRUCache

from ..backends.base import Entry, Path

#: Default of the ``cache_entries`` setting.
CACHE_ENTRIES = 100_000
#: Generations and stats of paths with no listing kept, per account.
MAX_SMALL = 10_000
_serial = itertools.count(1)  # generations, unique across directories and evictions


@dataclass(slots=True)
class Listing:
    entries: dict[str, Entry]
    fetched: float  # monotonic time
    checked: float = field(default=0.0)  # last time the backend confirmed it unchanged
    complete: bool = True  # False: the server cut it short, a name not in it may still exist


class ListingBudget:
    """The listings of every account of a mount, bounded by their total entries."""

    def __init__(self, max_entries: int = CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self.listings: LRUCache[tuple[object, Path], Listing] = LRUCache(
            max(1, max_entries), getsizeof=_weight)


def _weight(listing: Listing) -> int:
    return len(listing.entries) + 1  # an empty folder costs a little too


class MetadataCache:
    def __init__(self, ttl: float, budget: ListingBudget | None = None) -> None:
        self.ttl = ttl
        self._budget = budget or ListingBudget()
        self._dirs = self._budget.listings
        self._big: tuple[Path, Listing] | None = None  # the last listing larger than the budget
        self._generation: LRUCache[Path, int] = LRUCache(MAX_SMALL)
        self._roots: LRUCache[Path, Entry] = LRUCache(MAX_SMALL)  # stats without a cached parent

    def generation(self, path: Path) -> int:
        """Changes whenever a change of ours in ``path`` starts or ends. An evicted
        generation reads 0, which no stored one is: a listing in flight is then dropped."""
        return self._generation.get(path, 0)

    def get(self, path: Path) -> Listing | None:
        listing = self._dirs.get((self, path))
        if listing is None and self._big is not None and self._big[0] == path:
            return self._big[1]
        return listing

    def fresh(self, listing: Listing) -> bool:
        return time.monotonic() - max(listing.fetched, listing.checked) < self.ttl

    def trust(self, directory: Path) -> float | None:
        """Seconds the listing of ``directory`` is still trusted without asking the server
        (None: no listing kept). The kernel may keep what it learned from it as long."""
        listing = self.get(directory)
        if listing is None:
            return None
        return max(0.0, self.ttl - (time.monotonic() - max(listing.fetched, listing.checked)))

    def store(self, path: Path, entries: list[Entry], started_generation: int,
              complete: bool = True) -> dict[str, Entry]:
        """Keep a listing unless one of our changes to ``path`` finished while it ran."""
        by_name = {e.name: e for e in entries}
        if self.generation(path) == started_generation:
            self._keep(path, Listing(by_name, time.monotonic(), complete=complete))
        return by_name

    def _keep(self, path: Path, listing: Listing) -> None:
        if self._big is not None and self._big[0] == path:
            self._big = None
        if _weight(listing) > self._dirs.maxsize:
            self._dirs.pop((self, path), None)
            self._big = (path, listing)  # or each lookup in it would list it again
        else:
            self._dirs[(self, path)] = listing

    def complete(self, directory: Path) -> bool:
        """Whether a name missing from the cached listing of ``directory`` is really missing
        (no listing kept, e.g. dropped for a change of ours meanwhile: do not assume so)."""
        listing = self.get(directory)
        return listing is not None and listing.complete

    def entry(self, path: Path) -> Entry | None:
        """The entry for ``path`` from its parent's listing, or a stored stat."""
        if not path:
            return self._roots.get(path)
        listing = self.get(path[:-1])
        if listing is not None:
            return listing.entries.get(path[-1])
        return self._roots.get(path)

    def store_stat(self, path: Path, entry: Entry) -> None:
        listing = self.get(path[:-1]) if path else None
        if listing is not None:
            grows = path[-1] not in listing.entries
            listing.entries[path[-1]] = entry
            if grows:  # weighed again
                self._keep(path[:-1], listing)
        else:
            self._roots[path] = entry

    def changed(self, directory: Path) -> None:
        """A change of ours in ``directory`` is under way or done: listings in flight are void."""
        self._generation[directory] = next(_serial)

    def put(self, path: Path, entry: Entry) -> None:
        """Our own change created or updated ``path``: show it at once."""
        self.changed(path[:-1])
        self.store_stat(path, entry)

    def drop(self, path: Path) -> None:
        """``path`` is gone (removed or renamed away), with everything below it."""
        self.changed(path[:-1])
        listing = self.get(path[:-1])
        if listing is not None:
            listing.entries.pop(path[-1], None)
        self._roots.pop(path, None)
        n = len(path)
        for key in [k for k in self._dirs if k[0] is self and k[1][:n] == path]:
            del self._dirs[key]
        if self._big is not None and self._big[0][:n] == path:
            self._big = None

    def expire(self, directory: Path) -> None:
        """Check ``directory`` with the server before its listing is trusted again (a change
        to it failed: its state is unknown); until then it is there to serve if the server
        does not answer."""
        listing = self._dirs.get(directory)
        if listing is not None:
            listing.fetched = listing.checked = float("-inf")

    def forget(self, directory: Path) -> None:
        """Relist ``directory`` next time (the backend said it changed)."""
        self._dirs.pop((self, directory), None)
        if self._big is not None and self._big[0] == directory:
            self._big = None
