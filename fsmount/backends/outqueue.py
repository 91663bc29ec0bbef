"""The outbox's durable queue: one message file and one state file per message.

Lives under the XDG state dir, never in the cache (which may be deleted at any time). Every
write is a temporary file, fsync, rename, fsync of the directory, so a crash or ``kill -9``
leaves either the old or the new version. ``<id>.json`` is the commit point: a ``<id>.msg``
without it is an enqueue that never returned success and is deleted on load.

All methods block (fsync): call them from a worker thread.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

log = logging.getLogger(__name__)

PENDING, SENT, FAILED = "pending", "sent", "failed"


@dataclass
class Record:
    """What the queue knows about one message; saved as JSON after every change."""

    id: str
    name: str  # its file name in the outbox
    queued: float  # wall-clock time it was taken
    refused: str = ""  # why it cannot be sent as written (then nothing else applies)
    sender: str = ""
    message_id: str = ""
    subject: str = ""
    recipients: dict[str, str] = field(default_factory=dict)  # address → pending|sent|failed
    replies: dict[str, str] = field(default_factory=dict)  # address → the server's last word
    news: str = ""  # "" (no Newsgroups), pending, sent or failed
    news_reply: str = ""
    attempts: int = 0
    next_try: float = 0.0  # wall-clock time of the next attempt
    last_reply: str = ""
    in_flight: bool = False  # an attempt started and its outcome was not recorded (yet)
    # The final "." of DATA was about to be sent to these recipients and its answer is not
    # recorded: from here on the server may have the message. Found after a restart (or
    # when the answer never came), the message is ``unsure`` and is not sent on its own.
    final_dot: list[str] = field(default_factory=list)
    final_dot_at: float = 0.0
    unsure: str = ""  # why it may have been sent; non-empty: sent again only when asked
    sent_check: str = ""  # what the linked Sent folder said about it when it became unsure
    filed: str = ""  # where the copy went once sent ("" while not filed)
    gave_up: str = ""

    @property
    def pending(self) -> list[str]:
        return [a for a, s in self.recipients.items() if s == PENDING]

    @property
    def waiting(self) -> bool:
        """Something is still to be delivered (to a recipient or a newsgroup), by the sender
        on its own (not a message that may have been sent: that waits for the user)."""
        return (not self.refused and not self.gave_up and not self.unsure
                and (bool(self.pending) or self.news == PENDING))

    @property
    def delivered(self) -> bool:
        return SENT in self.recipients.values() or self.news == SENT

    @property
    def failures(self) -> bool:
        return FAILED in self.recipients.values() or self.news == FAILED or bool(self.gave_up)

    @classmethod
    def from_json(cls, data: dict) -> Record:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def new_id() -> str:
    """Sorts by queue time; short enough to be a mailnames key."""
    return f"{time.time_ns():x}{secrets.token_hex(3)}"


class OutQueue:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def message_path(self, record: Record) -> Path:
        return self.directory / f"{record.id}.msg"

    def _state_path(self, record_id: str) -> Path:
        return self.directory / f"{record_id}.json"

    def load(self) -> list[Record]:
        """Every committed record, oldest first; debris of interrupted writes is removed."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        records = []
        for path in sorted(self.directory.iterdir()):
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
            elif path.suffix == ".msg" and not self._state_path(path.stem).exists():
                log.debug("removing %s: its enqueue never completed", path.name)
                path.unlink(missing_ok=True)
            elif path.suffix == ".json":
                try:
                    record = Record.from_json(json.loads(path.read_text("utf-8")))
                except (ValueError, TypeError) as e:
                    log.warning("ignoring unreadable outbox state %s: %s", path, e)
                    continue
                if self.message_path(record).exists():
                    records.append(record)
                else:
                    log.warning("outbox state %s has lost its message; dropping it", path)
                    path.unlink(missing_ok=True)
        return records

    def add(self, record: Record, data: bytes) -> None:
        """Durable once this returns: the message, then its state (the commit point)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_durably(self.message_path(record), data, sync_dir=False)
        self.save(record)

    def save(self, record: Record) -> None:
        payload = json.dumps(asdict(record), ensure_ascii=False, indent=1).encode("utf-8")
        _write_durably(self._state_path(record.id), payload, sync_dir=True)

    def remove(self, record: Record) -> None:
        """State first: a message file left alone by a crash is removed by ``load``."""
        self._state_path(record.id).unlink(missing_ok=True)
        self.message_path(record).unlink(missing_ok=True)
        _fsync_dir(self.directory)

    def read(self, record: Record) -> bytes:
        return self.message_path(record).read_bytes()

    def copy_out(self, record: Record, target: Path) -> None:
        """A copy of the message at ``target`` (temporary name, then rename)."""
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(3)}.tmp")
        shutil.copyfile(self.message_path(record), tmp)
        os.replace(tmp, target)


def _write_durably(path: Path, data: bytes, *, sync_dir: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync_dir:
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
