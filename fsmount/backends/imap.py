"""IMAP: folders as directories, every message an ``.eml`` file holding the server's exact bytes.

Layout. Folders nest by the server's hierarchy delimiter (``Archive/2024``); names are shown
decoded from modified UTF-7. A ``\\Noselect`` parent is a plain directory without messages.
Messages are named ``message_name(uid, Subject, Date)`` — ``2024-05-01 1330 Lunch [42].eml``
— stable across mounts, unique in the folder. ``st_size`` is RFC822.SIZE, ``st_mtime`` the
INTERNALDATE, the identity (and content-cache key) ``(UIDVALIDITY, UID)``: a folder recreated
with a new UIDVALIDITY gets new identities, so stale bytes are never served.

Listing. One batched ``FETCH 1:N (UID RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS
(SUBJECT DATE)])`` in chunks of ``FETCH_CHUNK`` messages, read off the wire by ``imapfetch``
(imaplib's response loop alone took longer than the server) and parsed as replies arrive, so
the work overlaps the server's; Dovecot's reply order takes one regex, the usual Date header
no email.utils (``mailnames.header_timestamp``). A relisting with the same
UIDVALIDITY fetches only UIDs from the old UIDNEXT on, and asks ``UID SEARCH ALL`` only if
the count says something was expunged. ``changed()`` is one LIST plus one STATUS (MESSAGES
UIDNEXT UIDVALIDITY): the cache asks it when its listing TTL expires instead of relisting.
With ``idle`` (default) one extra connection IDLEs on INBOX in a thread, the listing TTL is
``IDLE_TTL`` (1 s), and ``changed(INBOX)`` answers from what IDLE reported, without a round
trip: new mail shows up within about a second. Servers without IDLE are polled (STATUS).

Reading. Always ``BODY.PEEK[]`` (never sets ``\\Seen``, although folders are SELECTed
read-write so the server can keep its index; read-only accounts EXAMINE). A read of a range
is a partial fetch ``BODY.PEEK[]<offset.size>``, so ``head`` of a 30 MiB message fetches only
its start. A scan (``grep -r``) is fetched ahead by the cache's prefetcher through
``download_many``: up to ``BATCH`` messages per ``UID FETCH`` of a UID set.

Flags as extended attributes (the VFS adds ``user.``):
  ``imap.flags``     all flags, space separated (``\\Seen \\Flagged $Label1``); writing it
                     replaces the set (``\\Recent`` cannot be set)
  ``imap.seen`` ``imap.flagged`` ``imap.answered`` ``imap.draft``
                     ``1`` or ``0``; writing ``1``/``0`` (also true/false/yes/no) adds/removes
  ``imap.uid`` ``imap.uidvalidity``   read-only
Folders: ``imap.name`` (server name), ``imap.special-use`` (``\\Sent``, ``\\Trash`` …) and, for
selectable folders, ``imap.messages`` and ``imap.unseen``.

Writing. ``cp`` into a folder APPENDs (flag ``\\Seen``, INTERNALDATE from the Date header)
after checking that the file is a message; the new file is named from its APPENDUID. ``mv``
between folders is UID MOVE (or COPY + flag + UID EXPUNGE of that UID). ``rm`` moves to the
``\\Trash`` folder (``delete = "trash"``; in Trash itself it expunges) or flags and expunges
only that UID (``delete = "expunge"``) — never a folder-wide EXPUNGE, and only after checking
UIDVALIDITY. ``mkdir``/``rmdir``/``mv`` of folders are CREATE/DELETE/RENAME; ``rmdir`` of a
folder that still holds messages fails with ENOTEMPTY.

Security. ``imaps://`` is implicit TLS; ``imap://`` upgrades with STARTTLS per ``tls``; no
LOGIN or AUTHENTICATE over an unencrypted connection unless ``plaintext_auth``. ``auth`` =
``xoauth2``/``oauthbearer`` authenticates with the token from ``token_command``.
"""
from __future__ import annotations

import calendar
import gc
import logging
import re
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

import trio
from imapclient import IMAPClient
from imapclient import exceptions as imap_errors
from imapclient.response_parser import parse_fetch_response

from ..config import Account
from ..credentials import Secret
from ..errors import (
    AlreadyExists, AuthenticationFailed, FsError, InvalidArgument, IsADirectory,
    NoSpace, NotADirectory, NotEmpty, NotFound, NotPermitted, PermissionDenied, ReadOnly,
    SizeMismatch, TooLarge, Transient, Unsupported,
)
from ..net.pool import ConnectionPool
from ..net.tls import TlsMode, client_context
from ..net.failures import connection_failure
from .base import (
    BATCH_ITEM_LIMIT, BackendBase, Capabilities, Content, Entry, KeepsSentMail, PartSink, Path,
)
from . import imapfetch
from .imapfolders import Folder, FolderTree
from .mailnames import SUFFIX as EML_SUFFIX
from .mailnames import header_date, header_text, header_timestamp, key_of, message_name

log = logging.getLogger(__name__)

FETCH_CHUNK = 10_000  # messages per listing FETCH: one round trip for 10k, bounded memory for 100k
LIST_PART = 1000  # a folder listed afresh shows in parts of up to this many messages …
FIRST_PART = 250  # … the first one smaller, so ls starts sooner …
PARTS_FROM = 2 * LIST_PART  # … when it holds at least this many
Emit = Callable[[list[Entry]], None]  # hands a part of a listing over from the worker thread
LISTING_ITEMS = "(UID RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT DATE)])"
WHOLE_LIMIT = 8 << 20  # bigger messages are downloaded in partial fetches of PART bytes
PART = 4 << 20
# The socket reader's buffer: a 10k-message listing in a few dozen reads instead of ~250,
# each of which gives up the GIL and waits to get it back (cold ls -l: -10 %).
READ_BUFFER = 256 << 10
BATCH = 64  # messages per download_many (the prefetcher also bounds a batch's bytes)
IDLE_TTL = 1.0  # listing TTL with IDLE on: the INBOX check is then free, others one STATUS
IDLE_RENEW = 25 * 60  # RFC 2177: re-issue IDLE before the server's 30-minute timeout
IDLE_CHECK = 1.0  # how long one wait for IDLE news lasts (and so how soon stop() is seen)
FLAGS_TTL = 2.0  # getfattr -d asks once per attribute: one FETCH FLAGS serves them all
TREE_TTL = 2.0  # a folder listing reuses a folder list this young
BOOL_FLAGS = {"seen": "\\Seen", "flagged": "\\Flagged", "answered": "\\Answered",
              "draft": "\\Draft"}
MESSAGE_HEADERS = {b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"received",
                   b"newsgroups", b"return-path", b"mime-version"}


def create(account: Account, secret: Secret, env: Any) -> ImapBackend:
    return ImapBackend(account, secret)


# -- folder state ---------------------------------------------------------------------


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


# -- the backend ----------------------------------------------------------------------


class ImapBackend(BackendBase, KeepsSentMail):
    def __init__(self, account: Account, secret: Secret) -> None:
        self.account = account
        self.secret = secret
        self.label = account.label
        writable = not account["readonly"]
        self.capabilities = Capabilities(
            ranged_read=True, write=writable, overwrite=False, mkdir=writable, remove=writable,
            rename=writable, immutable=True, xattrs=bool(account["xattrs"]),
            metadata_ttl=IDLE_TTL if account["idle"] else None, batch=BATCH,
        )
        self.pool: ConnectionPool[IMAPClient] = ConnectionPool(
            self.label, self._connect, _close, classify,
            limit=account["connections"], timeout=account["timeout"], check=_check,
        )
        self._tree: FolderTree | None = None
        self._tree_lock = trio.Lock()
        self._states: dict[Path, FolderState] = {}
        self._flags: dict[tuple, tuple[float, tuple[bytes, ...]]] = {}
        # name a file was written under → the message's name: rsync and editors write a
        # temporary name, then rename it; that rename must find the appended message
        self._committed: dict[Path, Path] = {}
        self._watcher: IdleWatcher | None = None

    # -- connections (worker threads) ---------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        return client_context(self.account["ca_file"], self.account["tls_verify"])

    def _connect(self) -> IMAPClient:
        acc = self.account
        log.debug("%s: connecting (%s)", self.label, acc.tls.value)
        implicit = acc.tls is TlsMode.IMPLICIT
        conn = IMAPClient(acc.host, acc.port, ssl=implicit,
                          ssl_context=self._context() if implicit else None, timeout=acc["timeout"])
        conn._imap.debug = 0  # imaplib's own trace logs every line of every message: far too much
        conn.normalise_times = False
        _roomy_reader(conn)
        try:
            encrypted = implicit or self._starttls(conn)
            self._login(conn, encrypted)
        except BaseException:
            _close(conn)
            raise
        return conn

    def _starttls(self, conn: IMAPClient) -> bool:
        mode = self.account.tls
        if mode is TlsMode.OFF:
            return False
        if not conn.has_capability("STARTTLS"):
            if mode is TlsMode.REQUIRE:
                raise PermissionDenied(f"{self.label} does not offer STARTTLS (tls = require)")
            return False
        log.debug("%s: STARTTLS", self.label)
        conn.starttls(self._context())
        conn._cached_capabilities = None  # capabilities change after TLS
        _roomy_reader(conn)
        return True

    def _login(self, conn: IMAPClient, encrypted: bool) -> None:
        acc = self.account
        if not encrypted and not acc["plaintext_auth"]:
            raise PermissionDenied(
                f"{self.label}: refusing to send the password unencrypted (no TLS); use imaps://, "
                "a server with STARTTLS, or set plaintext_auth = true"
            )
        user = acc.user or ""
        method = (acc["auth"] or "login").lower()
        log.debug("%s: %s as %s (secret not logged)", self.label, method.upper(), user)
        if method == "xoauth2":
            conn.oauth2_login(user, self.secret.token())
        elif method == "oauthbearer":
            conn.oauthbearer_login(user, self.secret.token())
        elif method == "login":
            conn.login(user, self.secret.password or "")
        else:
            raise PermissionDenied(f"{self.label}: unknown auth method {method!r}")
        conn._cached_capabilities = None
        conn.fsm_selected = None

    async def _run(self, fn: Callable[[IMAPClient], Any], what: str, *, retry: bool = True) -> Any:
        def call(conn: IMAPClient) -> Any:
            conn._imap.untagged_responses.clear()  # unsolicited EXISTS/FETCH from earlier commands
            return fn(conn)

        return await self.pool.run(call, retry=retry, what=f"{self.label}: {what}")

    def _select(self, conn: IMAPClient, folder: str, *, write: bool = False,
                fresh: bool = False) -> dict:
        """SELECT ``folder`` unless it is already selected.

        Read-write even for reading (EXAMINE only on read-only accounts): reads use BODY.PEEK,
        so nothing is marked read, and a read-only session never lets Dovecot save its index —
        every EXAMINE of a 100,000-message Maildir then rescanned it (20 s instead of 1 ms).
        """
        writable = not self.account["readonly"]
        current = getattr(conn, "fsm_selected", None)
        if not fresh and current is not None and current[0] == folder and (current[1] or not write):
            return current[2]
        log.debug("%s: %s %s", self.label, "SELECT" if writable else "EXAMINE", folder)
        conn.fsm_selected = None
        info = conn.select_folder(folder, readonly=not writable)
        conn.fsm_selected = (folder, writable, info)
        return info

    def _status(self, conn: IMAPClient, folder: str, items: tuple[str, ...]) -> dict:
        """STATUS; the selected folder is unselected first, since a server may answer STATUS
        for it from the session's own (stale) view."""
        current = getattr(conn, "fsm_selected", None)
        if current is not None and current[0] == folder:
            self._unselect(conn)
        log.debug("%s: STATUS %s (%s)", self.label, folder, " ".join(items))
        return conn.folder_status(folder, items)

    def _unselect(self, conn: IMAPClient) -> None:
        current, conn.fsm_selected = getattr(conn, "fsm_selected", None), None
        if current is None:
            return
        log.debug("%s: UNSELECT %s", self.label, current[0])
        if conn.has_capability("UNSELECT"):
            conn.unselect_folder()
        elif not current[1]:
            conn.close_folder()  # EXAMINEd: CLOSE expunges nothing
        else:
            conn.select_folder(current[0], readonly=True)  # swap to a read-only view: no expunge
            conn.fsm_selected = (current[0], False, {})

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

    # -- reading -------------------------------------------------------------------------

    async def read(self, path: Path, offset: int, size: int) -> bytes:
        entry, folder = await self._message(path)
        if offset == 0 and entry.size is not None and size >= entry.size:
            return (await self._raw(path, entry, folder))[:size]
        if entry.size is not None and offset >= entry.size:
            return b""
        uid = entry.identity[1]

        def partial(conn: IMAPClient) -> bytes:
            return self._fetch_body(conn, folder.name, entry.identity, offset, size)

        return await self._run(partial, f"FETCH {uid} part {offset}+{size}")

    async def download(self, path: Path, into: str) -> Entry:
        entry, folder = await self._message(path)
        if entry.is_dir:
            raise IsADirectory("/".join(path))
        if entry.size is not None and entry.size > WHOLE_LIMIT:
            size = await self._download_parts(folder, entry, into)
            _check_size(entry, size)
            return Entry(entry.name, False, size, entry.mtime, entry.identity)
        data = await self._raw(path, entry, folder)
        await trio.to_thread.run_sync(_write, into, data)
        return Entry(entry.name, False, len(data), entry.mtime, entry.identity)

    async def _raw(self, path: Path, entry: Entry, folder: Folder) -> bytes:
        """The whole message. (The cache layer makes concurrent readers share one fetch,
        and scans are fetched ahead by ``download_many``.)"""
        uidvalidity, uid = entry.identity[0], entry.identity[1]
        found = await self._run(
            lambda conn: self._fetch_bodies(conn, folder.name, uidvalidity, [uid]),
            f"FETCH {uid}")
        if uid not in found:
            raise NotFound(f"message {uid} is no longer in {folder.name}")
        _check_size(entry, found[uid])
        return found[uid]

    async def download_many(self, paths: Sequence[Path]) -> list[bytes | FsError]:
        """Messages of one folder for a scan, in one ``UID FETCH`` of a UID set
        (``BODY.PEEK[]``)."""
        results: list[bytes | FsError | None] = [None] * len(paths)
        wanted: dict[tuple[Folder, int], dict[int, int]] = {}  # → uid → index in paths
        tree = await self._folders()
        for i, path in enumerate(paths):
            try:
                entry, folder = await self._message(path, tree)
            except FsError as e:
                results[i] = e
                continue
            if (entry.size or 0) > BATCH_ITEM_LIMIT:
                results[i] = TooLarge(path[-1])
                continue
            wanted.setdefault((folder, entry.identity[0]), {})[entry.identity[1]] = i
        for (folder, uidvalidity), uids in wanted.items():
            directory = paths[next(iter(uids.values()))][:-1]
            raws = await self._run(
                lambda conn, f=folder.name, v=uidvalidity, m=list(uids):
                    self._fetch_bodies(conn, f, v, m),
                f"FETCH {len(uids)} messages of {folder.name}")
            announced = self._states[directory].entries
            for uid, i in uids.items():
                raw = raws.get(uid)
                try:
                    if raw is None:
                        raise NotFound(f"message {uid} is no longer in {folder.name}")
                    _check_size(announced.get(uid), raw)
                    results[i] = TooLarge(paths[i][-1]) if len(raw) > BATCH_ITEM_LIMIT else raw
                except FsError as e:
                    results[i] = e
        return results  # type: ignore[return-value]  (every slot is set above)

    def _fetch_bodies(self, conn: IMAPClient, folder: str, uidvalidity: int, uids: list[int]
                      ) -> dict[int, bytes]:
        """BODY.PEEK[] of several UIDs in one command, after checking UIDVALIDITY."""
        self._check_validity(conn, folder, uidvalidity, write=False)
        spec = ",".join(map(str, uids))
        log.debug("%s: UID FETCH %s (BODY.PEEK[])", self.label, spec)
        found = {}
        for reply in imapfetch.replies(conn._imap, conn._imap._command("UID", "FETCH", spec,
                                                                       "(BODY.PEEK[])")):
            uid, body = _body_of(reply)
            if uid is not None:
                found[uid] = body
        return found

    def _fetch_body(self, conn: IMAPClient, folder: str, identity: tuple, offset: int | None,
                    size: int | None) -> bytes:
        """BODY.PEEK[] (or a range of it) of one UID, after checking UIDVALIDITY."""
        uidvalidity, uid = identity[0], identity[1]
        info = self._select(conn, folder)
        if int(info.get(b"UIDVALIDITY") or 0) != uidvalidity:
            info = self._select(conn, folder, fresh=True)
            if int(info.get(b"UIDVALIDITY") or 0) != uidvalidity:
                raise NotFound(f"{folder} was replaced on the server (UIDVALIDITY changed); "
                               "list it again")
        item = "BODY.PEEK[]" if offset is None else f"BODY.PEEK[]<{offset}.{size}>"
        log.debug("%s: UID FETCH %d (%s)", self.label, uid, item)
        response = conn.fetch([uid], [item])
        data = response.get(uid, {})
        key = b"BODY[]" if offset is None else f"BODY[]<{offset}>".encode()
        if key not in data:
            if not data and not conn.search(["UID", str(uid)]):
                raise NotFound(f"message {uid} is no longer in {folder}")
            value = next((v for k, v in data.items() if k.startswith(b"BODY[]")), None)
            if value is None:
                raise NotFound(f"message {uid} is no longer in {folder}")
            return value or b""
        return data[key] or b""

    async def _download_parts(self, folder: Folder, entry: Entry, into: str) -> int:
        """A big message in PART-sized partial fetches, written as they arrive."""
        with open(into, "wb"):
            pass
        offset = 0
        while True:
            chunk = await self._run(
                lambda conn, o=offset: self._fetch_body(conn, folder.name, entry.identity, o, PART),
                f"FETCH {entry.identity[1]} part {offset}")
            await trio.to_thread.run_sync(_append, into, chunk)
            offset += len(chunk)
            if len(chunk) < PART:
                return offset

    # -- extended attributes -------------------------------------------------------------

    async def get_xattrs(self, path: Path) -> dict[str, bytes]:
        tree = await self._folders()
        if tree.is_dir(path):
            return await self._folder_xattrs(path, tree)
        entry, folder = await self._message(path, tree)
        flags = await self._get_flags(path, entry, folder)
        values = {"imap.flags": b" ".join(flags)}
        lowered = {f.lower() for f in flags}
        for name, flag in BOOL_FLAGS.items():
            values[f"imap.{name}"] = b"1" if flag.lower().encode() in lowered else b"0"
        values["imap.uid"] = str(entry.identity[1]).encode()
        values["imap.uidvalidity"] = str(entry.identity[0]).encode()
        return values

    async def xattr_names(self, path: Path) -> list[str]:
        """A message's names are always the same: no FETCH FLAGS per file ``ls -l`` shows."""
        tree = await self._folders()
        if tree.is_dir(path):
            info = tree.folders.get(path)
            if info is None:
                return []
            return ["imap.name", *(["imap.special-use"] if info.special else []),
                    *(["imap.messages", "imap.unseen"] if info.selectable else [])]
        return ["imap.flags", *(f"imap.{name}" for name in BOOL_FLAGS), "imap.uid",
                "imap.uidvalidity"]

    async def _folder_xattrs(self, path: Path, tree: FolderTree) -> dict[str, bytes]:
        info = tree.folders.get(path)
        if info is None:
            return {}
        values = {"imap.name": info.name.encode("utf-8", "surrogateescape")}
        if info.special:
            values["imap.special-use"] = info.special.encode()
        if info.selectable:
            status = await self._run(
                lambda conn: self._status(conn, info.name, ("MESSAGES", "UNSEEN")),
                f"STATUS {info.name}")
            values["imap.messages"] = str(status.get(b"MESSAGES", 0)).encode()
            values["imap.unseen"] = str(status.get(b"UNSEEN", 0)).encode()
        return values

    async def _get_flags(self, path: Path, entry: Entry, folder: Folder) -> tuple[bytes, ...]:
        key = (path[:-1],) + entry.identity
        cached = self._flags.get(key)
        if cached is not None and time.monotonic() - cached[0] < FLAGS_TTL:
            return cached[1]

        def fetch(conn: IMAPClient) -> tuple[bytes, ...]:
            self._check_validity(conn, folder.name, entry.identity[0], write=False)
            log.debug("%s: UID FETCH %d (FLAGS)", self.label, entry.identity[1])
            data = conn.fetch([entry.identity[1]], ["FLAGS"]).get(entry.identity[1])
            if data is None:
                raise NotFound(f"message {entry.identity[1]} is no longer in {folder.name}")
            return tuple(f for f in data.get(b"FLAGS", ()) if f.lower() != b"\\recent")

        flags = await self._run(fetch, f"FETCH FLAGS {entry.identity[1]}")
        if len(self._flags) > 10_000:
            self._flags.clear()
        self._flags[key] = (time.monotonic(), flags)
        return flags

    async def set_xattr(self, path: Path, name: str, value: bytes) -> None:
        self._writable()
        tree = await self._folders()
        if tree.is_dir(path):
            raise NotPermitted(f"{name} cannot be set on a folder")
        entry, folder = await self._message(path, tree)
        uid = entry.identity[1]
        if name == "imap.flags":
            flags = [f for f in value.decode("utf-8", "replace").split() if f.lower() != "\\recent"]
            if any(not re.fullmatch(r"\\?[!#$&'+\-.0-9:<>?@A-Z^_`a-z|~]+", f) for f in flags):
                raise InvalidArgument(f"not a list of IMAP flags: {value!r}")
            op, what = "set", flags
        elif name.startswith("imap.") and name[5:] in BOOL_FLAGS:
            on = value.strip().lower()
            if on not in (b"1", b"0", b"true", b"false", b"yes", b"no"):
                raise InvalidArgument(f"{name} takes 1 or 0, not {value!r}")
            op = "add" if on in (b"1", b"true", b"yes") else "remove"
            what = [BOOL_FLAGS[name[5:]]]
        elif name in ("imap.uid", "imap.uidvalidity"):
            raise NotPermitted(f"{name} is read-only")
        else:
            raise Unsupported(f"unknown attribute {name} (see imap.flags, imap.seen …)")

        def store(conn: IMAPClient) -> None:
            self._check_validity(conn, folder.name, entry.identity[0], write=True)
            sign = {"add": "+", "remove": "-"}.get(op, "")
            log.debug("%s: UID STORE %d %sFLAGS %s", self.label, uid, sign, what)
            method = {"set": conn.set_flags, "add": conn.add_flags, "remove": conn.remove_flags}
            method[op]([uid], what, silent=True)

        await self._run(store, f"STORE {uid}")
        self._flags.pop((path[:-1],) + entry.identity, None)

    def _check_validity(self, conn: IMAPClient, folder: str, uidvalidity: int, *,
                        write: bool) -> None:
        info = self._select(conn, folder, write=write)
        if int(info.get(b"UIDVALIDITY") or 0) != uidvalidity:
            info = self._select(conn, folder, write=write, fresh=True)
        if int(info.get(b"UIDVALIDITY") or 0) != uidvalidity:
            raise NotFound(f"{folder} was replaced on the server (UIDVALIDITY changed); "
                           "list it again")

    # -- writing -------------------------------------------------------------------------

    def _writable(self) -> None:
        if self.account["readonly"]:
            raise ReadOnly("this mail account is read-only")

    async def commit(self, path: Path, content: Content, replacing: Entry | None) -> Entry:
        self._writable()
        if replacing is not None:
            raise NotPermitted("messages cannot be changed once stored; copy a new file instead")
        tree = await self._folders()
        folder = tree.folder(path[:-1])
        if folder is None:
            if tree.is_dir(path[:-1]):
                raise NotPermitted(f"{'/'.join(path[:-1]) or 'the top folder'} holds no messages; "
                                   "copy messages into a mail folder")
            raise NotFound("/".join(path[:-1]))
        raw = await content.read_all()
        message, date, message_id = prepare_message(raw)
        entry = await self._append(path[:-1], folder, message, date, message_id)
        if len(self._committed) > 1000:
            self._committed.clear()
        self._committed[path] = path[:-1] + (entry.name,)
        return entry

    async def _append(self, directory: Path, folder: Folder, message: bytes, date: datetime | None,
                      message_id: str | None) -> Entry:
        def append(conn: IMAPClient) -> tuple[int, int] | None:
            log.debug("%s: APPEND %s (\\Seen) %d bytes", self.label, folder.name, len(message))
            response = conn.append(folder.name, message, flags=(b"\\Seen",), msg_time=date)
            return _appenduid(response)

        try:
            ids = await self._run(append, f"APPEND {folder.name}", retry=False)
        except Transient:
            if message_id and await self.contains_message_id(directory, message_id):
                ids = None  # it arrived before the connection broke: do not append twice
            else:
                ids = await self._run(append, f"APPEND {folder.name}", retry=False)
        state = await self._scan(directory, folder)
        if ids is not None and ids[0] == state.uidvalidity and ids[1] in state.entries:
            return state.entries[ids[1]]
        if message_id:
            uid = await self._run(lambda conn: self._search_id(conn, folder.name, message_id),
                                  f"SEARCH {message_id}")
            if uid and uid in state.entries:
                return state.entries[uid]
        raise FsError(f"the message was appended to {folder.name} but cannot be found there")

    async def remove(self, path: Path) -> None:
        self._writable()
        tree = await self._folders()
        if tree.is_dir(path):
            raise IsADirectory("/".join(path))
        written = path
        path = self._committed.get(path, path)  # the name a writer just used (rm of it)
        entry, folder = await self._message(path, tree)
        uid = entry.identity[1]
        trash = tree.special("\\Trash")
        to_trash = self.account["delete"] != "expunge" and path[:-1] != trash
        if to_trash and trash is None:
            raise NotPermitted("no Trash folder on the server; create one or set "
                               "delete = \"expunge\"")

        def delete(conn: IMAPClient) -> None:
            self._check_validity(conn, folder.name, entry.identity[0], write=True)
            if to_trash:
                self._move(conn, uid, tree.folders[trash].name)
            else:
                self._expunge_one(conn, uid)

        await self._run(delete, f"delete {uid} from {folder.name}", retry=False)
        self._committed.pop(written, None)
        state = self._states.get(path[:-1])
        if state is not None:
            state.drop(uid)

    def _expunge_one(self, conn: IMAPClient, uid: int) -> None:
        if not conn.has_capability("UIDPLUS"):
            raise NotPermitted("the server lacks UIDPLUS: expunging one message would expunge "
                               "every message another client marked deleted")
        log.debug("%s: UID STORE %d +FLAGS.SILENT (\\Deleted); UID EXPUNGE %d",
                  self.label, uid, uid)
        conn.add_flags([uid], [b"\\Deleted"], silent=True)
        conn.uid_expunge([uid])

    def _move(self, conn: IMAPClient, uid: int, target: str) -> tuple[int, int] | None:
        """UID MOVE, else COPY + expunge of that UID; returns (uidvalidity, new uid) if told."""
        if conn.has_capability("MOVE"):
            log.debug("%s: UID MOVE %d %s", self.label, uid, target)
            response = conn.move([uid], target)
            code = conn._imap.untagged_responses.pop("COPYUID", [None])[-1] or response
        else:
            if not conn.has_capability("UIDPLUS"):  # checked before COPY: no stray copy left
                raise NotPermitted("the server has neither MOVE nor UIDPLUS: moving one message "
                                   "would expunge every message another client marked deleted")
            log.debug("%s: UID COPY %d %s", self.label, uid, target)
            # imaplib's uid() drops the tagged reply, which carries [COPYUID …]: ask it directly
            typ, data = conn._imap._simple_command("UID", "COPY", str(uid),
                                                   conn._normalise_folder(target))
            if typ != "OK":
                raise imap_errors.IMAPClientError(f"copy failed: {data}")
            code = b" ".join(d for d in data if isinstance(d, bytes))
            self._expunge_one(conn, uid)
        return _copyuid(code)

    async def rename(self, old: Path, new: Path) -> Entry | None:
        self._writable()
        tree = await self._folders()
        if not tree.is_dir(new[:-1]):
            raise NotFound("/".join(new[:-1]))
        if tree.is_dir(old):
            return await self._rename_folder(tree, old, new)
        old = self._committed.get(old, old)
        entry, folder = await self._message(old, tree)
        if old[:-1] == new[:-1]:
            return entry  # names come from the message: renaming in place keeps the name
        target = tree.folder(new[:-1])
        if target is None:
            raise NotPermitted(f"{'/'.join(new[:-1]) or 'the top folder'} holds no messages")
        uid = entry.identity[1]

        def move(conn: IMAPClient) -> tuple[int, int] | None:
            self._check_validity(conn, folder.name, entry.identity[0], write=True)
            return self._move(conn, uid, target.name)

        ids = await self._run(move, f"MOVE {uid} to {target.name}", retry=False)
        state = self._states.get(old[:-1])
        if state is not None:
            state.drop(uid)
        if ids is None:
            return None
        name = entry.name.replace(f"[{uid}]{EML_SUFFIX}", f"[{ids[1]}]{EML_SUFFIX}")
        moved = Entry(name, False, entry.size, entry.mtime, ids)
        target_state = self._states.get(new[:-1])
        if target_state is not None and target_state.uidvalidity == ids[0]:
            target_state.add(ids[1], moved)
        return moved

    async def _rename_folder(self, tree: FolderTree, old: Path, new: Path) -> Entry | None:
        info = tree.folders.get(old)
        if info is None:
            raise NotPermitted(f"{'/'.join(old)} is not a folder on the server")
        if tree.is_dir(new):
            raise AlreadyExists("/".join(new))
        new_name = _folder_name(tree, new)

        def rename(conn: IMAPClient) -> None:
            log.debug("%s: RENAME %s %s", self.label, info.name, new_name)
            conn.fsm_selected = None
            conn.rename_folder(info.name, new_name)

        await self._run(rename, f"RENAME {info.name}", retry=False)
        n = len(old)
        for path in [p for p in self._states if p[:n] == old]:
            del self._states[path]
        await self._folders(max_age=0)
        return Entry(new[-1], True)

    async def mkdir(self, path: Path) -> None:
        self._writable()
        tree = await self._folders()
        if tree.is_dir(path):
            raise AlreadyExists("/".join(path))
        if not tree.is_dir(path[:-1]):
            raise NotFound("/".join(path[:-1]))
        name = _folder_name(tree, path)

        def create(conn: IMAPClient) -> None:
            log.debug("%s: CREATE %s", self.label, name)
            conn.create_folder(name)

        await self._run(create, f"CREATE {name}", retry=False)
        await self._folders(max_age=0)

    async def rmdir(self, path: Path) -> None:
        self._writable()
        tree = await self._folders(max_age=0)
        if not tree.is_dir(path) or not path:
            raise NotFound("/".join(path))
        if tree.children[path]:
            raise NotEmpty("/".join(path))
        info = tree.folders.get(path)
        if info is None:  # a parent the server never listed: gone with its last child
            return

        def delete(conn: IMAPClient) -> None:
            if info.selectable:
                count = self._status(conn, info.name, ("MESSAGES",)).get(b"MESSAGES", 0)
                if count:
                    raise NotEmpty(f"{'/'.join(path)} still holds {count} messages")
            current = getattr(conn, "fsm_selected", None)
            if current is not None and current[0] == info.name:
                self._unselect(conn)
            log.debug("%s: DELETE %s", self.label, info.name)
            conn.delete_folder(info.name)

        await self._run(delete, f"DELETE {info.name}", retry=False)
        self._states.pop(path, None)
        await self._folders(max_age=0)

    # -- for the outbox --------------------------------------------------------------------

    async def sent_folder(self) -> tuple[str, ...] | None:
        """The path of the ``\\Sent`` special-use folder (or a top-level one named Sent)."""
        return (await self._folders()).special("\\Sent")

    async def contains_message_id(self, folder: tuple[str, ...], message_id: str) -> bool:
        info = (await self._folders()).folder(folder)
        if info is None:
            raise NotFound("/".join(folder))
        uid = await self._run(lambda conn: self._search_id(conn, info.name, message_id),
                              f"SEARCH {message_id}")
        return uid is not None

    def _search_id(self, conn: IMAPClient, folder: str, message_id: str) -> int | None:
        self._select(conn, folder, fresh=True)
        log.debug("%s: UID SEARCH HEADER Message-ID %s", self.label, message_id)
        uids = conn.search(["HEADER", "Message-ID", message_id])
        return max(uids) if uids else None

    async def aclose(self) -> None:
        if self._watcher is not None:
            await trio.to_thread.run_sync(self._watcher.stop)
        await self.pool.aclose()


class IdleWatcher:
    """One connection of its own, IDLEing on a folder in a thread; ``dirty`` is set when the
    server reports anything (new, expunged or changed messages) and cleared by the next scan.

    ``idling`` is False while it (re)connects: then ``changed`` asks the server as usual.
    """

    def __init__(self, backend: ImapBackend, path: Path, folder: str) -> None:
        self.backend = backend
        self.path = path
        self.folder = folder
        self.dirty = True
        self.idling = False
        self._stop = threading.Event()
        self._conn: IMAPClient | None = None
        self._thread = threading.Thread(target=self._loop, name=f"imap-idle {folder}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            try:
                conn.socket().shutdown(socket.SHUT_RDWR)  # wakes the thread at once
            except OSError:
                pass
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        label = self.backend.label
        failures = 0
        while not self._stop.is_set():
            try:
                self._conn = conn = self.backend._connect()
                if not conn.has_capability("IDLE"):
                    log.info("%s: no IDLE; polling instead", label)
                    return
                conn.select_folder(self.folder, readonly=True)
                failures = 0
                while not self._stop.is_set():
                    log.debug("%s: IDLE %s", label, self.folder)
                    conn.idle()
                    self.idling = True
                    started = time.monotonic()
                    quick = 0
                    while not self._stop.is_set() and time.monotonic() - started < IDLE_RENEW:
                        asked = time.monotonic()
                        if conn.idle_check(timeout=IDLE_CHECK):
                            self.dirty = True
                            quick = 0
                        elif time.monotonic() - asked < IDLE_CHECK / 2:
                            # imapclient answers nothing at once, not an error, when the
                            # server has closed the connection: without this the thread
                            # spins and changed() trusts a dead connection for good
                            quick += 1
                            if quick >= 3:
                                raise ConnectionError("the server closed the IDLE connection")
                        else:
                            quick = 0
                    self.idling = False
                    conn.idle_done()
            except Exception as e:  # lost connection, server restart: reconnect with backoff
                self.idling = False
                self.dirty = True
                if self._stop.is_set():
                    break
                failures += 1
                log.info("%s: IDLE on %s stopped (%s); reconnecting", label, self.folder, e)
                self._stop.wait(min(60.0, 0.5 * 2 ** min(failures, 7)))
            finally:
                self.idling = False
                if self._conn is not None:
                    conn, self._conn = self._conn, None
                    if self._stop.is_set():
                        try:
                            conn.shutdown()
                        except Exception:
                            pass
                    else:
                        _close(conn)


# -- listing parser -------------------------------------------------------------------

_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_DATE = re.compile(rb'\bINTERNALDATE "([^"]*)"')
_MONTHS = {m.encode(): i for i, m in enumerate(
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1)}


# INTERNALDATE as servers write it (``" 6-May-2024 10:00:00 +0200"``), in pieces for
# _internal_time: day, hour, minute, second, zone.
_INTERNALDATE = rb"( ?\d?\d-[A-Za-z]{3}-\d{4}) (\d\d):(\d\d):(\d\d) ([-+]\d{4})"
_USUAL_INTERNALDATE = re.compile(_INTERNALDATE)
_LISTED_HEAD = rb"\* \d+ FETCH \(UID (\d+) RFC822\.SIZE (\d+) INTERNALDATE "
_LISTED_TAIL = rb" BODY\[HEADER\.FIELDS \(SUBJECT DATE\)\] \{\d+\}\Z"
_LISTED = re.compile(_LISTED_HEAD + rb'"' + _INTERNALDATE + rb'"' + _LISTED_TAIL)
_LISTED_ANY_DATE = re.compile(_LISTED_HEAD + rb'"([^"]*)"' + _LISTED_TAIL)


_paused = 0  # listings now pausing the collector
_paused_lock = threading.Lock()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a listing makes its entries: they all live on, and
    each collection CPython would start on the way walks every object made so far (cold
    ``ls -l`` of 10,000 messages: -10 %). At most FETCH_CHUNK messages long; counted, since
    listings of several folders run in threads at once."""
    global _paused
    with _paused_lock:
        _paused += 1
        gc.disable()
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if not _paused:
                gc.enable()


def _listing_rows(replies: Iterable[imapfetch.Reply]
                  ) -> Iterator[tuple[int, int | None, float | None, bytes]]:
    """(uid, size, internaldate, header bytes) from the listing FETCH's replies: Dovecot's
    order in one regex match (that also splits the INTERNALDATE), any other shape through
    ``_parse_listing``."""
    for reply in replies:
        if len(reply) == 3 and reply[2] == b")":
            m = _LISTED.match(reply[0])
            if m is not None:
                uid, size, day, hour, minute, second, zone = m.groups()
                yield int(uid), int(size), _internal_time(day, hour, minute, second, zone), reply[1]
                continue
            m = _LISTED_ANY_DATE.match(reply[0])
            if m is not None:
                yield int(m[1]), int(m[2]), _internaldate(m[3]), reply[1]
                continue
        yield from _parse_listing(imapfetch.imaplib_shape(reply))


_BODY = re.compile(rb"\* \d+ FETCH \(UID (\d+) BODY\[\] \{\d+\}\Z")


def _body_of(reply: imapfetch.Reply) -> tuple[int | None, bytes]:
    """(uid, BODY[] bytes) of one reply to ``UID FETCH … (BODY.PEEK[])``; (None, b"") for
    any other (an unsolicited FLAGS update)."""
    if len(reply) == 3 and reply[2] == b")":
        m = _BODY.match(reply[0])
        if m is not None:
            return int(m[1]), reply[1]
    try:
        parsed = parse_fetch_response(imapfetch.imaplib_shape(reply), False, True)
    except Exception as e:  # a garbled reply loses one message, not the batch
        log.debug("unparsable FETCH response %r: %s", reply[0][:200], e)
        return None, b""
    for uid, values in parsed.items():
        if b"BODY[]" in values:
            return uid, values[b"BODY[]"] or b""
    return None, b""


def _parse_listing(data: list) -> list[tuple[int, int | None, float | None, bytes]]:
    """(uid, size, internaldate, header bytes) from imaplib's raw FETCH response items.

    A response with a literal comes as a tuple (line up to the literal, literal) followed by
    the rest of its line as bytes (servers put UID before or after the literal); that shape
    takes a few regex searches. Anything else goes through imapclient's general parser.
    """
    out = []
    i = 0
    while i < len(data):
        item = data[i]
        i += 1
        if isinstance(item, tuple):
            head, literal = item
            tail = b""
            if i < len(data) and isinstance(data[i], bytes):
                tail = data[i]
                i += 1
            line = head + b" " + tail
            uid = _UID.search(line)
            if uid is None:
                out.extend(_general([item, tail]))
                continue
            size = _SIZE.search(line)
            date = _DATE.search(line)
            out.append((int(uid.group(1)), int(size.group(1)) if size else None,
                        _internaldate(date.group(1)) if date else None, literal or b""))
        elif isinstance(item, bytes) and item.strip() not in (b")", b""):
            out.extend(_general([item]))
    return out


def _general(items: list) -> list[tuple[int, int | None, float | None, bytes]]:
    out = []
    try:
        parsed = parse_fetch_response(items, False, True)
    except Exception as e:  # a garbled line loses one message, not the listing
        log.debug("unparsable FETCH response %r: %s", items, e)
        return out
    for uid, values in parsed.items():
        if b"RFC822.SIZE" not in values and b"INTERNALDATE" not in values:
            continue  # an unsolicited update (FLAGS of a message another client read)
        internal = values.get(b"INTERNALDATE")
        header = next((v for k, v in values.items() if k.startswith(b"BODY[HEADER")), b"") or b""
        out.append((uid, values.get(b"RFC822.SIZE"),
                    internal.timestamp() if isinstance(internal, datetime) else None, header))
    return out


def _internaldate(text: bytes) -> float | None:
    """``17-Jul-1996 02:44:25 -0700`` → POSIX time (10× faster than strptime; the day's
    start is remembered, since a folder's messages share few days)."""
    m = _USUAL_INTERNALDATE.fullmatch(text)
    if m is not None:
        return _internal_time(*m.groups())
    try:
        date, clock, zone = text.split()
        start = _DAY_STARTS.get(date)
        if start is None:
            day, month, year = date.split(b"-")
            start = calendar.timegm((int(year), _MONTHS[month], int(day), 0, 0, 0))
            if len(_DAY_STARTS) >= 10_000:
                _DAY_STARTS.clear()
            _DAY_STARTS[date] = start
        h, m, s = clock.split(b":")
        offset = (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * (-1 if zone[:1] == b"-" else 1)
        return float(start + int(h) * 3600 + int(m) * 60 + int(s) - offset)
    except (ValueError, KeyError, IndexError):
        return None


_DAY_STARTS: dict[bytes, int] = {}
_TWO_DIGITS = {b"%02d" % i: i for i in range(100)}
_DAYS_SEEN: dict[bytes, int | None] = {}  # b" 6-May-2024" → its midnight (None: no such day)
_ZONES_SEEN: dict[bytes, int] = {}  # b"+0200" → seconds east of UTC


def _internal_time(day: bytes, hour: bytes, minute: bytes, second: bytes, zone: bytes
                   ) -> float | None:
    """The pieces of an INTERNALDATE that _INTERNALDATE matched → what ``_internaldate``'s
    general code makes of them, with each day and zone worked out once."""
    start = _DAYS_SEEN.get(day, -1)  # -1: not seen yet (no midnight is -1 s)
    if start == -1:
        d, month, year = day.split(b"-")
        try:
            start = calendar.timegm((int(year), _MONTHS[month], int(d), 0, 0, 0))
        except (KeyError, ValueError):  # a month in another case, year 0000
            start = None
        if len(_DAYS_SEEN) >= 10_000:
            _DAYS_SEEN.clear()
        _DAYS_SEEN[day] = start
    if start is None:
        return None
    offset = _ZONES_SEEN.get(zone)
    if offset is None:
        offset = (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60) * (-1 if zone[:1] == b"-" else 1)
        if len(_ZONES_SEEN) >= 10_000:
            _ZONES_SEEN.clear()
        _ZONES_SEEN[zone] = offset
    return float(start + _TWO_DIGITS[hour] * 3600 + _TWO_DIGITS[minute] * 60
                 + _TWO_DIGITS[second] - offset)


def _header_fields(raw: bytes) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = {}
    if b"\n " in raw or b"\n\t" in raw:
        raw = _FOLD.sub(b" ", raw)
    for line in raw.split(b"\n"):
        name, colon, value = line.partition(b":")
        if colon:
            fields.setdefault(name.strip().lower(), value.strip())
    return fields


_FOLD = re.compile(rb"\r?\n[ \t]+")
# The listing's header literal as Dovecot sends it: Subject and Date, each on one line, in
# the message's order, then the blank line. Values are stripped as _header_fields does.
_SUBJECT_DATE = re.compile(rb"(?i:subject):([^\r\n]*)\r\n(?i:date):([^\r\n]*)\r\n\r\n")
_DATE_SUBJECT = re.compile(rb"(?i:date):([^\r\n]*)\r\n(?i:subject):([^\r\n]*)\r\n\r\n")


def _subject_date(raw: bytes) -> tuple[bytes | None, bytes | None]:
    """``_header_fields(raw)``'s Subject and Date, without building the dict for the usual
    literal; anything else (one field missing, odd names or line ends) goes there."""
    m = _SUBJECT_DATE.fullmatch(raw) or _DATE_SUBJECT.fullmatch(raw)
    if m is None and (b"\n " in raw or b"\n\t" in raw):  # a match has no folds to undo
        unfolded = _FOLD.sub(b" ", raw)
        m = _SUBJECT_DATE.fullmatch(unfolded) or _DATE_SUBJECT.fullmatch(unfolded)
    if m is None:
        fields = _header_fields(raw)  # raw, not unfolded: unfolding twice may differ from once
        return fields.get(b"subject"), fields.get(b"date")
    if m.re is _SUBJECT_DATE:
        return m[1].strip(), m[2].strip()
    return m[2].strip(), m[1].strip()


def _entry(uidvalidity: int, uid: int, size: int | None, internal: float | None,
           header: bytes) -> Entry:
    subject, date_text = _subject_date(header)
    date = header_timestamp(date_text)
    when = date if date is not None else internal
    return Entry(message_name(str(uid), header_text(subject), when), False, size,
                 internal if internal is not None else date, (uidvalidity, uid))


def _check_size(entry: Entry | None, received: bytes | int) -> None:
    """RFC 3501: RFC822.SIZE is the size of BODY[]; a literal that says otherwise lies."""
    size = received if isinstance(received, int) else len(received)
    if entry is not None and entry.size is not None and size != entry.size:
        log.warning("message %s: the server sent %d bytes where it announced %d; not shown",
                    entry.name, size, entry.size)
        raise SizeMismatch(f"{entry.name}: {size} bytes received, {entry.size} announced")


# -- messages in ----------------------------------------------------------------------


def prepare_message(raw: bytes) -> tuple[bytes, datetime | None, str | None]:
    """The message as APPENDed (CRLF line ends), its Date and Message-ID; InvalidArgument if
    it is not a mail message, so nothing half-valid reaches the server."""
    if not raw.strip():
        raise InvalidArgument("an empty file is not a mail message")
    if b"\0" in raw:
        raise InvalidArgument("a mail message cannot contain NUL bytes (is this a binary file?)")
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
        tail = True
    else:
        tail = False
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    try:
        blank = lines.index(b"")
    except ValueError:
        blank = len(lines)
    head = lines[:blank]
    names = set()
    for i, line in enumerate(head):
        if line[:1] in (b" ", b"\t") and i > 0:
            continue
        m = re.match(rb"([\x21-\x39\x3b-\x7e]+):", line)
        if m is None:
            raise InvalidArgument(f"not a mail message: line {i + 1} of the header is not "
                                  f"'Name: value' ({line[:60]!r})")
        names.add(m.group(1).lower())
    if not names & MESSAGE_HEADERS:
        raise InvalidArgument("not a mail message: no From, To, Subject, Date or Message-ID header")
    message = b"\r\n".join(lines) + (b"\r\n" if tail else b"")
    headers = BytesHeaderParser(policy=compat32).parsebytes(b"\r\n".join(head) + b"\r\n\r\n")
    date = header_date(str(headers["Date"])) if headers["Date"] is not None else None
    message_id = str(headers["Message-ID"]).strip() if headers["Message-ID"] is not None else None
    return message, date, message_id or None


def _appenduid(response: bytes | str | None) -> tuple[int, int] | None:
    if isinstance(response, str):
        response = response.encode()
    m = re.search(rb"\[APPENDUID (\d+) (\d+)\]", response or b"", re.I)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _copyuid(code: bytes | str | None) -> tuple[int, int] | None:
    """(uidvalidity, new uid) from a COPYUID code: ``[COPYUID v old new]`` in a COPY reply,
    or ``v old new`` as imaplib files it from MOVE's untagged OK."""
    if isinstance(code, str):
        code = code.encode()
    if not code:
        return None
    m = (re.search(rb"\[COPYUID (\d+) \S+ (\d+)\]", code, re.I)
         or re.fullmatch(rb"(\d+) \S+ (\d+)", code.strip()))
    return (int(m.group(1)), int(m.group(2))) if m else None


def _folder_name(tree: FolderTree, path: Path) -> str:
    try:
        return tree.name_for(path)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


# -- helpers ----------------------------------------------------------------------------


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def _roomy_reader(conn: IMAPClient) -> None:
    """Give the connection's socket reader a ``READ_BUFFER``. Called only where the server
    waits for our next command (after its greeting, after STARTTLS), so the old reader holds
    nothing unread."""
    imap = conn._imap
    old = imap.file
    try:
        imap.file = imap.sock.makefile("rb", buffering=READ_BUFFER)
    except AttributeError:  # Python 3.14 made the reader imaplib's own: keep it
        return
    old.close()  # the socket stays open: makefile() readers only count references


def _close(conn: IMAPClient) -> None:
    try:
        conn.logout()
    except Exception:
        try:
            conn.shutdown()
        except Exception:
            pass


def _check(conn: IMAPClient) -> None:
    """A cheap round trip before reusing an idle connection."""
    conn.noop()


def classify(exc: BaseException) -> FsError:
    """Map a client failure to the FsError the user sees; only Transient ones are retried."""
    if isinstance(exc, imap_errors.LoginError):
        return AuthenticationFailed(f"the server said: {_reason(exc)}")
    if isinstance(exc, imap_errors.CapabilityError):
        return Unsupported(f"the IMAP server lacks {exc}")
    if isinstance(exc, imap_errors.IMAPClientAbortError):
        return Transient(f"connection to the IMAP server lost: {exc}")
    if isinstance(exc, imap_errors.IMAPClientReadOnlyError):
        return ReadOnly(f"the IMAP folder is read-only: {exc}")
    if isinstance(exc, imap_errors.IMAPClientError):
        reason = _reason(exc)
        upper = reason.upper()
        if "[AUTHENTICATIONFAILED]" in upper or "[AUTHORIZATIONFAILED]" in upper:
            return AuthenticationFailed(reason)
        if "[NONEXISTENT]" in upper or "DOESN'T EXIST" in upper or "NO SUCH" in upper:
            return NotFound(reason)
        if "[ALREADYEXISTS]" in upper or "ALREADY EXISTS" in upper:
            return AlreadyExists(reason)
        if "[OVERQUOTA]" in upper or "QUOTA" in upper:
            return NoSpace(reason)
        if "[NOPERM]" in upper:
            return PermissionDenied(reason)
        if "[UNAVAILABLE]" in upper or "[INUSE]" in upper or "[SERVERBUG]" in upper:
            return Transient(reason)
        if "[CANNOT]" in upper or "[PARSE]" in upper:
            return InvalidArgument(reason)
        return FsError(f"IMAP server: {reason}")
    failure = connection_failure(exc, "the IMAP server")
    if failure is not None:
        return failure
    return FsError(repr(exc))


def _reason(exc: BaseException) -> str:
    """The server's words from an imapclient error (``b'[CODE] text'`` or ``cmd failed: …``)."""
    text = str(exc)
    m = re.search(r"""b(['"])(.*)\1\]?\s*$""", text)
    if m:
        text = text[:m.start()] + m.group(2)
    return text.strip()
