"""The one interface every service implements, and the values that cross it.

A backend speaks in paths made of its own names (``("INBOX", "2024-05-01 Hello [42].eml")``);
it never sees an inode or a handle. The root of an account is the empty tuple.
"""
from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from abc import ABC, abstractmethod
from typing import BinaryIO, Protocol, runtime_checkable

import trio

from ..errors import FsError, NoData, TooLarge, Unsupported

Path = tuple[str, ...]
#: Takes a listing's entries while it arrives; called on the trio thread, must not raise.
PartSink = Callable[[list["Entry"]], None]
#: A blocking read for a worker thread: fill the view with the bytes from the offset; fewer
#: bytes only at the end of the object.
ReadAt = Callable[[int, memoryview], int]

#: The most bytes one object, and one whole call, may bring into a ``download_many`` (they
#: are held in memory; size hints may lie).
BATCH_ITEM_LIMIT = 16 << 20
BATCH_LIMIT = 64 << 20


class Content(Protocol):
    """What a writer wrote, for ``commit``: held in memory or in a spool file."""

    def size(self) -> int: ...

    def open(self) -> BinaryIO:
        """A reader of the content from its start, for a worker thread."""

    async def read_all(self) -> bytes: ...


@dataclass(frozen=True)
class BytesContent:
    """Content a backend already holds in memory (the outbox filing a sent message)."""

    data: bytes

    def size(self) -> int:
        return len(self.data)

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)

    async def read_all(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class Entry:
    """What a listing says about one object.

    ``identity`` changes whenever the bytes may have changed, and is the content-cache key:
    FTP ``(size, mtime)``, IMAP ``(uidvalidity, uid)``, POP3 ``(uidl,)``, NNTP ``(message_id,)``.
    ``size_exact`` is False where the server's size is a hint (POP3 LIST, NNTP overview); the
    cache layer corrects it once the object has been downloaded.
    """

    name: str
    is_dir: bool
    size: int | None = None
    mtime: float | None = None
    identity: tuple = ()
    mode: int | None = None  # permission bits (0o7777), when the server tells them
    symlink: str | None = None  # link target, for servers that show symlinks
    size_exact: bool = True


class PartialListing(list):
    """What ``list`` returns for a listing the server cut short (``226 Output truncated``, a
    data connection that ended early): the entries it did send. A name not among them may
    still exist, so the cache layer asks the server about it instead of answering ENOENT."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do; the VFS branches on these, never on which backend it is."""

    ranged_read: bool = False  # read() is cheap for any range; else download() whole objects
    write: bool = False  # commit() creates files
    overwrite: bool = False  # commit() may replace an existing file (else files are immutable)
    mkdir: bool = False
    remove: bool = False
    rename: bool = False
    set_mode: bool = False
    set_mtime: bool = False
    immutable: bool = False  # an identity's bytes never change: let the kernel cache them
    xattrs: bool = False
    metadata_ttl: float | None = None  # overrides the account's listing TTL (e.g. push-driven)
    coupled_names: bool = False  # a change to one name may change others (relist after it)
    batch: int = 1  # download_many() fetches this many objects in about one round trip


@runtime_checkable
class Backend(Protocol):
    capabilities: Capabilities

    async def list(self, path: Path) -> list[Entry]:
        """The directory's entries in one round trip (no ``.`` or ``..``)."""

    async def list_in_parts(self, path: Path, part: PartSink) -> list[Entry]:
        """``list``, also handing entries to ``part`` while a long listing arrives, so a big
        folder shows before its listing ends. The return value is still the whole listing;
        a part may repeat entries (a retried fetch) and the whole may hold more.
        """

    async def stat(self, path: Path) -> Entry:
        """One object; raise ``NotFound``. The root returns a directory entry named ``""``."""

    async def read(self, path: Path, offset: int, size: int) -> bytes:
        """Bytes ``[offset, offset+size)``; shorter only at end of file.

        Consecutive calls that continue where the last one stopped must be cheap (a backend
        keeps a transfer open), since the cache layer reads ahead in such a sequence.
        """

    async def read_into(self, path: Path, offset: int, view: memoryview) -> int:
        """``read`` into the caller's buffer, which a stream reuses (no allocation and no
        page faults per read); the number of bytes, fewer only at end of file."""

    async def read_in_thread(self, path: Path, work: Callable[[ReadAt], None]) -> None:
        """Run ``work`` in a worker thread with a blocking ``ReadAt`` of ``path``, until it
        returns: a stream fills its window with consecutive reads on one connection, without
        a hand-off to the event loop between them (each cost the reader a wait)."""

    async def download(self, path: Path, into: str) -> Entry:
        """Write the whole object to the file named ``into``; return its (exact) entry."""

    async def download_many(self, paths: Sequence[Path]) -> list[bytes | FsError]:
        """The whole bytes of several small objects of one directory, for a scan reading ahead.

        One result per path, in order: the object's exact bytes, or the error that object
        alone met (``TooLarge`` past ``BATCH_ITEM_LIMIT`` bytes: the reader then fetches it
        on its own). Errors of the whole connection are raised. A backend whose
        ``capabilities.batch`` is above 1 does it in about one round trip (pipelined
        commands, one FETCH of a UID set).
        """

    async def commit(self, path: Path, content: Content, replacing: Entry | None) -> Entry:
        """Store ``content`` as ``path``: upload, append, post or enqueue.

        Must never leave a partial object under the final name. ``replacing`` is the entry
        the writer started from (``None`` for a new file).
        """

    async def remove(self, path: Path) -> None: ...

    async def rename(self, old: Path, new: Path) -> Entry | None:
        """Move an object; may return the entry it now has (names can change)."""

    async def mkdir(self, path: Path) -> None: ...

    async def rmdir(self, path: Path) -> None: ...

    async def set_mode(self, path: Path, mode: int) -> None: ...

    async def set_mtime(self, path: Path, mtime: float) -> None: ...

    async def get_xattrs(self, path: Path) -> dict[str, bytes]:
        """Extended attributes (names without the ``user.`` prefix)."""

    async def xattr_names(self, path: Path) -> list[str]:
        """The names ``get_xattrs`` would give, without asking the server where they are
        known: ``ls -l`` (coreutils 9.5 and later) lists them for every file it shows."""

    async def set_xattr(self, path: Path, name: str, value: bytes) -> None: ...

    async def changed(self, path: Path) -> bool:
        """Whether a directory may have changed since it was last listed (cheap check)."""

    async def probe(self) -> None:
        """One real round trip to the server (never answered from what is known), failing
        as the server does: how the cache layer learns that a server that stopped
        answering is back."""

    async def aclose(self) -> None: ...


class BackendBase:
    """Defaults for the optional parts of ``Backend``: everything unsupported."""

    capabilities = Capabilities()

    async def list_in_parts(self, path: Path, part: PartSink) -> list[Entry]:
        """No parts: the listing comes whole."""
        return await self.list(path)  # type: ignore[attr-defined]

    async def read_into(self, path: Path, offset: int, view: memoryview) -> int:
        """``read``, copied into ``view``."""
        data = await self.read(path, offset, len(view))  # type: ignore[attr-defined]
        view[:len(data)] = data
        return len(data)

    async def read_in_thread(self, path: Path, work: Callable[[ReadAt], None]) -> None:
        """``read_into`` called back on the event loop for each read."""
        def read_at(offset: int, view: memoryview) -> int:
            return trio.from_thread.run(self.read_into, path, offset, view)
        await trio.to_thread.run_sync(work, read_at)

    async def download(self, path: Path, into: str) -> Entry:
        raise Unsupported("downloading")

    async def download_many(self, paths: Sequence[Path]) -> list[bytes | FsError]:
        """One ``download`` after another, through a temporary file."""
        results: list[bytes | FsError] = []
        for path in paths:
            fd, tmp = tempfile.mkstemp(prefix="fsmount-batch-")
            os.close(fd)
            try:
                await self.download(path, tmp)
                results.append(await trio.to_thread.run_sync(_read_capped, tmp))
            except FsError as e:
                results.append(e)
            finally:
                os.unlink(tmp)
        return results

    async def commit(self, path: Path, content: Content, replacing: Entry | None) -> Entry:
        raise Unsupported("writing")

    async def remove(self, path: Path) -> None:
        raise Unsupported("removing")

    async def rename(self, old: Path, new: Path) -> Entry | None:
        raise Unsupported("renaming")

    async def mkdir(self, path: Path) -> None:
        raise Unsupported("creating folders")

    async def rmdir(self, path: Path) -> None:
        raise Unsupported("removing folders")

    async def set_mode(self, path: Path, mode: int) -> None:
        raise Unsupported("changing permissions")

    async def set_mtime(self, path: Path, mtime: float) -> None:
        raise Unsupported("changing times")

    async def get_xattrs(self, path: Path) -> dict[str, bytes]:
        return {}

    async def xattr_names(self, path: Path) -> list[str]:
        return list(await self.get_xattrs(path))

    async def set_xattr(self, path: Path, name: str, value: bytes) -> None:
        raise NoData(name)

    async def changed(self, path: Path) -> bool:
        return True

    async def probe(self) -> None:
        await self.stat(())  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        return None


def _read_capped(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read(BATCH_ITEM_LIMIT + 1)
    if len(data) > BATCH_ITEM_LIMIT:
        raise TooLarge(f"more than {BATCH_ITEM_LIMIT} bytes")
    return data


class KeepsSentMail(ABC):
    """An account with a Sent folder: an outbox linked to it (``sent_account``) files the
    copies of what it sent there, and looks there before it would send a message again."""

    @abstractmethod
    async def sent_folder(self) -> Path | None:
        """The Sent folder's path, None where the account has none."""

    @abstractmethod
    async def contains_message_id(self, folder: Path, message_id: str) -> bool: ...


class PostsNews(ABC):
    """A news account: an outbox linked to it (``news_account``) posts mail with a
    Newsgroups: header through it."""

    @abstractmethod
    async def post(self, raw: bytes) -> str:
        """POST a complete article; its Message-ID."""
