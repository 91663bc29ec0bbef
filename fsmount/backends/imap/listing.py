"""Listing: the folder tree, each folder's state (UIDVALIDITY, UIDNEXT, its messages) and
the incremental FETCH that keeps it up to date; ``changed()`` for the cache layer."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from imapclient import IMAPClient

from ...errors import NotADirectory, NotFound
from ..base import Entry, PartSink, Path
from . import fetch as imapfetch
from .folders import Folder, FolderTree
from ..mailnames import key_of

from .idle import IdleWatcher
from .parse import _collector_paused, _entry, _listing_rows

log = logging.getLogger(__name__)

FETCH_CHUNK = 10_000  # messages per listing FETCH: one round trip for 10k, bounded memory for 100k
LIST_PART = 1000  # a folder listed afresh shows in parts of up to this many messages …
FIRST_PART = 250  # … the first one smaller, so ls starts sooner …
PARTS_FROM = 2 * LIST_PART  # … when it holds at least this many
Emit = Callable[[list[Entry]], None]  # hands a part of a listing over from the worker thread
LISTING_ITEMS = "(UID RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT DATE)])"
TREE_TTL = 2.0  # a folder listing reuses a folder list this young




@dataclass
class FolderState:
    """What we know of one folder's messages (touched on the trio thread only)."""

    uidvalidity: int = 0
    uidnext: int = 0
    exists: int = 0
    entries: dict[int, Entry] = field(default_factory=dict)  # uid → .eml entry
    lock: trio.Lock = field(default_factory=trio.Lock)
    _names: dict[str, int] | None = None  # name → uid, made at the first lookup (ls needs none)

    @property
    def by_name(self) -> dict[str, int]:
        if self._names is None:
            self._names = {entry.name: uid for uid, entry in self.entries.items()}
        return self._names

    def add(self, uid: int, entry: Entry) -> None:
        old = self.entries.get(uid)
        self.entries[uid] = entry
        if self._names is not None:
            if old is not None:
                self._names.pop(old.name, None)
            self._names[entry.name] = uid

    def add_all(self, found: list[tuple[int, Entry]]) -> None:
        if self.entries:
            for uid, entry in found:
                self.add(uid, entry)
        else:  # listed afresh: no old names to unlink
            self._names = None
            self.entries = dict(found)

    def drop(self, uid: int) -> None:
        entry = self.entries.pop(uid, None)
        if entry is not None and self._names is not None:
            self._names.pop(entry.name, None)

    def reset(self, uidvalidity: int) -> None:
        self.uidvalidity, self.uidnext, self.exists = uidvalidity, 0, 0
        self.entries = {}
        self._names = None


@dataclass(frozen=True)
class Scan:
    """A worker's answer to a listing: what changed since the state it was given."""

    uidvalidity: int
    uidnext: int
    exists: int
    fresh: list[tuple[int, Entry]]
    all_uids: set[int] | None  # set when some messages may have been expunged
    reset: bool




class ImapListing:
    """Folders and messages as entries; mixed into ``ImapBackend``."""

    # -- the folder tree -----------------------------------------------------------------

    async def _folders(self, *, max_age: float | None = None) -> FolderTree:
        async with self._tree_lock:
            tree = self._tree
            if tree is None or (max_age is not None and time.monotonic() - tree.fetched >= max_age):
                tree = self._tree = await self._run(self._list_folders, "LIST")
                for path in [p for p in self._states if tree.folder(p) is None]:
                    del self._states[path]
            return tree

    def _list_folders(self, conn: IMAPClient) -> FolderTree:
        log.debug('%s: LIST "" "*"', self.label)
        return FolderTree.build(conn.list_folders())

    # -- paths ---------------------------------------------------------------------------

    async def stat(self, path: Path) -> Entry:
        tree = await self._folders()
        if tree.is_dir(path):
            return Entry(path[-1] if path else "", True)
        if not path or not tree.is_dir(path[:-1]):
            raise NotFound("/".join(path))
        entry, _ = await self._message(path, tree)
        return entry

    async def _message(self, path: Path, tree: FolderTree | None = None
                       ) -> tuple[Entry, Folder]:
        """(entry, folder) for a file path; scans the folder if needed."""
        tree = tree or await self._folders()
        folder = tree.folder(path[:-1])
        eml = path[-1]
        if folder is None or key_of(eml) is None:
            raise NotFound("/".join(path))
        state = self._states.get(path[:-1])
        uid = state.by_name.get(eml) if state else None
        if uid is None:
            state = await self._scan(path[:-1], folder)
            uid = state.by_name.get(eml)
        if uid is None:
            raise NotFound("/".join(path))
        return state.entries[uid], folder

    async def list(self, path: Path) -> list[Entry]:
        return await self.list_in_parts(path, None)

    async def list_in_parts(self, path: Path, part: PartSink | None) -> list[Entry]:
        tree = await self._folders(max_age=TREE_TTL)
        if not tree.is_dir(path):
            if path and tree.folder(path[:-1]) is not None:
                await self._message(path, tree)  # NotFound unless it is a message
                raise NotADirectory("/".join(path))
            raise NotFound("/".join(path))
        entries = [Entry(n, True) for n in sorted(tree.children[path])]
        folder = tree.folder(path)
        if folder is not None:
            state = await self._scan(path, folder, self._relay(part, entries) if part else None)
            entries += state.entries.values()
        return entries

    def _relay(self, part: PartSink, folders: list[Entry]) -> Emit:
        """``part`` for the worker thread: each part is queued to the trio thread without
        waiting for it, in order, so all parts arrive before the scan's own result does."""
        token = trio.lowlevel.current_trio_token()
        first = [folders]

        def send(messages: list[Entry]) -> None:
            entries = (first.pop() if first else []) + messages
            token.run_sync_soon(part, entries)
        return send

    async def _scan(self, path: Path, folder: Folder,
                    emit: Emit | None = None) -> FolderState:
        """Bring the folder's state up to date; a fresh listing's entries also go to ``emit``
        (from the worker thread) as they arrive."""
        state = self._states.setdefault(path, FolderState())
        watcher = self._watch(path, folder)
        async with state.lock:
            if watcher is not None:
                watcher.dirty = False  # anything reported from now on is after this scan began
            known = (state.uidvalidity, state.uidnext, len(state.entries))
            scan: Scan = await self._run(
                lambda conn: self._fetch_listing(conn, folder.name, known, emit),
                f"FETCH {folder.name}")
            if scan.reset:
                state.reset(scan.uidvalidity)
            if scan.all_uids is not None:
                for uid in [u for u in state.entries if u not in scan.all_uids]:
                    state.drop(uid)
            state.add_all(scan.fresh)
            state.uidnext, state.exists = scan.uidnext, scan.exists
            return state

    def _fetch_listing(self, conn: IMAPClient, folder: str, known: tuple[int, int, int],
                       emit: Emit | None) -> Scan:
        uidvalidity, uidnext, count = known
        info = self._select(conn, folder, fresh=True)
        new_validity = int(info.get(b"UIDVALIDITY") or 0)
        exists = int(info.get(b"EXISTS") or 0)
        new_next = int(info.get(b"UIDNEXT") or 0)
        if new_validity != uidvalidity or not uidnext or not new_next:
            parts = emit if exists >= PARTS_FROM else None
            fresh = self._fetch_range(conn, new_validity, exists, parts)
            return Scan(new_validity, new_next, exists, fresh, None, True)
        fresh = []
        if new_next > uidnext:
            fresh = self._fetch_uids(conn, new_validity, f"{uidnext}:*", uidnext)
        all_uids = None
        if count + len(fresh) != exists:
            log.debug("%s: UID SEARCH ALL (in %s)", self.label, folder)
            all_uids = set(conn.search("ALL"))
        return Scan(new_validity, new_next, exists, fresh, all_uids, False)

    def _fetch_range(self, conn: IMAPClient, uidvalidity: int, exists: int,
                     emit: Emit | None = None) -> list[tuple[int, Entry]]:
        found: list[tuple[int, Entry]] = []
        for start in range(1, exists + 1, FETCH_CHUNK):
            end = min(start + FETCH_CHUNK - 1, exists)
            found += self._fetch_items(conn, uidvalidity, False, f"{start}:{end}", 0, emit)
        return found

    def _fetch_uids(self, conn: IMAPClient, uidvalidity: int, uids: str, least: int
                    ) -> list[tuple[int, Entry]]:
        return self._fetch_items(conn, uidvalidity, True, uids, least)

    def _fetch_items(self, conn: IMAPClient, uidvalidity: int, by_uid: bool, spec: str,
                     least: int, emit: Emit | None = None
                     ) -> list[tuple[int, Entry]]:
        log.debug("%s: %sFETCH %s %s", self.label, "UID " if by_uid else "", spec, LISTING_ITEMS)
        command = ("UID", "FETCH") if by_uid else ("FETCH",)
        tag = conn._imap._command(*command, spec, LISTING_ITEMS)
        rows = _listing_rows(imapfetch.replies(conn._imap, tag))  # parsed as they arrive
        found: list[tuple[int, Entry]] = []
        sent, part = 0, FIRST_PART
        with _collector_paused():
            for uid, size, internal, header in rows:
                if uid >= least:
                    found.append((uid, _entry(uidvalidity, uid, size, internal, header)))
                    if emit is not None and len(found) - sent >= part:
                        emit([e for _, e in found[sent:]])
                        sent, part = len(found), min(2 * part, LIST_PART)
        if emit is not None and sent < len(found):
            emit([e for _, e in found[sent:]])
        return found

    def _watch(self, path: Path, folder: Folder) -> IdleWatcher | None:
        """Start IDLE on INBOX (once) where the account wants it."""
        if not self.account["idle"] or folder.name.upper() != "INBOX":
            return None
        if self._watcher is None:
            self._watcher = IdleWatcher(self, path, folder.name)
            self._watcher.start()
        return self._watcher

    async def changed(self, path: Path) -> bool:
        """One LIST (did folders below appear or go?) plus, for a folder, one STATUS — or,
        for the folder IDLE watches, no round trip at all."""
        old_tree = self._tree
        if old_tree is None:
            return True
        watcher = self._watcher
        if watcher is not None and watcher.path == path and watcher.idling and path in self._states:
            return watcher.dirty
        folder = old_tree.folder(path)
        state = self._states.get(path) if folder is not None else None

        def check(conn: IMAPClient) -> tuple[FolderTree, dict | None]:
            tree = self._list_folders(conn)
            status = None
            if folder is not None and state is not None and tree.folder(path) is not None:
                status = self._status(conn, folder.name, ("MESSAGES", "UIDNEXT", "UIDVALIDITY"))
            return tree, status

        tree, status = await self._run(check, f"LIST/STATUS {path}")
        async with self._tree_lock:
            self._tree = tree
        if old_tree.children.get(path) != tree.children.get(path):
            return True
        if (folder is None) != (tree.folder(path) is None):
            return True
        if status is None:
            return folder is not None
        return (int(status.get(b"UIDVALIDITY", 0)) != state.uidvalidity
                or int(status.get(b"UIDNEXT", 0)) != state.uidnext
                or int(status.get(b"MESSAGES", 0)) != len(state.entries))



