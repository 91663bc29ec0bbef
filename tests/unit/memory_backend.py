"""A Backend held in memory, for the unit tier of cache/ and vfs/ (the real servers are
tested through the real backends elsewhere).

It counts every call (``calls``, ``count``), and each operation can be told to wait on a
gate (``block``: a ``trio.Event`` the test sets) or to fail (``fail``) — how a slow or broken
server looks to the cache layer. A listing is what the server held when it was asked, even
if it is delivered after a gate opens: a stale answer, as a real server's can be.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import trio

from fsmount.backends.base import (
    BackendBase, Capabilities, Content, Entry, PartialListing, PartSink, Path,
)
from fsmount.errors import AlreadyExists, FsError, NotADirectory, NotEmpty, NotFound

MTIME = 1_700_000_000.0


def path_of(text: str) -> Path:
    return tuple(p for p in text.split("/") if p)


class MemoryBackend(BackendBase):
    """Files and folders by path. ``files`` maps "a/b" to bytes, or to None for a folder
    (parents are made as needed). ``cut``: listings longer than this come back as a
    ``PartialListing`` of their first ``cut`` entries. ``naming``: the name the service gives
    what is stored or moved under a name (as IMAP names a message itself)."""

    def __init__(self, files: Mapping[str, bytes | None] | None = None,
                 capabilities: Capabilities | None = None, *, cut: int | None = None,
                 naming: Callable[[str], str] | None = None) -> None:
        self.capabilities = capabilities or Capabilities()
        self.cut = cut
        self.naming = naming or (lambda name: name)
        self.data: dict[Path, bytes | None] = {(): None}  # None: a folder
        self.entries: dict[Path, Entry] = {}
        self.xattrs: dict[Path, dict[str, bytes]] = {}
        self.calls: list[tuple[str, tuple]] = []
        self.gates: dict[str, tuple[trio.Event, Callable[..., bool] | None]] = {}
        self.failures: dict[str, FsError] = {}
        self._dirty: set[Path] = set()  # folders changed since their last listing
        self._named: dict[Path, Path] = {}  # a name the service replaced → the name it chose
        self._version = 0
        for name, data in (files or {}).items():
            self.put(name, data)

    # -- the test's side -----------------------------------------------------------------

    def put(self, name: str | Path, data: bytes | None, **fields: object) -> Entry:
        """Store an object as another client would: not counted, seen by ``changed``."""
        path = path_of(name) if isinstance(name, str) else name
        for i in range(1, len(path)):
            if path[:i] not in self.data:
                self._store(path[:i], None)
        return self._store(path, data, **fields)

    def block(self, op: str, only: Callable[..., bool] | None = None) -> trio.Event:
        """Calls of ``op`` (those whose arguments ``only`` accepts) wait until the returned
        event is set."""
        gate = trio.Event()
        self.gates[op] = (gate, only)
        return gate

    def fail(self, op: str, error: FsError | None) -> None:
        """Calls of ``op`` raise ``error`` (after their gate), until told None."""
        if error is None:
            self.failures.pop(op, None)
        else:
            self.failures[op] = error

    def count(self, op: str, *args: object) -> int:
        """Calls of ``op`` so far (with these first arguments, if any)."""
        return sum(1 for o, a in self.calls if o == op and a[:len(args)] == args)

    def args(self, op: str) -> list[tuple]:
        return [a for o, a in self.calls if o == op]

    def bytes_of(self, name: str) -> bytes | None:
        return self.data.get(path_of(name))

    # -- the backend's side --------------------------------------------------------------

    async def _enter(self, op: str, *args: object) -> None:
        """Every call lets other tasks run, as a reply from a server does."""
        self.calls.append((op, args))
        await trio.lowlevel.checkpoint()
        gate, only = self.gates.get(op, (None, None))
        if gate is not None and (only is None or only(*args)):
            await gate.wait()
        error = self.failures.get(op)
        if error is not None:
            raise error

    def _store(self, path: Path, data: bytes | None, **fields: object) -> Entry:
        self._version += 1
        self.data[path] = data
        entry = Entry(path[-1], data is None, None if data is None else len(data),
                      MTIME + self._version, identity=(self._version,))
        entry = self.entries[path] = dataclasses.replace(entry, **fields)  # type: ignore[arg-type]
        self._dirty.add(path[:-1])
        return entry

    def _resolve(self, path: Path) -> Path:
        """A name the service replaced still reaches its object (IMAP finds the UID in it)."""
        return self._named.get(path, path)

    def _named_as(self, path: Path) -> Path:
        final = path[:-1] + (self.naming(path[-1]),)
        if final != path:
            self._named[path] = final
        return final

    def _entry(self, path: Path) -> Entry:
        path = self._resolve(path)
        if not path:
            return Entry("", True, mtime=MTIME)
        try:
            return self.entries[path]
        except KeyError:
            raise NotFound("/".join(path)) from None

    def _file(self, path: Path) -> bytes:
        path = self._resolve(path)
        data = self.data.get(path)
        if data is None:
            raise NotFound("/".join(path))
        return data

    def _children(self, path: Path) -> list[Entry] | FsError:
        if path not in self.data:
            return NotFound("/".join(path))
        if self.data[path] is not None:
            return NotADirectory("/".join(path))
        n = len(path) + 1
        return [e for p, e in self.entries.items() if len(p) == n and p[:-1] == path]

    async def list(self, path: Path) -> list[Entry]:
        """Listings of both kinds count as ``list``."""
        answer = self._children(path)  # what the server holds now, delivered after the gate
        await self._enter("list", path)
        if isinstance(answer, FsError):
            raise answer
        self._dirty.discard(path)
        if self.cut is not None and len(answer) > self.cut:
            return PartialListing(answer[:self.cut])
        return answer

    async def list_in_parts(self, path: Path, part: PartSink) -> list[Entry]:
        entries = await self.list(path)
        part(entries[:len(entries) // 2])
        return entries

    async def stat(self, path: Path) -> Entry:
        await self._enter("stat", path)
        return self._entry(path)

    async def read(self, path: Path, offset: int, size: int) -> bytes:
        await self._enter("read", path, offset, size)
        return self._file(path)[offset:offset + size]

    async def download(self, path: Path, into: str) -> Entry:
        await self._enter("download", path)
        data = self._file(path)
        with open(into, "wb") as f:
            f.write(data)
        return self._entry(path)

    async def download_many(self, paths: Sequence[Path]) -> list[bytes | FsError]:
        await self._enter("download_many", tuple(paths))
        results: list[bytes | FsError] = []
        for path in paths:
            try:
                results.append(self._file(path))
            except FsError as e:
                results.append(e)
        return results

    async def commit(self, path: Path, content: Content, replacing: Entry | None) -> Entry:
        await self._enter("commit", path)
        data = await content.read_all()
        if path[:-1] not in self.data:
            raise NotFound("/".join(path[:-1]))
        return self.put(self._named_as(path), data)

    async def remove(self, path: Path) -> None:
        await self._enter("remove", path)
        self._file(path)
        self._drop(self._resolve(path))

    async def rename(self, old: Path, new: Path) -> Entry | None:
        await self._enter("rename", old, new)
        self._entry(old)
        old = self._resolve(old)
        final = self._named_as(new)
        n = len(old)
        for p in sorted((p for p in self.data if p[:n] == old), key=len):
            moved = final + p[n:]
            entry = self.entries.pop(p)
            self.entries[moved] = dataclasses.replace(entry, name=moved[-1])
            self.data[moved] = self.data.pop(p)
        self._dirty |= {old[:-1], new[:-1]}
        return self.entries[final]

    async def mkdir(self, path: Path) -> None:
        await self._enter("mkdir", path)
        if path in self.data:
            raise AlreadyExists("/".join(path))
        self.put(path, None)

    async def rmdir(self, path: Path) -> None:
        await self._enter("rmdir", path)
        children = self._children(path)
        if isinstance(children, FsError):
            raise children
        if children:
            raise NotEmpty("/".join(path))
        self._drop(path)

    async def set_mode(self, path: Path, mode: int) -> None:
        await self._enter("set_mode", path, mode)
        self.entries[path] = dataclasses.replace(self._entry(path), mode=mode)

    async def set_mtime(self, path: Path, mtime: float) -> None:
        await self._enter("set_mtime", path, mtime)
        self.entries[path] = dataclasses.replace(self._entry(path), mtime=mtime)

    async def get_xattrs(self, path: Path) -> dict[str, bytes]:
        await self._enter("get_xattrs", path)
        self._entry(path)
        return dict(self.xattrs.get(path, {}))

    async def set_xattr(self, path: Path, name: str, value: bytes) -> None:
        await self._enter("set_xattr", path, name)
        self._entry(path)
        self.xattrs.setdefault(path, {})[name] = value

    async def changed(self, path: Path) -> bool:
        await self._enter("changed", path)
        return path in self._dirty

    async def aclose(self) -> None:
        await self._enter("aclose")

    def _drop(self, path: Path) -> None:
        del self.data[path], self.entries[path]
        self.xattrs.pop(path, None)
        self._dirty.add(path[:-1])
