"""What every part of the outbox shares: its account, its queue, the records in memory,
and the events that wake the sender and the readers of status files."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path as FsPath

import trio

from ...config import Account
from ...credentials import Secret
from .. import Environment
from ..base import BackendBase, Path
from .queue import OutQueue, Record
from .smtp import Server

log = logging.getLogger(__name__)

SENT_DIR = "sent"
STATUS_SUFFIX = ".status"
SEND_XATTR = "outbox.send"  # user.outbox.send: "send this message now / again"
UNSURE = "may-have-been-sent"


def is_message_name(name: str) -> bool:
    return name.lower().endswith(".eml") and len(name) > 4


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class OutboxState(BackendBase):
    """The outbox's shared state; the folder, the sender and the filing are its parts
    (``OutboxBackend`` joins them). Everything runs on the trio thread."""

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

    async def _save(self, record: Record) -> None:
        await trio.to_thread.run_sync(self.queue.save, record)
        self._changed(record)

