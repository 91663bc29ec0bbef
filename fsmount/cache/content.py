"""File content on disk: bounded, LRU-evicted, keyed by an identity that cannot go stale.

Two shapes of object. A big one is a sparse file filled block by block (so a ranged read of
a huge file stores only what was read) and renamed to its final name once complete. A small
one that arrives whole (a message fetched by a scan) is a row of one SQLite file: creating a
file costs 0.1–1 ms on some disks, more than fetching the message, and a mailbox is
thousands of them. Complete objects of both shapes survive remounts.

The key hashes (account, path, identity): a changed file on the server has another identity,
so an old copy can never be served for it.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path as FsPath

import trio

log = logging.getLogger(__name__)

BLOCK = 128 * 1024
SMALL = 1 << 20  # objects that arrive whole up to this size are rows, not files
DATABASE = "small.db"
ROWS_PER_COMMIT = 8
WARN_EVERY = 600.0  # seconds between warnings that the cache disk refuses writes


def object_key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()[:40]


class CachedObject:
    """One object's bytes on disk; ``blocks`` says which ranges are present."""

    def __init__(self, store: ContentStore, key: str, size: int | None, complete: bool) -> None:
        self.store = store
        self.key = key
        self.size = size
        self.complete = complete
        self.blocks: set[int] = set()
        self.users = 0
        self.arrived = trio.Event()  # replaced after each wake-up; set when blocks arrive
        self.fd: int | None = None  # opened on first use: a whole download never needs a .part
        self.data: bytes | None = None  # a small object's row, while the object is open
        self.stored = 0

    def has(self, offset: int, size: int) -> bool:
        if self.complete:
            return True
        end = offset + size if self.size is None else min(offset + size, self.size)
        return all(b in self.blocks for b in range(offset // BLOCK, (max(end, offset + 1) - 1) // BLOCK + 1))

    def missing(self, offset: int, size: int) -> list[int]:
        if self.complete:
            return []
        end = offset + size if self.size is None else min(offset + size, self.size)
        if end <= offset:
            return []
        return [b for b in range(offset // BLOCK, (end - 1) // BLOCK + 1) if b not in self.blocks]

    def _file(self) -> int:
        if self.fd is None:
            if self.complete:
                self.fd = os.open(self.store.final_path(self.key), os.O_RDONLY | os.O_CLOEXEC)
            else:
                self.store.ensure_directory()
                self.fd = os.open(self.store.part_path(self.key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self.fd

    def read(self, offset: int, size: int) -> bytes:
        """Bytes of the object; ``FileNotFoundError`` if a complete one vanished from disk."""
        self.store.touch(self.key)
        if self.complete and self.store.is_small(self.key):
            if self.data is None:
                self.data = self.store.small_data(self.key)
            return self.data[offset:offset + size]
        return os.pread(self._file(), size, offset)

    def write(self, offset: int, data: bytes, eof: bool) -> None:
        """Store ``data`` at a block-aligned offset; ``eof``: the object ends after it."""
        if self.complete:  # a whole download finished meanwhile: it has these bytes
            return
        if os.pwrite(self._file(), data, offset) != len(data):  # never a block with a hole
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        first = offset // BLOCK
        self.blocks.update(range(first, first + -(-len(data) // BLOCK)))
        if eof:
            self.size = offset + len(data)
        self.stored += len(data)
        self.store.grow(len(data))
        self._wake()
        if self.size is not None and len(self.blocks) * BLOCK >= self.size:
            self.finish()

    def stored_whole(self, size: int) -> None:
        """``ContentStore.store_whole`` wrote the whole object: it is complete."""
        if size <= SMALL:
            self.store.small_stored(self.key)
        self._drop_part()
        self._filled(size)

    def fill_from(self, source: str) -> None:
        """The whole object was downloaded to ``source``: take it over."""
        size = os.stat(source).st_size
        os.replace(source, self.store.final_path(self.key))
        self._drop_part()
        self._filled(size)

    def _drop_part(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            unlink_quietly(self.store.part_path(self.key))

    def _filled(self, size: int) -> None:
        self.size = size
        self.store.grow(size - self.stored)
        self.stored = size
        self.complete = True
        self._wake()

    def lost(self) -> None:
        """The complete copy vanished from disk: start over empty."""
        self.close()
        self.store.forget(self.key)
        self.complete = False
        self.blocks.clear()
        self.stored = 0

    def finish(self) -> None:
        if not self.complete:
            os.replace(self.store.part_path(self.key), self.store.final_path(self.key))
            self.complete = True

    def _wake(self) -> None:
        self.arrived.set()
        self.arrived = trio.Event()

    def close(self) -> None:
        self.data = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ContentStore:
    """The bounded store under ``directory``; trio thread only, but for ``store_whole``,
    which a worker thread may run for a big batch (the database behind ``_db_lock``)."""

    def __init__(self, directory: FsPath, limit: int) -> None:
        self.directory = directory
        self._prefix = f"{directory}{os.sep}"
        self.limit = limit
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lru: OrderedDict[str, int] = OrderedDict()  # complete objects on disk → bytes
        self._small: set[str] = set()  # the complete objects that are rows
        self._open: dict[str, CachedObject] = {}
        self.used = 0
        self._warned_at: float | None = None  # when a refused write was last told (monotonic)
        self._db_lock = threading.Lock()
        self._db = self._database()
        self._adopt()

    # -- the small objects' database -----------------------------------------------------

    def _database(self) -> sqlite3.Connection:
        """Open (or recreate, if damaged) the rows' database. A cache needs no durability:
        no fsync, and a file damaged by a crash is started afresh."""
        path = self._db_path = f"{self.directory}{os.sep}{DATABASE}"
        self.ensure_directory()
        for attempt in (1, 2):
            try:
                db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self._db_ino = os.stat(path).st_ino
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=OFF")
                db.execute("PRAGMA busy_timeout=200")  # another mount sharing the cache
                db.execute("CREATE TABLE IF NOT EXISTS objects "
                           "(key TEXT PRIMARY KEY, data BLOB NOT NULL)")
                return db
            except sqlite3.DatabaseError as e:
                if attempt == 2:
                    raise OSError(f"cannot open the cache database {path}: {e}") from None
                log.warning("the cache database %s is damaged (%s): starting it afresh", path, e)
                for suffix in ("", "-wal", "-shm"):
                    unlink_quietly(f"{path}{suffix}")
        raise AssertionError("unreachable")

    def _database_gone(self) -> bool:
        """Whether the database file was removed behind our back (the cache cleared by
        hand): then its rows are dropped and a new one started, so the space is freed."""
        try:
            if os.stat(self._db_path).st_ino == self._db_ino:
                return False
        except FileNotFoundError:
            pass
        log.info("the cache database was removed: starting a new one")
        with self._db_lock:
            self._db.close()
            self._db = self._database()
        for key in self._small:
            self.used -= self._lru.pop(key, 0)
        self._small.clear()
        return True

    def is_small(self, key: str) -> bool:
        return key in self._small

    def small_data(self, key: str) -> bytes:
        """A row's bytes; ``FileNotFoundError`` when it is gone (the reader fetches again)."""
        if self._database_gone():
            raise FileNotFoundError(key)
        try:
            with self._db_lock:
                row = self._db.execute("SELECT data FROM objects WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as e:
            log.warning("reading the cache database: %s", e)
            row = None
        if row is None:
            raise FileNotFoundError(key)
        return bytes(row[0])

    def check_database(self) -> None:
        """Before a batch is stored: notice a database removed by hand."""
        self._database_gone()

    def store_whole(self, objects: list[tuple[str, bytes]]) -> None:
        """Write whole objects to disk (safe in a worker thread: no state of the store is touched):
        the small ones as rows, a few per transaction so that the trio thread's reads never
        wait long for the lock, the others as files. The caller then marks each with
        ``CachedObject.stored_whole``."""
        rows = [(key, data) for key, data in objects if len(data) <= SMALL]
        try:
            for i in range(0, len(rows), ROWS_PER_COMMIT):
                with self._db_lock:
                    self._db.execute("BEGIN")
                    try:
                        self._db.executemany(
                            "INSERT OR REPLACE INTO objects (key, data) VALUES (?, ?)",
                            rows[i:i + ROWS_PER_COMMIT])
                    finally:
                        self._db.execute("COMMIT")
        except sqlite3.Error as e:
            raise OSError(f"writing the cache database: {e}") from None
        for key, data in objects:
            if len(data) > SMALL:
                tmp = f"{self.final_path(key)}.whole.part"
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.final_path(key))

    def small_stored(self, key: str) -> None:
        self._small.add(key)

    # -- files ---------------------------------------------------------------------------

    def _adopt(self) -> None:
        """Take over the complete objects a previous mount left; drop partial ones."""
        found = []
        for f in self.directory.iterdir():
            if f.suffix == ".part":
                f.unlink(missing_ok=True)
            elif f.is_file() and not f.name.startswith(DATABASE):
                st = f.stat()
                found.append((st.st_atime, f.name, st.st_blocks * 512))
        with self._db_lock:
            rows = self._db.execute("SELECT key, length(data) FROM objects ORDER BY rowid").fetchall()
        for name, size in rows:
            found.append((0.0, name, size))
            self._small.add(name)
        for _, name, size in sorted(found):
            self._lru[name] = size
            self.used += size

    def ensure_directory(self) -> None:
        """Make the directory again if the cache was removed by hand under a live mount."""
        if not os.path.isdir(self.directory):
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def final_path(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def part_path(self, key: str) -> str:
        return f"{self._prefix}{key}.part"

    # -- objects -------------------------------------------------------------------------

    def __contains__(self, key: str) -> bool:
        """Whether the whole object is on disk (trusted as ``open`` trusts it)."""
        return key in self._lru

    def open(self, key: str, size: int | None) -> CachedObject:
        """The object for ``key``; callers pair it with ``release``."""
        obj = self._open.get(key)
        if obj is None:
            # trusted without a stat: a file removed behind our back is noticed at read
            obj = CachedObject(self, key, size, key in self._lru)
            self._open[key] = obj
        obj.users += 1
        return obj

    def release(self, obj: CachedObject) -> None:
        obj.users -= 1
        if obj.users > 0:
            return
        del self._open[obj.key]
        obj.close()
        if obj.complete:
            if obj.key not in self._lru:
                self._lru[obj.key] = obj.stored or (obj.size or 0)
            self._lru.move_to_end(obj.key)
        elif obj.stored:
            unlink_quietly(self.part_path(obj.key))
            self.used -= obj.stored
        if self.used > self.limit:
            self.evict()

    def forget(self, key: str) -> None:
        self.used -= self._lru.pop(key, 0)
        if key in self._small:
            self._small.discard(key)
            try:
                with self._db_lock:
                    self._db.execute("DELETE FROM objects WHERE key = ?", (key,))
            except sqlite3.Error as e:  # left for the next eviction of a mount that adopts it
                log.debug("removing a cached row: %s", e)

    def touch(self, key: str) -> None:
        if key in self._lru:
            self._lru.move_to_end(key)

    def write_failed(self, error: OSError) -> None:
        """The cache disk refused a write (full, or failing): reads go to the server meanwhile.
        One WARNING in ``WARN_EVERY`` seconds, not one per read (each reader fills the disk
        again before it fails)."""
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at > WARN_EVERY:
            self._warned_at = now
            log.warning("the cache in %s cannot be written (%s): reading from the server "
                        "without caching", self.directory, error.strerror or error)
        else:
            log.debug("cache write failed again: %s", error)

    def grow(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used > self.limit:
            self.evict()

    def evict(self) -> None:
        for key in list(self._lru):
            if self.used <= self.limit:
                break
            if key not in self._open:
                if key not in self._small:
                    unlink_quietly(self.final_path(key))
                self.forget(key)

    def close(self) -> None:
        with self._db_lock:
            self._db.close()


def unlink_quietly(path: str) -> None:
    """Remove a cache file that may already be gone (evicted, or cleared by hand)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
