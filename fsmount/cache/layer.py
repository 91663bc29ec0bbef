"""CachedBackend: the Backend interface again, with listings in memory and bytes on disk.

Data flows down on a miss and up on a hit. Concurrent misses on the same listing or object
wait on one fetch. Sequential readers get a read-ahead window that doubles up to
``MAX_WINDOW``, fetched by one background task per object so the backend's transfer stays open.
A file of at least ``stream_size`` bytes read from its start streams through memory instead
(``streaming``): only what is read in places is kept on disk.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from cachetools import LRUCache, TTLCache

from ..backends.base import Backend, Content, Entry, PartialListing, PartSink, Path
from ..errors import AlreadyExists, FsError, NotADirectory, NotFound
from .content import BLOCK, CachedObject, ContentStore, object_key, unlink_quietly
from .growing import GrowingListing
from .metadata import ListingBudget, MetadataCache
from .prefetch import ScanPrefetcher
from .streaming import Stream
from .walkahead import ListingAhead

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_WINDOW = 1 << 20
MAX_WINDOW = 16 << 20
CHUNK = 1 << 20  # one backend read while streaming ahead
# A scan's batch up to this size is stored on the trio thread: written to the page cache it
# takes a few ms, less than the GIL hand-offs of a worker thread (cold POP3 grep: -10 %).
INLINE_STORE = 4 << 20
MAX_ALIASES = 1000
ALIAS_LIFETIME = 60.0
MAX_KEYS = 200_000  # long enough for rsync's or an editor's rename after close
# A listing that failed (after its retries) answers the lookups that follow with the same
# error for this long: `ls -l` of a folder whose listing just failed would otherwise retry
# the whole listing once per name it shows. A new readdir always tries again.
FAILURE_MEMORY = 5.0
MAX_FAILURES = 1000
STREAM_SIZE = 64 << 20  # the default of the ``stream_size`` setting
MAX_STREAMED = 1000  # objects remembered as streamed once: read again, they are kept on disk


class CachedBackend:
    """Wraps one account's backend. All state lives on the trio thread."""

    def __init__(self, backend: Backend, account: str, store: ContentStore, ttl: float,
                 parallel: int = 4, stream_size: int = STREAM_SIZE,
                 budget: ListingBudget | None = None) -> None:
        self.backend = backend
        self.stream_size = stream_size  # 0: every file read is kept on disk
        self._streamed: OrderedDict[str, None] = OrderedDict()  # keys, oldest first
        self.account = account
        self.store = store
        self.capabilities = backend.capabilities
        self.meta = MetadataCache(backend.capabilities.metadata_ttl or ttl, budget)
        self._inflight: dict[Any, _Flight] = {}
        self._growing: dict[Path, GrowingListing] = {}
        self._failed: TTLCache[Path, FsError] = TTLCache(MAX_FAILURES, FAILURE_MEMORY)
        self._pending: dict[Path, Entry] = {}  # created locally, not committed yet
        self._keys: dict[tuple[Path, tuple[Any, ...]], str] = {}  # hashing is per open: memoized
        self._exact_sizes: LRUCache[tuple[Path, tuple[Any, ...]], int] = LRUCache(MAX_KEYS)  # learned by downloading
        # A name a writer used that the service replaced (an IMAP APPEND names the message
        # itself): still resolvable, so the writer's rename or unlink of it (rsync, editors)
        # reaches the backend instead of failing with ENOENT.
        self._aliases: OrderedDict[Path, tuple[Entry, float]] = OrderedDict()  # → (entry, expiry)
        self.nursery: trio.Nursery | None = None  # set by the mount; runs read-ahead tasks
        self.prefetch = ScanPrefetcher(self, parallel)
        self.ahead = ListingAhead(self, parallel - 1)  # one connection stays the walker's
        # told of each object a scan fetched ahead, with its bytes (the VFS hands them to
        # the kernel's page cache)
        self.on_fetched_ahead: Callable[[Path, Entry, bytes], None] | None = None

    # -- metadata ------------------------------------------------------------------------

    async def list(self, path: Path) -> list[Entry]:
        return self._with_pending(path, await self._entries(path))

    async def _entries(self, path: Path) -> dict[str, Entry]:
        """The cached listing of ``path`` by name, fetched or confirmed when stale."""
        listing = self.meta.get(path)
        if listing is not None:
            if not self.meta.fresh(listing) and not await self.backend.changed(path):
                listing.checked = time.monotonic()
            if self.meta.fresh(listing):
                return listing.entries
        failed = self._failed.get(path)
        if failed is not None:
            raise failed
        try:
            return await self._once(("list", path), lambda: self._fetch_list(path))
        except FsError as e:
            self._failed[path] = e
            raise

    async def list_growing(self, path: Path) -> GrowingListing:
        """The listing of ``path``: whole when cached, else growing while the backend lists
        it (in a task of its own, so the first readdir can answer before the last part)."""
        growing = self._growing.get(path)
        if growing is None:
            if self.meta.get(path) is not None or self.nursery is None:
                growing = GrowingListing.whole(await self.list(path))
            else:
                self._failed.pop(path, None)
                growing = self._growing[path] = GrowingListing()
                self.nursery.start_soon(self._grow, path, growing)
        self.ahead.readdir(path, growing)  # a walk: its subfolders are listed ahead
        return growing

    async def _grow(self, path: Path, growing: GrowingListing) -> None:
        try:
            entries = await self._once(("list", path), lambda: self._fetch_list(path, growing))
            growing.finish(self._with_pending(path, entries))
        except FsError as e:
            self._failed[path] = e
            growing.fail(e)
        except Exception as e:
            log.exception("%s: listing /%s failed", self.account, "/".join(path))
            growing.fail(FsError(f"listing failed: {e!r}"))
        finally:
            if self._growing.get(path) is growing:
                del self._growing[path]

    async def _fetch_list(self, path: Path, growing: GrowingListing | None = None
                          ) -> dict[str, Entry]:
        """List ``path`` and keep it; a growing listing gets the parts as they come, and the
        whole is kept in the order they came: the order readdir showed, which the prefetcher
        takes for the reader's."""
        generation = self.meta.generation(path)
        if growing is None:
            listed = await self.backend.list(path)
            entries = self._corrected(path, listed)
        else:
            listed = await self.backend.list_in_parts(path, self._part_sink(path, growing))
            entries = growing.in_order(self._corrected(path, listed))
        return self.meta.store(path, entries, generation,
                               complete=not isinstance(listed, PartialListing))

    def _part_sink(self, path: Path, growing: GrowingListing) -> PartSink:
        def part(entries: list[Entry]) -> None:
            try:
                growing.add(self._corrected(path, entries))
                log.debug("%s: /%s: %d entries in so far", self.account, "/".join(path),
                          len(growing.entries))
            except Exception:  # run from trio's own queue: raising would end the mount
                log.exception("%s: a part of the listing of /%s was lost", self.account,
                              "/".join(path))
        return part

    def _with_pending(self, path: Path, entries: dict[str, Entry]) -> list[Entry]:
        if not self._pending:
            return list(entries.values())
        extra = [e for p, e in self._pending.items() if p[:-1] == path and p[-1] not in entries]
        return [*entries.values(), *extra]

    async def stat(self, path: Path) -> Entry:
        if path in self._pending:
            return self._pending[path]
        if not path:
            entry = self.meta.entry(path)
            if entry is None:
                entry = await self._once(("stat", path), lambda: self.backend.stat(path))
                self.meta.store_stat(path, entry)
            return entry
        parent = await self.stat(path[:-1]) if len(path) > 1 else None
        if parent is not None and not parent.is_dir:
            raise NotADirectory("/".join(path[:-1]))
        entry = (await self._entries(path[:-1])).get(path[-1]) or self._alias(path)
        if entry is None:
            if self.meta.complete(path[:-1]):
                raise NotFound("/".join(path))
            entry = await self._once(("stat", path), lambda: self.backend.stat(path))
            self.meta.store_stat(path, entry)
        return entry

    async def ensure_absent(self, path: Path) -> None:
        """Before creating ``path``: where its directory's listing was cut short, make sure
        the server holds no such object, which creating would silently replace."""
        if path in self._pending or self.meta.complete(path[:-1]) or not path:
            return
        try:
            await self.stat(path)
        except NotFound:
            return
        raise AlreadyExists(f"{'/'.join(path)} exists on the server (its folder's listing was cut short)")

    def _corrected(self, directory: Path, entries: list[Entry]) -> list[Entry]:
        """Apply sizes learned from downloads to entries whose size was a hint."""
        if all(e.size_exact or e.is_dir for e in entries):
            return entries
        return [e if e.size_exact or e.is_dir else self._exact(directory + (e.name,), e)
                for e in entries]

    def _exact(self, path: Path, entry: Entry) -> Entry:
        size = self._exact_sizes.get((path, entry.identity))
        return dataclasses.replace(entry, size=size, size_exact=True) if size is not None else entry

    async def changed(self, path: Path) -> bool:
        return await self.backend.changed(path)

    def trust(self, directory: Path) -> float | None:
        """Seconds the listing of ``directory`` is still trusted (None: none is kept); a
        listing arriving now is trusted for the whole TTL."""
        if directory in self._growing:
            return self.meta.ttl
        return self.meta.trust(directory)

    # -- content -------------------------------------------------------------------------

    def _key(self, path: Path, entry: Entry) -> str:
        memo = (path, entry.identity)
        key = self._keys.get(memo)
        if key is None:
            if len(self._keys) >= MAX_KEYS:
                self._keys.clear()
            key = self._keys[memo] = object_key(self.account, path, entry.identity)
        return key

    def streamed(self, key: str) -> None:
        """``key`` streamed through to its end: a second reading is kept on disk (what is
        read again is what the disk cache is for)."""
        self._streamed[key] = None
        self._streamed.move_to_end(key)
        while len(self._streamed) > MAX_STREAMED:
            self._streamed.popitem(last=False)

    def open_reader(self, path: Path, entry: Entry) -> Reader:
        self.prefetch.opened(path)
        return Reader(self, path, entry)

    async def read(self, path: Path, offset: int, size: int) -> bytes:
        reader = self.open_reader(path, await self.stat(path))
        try:
            return bytes(await reader.read(offset, size))
        finally:
            reader.close()

    async def download(self, path: Path, into: str) -> Entry:
        return await self.backend.download(path, into)

    async def _download_whole(self, path: Path, entry: Entry, obj: CachedObject) -> None:
        async def fetch() -> None:
            self.store.ensure_directory()
            tmp = self._download_path(obj)
            try:
                exact = await self.backend.download(path, tmp)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(unlink_quietly, tmp)
                raise
            if obj.complete:
                unlink_quietly(tmp)
                return
            obj.fill_from(tmp)
            if not entry.size_exact and exact.size is not None:
                self._learn_size(path, entry, exact.size)

        while not obj.complete:
            flight = self._inflight.get(("download", obj.key))
            if flight is None or not flight.ahead:
                await self._once(("download", obj.key), fetch)
                return
            await flight.done.wait()  # a scan's batch has it; if that failed, fetch it here

    async def fetch_ahead(self, items: list[tuple[Path, Entry]]) -> None:
        """Download objects a scan will read soon, in one ``download_many``.

        Readers that arrive meanwhile wait for the batch; an error of the batch is not theirs
        (they fetch on their own), so it is only logged here.
        """
        todo: list[tuple[Path, Entry, CachedObject]] = []
        for path, entry in items:
            obj = self.store.open(self._key(path, entry), entry.size if entry.size_exact else None)
            streaming = obj.users > 1 and self.capabilities.ranged_read  # its reader fetches it
            if obj.complete or streaming or ("download", obj.key) in self._inflight:
                self.store.release(obj)
                continue
            todo.append((path, entry, obj))
        if self.capabilities.batch == 1:  # one by one anyway: straight into the store
            for path, entry, obj in todo:
                try:
                    await self._download_whole(path, entry, obj)
                except FsError as e:
                    log.debug("fetching %s ahead failed: %s", "/".join(path), e)
                finally:
                    self.store.release(obj)
            return
        flights = [_Flight(ahead=True) for _ in todo]
        for (_, _, obj), flight in zip(todo, flights):
            self._inflight[("download", obj.key)] = flight
        arrived: dict[int, bytes] = {}  # index in todo → bytes stored in the cache
        try:
            if todo:
                results = await self.backend.download_many([t[0] for t in todo])
                got = {i: data for i, data in enumerate(results) if isinstance(data, bytes)}
                if got:
                    self.store.check_database()
                    batch = [(todo[i][2].key, data) for i, data in got.items()]
                    if sum(len(data) for data in got.values()) <= INLINE_STORE:
                        self.store.store_whole(batch)
                    else:  # the mount keeps serving while a big batch is written
                        await trio.to_thread.run_sync(self.store.store_whole, batch)
                    arrived = got
        except FsError as e:
            log.debug("%s: fetching %d objects ahead failed: %s", self.account, len(todo), e)
        except OSError as e:  # the readers will fetch them themselves
            self.store.write_failed(e)
        finally:
            for i, ((path, entry, obj), flight) in enumerate(zip(todo, flights)):
                try:
                    data = arrived.get(i)
                    if data is not None and not obj.complete:
                        obj.stored_whole(len(data))
                        if not entry.size_exact:
                            self._learn_size(path, entry, len(data))
                        if self.on_fetched_ahead is not None:
                            self.on_fetched_ahead(path, entry, data)
                finally:  # whatever happened, its readers must not wait for ever
                    del self._inflight[("download", obj.key)]
                    flight.done.set()
                    self.store.release(obj)

    def _download_path(self, obj: CachedObject) -> str:
        return f"{self.store.final_path(obj.key)}.dl.part"

    def _learn_size(self, path: Path, entry: Entry, size: int) -> None:
        self._exact_sizes[(path, entry.identity)] = size
        if self.meta.entry(path) == entry:
            self.meta.store_stat(path, dataclasses.replace(entry, size=size, size_exact=True))

    # -- changes -------------------------------------------------------------------------

    def add_pending(self, path: Path, entry: Entry) -> None:
        self._pending[path] = entry

    def drop_pending(self, path: Path) -> None:
        self._pending.pop(path, None)

    async def commit(self, path: Path, content: Content, replacing: Entry | None) -> Entry:
        entry = await self._change(path[:-1], self.backend.commit(path, content, replacing), gone=path)
        if entry.name != path[-1]:
            self._aliases[path] = (entry, time.monotonic() + ALIAS_LIFETIME)
            while len(self._aliases) > MAX_ALIASES:
                self._aliases.popitem(last=False)
        return entry

    def _alias(self, path: Path) -> Entry | None:
        alias = self._aliases.get(path)
        if alias is None or alias[1] < time.monotonic():
            self._aliases.pop(path, None)
            return None
        return alias[0]

    async def remove(self, path: Path) -> None:
        self._aliases.pop(path, None)
        await self._change(path[:-1], self.backend.remove(path), gone=path)

    async def rmdir(self, path: Path) -> None:
        await self._change(path[:-1], self.backend.rmdir(path), gone=path)

    async def mkdir(self, path: Path) -> None:
        await self._change(path[:-1], self.backend.mkdir(path))
        await self._refresh(path)

    async def rename(self, old: Path, new: Path) -> Entry | None:
        self._aliases.pop(old, None)
        self.meta.changed(new[:-1])
        result = await self._change(old[:-1], self.backend.rename(old, new), gone=old, into=new[:-1])
        if result is None or result.name != new[-1]:
            self.meta.drop(new)
        if result is None:
            await self._refresh(new)
        return result

    async def set_mode(self, path: Path, mode: int) -> None:
        await self._change(path[:-1], self.backend.set_mode(path, mode))
        await self._refresh(path)

    async def set_mtime(self, path: Path, mtime: float) -> None:
        await self._change(path[:-1], self.backend.set_mtime(path, mtime))
        await self._refresh(path)

    async def _change(self, directory: Path, call: Awaitable[T], *, gone: Path | None = None,
                      into: Path | None = None) -> T:
        """Run a change and show its result at once, without relisting the directory.

        Listings of ``directory`` that started before the change ended are void; after a
        failure the directory is relisted, since its state is unknown.
        """
        self.meta.changed(directory)
        try:
            result = await call
        except BaseException:
            self.meta.forget(directory)
            raise
        finally:
            self.meta.changed(directory)
            if gone is not None:
                self.meta.drop(gone)
                self._pending.pop(gone, None)
        if self.capabilities.coupled_names:
            self.meta.forget(directory)
        if isinstance(result, Entry):
            self.meta.put((directory if into is None else into) + (result.name,), result)
        return result

    async def _refresh(self, path: Path) -> None:
        """Learn the entry a change left at ``path`` (one stat, not a whole listing)."""
        try:
            self.meta.put(path, await self.backend.stat(path))
        except FsError:
            self.meta.forget(path[:-1])

    async def get_xattrs(self, path: Path) -> dict[str, bytes]:
        return await self.backend.get_xattrs(path)

    async def xattr_names(self, path: Path) -> list[str]:
        return await self.backend.xattr_names(path)

    async def set_xattr(self, path: Path, name: str, value: bytes) -> None:
        await self._change(path[:-1], self.backend.set_xattr(path, name, value))

    async def aclose(self) -> None:
        await self.backend.aclose()

    # -- single flight -------------------------------------------------------------------

    async def _once(self, key: Any, fetch: Callable[[], Awaitable[T]]) -> T:
        """Concurrent callers with the same key share one fetch (and its error)."""
        flight = self._inflight.get(key)
        if flight is not None:
            await flight.done.wait()
            if isinstance(flight.result, BaseException):
                raise flight.result
            return flight.result
        flight = self._inflight[key] = _Flight()
        try:
            flight.result = await fetch()
            return flight.result
        except FsError as e:
            flight.result = e
            raise
        except BaseException as e:
            flight.result = FsError(f"interrupted: {e!r}")
            raise
        finally:
            del self._inflight[key]
            flight.done.set()


class _Flight:
    def __init__(self, ahead: bool = False) -> None:
        self.done = trio.Event()
        self.result: Any = None
        self.ahead = ahead  # a scan's read-ahead: its failure is not the waiting reader's


class Reader:
    """One open file's view of the content cache; keeps the object (and its blocks) alive."""

    def __init__(self, layer: CachedBackend, path: Path, entry: Entry) -> None:
        self.layer = layer
        self.path = path
        self.entry = entry
        size = entry.size if entry.size_exact else None
        self.obj = layer.store.open(layer._key(path, entry), size)
        self.next_offset = 0
        self.window = FIRST_WINDOW
        self.ahead: _Stream | None = None
        self.uncached = False  # the cache disk failed a write: read from the server directly
        # a big object not on disk yet is streamed while it is read from its start on
        self.stream: Stream | None = None
        self.may_stream = (0 < layer.stream_size <= (entry.size or 0) and not self.obj.complete
                           and layer.capabilities.ranged_read and layer.nursery is not None
                           and self.obj.key not in layer._streamed)

    @property
    def complete(self) -> bool:
        return self.obj.complete

    async def read(self, offset: int, size: int) -> bytes | memoryview:
        if self.uncached:
            return await self.layer.backend.read(self.path, offset, size)
        if self.may_stream:
            data = await self._from_stream(offset, size)
            if data is not None:
                return data
        try:
            return await self._read(offset, size)
        except FileNotFoundError:  # the cache was cleared by hand under a complete object
            self.obj.lost()
            return await self._read(offset, size)
        except OSError as e:  # the cache disk is full or failing: the server has the bytes
            self.layer.store.write_failed(e)
            self.uncached = True
            if self.ahead is not None:
                self.ahead.cancel()
            return await self.layer.backend.read(self.path, offset, size)

    async def _from_stream(self, offset: int, size: int) -> bytes | memoryview | None:
        """The bytes from the stream; None once the reader left it (read in places)."""
        stream = self.stream
        if stream is None and offset == 0 and not self.obj.complete:
            exact = self.entry.size if self.entry.size_exact else None
            stream = self.stream = Stream(self.layer.backend, self.path, 0, exact)
            self.layer.nursery.start_soon(stream.run)  # type: ignore[union-attr]
        elif stream is None or stream.error is not None or not stream.serves(offset):
            if stream is not None:
                stream.cancel()
                self.stream = None
            self.may_stream = False
            return None
        return await stream.read(offset, size)

    async def _read(self, offset: int, size: int) -> bytes:
        obj = self.obj
        if not obj.complete and (
            not self.layer.capabilities.ranged_read or ("download", obj.key) in self.layer._inflight
        ):
            await self.layer._download_whole(self.path, self.entry, obj)
        elif not obj.has(offset, size):
            await self._fetch(offset, size)
        return obj.read(offset, size)

    async def _fetch(self, offset: int, size: int) -> None:
        ahead = self.ahead
        streaming = ahead is not None and not ahead.done and ahead.start <= offset <= ahead.target
        sequential = offset == self.next_offset or streaming  # parallel direct-I/O parts too
        self.next_offset = max(self.next_offset, offset + size) if streaming else offset + size
        if sequential:
            self.window = min(self.window * 2, MAX_WINDOW)
            target = offset + size + self.window
            if self.ahead is None or self.ahead.done or not streaming:
                # a new sequence elsewhere (file(1) reads the head, then the tail): a stream of
                # its own, never the old one stretched across everything in between
                if self.ahead is not None:
                    self.ahead.cancel()
                self.ahead = _Stream(self, offset - offset % BLOCK, target)
                self.layer.nursery.start_soon(self.ahead.run)  # type: ignore[union-attr]
            else:
                self.ahead.target = max(self.ahead.target, target)
            await self.ahead.wait_for(offset, size)
            return
        self.window = FIRST_WINDOW
        for start, count in _runs(self.obj.missing(offset, size)):
            data = await self.layer.backend.read(self.path, start * BLOCK, count * BLOCK)
            self.obj.write(start * BLOCK, data, len(data) < count * BLOCK)

    def close(self) -> None:
        if self.ahead is not None:
            self.ahead.cancel()
        if self.stream is not None:
            if self.stream.eof:  # read to the end: a second reading is kept on disk
                self.layer.streamed(self.obj.key)
            self.stream.cancel()
            self.stream = None
        self.layer.store.release(self.obj)


class _Stream:
    """Reads an object ahead of a sequential reader, in order, on one backend transfer."""

    def __init__(self, reader: Reader, start: int, target: int) -> None:
        self.reader = reader
        self.start = self.pos = start
        self.target = target
        self.done = False
        self.error: BaseException | None = None
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        obj, backend, path = self.reader.obj, self.reader.layer.backend, self.reader.path
        with self.scope:
            try:
                while self.pos < self.target and not obj.complete:
                    if obj.size is not None and self.pos >= obj.size:
                        break
                    if self.pos // BLOCK in obj.blocks:
                        self.pos += BLOCK
                        continue
                    want = CHUNK
                    data = await backend.read(path, self.pos, want)
                    obj.write(self.pos, data, len(data) < want)
                    self.pos += len(data)
                    if len(data) < want:
                        break
            except (FsError, OSError) as e:  # OSError: the cache disk; the reader falls back
                self.error = e
            except Exception as e:  # a bug: keep the mount alive, fail the read
                log.exception("read-ahead of %s failed", "/".join(path))
                self.error = FsError(str(e))
        self.done = True
        obj._wake()

    async def wait_for(self, offset: int, size: int) -> None:
        obj = self.reader.obj
        while not obj.has(offset, size):
            if self.done:
                if self.error is not None:
                    raise self.error
                if obj.size is not None and offset >= obj.size:
                    return
                raise FsError("read-ahead stopped early")
            await obj.arrived.wait()

    def cancel(self) -> None:
        self.scope.cancel()


def _runs(blocks: list[int]) -> list[tuple[int, int]]:
    """Consecutive block numbers as (first, count) runs."""
    runs: list[tuple[int, int]] = []
    for b in blocks:
        if runs and runs[-1][0] + runs[-1][1] == b:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((b, 1))
    return runs
