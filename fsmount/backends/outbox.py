"""The outbox: a folder where closing (or renaming into) a ``*.eml`` file sends it by SMTP.

What the user sees (the root of an ``smtp``/``smtps`` account):

- ``NAME.eml`` — a message that is queued, being retried, failed, or was refused. Only names
  ending in ``.eml`` are taken, so editors' temporary and swap files are never sent: every
  other name is an ordinary local file (kept under the state dir, never sent).
- ``NAME.eml.status`` — read-only text next to each message: status (``queued``,
  ``sending``, ``retrying``, ``sent``, ``failed``, ``refused``, ``may-have-been-sent``), when
  it leaves, the last server reply, the next retry time and each recipient's fate. The same
  facts are extended attributes of the message: ``user.outbox.status``,
  ``user.outbox.last_reply``, ``user.outbox.next_retry`` (ISO 8601 UTC, empty when none),
  ``user.outbox.recipients`` (one ``address: state`` per line). Setting ``user.outbox.send``
  sends a waiting message now, and one that may have been sent, again.
- ``sent/`` — copies of sent messages when no IMAP Sent folder is linked.

A sent message leaves the outbox (into the linked IMAP account's Sent folder, flagged
``\\Seen``, or into ``sent/``). A message some recipients refused for good stays, ``failed``,
after its copy was filed, so the user sees who did not get it.

Guarantees: ``commit`` (the VFS calls it inside ``close()``) validates the message and makes
it durable in the queue (``outqueue``) before returning, so a successful ``close()`` means
"will be sent", across crashes and remounts. A message that cannot be sent as written is
kept under its name with status ``refused`` and the reason, and ``close()`` fails with
``EINVAL``; nothing is sent.

Sending happens in ``run`` — the mount starts it in its nursery::

    await nursery.start(backend.run)

A message is first tried ``send_delay`` seconds after it was last saved or renamed (an
editor's successive saves replace it meanwhile, so one message leaves, with the final text).
It resends what is pending at startup (a later mount after ``kill -9`` delivers), sends in
worker threads (at most ``connections`` at once), retries temporary failures from
``retry_first`` seconds, doubling up to ``retry_max``, and gives up after ``max_lifetime``.
After a crash during an attempt, a message whose Message-ID is already in the linked Sent
folder is not sent again.

Never twice: just before the final "." of DATA the record says so durably (``final_dot``).
When the answer to that dot is lost, or a restart finds the record in that state, the
message becomes ``may-have-been-sent`` (unless the linked Sent folder holds it: then it
counts as sent) and is sent again only when the user asks. ``flush_queue()`` waits until
nothing is left to try (tests).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import math
import os
import secrets
import shutil
import stat
import time
from datetime import datetime, timezone
from pathlib import Path as FsPath
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio

from ..config import Account
from ..credentials import Secret
from ..errors import (
    ConfigError, FsError, InvalidArgument, IsADirectory, NotADirectory, NotFound, NotPermitted,
    Transient,
)
from ..net.tls import client_context
from . import Environment
from .base import BackendBase, Capabilities, Content, Entry, Path
from .mailnames import message_name
from .outqueue import FAILED, PENDING, SENT, OutQueue, Record, new_id
if TYPE_CHECKING:
    from ..cache.links import SentLink
from .smtpsend import (
    Outcome, Prepared, Refused, SendFailure, Server, Unconfirmed, prepare, submit, without_hidden,
)

log = logging.getLogger(__name__)

SENT_DIR = "sent"
LOCK_POLL = 2.0  # seconds between checks whether another mount stopped sending this outbox
STATUS_SUFFIX = ".status"
SEND_XATTR = "outbox.send"  # user.outbox.send: "send this message now / again"
UNSURE = "may-have-been-sent"


def create(account: Account, secret: Secret, env: Environment) -> OutboxBackend:
    return OutboxBackend(account, secret, env)


def is_message_name(name: str) -> bool:
    return name.lower().endswith(".eml") and len(name) > 4


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class OutboxBackend(BackendBase):
    capabilities = Capabilities(
        ranged_read=True, write=True, overwrite=True, remove=True, rename=True, xattrs=True,
        set_mode=True, set_mtime=True,  # kept for plain files; a no-op on messages (cp -p, rsync)
        metadata_ttl=0.05,  # the sender changes the listing; ``changed`` makes re-checks free
        coupled_names=True,  # NAME.eml.status comes and goes with NAME.eml
    )

    def __init__(self, account: Account, secret: Secret, env: Environment) -> None:
        self.account = account
        self.secret = secret
        self.env = env
        self.root = FsPath(env.state_dir) / "outbox" / account.name
        self.files = self.root / "files"
        self.sent_dir = self.root / SENT_DIR
        self.queue = OutQueue(self.root / "queue")
        self._records: dict[str, Record] | None = None  # by name; loaded on first use
        self._busy: set[str] = set()  # record ids with an attempt under way in this process
        self._held: set[str] = set()  # record ids a user operation is changing right now
        self._revision: dict[str, int] = {}  # record id → status version (status file identity)
        self._version = 0  # bumped on every change of the outbox folder
        self._listed: dict[Path, int] = {}
        self._wake = trio.Event()
        self._progress = trio.Event()
        self._limiter = trio.CapacityLimiter(max(1, int(account["connections"])))
        self._server: Server | None = None
        self._warned: set[str] = set()
        self._started = time.time()
        self._lock_fd: int | None = None

    # -- state -----------------------------------------------------------------------------

    async def _load(self) -> dict[str, Record]:
        if self._records is None:
            records = await trio.to_thread.run_sync(self._load_sync)
            if self._records is None:
                self._records = {r.name: r for r in records}
        return self._records

    def _load_sync(self) -> list[Record]:
        self.files.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.queue.load()

    def _changed(self, record: Record | None = None) -> None:
        self._version += 1
        if record is not None:
            self._revision[record.id] = self._revision.get(record.id, 0) + 1
        self._progress.set()
        self._progress = trio.Event()

    def _uses_local_sent(self) -> bool:
        """Copies go to sent/ (or went there once, when the linked Sent folder failed)."""
        local = not self.account["sent_account"] and not self.account["provider_files_sent"]
        return local or self.sent_dir.is_dir()

    def _status(self, record: Record) -> str:
        if record.refused:
            return "refused"
        if record.unsure:
            return UNSURE
        if record.id in self._busy and record.waiting:
            return "sending"
        if record.waiting:
            return "retrying" if record.attempts else "queued"
        if record.failures:
            return "failed"
        return "sent"

    # -- reading the folder ----------------------------------------------------------------

    async def list(self, path: Path) -> list[Entry]:
        records = await self._load()
        self._listed[path] = self._version
        if path == (SENT_DIR,) and self._uses_local_sent():
            return await trio.to_thread.run_sync(_list_dir, self.sent_dir)
        if path:
            raise NotADirectory("/".join(path)) if await self._is_file(path) else NotFound("/".join(path))
        entries = await trio.to_thread.run_sync(_list_dir, self.files)
        taken = {r.name for r in records.values()} | {r.name + STATUS_SUFFIX for r in records.values()}
        entries = [e for e in entries if e.name not in taken]
        for record in records.values():
            entries.append(self._message_entry(record))
            entries.append(self._status_entry(record))
        if self._uses_local_sent():
            entries.append(Entry(SENT_DIR, True, mtime=self._started))
        return entries

    async def _is_file(self, path: Path) -> bool:
        try:
            return not (await self.stat(path)).is_dir
        except NotFound:
            return False

    async def stat(self, path: Path) -> Entry:
        records = await self._load()
        if not path:
            return Entry("", True, mtime=self._started)
        if len(path) == 1:
            name = path[0]
            if name in records:
                return self._message_entry(records[name])
            record = self._record_of_status(name)
            if record is not None:
                return self._status_entry(record)
            if name == SENT_DIR and self._uses_local_sent():
                return Entry(SENT_DIR, True, mtime=self._started)
            return await trio.to_thread.run_sync(_stat_file, self.files, name)
        if len(path) == 2 and path[0] == SENT_DIR and self._uses_local_sent():
            return await trio.to_thread.run_sync(_stat_file, self.sent_dir, path[1])
        raise NotFound("/".join(path))

    def _record_of_status(self, name: str) -> Record | None:
        if self._records is None or not name.endswith(STATUS_SUFFIX):
            return None
        return self._records.get(name[: -len(STATUS_SUFFIX)])

    def _message_entry(self, record: Record) -> Entry:
        try:
            size = self.queue.message_path(record).stat().st_size
        except OSError:
            size = 0
        return Entry(record.name, False, size, record.queued, identity=("msg", record.id), mode=0o644)

    def _status_entry(self, record: Record) -> Entry:
        text = self.status_text(record).encode()
        identity = ("status", record.id, self._revision.get(record.id, 0))
        # The text changes while the sender works: a size hint (not exact) makes the VFS read
        # it without the kernel cutting reads at a size that may already be stale.
        return Entry(record.name + STATUS_SUFFIX, False, len(text), record.queued,
                     identity=identity, mode=0o444, size_exact=False)

    async def changed(self, path: Path) -> bool:
        return self._listed.get(path) != self._version

    async def read(self, path: Path, offset: int, size: int) -> bytes:
        await self._load()
        if len(path) == 1 and self._record_of_status(path[0]) is not None:
            text = self.status_text(self._record_of_status(path[0])).encode()  # type: ignore[arg-type]
            return text[offset:offset + size]
        file = self._local_path(path)
        return await trio.to_thread.run_sync(_pread, file, offset, size)

    async def download(self, path: Path, into: str) -> Entry:
        await self._load()
        if len(path) == 1 and self._record_of_status(path[0]) is not None:
            text = self.status_text(self._record_of_status(path[0])).encode()  # type: ignore[arg-type]
            await trio.to_thread.run_sync(FsPath(into).write_bytes, text)
        else:
            await trio.to_thread.run_sync(shutil.copyfile, self._local_path(path), into)
        return await self.stat(path)

    def _local_path(self, path: Path) -> FsPath:
        """The local file holding ``path``'s bytes (a queued message, a plain file, a sent copy)."""
        assert self._records is not None
        if len(path) == 1:
            if path[0] in self._records:
                return self.queue.message_path(self._records[path[0]])
            if path[0] == SENT_DIR and self._uses_local_sent():
                raise IsADirectory(SENT_DIR)
            return self.files / _safe(path[0])
        if len(path) == 2 and path[0] == SENT_DIR and self._uses_local_sent():
            return self.sent_dir / _safe(path[1])
        raise NotFound("/".join(path))

    # -- status ----------------------------------------------------------------------------

    def status_text(self, record: Record) -> str:
        status = self._status(record)
        lines = [f"status: {status}"]
        if record.refused:
            lines += [f"reason: {record.refused}",
                      "nothing was sent; fix the file and save it again, or remove it"]
            return "\n".join(lines) + "\n"
        lines += [f"message-id: {record.message_id}", f"from: {record.sender}",
                  f"queued: {_iso(record.queued)}", f"attempts: {record.attempts}"]
        if record.unsure:
            lines += [f"may have been sent: {record.unsure}",
                      "the server may have accepted it; it is not sent again on its own",
                      f"sent check: {record.sent_check}",
                      f"to send it again: setfattr -n user.{SEND_XATTR} -v 1 {record.name}",
                      "  (or save it again); to drop it: rm it"]
        elif record.waiting and record.id not in self._busy and not record.attempts:
            lines.append(f"leaves at: {_iso(max(record.next_try, record.queued))} "
                         "(saving or renaming it before then restarts the wait)")
        elif record.waiting and record.attempts and record.id not in self._busy:
            lines.append(f"next retry: {_iso(record.next_try)}")
        if record.last_reply:
            lines.append(f"last reply: {record.last_reply}")
        if record.gave_up:
            lines.append(f"gave up: {record.gave_up}")
        if record.recipients:
            lines.append("recipients:")
            lines += [f"  {line}" for line in self._recipient_lines(record)]
        if record.news:
            reply = f" ({record.news_reply})" if record.news_reply else ""
            lines.append(f"newsgroups: {record.news}{reply}")
        if record.filed:
            lines.append(f"copy filed in: {record.filed}")
        return "\n".join(lines) + "\n"

    def _recipient_lines(self, record: Record) -> list[str]:
        words = {PENDING: "waiting", SENT: "sent", FAILED: "failed"}
        out = []
        for address, state in record.recipients.items():
            reply = record.replies.get(address)
            word = words[state]
            if record.unsure and state == PENDING and address in record.final_dot:
                word = "may have been sent"
            out.append(f"{address}: {word}" + (f" ({reply})" if reply else ""))
        return out

    async def get_xattrs(self, path: Path) -> dict[str, bytes]:
        records = await self._load()
        record = records.get(path[0]) if len(path) == 1 else None
        if record is None:
            return {}
        next_retry = ""
        if record.waiting and record.attempts and record.id not in self._busy:
            next_retry = datetime.fromtimestamp(record.next_try, timezone.utc).isoformat(timespec="seconds")
        return {
            "outbox.status": self._status(record).encode(),
            "outbox.last_reply": (record.refused or record.last_reply).encode(),
            "outbox.next_retry": next_retry.encode(),
            "outbox.recipients": "\n".join(self._recipient_lines(record)).encode(),
        }

    async def set_xattr(self, path: Path, name: str, value: bytes) -> None:
        """``user.outbox.send`` on a message: send it now (one that may have been sent: again)."""
        records = await self._load()
        record = records.get(path[0]) if len(path) == 1 else None
        if name != SEND_XATTR or record is None:
            raise NotPermitted("the outbox status attributes are read-only "
                               f"(only user.{SEND_XATTR} can be set, on a message)")
        await self._send_now(record)

    async def _send_now(self, record: Record) -> None:
        with self._holding(record):
            if record.unsure:
                log.info("%s: sending it again, as asked (it may have been sent before: %s)",
                         record.name, record.unsure)
                record.unsure = record.sent_check = ""
                record.final_dot, record.final_dot_at = [], 0.0
            elif record.waiting:
                log.info("%s: sending it now, as asked", record.name)
            else:
                raise InvalidArgument(f"{record.name} has nothing left to send "
                                      f"(status: {self._status(record)})")
            record.next_try = time.time()
            await self._save(record)

    # -- changes from the user ---------------------------------------------------------------

    async def commit(self, path: Path, content: Content, replacing: Entry | None) -> Entry:
        await self._load()
        name = self._writable_name(path)
        if is_message_name(name):
            return await self._take_message(name, await content.read_all())
        await trio.to_thread.run_sync(_copy_into, content, self.files / _safe(name))
        self._changed()
        return await self.stat(path)

    def _writable_name(self, path: Path) -> str:
        if len(path) != 1:
            if path and path[0] == SENT_DIR:
                raise NotPermitted("sent/ holds copies of sent messages; write into the outbox")
            raise NotFound("/".join(path))
        name = path[0]
        if self._record_of_status(name) is not None:
            raise NotPermitted(f"{name} is the read-only status of a message")
        if name == SENT_DIR and self._uses_local_sent():
            raise IsADirectory(name)
        return name

    @contextlib.contextmanager
    def _holding(self, *records: Record | None) -> Iterator[None]:
        """Keep the sender away from ``records`` while a user operation changes them."""
        held = [r for r in records if r is not None]
        for record in held:
            if record.id in self._busy or record.id in self._held:
                raise NotPermitted(f"{record.name} is being sent right now; try again in a moment")
        ids = {r.id for r in held}
        self._held |= ids
        try:
            yield
        finally:
            self._held -= ids
            self._wake.set()

    async def _take_message(self, name: str, data: bytes) -> Entry:
        """Validate and enqueue durably; replace what had this name. Refusal: kept + EINVAL."""
        records = await self._load()
        now = time.time()
        # Not sent before ``send_delay`` has passed: an editor's next save replaces it first.
        record = Record(id=new_id(), name=name, queued=now, next_try=now + self._send_delay())
        try:
            message = prepare(data, self.account["from"], now)
        except Refused as e:
            record.refused = str(e)
            stored = data
        else:
            self._fill(record, message)
            stored = message.data
        old = records.get(name)
        with self._holding(old):
            await trio.to_thread.run_sync(self._enqueue_sync, record, stored, old, name)
        records[name] = record
        self._changed(record)
        self._wake.set()
        if record.refused:
            log.info("%s refused: %s", name, record.refused)
            raise InvalidArgument(f"{name}: {record.refused}")
        log.info("%s queued for %s", name, ", ".join(record.recipients) or "news")
        return self._message_entry(record)

    def _send_delay(self) -> float:
        return float(self.account["send_delay"])

    def _fill(self, record: Record, message: Prepared) -> None:
        record.sender = message.sender
        record.message_id = message.message_id
        record.subject = message.subject
        record.recipients = dict.fromkeys(message.recipients, PENDING)
        if message.newsgroups and not self.account["news_account"]:
            record.refused = "it has a Newsgroups: line, but no news_account is linked to this outbox"
            record.recipients = {}
        elif message.newsgroups:
            record.news = PENDING

    def _enqueue_sync(self, record: Record, data: bytes, old: Record | None, name: str) -> None:
        self.queue.add(record, data)
        if old is not None:
            self.queue.remove(old)
        (self.files / _safe(name)).unlink(missing_ok=True)

    async def remove(self, path: Path) -> None:
        records = await self._load()
        if len(path) == 1 and path[0] in records:
            record = records[path[0]]
            with self._holding(record):
                await trio.to_thread.run_sync(self.queue.remove, record)
            del records[path[0]]
            if record.waiting:
                log.info("%s removed from the outbox before it was sent", record.name)
        elif len(path) == 1 and self._record_of_status(path[0]) is not None:
            raise NotPermitted("remove the message, not its status")
        else:
            file = self._local_path(path)
            try:
                await trio.to_thread.run_sync(os.unlink, file)
            except FileNotFoundError:
                raise NotFound("/".join(path)) from None
            except IsADirectoryError:
                raise IsADirectory("/".join(path)) from None
        self._changed()

    async def rename(self, old: Path, new: Path) -> Entry | None:
        records = await self._load()
        if old == new:
            return await self.stat(new)
        name = self._writable_name(new)
        source = records.get(old[0]) if len(old) == 1 else None
        if len(old) == 1 and self._record_of_status(old[0]) is not None:
            raise NotPermitted("a status file cannot be moved")
        with self._holding(source):
            return await self._rename(old, new, name, source)

    async def _rename(self, old: Path, new: Path, name: str, source: Record | None) -> Entry | None:
        records = await self._load()
        if source is not None and is_message_name(name):
            replaced = records.get(name)
            if not source.attempts:  # renamed before it left: the grace period starts again
                source.next_try = max(source.next_try, time.time() + self._send_delay())
            with self._holding(replaced if replaced is not source else None):
                await trio.to_thread.run_sync(self._rename_record_sync, source, name, replaced)
            records.pop(name, None)
            del records[source.name]
            source.name = name
            records[name] = source
            self._changed(source)
            return self._message_entry(source)
        src_file = self._local_path(old)
        if not await trio.to_thread.run_sync(src_file.exists):
            raise NotFound("/".join(old))
        if is_message_name(name):
            data = await trio.to_thread.run_sync(_read_bytes, str(src_file))
            try:
                entry = await self._take_message(name, data)
            except InvalidArgument:  # kept under the new name as refused, with the reason
                await trio.to_thread.run_sync(_unlink, src_file)
                self._changed()
                raise
            await trio.to_thread.run_sync(_unlink, src_file)
            self._changed()
            return entry
        target = self.files / _safe(name)
        if source is not None:  # a queued message renamed to a non-message name: unqueued
            await trio.to_thread.run_sync(self.queue.copy_out, source, target)
            await trio.to_thread.run_sync(self.queue.remove, source)
            del records[source.name]
        else:
            await trio.to_thread.run_sync(os.replace, src_file, target)
        self._changed()
        return await self.stat(new)

    def _rename_record_sync(self, record: Record, name: str, replaced: Record | None) -> None:
        self.queue.save(dataclasses.replace(record, name=name))
        if replaced is not None and replaced.id != record.id:
            self.queue.remove(replaced)

    async def mkdir(self, path: Path) -> None:
        raise NotPermitted("the outbox has no subfolders of its own")

    async def set_mode(self, path: Path, mode: int) -> None:
        await self._touch_local(path, lambda f: os.chmod(f, mode))

    async def set_mtime(self, path: Path, mtime: float) -> None:
        await self._touch_local(path, lambda f: os.utime(f, (mtime, mtime)))

    async def _touch_local(self, path: Path, change: Any) -> None:
        """Plain files take the change; a message ignores it (its time is when it was queued),
        and so do the outbox and its sent folder (``rsync -a`` sets the times of folders too)."""
        records = await self._load()
        if len(path) == 1 and (path[0] in records or self._record_of_status(path[0]) is not None):
            return
        if not path or path == (SENT_DIR,):
            return
        file = self._local_path(path)
        try:
            await trio.to_thread.run_sync(change, file)
        except FileNotFoundError:
            raise NotFound("/".join(path)) from None
        self._changed()

    # -- sending -----------------------------------------------------------------------------

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The sender: resend what is pending, then send what arrives, until cancelled."""
        records = await self._load()
        if not await trio.to_thread.run_sync(self._lock_queue):
            log.warning("%s: another fsmount is sending this outbox; this one sends once that "
                        "one ends", self.account.name)
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            while not await trio.to_thread.run_sync(self._lock_queue):
                await trio.sleep(LOCK_POLL)
            records = await self._reload()
        pending = [r for r in records.values() if self._due_work(r)]
        if pending:
            log.info("%s: %d message(s) waiting in the outbox", self.account.name, len(pending))
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._wake = trio.Event()
                soonest = self._start_due(records, nursery)
                with trio.move_on_after(max(0.0, soonest - time.time())):
                    await self._wake.wait()

    def _start_due(self, records: dict[str, Record], nursery: trio.Nursery) -> float:
        """Start an attempt for every message that is due; → when the next one will be."""
        now = time.time()
        soonest = math.inf
        for record in list(records.values()):
            if record.id in self._busy or record.id in self._held or not self._due_work(record):
                continue
            if record.next_try <= now:
                self._busy.add(record.id)
                self._changed(record)
                nursery.start_soon(self._process, record)
            else:
                soonest = min(soonest, record.next_try)
        return soonest

    async def _reload(self) -> dict[str, Record]:
        """The queue as the previous sender left it (plus what was queued here meanwhile)."""
        loaded = await trio.to_thread.run_sync(self.queue.load)
        records = self._records if self._records is not None else {}
        known = {r.id for r in records.values()}
        for record in loaded:
            if record.id not in known and record.name not in records:
                records[record.name] = record
            elif record.id in known:  # the other sender's progress replaces ours
                records[record.name] = record
        self._records = records
        self._changed()
        return records

    def _due_work(self, record: Record) -> bool:
        if record.unsure:
            return False  # waits for the user
        if record.final_dot:
            return True  # left by a crash after the final dot: to be marked, never resent as is
        return record.waiting or (record.delivered and not record.filed and not record.refused)

    def _lock_queue(self) -> bool:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    async def flush_queue(self) -> None:
        """Wait until no message has anything left to try (sent, failed or refused)."""
        records = await self._load()
        while any(self._due_work(r) or r.id in self._busy for r in records.values()):
            await self._progress.wait()

    async def _process(self, record: Record) -> None:
        try:
            if record.final_dot and not record.unsure:  # a previous process died right there
                await self._unconfirmed(record, "fsmount stopped after the end of the message "
                                        f"was sent ({_iso(record.final_dot_at)}), before the "
                                        "server's answer was recorded")
            if record.waiting:
                await self._attempt(record)
            if record.unsure:
                return
            if not record.waiting and record.delivered and not record.filed:
                await self._file(record)
            if not record.waiting and record.filed and not record.failures:
                await trio.to_thread.run_sync(self.queue.remove, record)
                if self._records is not None and self._records.get(record.name) is record:
                    del self._records[record.name]
                log.info("%s sent", record.name)
        except FsError as e:  # filing failed for now: try again later
            self._schedule_retry(record, f"filing the copy failed: {e}")
            await self._save(record)
        except Exception:  # a bug must not end the mount: keep the message, try later
            log.exception("%s: unexpected error while sending", record.name)
            self._schedule_retry(record, "unexpected error")
            record.in_flight = False
            await self._save(record)
        finally:
            self._busy.discard(record.id)
            self._changed(record)
            self._wake.set()

    async def _attempt(self, record: Record) -> None:
        if record.in_flight and await self._already_in_sent(record):
            log.info("%s: found in the Sent folder after a crash; not sending it again", record.name)
            for address in record.pending:
                record.recipients[address] = SENT
                record.replies[address] = "assumed delivered: its copy is in the Sent folder"
            if record.news == PENDING:
                record.news = SENT
            record.in_flight = False
            await self._save(record)
            return
        if time.time() - record.queued > self.account["max_lifetime"] and record.attempts:
            self._give_up(record)
            await self._save(record)
            return
        record.in_flight = True
        record.attempts += 1
        await self._save(record)
        if record.pending:
            await self._send_mail(record)
        if record.news == PENDING:
            await self._post_news(record)
        record.in_flight = False
        if record.waiting:
            self._schedule_retry(record, record.last_reply)
        await self._save(record)

    async def _send_mail(self, record: Record) -> None:
        data = await trio.to_thread.run_sync(self.queue.read, record)
        message = prepare(data, self.account["from"], record.queued)
        recipients = record.pending
        try:
            try:
                server = self._submission_server()
            except ConfigError as e:
                raise SendFailure(str(e), account=True) from None
            async with self._limiter:
                outcome: Outcome = await trio.to_thread.run_sync(
                    submit, server, message, recipients,
                    lambda accepted: self._before_final_dot(record, accepted))
        except Unconfirmed as e:
            record.last_reply = e.reply
            for address in e.recipients:
                record.replies[address] = e.reply
            when = _iso(record.final_dot_at or time.time())
            await self._unconfirmed(record, f"{e.reply}, at {when}")
            return
        except SendFailure as e:
            record.final_dot, record.final_dot_at = [], 0.0  # answered (or never got that far)
            record.last_reply = e.reply
            if e.account and e.reply not in self._warned:
                self._warned.add(e.reply)
                log.warning("%s: cannot send: %s", self.account.name, e.reply)
            for address in recipients:
                record.replies[address] = e.reply
                if e.permanent:
                    record.recipients[address] = FAILED
            if e.permanent:
                log.warning("%s: the server refused it: %s", record.name, e.reply)
            return
        record.final_dot, record.final_dot_at = [], 0.0  # the server answered the final dot
        # what the user needs to read: why it is still waiting, else the final answer
        record.last_reply = next(iter(outcome.temporary.values()), outcome.reply)
        for address, reply in outcome.accepted.items():
            record.recipients[address] = SENT
            record.replies[address] = reply
        for address, reply in outcome.permanent.items():
            record.recipients[address] = FAILED
            record.replies[address] = reply
        for address, reply in outcome.temporary.items():
            record.replies[address] = reply
        if outcome.permanent:
            log.warning("%s: refused for %s", record.name,
                        "; ".join(f"{a} ({r})" for a, r in outcome.permanent.items()))
        if outcome.temporary and outcome.accepted:
            log.info("%s: sent to %s; will retry %s", record.name, ", ".join(outcome.accepted),
                     ", ".join(outcome.temporary))

    def _before_final_dot(self, record: Record, accepted: list[str]) -> None:
        """In the sending thread: make "the server may have it from now on" durable."""
        record.final_dot, record.final_dot_at = list(accepted), time.time()
        self.queue.save(record)
        trio.from_thread.run_sync(self._changed, record)

    async def _unconfirmed(self, record: Record, why: str) -> None:
        """The server may have accepted the message (its answer to the final dot is unknown).

        A copy in the linked Sent folder proves delivery: then it counts as sent. Its absence
        proves nothing: fsmount files its copy only after the server's answer (which it never
        recorded here), and a provider that files copies itself (provider_files_sent) may do so
        after accepting the message. So it is never sent again on its own: the user decides.
        """
        record.in_flight = False
        found, check = await self._sent_check(record)
        if found:
            log.info("%s: its answer was lost, but its copy is in the Sent folder: counted as sent",
                     record.name)
            for address in record.final_dot:
                if record.recipients.get(address) == PENDING:
                    record.recipients[address] = SENT
                    record.replies[address] = "assumed delivered: its copy is in the Sent folder"
            record.final_dot, record.final_dot_at = [], 0.0
        else:
            record.unsure, record.sent_check = why, check
            log.warning("%s may have been sent (Message-ID %s): %s; it is not sent again unless "
                        "asked (setfattr -n user.%s -v 1)", record.name, record.message_id, why,
                        SEND_XATTR)
        await self._save(record)

    def _submission_server(self) -> Server:
        if self._server is None:
            acc = self.account
            self._server = Server(
                host=acc.host, port=acc.port, tls=acc.tls,
                context=client_context(acc["ca_file"], acc["tls_verify"]),
                user=acc.user, password=self.secret.password, timeout=float(acc["timeout"]),
                plaintext_auth=bool(acc["plaintext_auth"]),
            )
        return self._server

    async def _post_news(self, record: Record) -> None:
        links = self.env.links
        peer = links.news(self.account["news_account"]) if links is not None else None
        if peer is None:
            record.news, record.news_reply = FAILED, "the linked news account is not available"
            return
        data = await trio.to_thread.run_sync(self.queue.read, record)
        try:
            await peer.post(without_hidden(data))
        except Transient as e:
            record.news_reply = f"posting failed for now: {e}"
            record.last_reply = record.news_reply
        except FsError as e:
            record.news, record.news_reply = FAILED, f"posting refused: {e}"
            log.warning("%s: %s", record.name, record.news_reply)
        else:
            record.news, record.news_reply = SENT, "posted"

    def _schedule_retry(self, record: Record, reply: str) -> None:
        first = float(self.account["retry_first"])
        delay = min(first * 2 ** max(0, record.attempts - 1), float(self.account["retry_max"]))
        record.next_try = time.time() + delay
        log.info("%s: will retry at %s (%s)", record.name, _iso(record.next_try), reply)

    def _give_up(self, record: Record) -> None:
        days = self.account["max_lifetime"] / 86400
        record.gave_up = f"no success within {days:g} days ({record.attempts} attempts)"
        for address in record.pending:
            record.recipients[address] = FAILED
        if record.news == PENDING:
            record.news = FAILED
        log.warning("%s: %s; last reply: %s", record.name, record.gave_up, record.last_reply)

    async def _save(self, record: Record) -> None:
        await trio.to_thread.run_sync(self.queue.save, record)
        self._changed(record)

    # -- the Sent copy -------------------------------------------------------------------------

    def _sent_peer(self) -> SentLink | None:
        links = self.env.links
        return links.sent(self.account["sent_account"]) if links is not None else None

    async def _already_in_sent(self, record: Record) -> bool:
        return (await self._sent_check(record))[0]

    async def _sent_check(self, record: Record) -> tuple[bool, str]:
        """→ (its Message-ID is in the linked Sent folder, what the check found, for the user)."""
        peer = self._sent_peer()
        if peer is None:
            return False, "no Sent folder is linked (sent_account), nothing to check"
        if not record.message_id:
            return False, "it has no Message-ID to look for"
        account = self.account["sent_account"]
        try:
            folder = await peer.folder()
            if folder is None:
                return False, f"{account} has no Sent folder"
            if await peer.holds(folder, record.message_id):
                return True, f"found in {account}:{'/'.join(folder)}"
        except FsError as e:
            log.info("%s: cannot check the Sent folder (%s)", record.name, e)
            return False, f"cannot check {account} ({e})"
        return False, (f"not in {account}:{'/'.join(folder)}, which does not prove it was not "
                       "delivered (the copy is filed after the server's answer)")

    async def _file(self, record: Record) -> None:
        """Copy the sent message where the user keeps sent mail (once)."""
        if self.account["provider_files_sent"]:
            record.filed = "the provider's Sent folder (provider_files_sent)"
        elif self._sent_peer() is not None:
            record.filed = await self._file_linked(record)
        else:
            record.filed = await self._file_locally(record)
        await self._save(record)

    async def _file_linked(self, record: Record) -> str:
        """APPEND to the linked account's Sent folder; sent/ when it has none or refuses."""
        peer, account = self._sent_peer(), self.account["sent_account"]
        assert peer is not None
        try:
            folder = await peer.folder()
            if folder is None:
                raise NotFound(f"{account} has no Sent folder")
            if not await peer.holds(folder, record.message_id):
                data = await trio.to_thread.run_sync(self.queue.message_path(record).read_bytes)
                await peer.file(folder, record.name, data)
        except Transient:
            raise  # try again later
        except FsError as e:
            log.warning("%s: cannot file the copy in %s (%s); keeping it in %s/",
                        record.name, account, e, SENT_DIR)
            return await self._file_locally(record)
        return f"{account}:{'/'.join(folder)}"

    async def _file_locally(self, record: Record) -> str:
        target = self.sent_dir / message_name(record.id, record.subject, record.queued)
        await trio.to_thread.run_sync(self._copy_sent_sync, record, target)
        return f"{SENT_DIR}/{target.name}"

    def _copy_sent_sync(self, record: Record, target: FsPath) -> None:
        self.sent_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.queue.copy_out(record, target)

    async def aclose(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


# -- local files ---------------------------------------------------------------------------


def _safe(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise InvalidArgument(f"unusable name {name!r}")
    return name


def _list_dir(directory: FsPath) -> list[Entry]:
    entries = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            continue
        try:
            entries.append(_entry(name, os.stat(directory / name)))
        except FileNotFoundError:
            continue
    return entries


def _entry(name: str, st: os.stat_result) -> Entry:
    is_dir = stat.S_ISDIR(st.st_mode)
    return Entry(name, is_dir, None if is_dir else st.st_size, st.st_mtime,
                 identity=("file", st.st_ino, st.st_size, st.st_mtime_ns), mode=st.st_mode & 0o7777)


def _stat_file(directory: FsPath, name: str) -> Entry:
    try:
        return _entry(name, os.stat(directory / _safe(name)))
    except (FileNotFoundError, InvalidArgument):
        raise NotFound(name) from None


def _pread(file: FsPath, offset: int, size: int) -> bytes:
    try:
        with open(file, "rb") as f:
            f.seek(offset)
            return f.read(size)
    except FileNotFoundError:
        raise NotFound(file.name) from None


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _copy_into(content: Content, target: FsPath) -> None:
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(3)}.tmp")
    with content.open() as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(tmp, target)


def _unlink(path: FsPath | str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

