"""Big files read from start to end stream through memory instead of the disk cache.

Writing every byte of a file read once (a copy, a checksum, a video played) to the disk
cache and reading it back costs two copies and the disk's write-back, which competes with
the reader, and a 512 MiB file read once would evict everything else in a 1 GiB cache. So
a ``Stream`` keeps only a bounded window of the object in memory, ahead of one reader,
filled by consecutive ranged reads on one backend transfer into buffers it reuses, and
hands out slices of it without copying. A reader that leaves the sequence (a seek), or
whose stream failed, is served through the disk cache from then on, and so is a file read
again after it streamed to its end (``layer.Reader``): what is read again is what the disk
cache is for.
"""
from __future__ import annotations

import logging
from collections import deque

import trio

from ..backends.base import Backend, Path, ReadAt
from ..errors import FsError

log = logging.getLogger(__name__)

FIRST = 1 << 20  # the first backend read; a reader that only wanted the head costs little
CHUNK = 4 << 20  # later backend reads: few thread hand-offs, still little memory
WINDOW = 16 << 20  # the most fetched ahead of the reader
BEHIND = 2 << 20  # kept behind the reader, for the kernel's parallel or repeated requests


class Stream:
    """The bytes of one object from ``start`` on, fetched ahead of one sequential reader.

    A worker thread fills the window with consecutive reads on one backend connection and
    hands each chunk to the event loop as it arrives; it gives the connection back whenever
    the window is full, so a slow reader holds none. The two sides share plain attributes
    (atomic under the GIL): the reader moves ``wanted`` on, the thread ``fetched``; a thread
    that stops just as the reader wants more is started again by the event loop's side.
    """

    def __init__(self, backend: Backend, path: Path, start: int, size: int | None = None) -> None:
        self.backend = backend
        self.path = path
        self.size = size  # exact, if known: no read past it is needed to learn the end
        self.chunks: deque[tuple[int, memoryview]] = deque()  # (offset, data), consecutive
        self._free: list[bytearray] = []  # buffers of chunks dropped, for the next reads
        self.start = start
        self.base = start  # where the first kept chunk starts
        self.pos = start  # the end of what arrived
        self.fetched = start  # the end of what the thread read (arrives soon after)
        self.wanted = start + FIRST  # fetch up to here (grows with the reader, up to WINDOW)
        self.eof = False
        self.error: FsError | None = None
        self.done = False
        self._stop = False
        self._changed = trio.Event()
        self._idle = False  # no thread runs: the event loop's side waits for the reader
        self._waiting = False  # the reader waits for bytes
        self.scope = trio.CancelScope()

    def serves(self, offset: int) -> bool:
        """Whether a read at ``offset`` continues this stream (else the reader leaves it)."""
        return self.base <= offset <= max(self.pos, self.wanted)

    async def run(self) -> None:
        token = trio.lowlevel.current_trio_token()
        with self.scope:
            try:
                while not self._over():
                    while not self._due():
                        self._idle = True
                        await self._wait()
                        self._idle = False
                    await self.backend.read_in_thread(
                        self.path, lambda read_at: self._fill(read_at, token))
            except FsError as e:
                self.error = e
            except Exception as e:  # a bug: keep the mount alive, fail the read
                log.exception("streaming %s failed", "/".join(self.path))
                self.error = FsError(str(e))
        self.done = True
        self._wake()

    def _over(self) -> bool:
        return self._stop or self.eof or (self.size is not None and self.fetched >= self.size)

    def _fill(self, read_at: ReadAt, token: trio.lowlevel.TrioToken) -> None:
        """In a worker thread: read chunks while they are due."""
        while self._due() and not self._over():
            want = min(CHUNK, max(self.wanted - self.fetched, FIRST))
            if self.size is not None:
                want = min(want, self.size - self.fetched)
            try:  # one pop: the event loop's side may empty the list meanwhile (cancel)
                buf = self._free.pop() if want == CHUNK else bytearray(want)
            except IndexError:
                buf = bytearray(want)
            view = memoryview(buf)[:want]
            got = read_at(self.fetched, view)
            self.fetched += got
            if got < want:
                self.size = self.fetched  # the end, wherever a hint put it
            token.run_sync_soon(self._arrived, view[:got], got < want)

    def _arrived(self, data: memoryview, eof: bool) -> None:
        if self._stop:
            return
        if data:
            self.chunks.append((self.pos, data))
            self.pos += len(data)
        self.eof = self.eof or eof or self.pos == self.size
        self._wake()

    def _due(self) -> bool:
        """Whether to fetch now: a whole chunk fits in the window (fewer, larger backend
        reads), or the reader waits, or nothing was fetched yet."""
        room = self.wanted - self.fetched
        return room > 0 and (room >= CHUNK or self._waiting or self.fetched == self.start)

    async def read(self, offset: int, size: int) -> bytes | memoryview:
        """``[offset, offset+size)``, shorter at the end; a slice of the window, uncopied
        when it lies in one chunk. Moves the window on to ``offset``."""
        end = offset + size
        wanted = min(end + max(2 * (end - self.start), FIRST), end + WINDOW)
        if wanted > self.wanted:
            self.wanted = wanted
            if self._idle:  # a task switch per read costs as much as the read itself
                self._wake()
        self._drop_before(offset - BEHIND)
        while self.pos < end and not self.eof:
            if self.done:
                raise self.error or FsError("streaming stopped early")
            self._waiting = True
            if self._idle:
                self._wake()
            try:
                await self._wait()
            finally:
                self._waiting = False
        return self._slice(offset, min(end, self.pos))

    def _slice(self, offset: int, end: int) -> bytes | memoryview:
        if end <= offset:
            return b""
        parts = []
        for start, data in self.chunks:
            stop = start + len(data)
            if stop <= offset:
                continue
            if start >= end:
                break
            piece = data[max(offset - start, 0):min(end, stop) - start]
            if start <= offset and end <= stop:
                return piece
            parts.append(piece)
        return b"".join(parts)

    def _drop_before(self, offset: int) -> None:
        chunks = self.chunks
        while chunks and chunks[0][0] + len(chunks[0][1]) <= offset:
            start, data = chunks.popleft()
            self.base = start + len(data)
            # the reader's slices of it were copied by now; no more buffers are ever made
            # than the window holds at once
            if len(data.obj) == CHUNK:  # type: ignore[arg-type]
                self._free.append(data.obj)  # type: ignore[arg-type]

    async def _wait(self) -> None:
        await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def cancel(self) -> None:
        """Stop: a read in progress in the thread ends first (within the backend's timeout);
        nothing waits for it."""
        self._stop = True
        self.scope.cancel()
        self.chunks.clear()
        self._free.clear()
