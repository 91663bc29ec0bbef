"""After sending: the copy filed into the linked Sent folder (or sent/), the article posted
through the linked news account, and the Sent check that proves a message went out."""
from __future__ import annotations

import logging
from pathlib import Path as FsPath
from typing import TYPE_CHECKING

import trio

from ...errors import FsError, NotFound, Transient
from ..mailnames import message_name
from .queue import FAILED, SENT, Record
from .smtp import without_hidden
from .state import SENT_DIR, OutboxState

if TYPE_CHECKING:
    from ...cache.links import SentLink

log = logging.getLogger(__name__)


class OutboxFiling(OutboxState):
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

