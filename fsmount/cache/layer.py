"""CachedBackend: the Backend interface again, with listings in memory and bytes on disk.

Data flows down on a miss and up on a hit. Concurrent misses on the same listing or object
wait on one fetch. Sequential readers get a read-ahead window that doubles up to
``MAX_WINDOW``, fetched by one background task per object so the backend's transfer stays open.
A file of at least ``stream_size`` bytes read from its start streams through memory instead
(``streaming``): only what is read in places is kept on disk.

Every call that may reach the server goes through the account's ``Availability``: while the
server does not answer, cached listings are served however old (a listing that cannot be
checked is better than none) and what needs the server fails at once. The account root's
``.fsmount-status`` file (looked up by name, never listed) says which.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import trio
from cachetools import LRUCache, TTLCache

from ..backends.base import Backend, Content, Entry, PartialListing, PartSink, Path
from .decoded import decoded_text
from ..errors import AlreadyExists, FsError, NotADirectory, NotFound, NotPermitted, Offline, ReadOnly
from .availability import Availability, GuardedBackend, cuts_off
from .content import BLOCK, CachedObject, ContentStore, object_key, unlink_quietly
from .growing import GrowingListing
from .metadata import Listing, ListingBudget, MetadataCache
from .prefetch import ScanPrefetcher
from .streaming import Stream
from .views import DecodedView, text_entry
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
MAX_SIZES = 200_000  # sizes learned by reading objects whose listed size was a hint
XATTR_MEMORY = 2.0  # seconds extended attributes (IMAP flags) are answered from memory
MAX_XATTRS = 10_000
# A listing that failed (after its retries) answers the lookups that follow with the same
# error for this long: `ls -l` of a folder whose listing just failed would otherwise retry
# the whole listing once per name it shows. A new readdir always tries again.
FAILURE_MEMORY = 5.0
MAX_FAILURES = 1000
STREAM_SIZE = 64 << 20  # the default of the ``stream_size`` setting
MAX_STREAMED = 1000  # objects remembered as streamed once: read again, they are kept on disk
#: The account's status file in its root folder: found by name, never listed, read-only.
STATUS_NAME = ".fsmount-status"
STATUS_PATH: Path = (STATUS_NAME,)
#: How long a stale listing's check may take before the cached listing is served meanwhile.
STALE_PATIENCE = 1.0


class CachedBackend:
    """Wraps one account's backend. All state lives on the trio thread."""

    def __init__(self, backend: Backend, account: str, store: ContentStore, ttl: float,
                 parallel: int = 4, stream_size: int = STREAM_SIZE,
                 decoded_view: bool = False, budget: ListingBudget | None = None) -> None:
        self.availability = Availability(account, backend.probe)
        self.bare = backend  # the protocol side itself, for what is asked of it by type (links)
        self.backend = cast(Backend, GuardedBackend(backend, self.availability))
        self.stream_size = stream_size  # 0: every file read is kept on disk
        # keys of objects streamed once: read again, they are kept on disk
        self._streamed: LRUCache[str, None] = LRUCache(MAX_STREAMED)
        self.view = DecodedView() if decoded_view else None
        self.account = account
        self.store = store
        self.capabilities = backend.capabilities
        self.meta = MetadataCache(backend.capabilities.metadata_ttl or ttl, budget)
        self._inflight: dict[Any, _Flight] = {}
        self._growing: dict[Path, GrowingListing] = {}
        self._checks: dict[Path, _Check] = {}  # stale listings being confirmed
        self._failed: TTLCache[Path, FsError] = TTLCache(MAX_FAILURES, FAILURE_MEMORY)
        self._pending: dict[Path, Entry] = {}  # created locally, not committed yet
        # hashing is per open: memoized
        self._keys: LRUCache[tuple[Path, tuple[Any, ...]], str] = LRUCache(MAX_KEYS)
        self._exact_sizes: LRUCache[tuple[Path, tuple[Any, ...]], int] = LRUCache(MAX_SIZES)
        self._xattrs: TTLCache[Path, dict[str, bytes]] = TTLCache(MAX_XATTRS, XATTR_MEMORY)
        # A name a writer used that the service replaced (an IMAP APPEND or MOVE names the
        # message itself): still resolvable, so the writer's rename or unlink of it (rsync,
        # editors) and mv's look at what it moved reach the message instead of ENOENT.
        self._aliases: TTLCache[Path, Entry] = TTLCache(MAX_ALIASES, ALIAS_LIFETIME)
        self._nursery: trio.Nursery | None = None
        self.prefetch = ScanPrefetcher(self, parallel)
        self._started = time.time()
        self.ahead = ListingAhead(self, parallel - 1)  # one connection stays the walker's
        # told of each object a scan fetched ahead, with its bytes (the VFS hands them to
        # the kernel's page cache)
        self.on_fetched_ahead: Callable[[Path, Entry, bytes], None] | None = None

    @property
    def nursery(self) -> trio.Nursery | None:
        """Runs read-ahead tasks and the probes of a server gone away; set by the mount."""
        return self._nursery

    @nursery.setter
    def nursery(self, nursery: trio.Nursery | None) -> None:
        self._nursery = self.availability.nursery = nursery

    # -- metadata ------------------------------------------------------------------------

    async def list(self, path: Path) -> list[Entry]:
        return self._with_pending(path, await self._entries(path))

    async def _entries(self, path: Path) -> dict[str, Entry]:
        """The cached listing of ``path`` by name: fetched when missing; when stale,
        confirmed or fetched again — or served as it is while the server does not answer,
        or when confirming it takes longer than ``STALE_PATIENCE`` (the check goes on, and
        the next look sees its result): a folder seen before never waits for a server that
        stopped answering."""
        listing = self.meta.get(path)
        if listing is None:
            return await self._fetch_listing(path)
        if self.meta.fresh(listing) or self.availability.offline:
            return listing.entries
        if self.nursery is None:
            return await self._revalidate(path, listing)
        check = self._checks.get(path)
        if check is None:
            check = self._checks[path] = _Check()
            self.nursery.start_soon(self._run_check, path, listing, check)
        # once one check has waited that long, the server is slow for all of them
        oldest = min(c.started for c in self._checks.values())
        with trio.move_on_at(oldest + STALE_PATIENCE):
            await check.done.wait()
        if not check.done.is_set():
            log.debug("%s: /%s: the server is slow to confirm it; serving the cached listing",
                      self.account, "/".join(path))
            return listing.entries
        if isinstance(check.result, BaseException):
            raise check.result
        assert check.result is not None
        return check.result

    async def _revalidate(self, path: Path, listing: Listing) -> dict[str, Entry]:
        try:
            if not await self.backend.changed(path):
                listing.checked = time.monotonic()
                return listing.entries
            return await self._fetch_listing(path)
        except FsError as e:
            if self._server_gone(e):
                return listing.entries  # stale, but the server cannot say what changed
            raise

    async def _run_check(self, path: Path, listing: Listing, check: _Check) -> None:
        try:
            check.result = await self._revalidate(path, listing)
        except FsError as e:
            check.result = e
        except Exception as e:  # a bug: keep the mount alive, fail the listing
            log.exception("%s: checking the listing of /%s failed", self.account, "/".join(path))
            check.result = FsError(f"listing failed: {e!r}")
        finally:
            del self._checks[path]
            check.done.set()

    async def _fetch_listing(self, path: Path) -> dict[str, Entry]:
        failed = self._failed.get(path)
        if failed is not None:
            raise failed
        try:
            return await self._once(("list", path), lambda: self._fetch_list(path))
        except FsError as e:
            if not self._server_gone(e):
                self._failed[path] = e
            raise

    def _server_gone(self, error: FsError) -> bool:
        """Whether ``error`` came from the server not answering (then a cached answer is
        served, and the error is not remembered: the next try after it is back succeeds)."""
        return isinstance(error, Offline) or cuts_off(error)

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
            if not self._server_gone(e):
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
        if path == STATUS_PATH:
            return self._status_entry()
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
        if not entry.size_exact and self.view is not None and self.view.is_text(entry):
            entry = await self._made(path, entry)
        return entry

    async def _made(self, path: Path, entry: Entry) -> Entry:
        """A decoded view with its exact size: made now, so that no one is ever shown a
        size its reader will not get (rsync and tar check)."""
        obj = self.store.open(self._key(path, entry), None)
        try:
            if not obj.complete:
                self.prefetch.opened(path)  # ls -l in listing order: messages come in batches
                await self._download_whole(path, entry, obj)
            size = obj.size
        finally:
            self.store.release(obj)
        if size is None:
            return entry
        self._learn_size(path, entry, size)
        return dataclasses.replace(entry, size=size, size_exact=True)

    async def ensure_absent(self, path: Path) -> None:
        """Before creating ``path``: where its directory's listing was cut short, make sure
        the server holds no such object, which creating would silently replace."""
        self._not_status(path)
        if path in self._pending or self.meta.complete(path[:-1]) or not path:
            return
        try:
            await self.stat(path)
        except NotFound:
            return
        raise AlreadyExists(f"{'/'.join(path)} exists on the server (its folder's listing was cut short)")

    def _corrected(self, directory: Path, entries: list[Entry]) -> list[Entry]:
        """The decoded views added, and sizes learned from downloads applied to entries whose
        size was a hint."""
        if self.view is not None:
            entries = self.view.with_texts(entries)
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
            key = self._keys[memo] = object_key(self.account, path, entry.identity)
        return key

    def holds(self, path: Path, entry: Entry) -> bool:
        """Whether ``path`` (as ``entry``) is on disk whole: nothing to fetch ahead."""
        return self._key(path, entry) in self.store

    def streamed(self, key: str) -> None:
        """``key`` streamed through to its end: a second reading is kept on disk (what is
        read again is what the disk cache is for)."""
        self._streamed[key] = None

    def open_reader(self, path: Path, entry: Entry) -> Reader:
        if path == STATUS_PATH:
            return TextReader(self.availability.status().encode())  # type: ignore[return-value]
        self.prefetch.opened(path)
        return Reader(self, path, entry)

    def _status_entry(self) -> Entry:
        text = self.availability.status().encode()
        return Entry(STATUS_NAME, False, len(text), self.availability.since or self._started,
                     identity=("status", self.availability.changes), mode=0o444)

    def ensure_changeable(self, path: Path) -> None:
        """Before opening ``path`` for writing: what this layer makes up (the status file)
        cannot be written, and saying so at open() is what a shell sees (it ignores close())."""
        self._not_status(path)

    @staticmethod
    def _not_status(path: Path) -> None:
        if path == STATUS_PATH:
            raise ReadOnly(f"{STATUS_NAME} says how the account is; it cannot be changed")

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
                if self.view is not None and self.view.is_text(entry):
                    exact = await self._make_text(path, entry, tmp)
                else:
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

    async def _make_text(self, path: Path, entry: Entry, into: str) -> Entry:
        """Decode the message behind a text (read through this cache: fetched once for
        both files) into ``into``."""
        text = decoded_text(await self._whole(self.view.source(path)))  # type: ignore[union-attr,arg-type]
        await trio.to_thread.run_sync(_write_file, into, text)
        return dataclasses.replace(entry, size=len(text), size_exact=True)

    async def _whole(self, path: Path) -> bytes:
        """All bytes of ``path`` through the cache, without counting as an open (a text's
        source is no file the user opened: no scan is detected from it)."""
        reader = Reader(self, path, await self.stat(path))
        try:
            chunks = []
            offset = 0
            while True:
                data = await reader.read(offset, CHUNK)
                chunks.append(bytes(data))
                offset += len(data)
                if len(data) < CHUNK or (reader.entry.size_exact and offset >= (reader.entry.size or 0)):
                    return b"".join(chunks)
        finally:
            reader.close()

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
        self._writable(path)
        entry = await self._change(path[:-1], self.backend.commit(path, content, replacing), gone=path)
        if entry.name != path[-1]:
            self._aliases[path] = entry
        return entry

    def _alias(self, path: Path) -> Entry | None:
        return self._aliases.get(path)

    def _writable(self, *paths: Path) -> None:
        """Derived files are read-only: their message is what changes; so is the status."""
        for path in paths:
            self._not_status(path)
        if self.view is not None and any(self.view.source(p) for p in paths):
            raise NotPermitted("the decoded view is read-only; change the .eml file")

    def _named(self, path: Path) -> Path:
        """The object's own path, where ``path`` is a name the service replaced: the backend
        is asked about what it holds, not about the name a writer used."""
        alias = self._aliases.get(path)
        return path[:-1] + (alias.name,) if alias is not None else path

    async def remove(self, path: Path) -> None:
        self._writable(path)
        real = self._named(path)
        self._aliases.pop(path, None)
        await self._change(path[:-1], self.backend.remove(real), gone=path)
        if real != path:  # removed by the name it was written under: gone by its own too
            self._drop(real)

    async def rmdir(self, path: Path) -> None:
        self._writable(path)
        await self._change(path[:-1], self.backend.rmdir(path), gone=path)

    async def mkdir(self, path: Path) -> None:
        self._writable(path)
        await self._change(path[:-1], self.backend.mkdir(path))
        await self._refresh(path)

    async def rename(self, old: Path, new: Path) -> Entry | None:
        self._writable(old, new)
        real = self._named(old)
        self._aliases.pop(old, None)
        self.meta.changed(new[:-1])
        result = await self._change(old[:-1], self.backend.rename(real, new), gone=old, into=new[:-1])
        if real != old:  # moved by the name it was written under: gone by its own too
            if result is None or new[:-1] + (result.name,) != real:
                self._drop(real)
        if result is None or result.name != new[-1]:
            self._drop(new)
        if result is None:
            await self._refresh(new)
        elif result.name != new[-1]:
            self._aliases[new] = result  # the service named it (IMAP): mv looks at what it made
        return result

    async def set_mode(self, path: Path, mode: int) -> None:
        self._writable(path)
        await self._change(path[:-1], self.backend.set_mode(path, mode))
        await self._refresh(path)

    async def set_mtime(self, path: Path, mtime: float) -> None:
        self._writable(path)
        await self._change(path[:-1], self.backend.set_mtime(path, mtime))
        await self._refresh(path)

    async def _change(self, directory: Path, call: Awaitable[T], *, gone: Path | None = None,
                      into: Path | None = None) -> T:
        """Run a change and show its result at once, without relisting the directory.

        Listings of ``directory`` that started before the change ended are void; after a
        failure the directory is relisted, since its state is unknown — except when the
        server did not answer: then its old listing stays, to serve until the server is
        back (the change never reached the server, or nobody can tell yet).
        """
        self.meta.changed(directory)
        try:
            result = await call
        except FsError as e:
            if self._server_gone(e):
                self.meta.expire(directory)
            else:
                self._forget_after_failure(directory, gone)
            raise
        except BaseException:
            self._forget_after_failure(directory, gone)
            raise
        finally:
            self.meta.changed(directory)
            if gone is not None:
                self._pending.pop(gone, None)
        if gone is not None:
            self._drop(gone)
        if self.capabilities.coupled_names:
            self.meta.forget(directory)
        if isinstance(result, Entry):
            self._put((directory if into is None else into) + (result.name,), result)
        return result

    def _put(self, path: Path, entry: Entry) -> None:
        """Show an entry our change made, and its decoded view beside it."""
        self.meta.put(path, entry)
        text = self.view.text_path(path) if self.view is not None else None
        if text is not None and not entry.is_dir:
            self.meta.put(text, text_entry(entry))

    def _drop(self, path: Path) -> None:
        self.meta.drop(path)
        self._xattrs.pop(path, None)
        text = self.view.text_path(path) if self.view is not None else None
        if text is not None:
            self.meta.drop(text)

    def _forget_after_failure(self, directory: Path, gone: Path | None) -> None:
        self.meta.forget(directory)
        if gone is not None:
            self._drop(gone)

    async def _refresh(self, path: Path) -> None:
        """Learn the entry a change left at ``path`` (one stat, not a whole listing)."""
        try:
            self._put(path, await self.backend.stat(path))
        except FsError:
            self.meta.forget(path[:-1])

    async def get_xattrs(self, path: Path) -> dict[str, bytes]:
        """Kept for ``XATTR_MEMORY`` s: ``getfattr -d`` asks once per attribute, and one
        question to the server (IMAP: one FETCH FLAGS) answers them all."""
        if self.view is not None and self.view.source(path):
            return {}
        values = self._xattrs.get(path)
        if values is None:
            values = self._xattrs[path] = await self.backend.get_xattrs(path)
        return values

    async def xattr_names(self, path: Path) -> list[str]:
        if self.view is not None and self.view.source(path):
            return []
        try:
            return await self.backend.xattr_names(path)
        except Offline:  # ls -l asks for every file it shows: it shows them without
            return []

    async def set_xattr(self, path: Path, name: str, value: bytes) -> None:
        self._writable(path)
        self._xattrs.pop(path, None)
        try:
            await self._change(path[:-1], self.backend.set_xattr(path, name, value))
        finally:
            self._xattrs.pop(path, None)

    async def aclose(self) -> None:
        await self.backend.aclose()

    # -- single flight -------------------------------------------------------------------

    async def _once(self, key: Any, fetch: Callable[[], Awaitable[T]]) -> T:
        """Concurrent callers with the same key share one fetch (and its error)."""
        flight = self._inflight.get(key)
        while flight is not None:
            await flight.done.wait()
            if flight.result is _ABANDONED:  # its first caller was cancelled (Ctrl-C), not us
                flight = self._inflight.get(key)
                continue
            if isinstance(flight.result, BaseException):
                raise flight.result
            return flight.result
        flight = self._inflight[key] = _Flight()
        flight.result = _ABANDONED
        try:
            flight.result = await fetch()
            return flight.result
        except FsError as e:
            flight.result = e
            raise
        except Exception as e:
            flight.result = FsError(f"failed: {e!r}")
            raise
        finally:
            del self._inflight[key]
            flight.done.set()


_ABANDONED = object()  # a flight whose caller was cancelled: the next waiter fetches anew


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


class TextReader:
    """A ``Reader`` of bytes made here (the status file)."""

    complete = True

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, offset: int, size: int) -> bytes:
        return self.data[offset:offset + size]

    def close(self) -> None:
        pass


class _Check:
    """A stale listing being confirmed with the server, in a task of its own."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.started = trio.current_time()
        self.result: dict[str, Entry] | BaseException | None = None


class _Flight:
    def __init__(self, ahead: bool = False) -> None:
        self.done = trio.Event()
        self.result: Any = None
        self.ahead = ahead  # a scan's read-ahead: its failure is not the waiting reader's


class Reader:
    """One open file's view of the content cache; from its first read on, keeps the object
    (and its blocks) alive. An open whose reads the kernel's page cache serves (a second
    ``grep -r``) never touches the content store."""

    def __init__(self, layer: CachedBackend, path: Path, entry: Entry) -> None:
        self.layer = layer
        self.path = path
        self.entry = entry
        self._obj: CachedObject | None = None
        self.next_offset = 0
        self.window = FIRST_WINDOW
        self.ahead: _Stream | None = None
        self.uncached = False  # the cache disk failed a write: read from the server directly
        # a big object not on disk yet is streamed while it is read from its start on
        self.stream: Stream | None = None
        # a derived file is made whole; anything else is read in ranges where the backend can
        self.ranged = layer.capabilities.ranged_read and not (
            layer.view is not None and layer.view.is_text(entry))
        self.may_stream: bool | None = None  # decided at the first read

    @property
    def obj(self) -> CachedObject:
        if self._obj is None:
            size = self.entry.size if self.entry.size_exact else None
            self._obj = self.layer.store.open(self.layer._key(self.path, self.entry), size)
        return self._obj

    async def read(self, offset: int, size: int) -> bytes | memoryview:
        if self.uncached:
            return await self._from_server(offset, size)
        if self.may_stream is None:
            layer = self.layer
            self.may_stream = (0 < layer.stream_size <= (self.entry.size or 0)
                               and not self.obj.complete and self.ranged
                               and layer.nursery is not None
                               and self.obj.key not in layer._streamed)
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
            return await self._from_server(offset, size)

    async def _from_server(self, offset: int, size: int) -> bytes:
        """Bytes while the cache disk fails: a derived file is made again in memory."""
        view = self.layer.view
        if self.ranged or view is None:
            return await self.layer.backend.read(self.path, offset, size)
        raw = await self.layer._whole(view.source(self.path))  # type: ignore[arg-type]
        return (await trio.to_thread.run_sync(decoded_text, raw))[offset:offset + size]

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
        if not obj.complete and (not self.ranged or ("download", obj.key) in self.layer._inflight):
            await self.layer._download_whole(self.path, self.entry, obj)
        elif not obj.has(offset, size):
            await self._fetch(offset, size)
        return obj.read(offset, size)

    async def _fetch(self, offset: int, size: int) -> None:
        ahead = self.ahead
        streaming = ahead is not None and not ahead.done and ahead.start <= offset <= ahead.target
        # a reader slower than the server goes on where the stream it read from stopped (its
        # reads in between were hits): still one sequence, whose window keeps growing
        went_on = ahead is not None and ahead.done and ahead.start <= offset <= ahead.pos
        # parallel direct-I/O parts too
        sequential = offset == self.next_offset or streaming or went_on
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
        if self._obj is not None:
            self.layer.store.release(self._obj)


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
