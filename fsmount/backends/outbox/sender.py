"""Sending: the queue's worker, one SMTP attempt at a time per message, retries, and the
never-twice rule around the final dot of DATA."""
from __future__ import annotations

import fcntl
import logging
import math
import os
import time
from typing import Any

import trio

from ...errors import ConfigError, FsError
from ...net.tls import client_context
from .queue import FAILED, PENDING, SENT, Record
from .smtp import Outcome, SendFailure, Server, Unconfirmed, prepare, submit
from .state import SEND_XATTR, OutboxState, _iso

log = logging.getLogger(__name__)

LOCK_POLL = 2.0  # seconds between checks whether another mount stopped sending this outbox


class OutboxSender(OutboxState):
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

