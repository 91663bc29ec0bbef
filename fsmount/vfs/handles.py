"""Open files and directories.

A file opened for writing gets a spool (``SpoolFile``) holding its whole new content; it is
committed at flush/fsync (whose errors reach close()), never only at release (whose errors the
kernel ignores).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import trio

from ..backends.base import Entry
from ..cache.layer import Reader
from ..cache.spool import SpoolFile
from .inodes import Node


@dataclass(eq=False)
class FileHandle:
    node: Node
    reader: Reader | None = None
    content: SpoolFile | None = None  # what is being written (None: opened for reading)
    dirty: bool = False
    replacing: Entry | None = None  # the entry the new content replaces (None: a new file)
    lock: trio.Lock = field(default_factory=trio.Lock)

    @property
    def writable(self) -> bool:
        return self.content is not None

    def write(self, offset: int, data: bytes) -> int:
        assert self.content is not None
        self.dirty = True
        return self.content.write(offset, data)

    def truncate(self, size: int) -> None:
        assert self.content is not None
        self.content.truncate(size)
        self.dirty = True

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
    """A listing taken at opendir: the kernel may call readdir many times for one directory."""

    node: Node
    names: list[tuple[str, Entry]] | None = None


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
