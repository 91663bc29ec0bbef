"""The outbox as files: messages, their status files, and plain local files; what the
user does to them (write, rename, remove, set ``user.outbox.send``)."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
import stat
import time
from datetime import datetime, timezone
from pathlib import Path as FsPath
from collections.abc import Iterator
from typing import Any

import trio

from ...errors import InvalidArgument, IsADirectory, NotADirectory, NotFound, NotPermitted
from ..base import Content, Entry, Path
from .queue import FAILED, PENDING, SENT, Record, new_id
from .smtp import Prepared, Refused, prepare
from .state import SEND_XATTR, SENT_DIR, STATUS_SUFFIX, OutboxState, _iso, is_message_name

log = logging.getLogger(__name__)


class OutboxFolder(OutboxState):
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

