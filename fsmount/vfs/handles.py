"""Open files and directories.

A file opened for writing gets a spool (``SpoolFile``) holding its whole new content; it is
committed at flush/fsync (whose errors reach close()), never only at release (whose errors the
kernel ignores).

A writer whose ``write`` or ``truncate`` failed once (a full spool disk, a local I/O error) is
*poisoned*: its content is no longer what the program meant to write, so it is never committed;
every later write, flush and fsync fails with the first error's errno.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

import trio

from ..backends.base import Entry
from ..cache.growing import GrowingListing
from ..cache.interface import OpenFile
from ..cache.spool import SpoolFile
from ..errors import FsError
from . import names
from .inodes import Node


class WriteFailed(FsError):
    """A poisoned writer's flush, fsync or further write."""

    def __init__(self, error: int, what: str) -> None:
        super().__init__(f"{what}: an earlier write failed ({os.strerror(error)}): nothing stored")
        self.errno = error


@dataclass(eq=False)
class FileHandle:
    node: Node
    reader: OpenFile | None = None
    content: SpoolFile | None = None  # what is being written (None: opened for reading)
    dirty: bool = False
    replacing: Entry | None = None  # the entry the new content replaces (None: a new file)
    lock: trio.Lock = field(default_factory=trio.Lock)
    failed: int | None = None  # errno of the write or truncate that poisoned this writer
    told: bool = False  # the last commit failed and close() or fsync() returned its error

    @property
    def writable(self) -> bool:
        return self.content is not None

    def poison(self, error: int = errno.EIO) -> None:
        """Never commit this writer's content; later writes and flushes fail with ``error``."""
        if self.failed is None:
            self.failed = error

    def check(self) -> None:
        """Raise the poisoning error, if any, with the errno the caller's syscall returns."""
        if self.failed is not None:
            raise WriteFailed(self.failed, "/".join(self.node.vpath))

    def write(self, offset: int, data: bytes) -> int:
        assert self.content is not None
        self.check()
        self.dirty, self.told = True, False
        try:
            return self.content.write(offset, data)
        except OSError as e:
            self.poison(e.errno or errno.EIO)
            raise
        except BaseException:
            self.poison()
            raise

    def truncate(self, size: int) -> None:
        assert self.content is not None
        self.check()
        self.dirty, self.told = True, False
        try:
            self.content.truncate(size)
        except OSError as e:
            self.poison(e.errno or errno.EIO)
            raise
        except BaseException:
            self.poison()
            raise

    def size(self) -> int:
        assert self.content is not None
        return self.content.size()

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self.content is not None:
            self.content.close()
            self.content = None


@dataclass(eq=False)
class DirHandle:
    """A listing taken at the first readdir: the kernel may call readdir many times for one
    directory, each offset an index into ``names`` (local name, entry)."""

    node: Node
    listing: GrowingListing | None = None
    names: list[tuple[str, Entry]] = field(default_factory=list)
    trusted_until: float | None = None  # monotonic time the cache stops trusting the listing
    _seen: set[str] = field(default_factory=set)
    _taken: int = 0

    def start(self, listing: GrowingListing) -> None:
        self.listing, self.names, self._seen, self._taken = listing, [], set(), 0

    async def names_beyond(self, index: int) -> bool:
        """Wait until ``names`` reaches past ``index``; False once it never will."""
        listing = self.listing
        assert listing is not None
        while True:
            self._take_in(listing)
            if index < len(self.names):
                return True
            if listing.done and self._taken == len(listing.entries):
                if listing.error is not None:
                    raise listing.error
                return False
            await listing.wait_beyond(self._taken)

    def _take_in(self, listing: GrowingListing) -> None:
        """Name what arrived, in the listing's order (the one the prefetcher expects)."""
        new = listing.entries[self._taken:]
        if not new:
            return
        self._taken = len(listing.entries)
        seen, found = self._seen, self.names
        for entry in new:
            local = names.local_name(entry.name)
            if local not in seen:  # two remote names may look alike here
                seen.add(local)
                found.append((local, entry))


class HandleTable:
    def __init__(self) -> None:
        self._next = 1
        self._handles: dict[int, FileHandle | DirHandle] = {}

    def add(self, handle: FileHandle | DirHandle) -> int:
        fh = self._next
        self._next += 1
        self._handles[fh] = handle
        handle.node.handles += 1
        return fh

    def __getitem__(self, fh: int) -> FileHandle | DirHandle:
        return self._handles[fh]

    def pop(self, fh: int) -> FileHandle | DirHandle:
        return self._handles.pop(fh)

    def writers(self, node: Node) -> list[FileHandle]:
        return [h for h in self._handles.values() if isinstance(h, FileHandle) and h.node is node and h.writable]

    def all_files(self) -> list[FileHandle]:
        return [h for h in self._handles.values() if isinstance(h, FileHandle)]
