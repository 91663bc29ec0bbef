"""Directory listings in memory, with a TTL and a write generation per directory.

Touched only from the trio thread (no locks needed). A listing that started before a change of
ours finished is dropped rather than stored, so a stale answer cannot undo our own write
(sshfs's ``write_ctr``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..backends.base import Entry, Path


@dataclass
class Listing:
    entries: dict[str, Entry]
    fetched: float  # monotonic time
    checked: float = field(default=0.0)  # last time the backend confirmed it unchanged
    complete: bool = True  # False: the server cut it short, a name not in it may still exist


class MetadataCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._dirs: dict[Path, Listing] = {}
        self._generation: dict[Path, int] = {}
        self._roots: dict[Path, Entry] = {}  # stat() of paths without a cached parent

    def generation(self, path: Path) -> int:
        return self._generation.get(path, 0)

    def get(self, path: Path) -> Listing | None:
        return self._dirs.get(path)

    def fresh(self, listing: Listing) -> bool:
        return time.monotonic() - max(listing.fetched, listing.checked) < self.ttl

    def store(self, path: Path, entries: list[Entry], started_generation: int,
              complete: bool = True) -> dict[str, Entry]:
        """Keep a listing unless one of our changes to ``path`` finished while it ran."""
        by_name = {e.name: e for e in entries}
        if self.generation(path) == started_generation:
            self._dirs[path] = Listing(by_name, time.monotonic(), complete=complete)
        return by_name

    def complete(self, directory: Path) -> bool:
        """Whether a name missing from the cached listing of ``directory`` is really missing
        (no listing kept, e.g. dropped for a change of ours meanwhile: do not assume so)."""
        listing = self._dirs.get(directory)
        return listing is not None and listing.complete

    def entry(self, path: Path) -> Entry | None:
        """The entry for ``path`` from its parent's listing, or a stored stat."""
        if not path:
            return self._roots.get(path)
        listing = self._dirs.get(path[:-1])
        if listing is not None:
            return listing.entries.get(path[-1])
        return self._roots.get(path)

    def store_stat(self, path: Path, entry: Entry) -> None:
        listing = self._dirs.get(path[:-1]) if path else None
        if listing is not None:
            listing.entries[path[-1]] = entry
        else:
            self._roots[path] = entry

    def changed(self, directory: Path) -> None:
        """A change of ours in ``directory`` is under way or done: listings in flight are void."""
        self._generation[directory] = self.generation(directory) + 1

    def put(self, path: Path, entry: Entry) -> None:
        """Our own change created or updated ``path``: show it at once."""
        self.changed(path[:-1])
        self.store_stat(path, entry)

    def drop(self, path: Path) -> None:
        """``path`` is gone (removed or renamed away), with everything below it."""
        self.changed(path[:-1])
        listing = self._dirs.get(path[:-1])
        if listing is not None:
            listing.entries.pop(path[-1], None)
        self._roots.pop(path, None)
        n = len(path)
        for cached in [p for p in self._dirs if p[:n] == path]:
            del self._dirs[cached]

    def expire(self, directory: Path) -> None:
        """Check ``directory`` with the server before its listing is trusted again (a change
        to it failed: its state is unknown); until then it is there to serve if the server
        does not answer."""
        listing = self._dirs.get(directory)
        if listing is not None:
            listing.fetched = listing.checked = float("-inf")

    def forget(self, directory: Path) -> None:
        """Relist ``directory`` next time (the backend said it changed)."""
        self._dirs.pop(directory, None)
