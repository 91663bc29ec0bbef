"""File content on disk: bounded, LRU-evicted, keyed by an identity that cannot go stale.

An object is a sparse file filled block by block (so a ranged read of a huge file stores only
what was read) and renamed to its final name once complete; complete objects survive remounts.
The key hashes (account, path, identity): a changed file on the server has another identity,
so an old copy can never be served for it.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from pathlib import Path as FsPath

import trio

log = logging.getLogger(__name__)

BLOCK = 128 * 1024


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
                self.fd = os.open(self.store.part_path(self.key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self.fd

    def read(self, offset: int, size: int) -> bytes:
        self.store.touch(self.key)
        return os.pread(self._file(), size, offset)

    def write(self, offset: int, data: bytes, eof: bool) -> None:
        """Store ``data`` at a block-aligned offset; ``eof``: the object ends after it."""
        os.pwrite(self._file(), data, offset)
        first = offset // BLOCK
        self.blocks.update(range(first, first + -(-len(data) // BLOCK)))
        if eof:
            self.size = offset + len(data)
        self.stored += len(data)
        self.store.grow(len(data))
        self._wake()
        if self.size is not None and len(self.blocks) * BLOCK >= self.size:
            self.finish()

    def fill_from(self, source: str) -> None:
        """The whole object was downloaded to ``source``: take it over."""
        size = os.stat(source).st_size
        os.replace(source, self.store.final_path(self.key))
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            unlink_quietly(self.store.part_path(self.key))
        self.size = size
        self.store.grow(size - self.stored)
        self.stored = size
        self.complete = True
        self._wake()

    def lost(self) -> None:
        """The complete file vanished from disk: start over empty."""
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
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ContentStore:
    """The bounded store under ``directory``; trio thread only."""

    def __init__(self, directory: FsPath, limit: int) -> None:
        self.directory = directory
        self._prefix = f"{directory}{os.sep}"
        self.limit = limit
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lru: OrderedDict[str, int] = OrderedDict()  # complete objects on disk → bytes
        self._open: dict[str, CachedObject] = {}
        self.used = 0
        self._adopt()

    def _adopt(self) -> None:
        """Take over the complete objects a previous mount left; drop partial ones."""
        files = []
        for f in self.directory.iterdir():
            if f.suffix == ".part":
                f.unlink(missing_ok=True)
            elif f.is_file():
                st = f.stat()
                files.append((st.st_atime, f.name, st.st_blocks * 512))
        for _, name, size in sorted(files):
            self._lru[name] = size
            self.used += size

    def final_path(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def part_path(self, key: str) -> str:
        return f"{self._prefix}{key}.part"

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

    def touch(self, key: str) -> None:
        if key in self._lru:
            self._lru.move_to_end(key)

    def grow(self, nbytes: int) -> None:
        self.used += nbytes
        if self.used > self.limit:
            self.evict()

    def evict(self) -> None:
        for key in list(self._lru):
            if self.used <= self.limit:
                break
            if key not in self._open:
                unlink_quietly(self.final_path(key))
                self.used -= self._lru.pop(key)


def unlink_quietly(path: str) -> None:
    """Remove a cache file that may already be gone (evicted, or cleared by hand)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
