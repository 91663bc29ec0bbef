"""What writers have written, held until it is committed: small content in memory, the
rest in spool files on disk, so a 2 GiB copy never costs 2 GiB of RAM.

Small content stays in memory because a ``cp -r`` of small files is bound by per-file
costs: creating or emptying a spool file costs 0.02–1 ms on the disks measured here (an
ext4 truncate of a file just written: 0.1 ms), more than the rest of the file's round
trips together. Spool files are reused (emptied, not removed) for the same reason.
"""
from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

import trio

MEMORY_LIMIT = 1 << 20  # one writer's content stays in memory up to this size...
MEMORY_BUDGET = 32 << 20  # ...while all writers' content in memory stays under this
KEEP = 8  # emptied spool files kept for reuse


class Spool:
    """One directory per mount process (``spool/<pid>``), so mounts sharing a cache dir never
    touch each other's spools; directories of processes that are gone are removed."""

    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        for old in base.iterdir():
            if old.name.isdigit() and not _alive(int(old.name)):
                shutil.rmtree(old, ignore_errors=True)
        self.directory = base / str(os.getpid())
        self.directory.mkdir(exist_ok=True, mode=0o700)
        self._free: list[tuple[int, str]] = []  # emptied spool files, ready for reuse
        self.in_memory = 0  # bytes held by all SpoolFiles still in memory

    def new(self) -> SpoolFile:
        """Empty content for one writer; ``close()`` it when done."""
        return SpoolFile(self)

    def _create(self) -> tuple[int, str]:
        """An empty spool file: (fd opened read-write, path)."""
        while self._free:
            fd, path = self._free.pop()
            if os.path.exists(path):  # not removed by hand with the cache
                return fd, path
            os.close(fd)
        try:
            return tempfile.mkstemp(prefix="w-", dir=self.directory)
        except FileNotFoundError:  # the cache directory was removed by hand
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            return tempfile.mkstemp(prefix="w-", dir=self.directory)

    def _discard(self, fd: int, path: str) -> None:
        """Done with a spool file: emptied for the next writer, or removed."""
        if len(self._free) < KEEP:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            else:
                self._free.append((fd, path))
                return
        _remove(fd, path)

    def close(self) -> None:
        while self._free:
            _remove(*self._free.pop())


class SpoolFile:
    """One writer's content: a bytearray until it outgrows ``MEMORY_LIMIT`` (or the budget),
    then a spool file. Backends read it through ``open()`` (any thread) or ``read_all()``."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._memory: bytearray | None = bytearray()
        self._fd: int | None = None
        self._path: str | None = None

    def _fits(self, end: int) -> bool:
        """Whether content ``end`` bytes long may stay in memory."""
        grow = end - len(self._memory or b"")
        return end <= MEMORY_LIMIT and (grow <= 0 or self._spool.in_memory + grow <= MEMORY_BUDGET)

    def write(self, offset: int, data: bytes) -> int:
        memory = self._memory
        end = offset + len(data)
        if memory is not None:
            if self._fits(end):
                if end > len(memory):
                    self._grow(end)
                memory[offset:end] = data
                return len(data)
            self._to_disk()
        assert self._fd is not None
        n = os.pwrite(self._fd, data, offset)
        if n != len(data):  # the disk took part of it: full (the writer is then poisoned)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def read(self, offset: int, size: int) -> bytes:
        if self._memory is not None:
            return bytes(self._memory[offset:offset + size])
        assert self._fd is not None
        return os.pread(self._fd, size, offset)

    def truncate(self, size: int) -> None:
        memory = self._memory
        if memory is not None:
            if size <= len(memory):
                self._spool.in_memory -= len(memory) - size
                del memory[size:]
                return
            if self._fits(size):
                self._grow(size)
                return
            self._to_disk()
        assert self._fd is not None
        os.ftruncate(self._fd, size)

    def _grow(self, size: int) -> None:
        """Extend the content in memory to ``size`` bytes, zeros at the end."""
        memory = self._memory
        assert memory is not None
        self._spool.in_memory += size - len(memory)
        memory.extend(bytes(size - len(memory)))

    def size(self) -> int:
        if self._memory is not None:
            return len(self._memory)
        assert self._fd is not None
        return os.fstat(self._fd).st_size

    def open(self) -> BinaryIO:
        """A reader of the content from its start, for a worker thread."""
        if self._memory is not None:
            return io.BytesIO(self._memory)  # a copy: writes meanwhile do not tear it
        assert self._path is not None
        return open(self._path, "rb")

    async def read_all(self) -> bytes:
        if self._memory is not None:
            return bytes(self._memory)
        return await trio.to_thread.run_sync(_read_file, self._path)

    def _to_disk(self) -> None:
        fd, path = self._spool._create()
        memory = self._memory
        assert memory is not None
        try:
            if memory:
                _write_fully(fd, memory)
        except BaseException:
            self._spool._discard(fd, path)
            raise
        self._spool.in_memory -= len(memory)
        self._memory, self._fd, self._path = None, fd, path

    def close(self) -> None:
        if self._memory is not None:
            self._spool.in_memory -= len(self._memory)
            self._memory = None
        if self._fd is not None and self._path is not None:
            self._spool._discard(self._fd, self._path)
            self._fd = self._path = None


def _write_fully(fd: int, data: bytearray) -> None:
    """Copy ``data`` to the start of ``fd``; a disk that takes only part of it is full."""
    view, done = memoryview(data), 0
    while done < len(data):
        n = os.pwrite(fd, view[done:], done)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += n


def _read_file(path: str | None) -> bytes:
    assert path is not None
    with open(path, "rb") as f:
        return f.read()


def _remove(fd: int, path: str) -> None:
    os.close(fd)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
