"""IMAP: folders as directories, every message an ``.eml`` file holding the server's exact bytes.

Layout. Folders nest by the server's hierarchy delimiter (``Archive/2024``); names are shown
decoded from modified UTF-7. A ``\\Noselect`` parent is a plain directory without messages.
Messages are named ``message_name(uid, Subject, Date)`` — ``2024-05-01 1330 Lunch [42].eml``
— stable across mounts, unique in the folder. ``st_size`` is RFC822.SIZE, ``st_mtime`` the
INTERNALDATE, the identity (and content-cache key) ``(UIDVALIDITY, UID)``: a folder recreated
with a new UIDVALIDITY gets new identities, so stale bytes are never served.

Listing. One batched ``FETCH 1:N (UID RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS
(SUBJECT DATE)])`` in chunks of ``FETCH_CHUNK`` messages, read off the wire by ``fetch``
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

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import trio
from imapclient import IMAPClient
from imapclient import exceptions as imap_errors

from ...config import Account
from ...credentials import Secret
from ...errors import (
    AlreadyExists, FsError, IsADirectory, NotEmpty, NotFound,
    NotPermitted, ReadOnly, TooLarge, Transient,
)
from ...net.pool import ConnectionPool
from ..base import BATCH_ITEM_LIMIT, BackendBase, Capabilities, Content, Entry, KeepsSentMail, Path
from . import fetch as imapfetch
from .folders import Folder, FolderTree
from ..mailnames import SUFFIX as EML_SUFFIX

from .flags import ImapFlags
from .idle import IdleWatcher
from .listing import FolderState, ImapListing
from .parse import _append, _appenduid, _body_of, _check_size, _copyuid, _folder_name, _write, prepare_message
from .session import ImapSession, _check, _close, classify

log = logging.getLogger(__name__)

WHOLE_LIMIT = 8 << 20  # bigger messages are downloaded in partial fetches of PART bytes
PART = 4 << 20
BATCH = 64  # messages per download_many (the prefetcher also bounds a batch's bytes)
IDLE_TTL = 1.0  # listing TTL with IDLE on: the INBOX check is then free, others one STATUS


def create(account: Account, secret: Secret, env: Any) -> ImapBackend:
    return ImapBackend(account, secret)


class ImapBackend(ImapSession, ImapListing, ImapFlags, BackendBase, KeepsSentMail):
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
        self._watcher: IdleWatcher | None = None

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

    async def probe(self) -> None:
        await self.pool.probe()

    async def aclose(self) -> None:
        if self._watcher is not None:
            await trio.to_thread.run_sync(self._watcher.stop)
        await self.pool.aclose()


