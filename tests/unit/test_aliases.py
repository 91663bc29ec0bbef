"""A name the service replaced (an IMAP APPEND or MOVE names the message itself) stays
resolvable for a while: the writer's rename or unlink of it (rsync, editors) and ``mv``'s
look at what it moved reach the object instead of ENOENT."""
from __future__ import annotations

from pathlib import Path

import pytest

from fsmount.backends.base import BytesContent, Capabilities
from fsmount.errors import NotFound

from .harness import cached, trio_test
from .memory_backend import MemoryBackend

MAILBOX = Capabilities(write=True, remove=True, rename=True, immutable=True)


def mailbox() -> MemoryBackend:
    """A service that files what it is given under a name of its own."""
    return MemoryBackend({"INBOX/old.eml": b"Subject: old\r\n\r\n"}, MAILBOX,
                         naming=lambda name: f"{name.removesuffix('.eml')} [7].eml")


@trio_test
async def test_a_committed_name_the_service_replaced_still_resolves(tmp_path: Path) -> None:
    backend = mailbox()
    async with cached(backend, tmp_path) as layer:
        await layer.list(("INBOX",))
        entry = await layer.commit(("INBOX", ".draft.tmp"), BytesContent(b"Subject: x\r\n\r\n"), None)
        assert entry.name == ".draft.tmp [7].eml"
        assert sorted(e.name for e in await layer.list(("INBOX",))) == [
            ".draft.tmp [7].eml", "old.eml"]
        assert await layer.stat(("INBOX", ".draft.tmp")) == entry  # rsync's rename looks
        renamed = await layer.rename(("INBOX", ".draft.tmp"), ("INBOX", "draft.eml"))
        assert renamed is not None and renamed.name == "draft [7].eml"
        assert await layer.stat(("INBOX", "draft.eml")) == renamed  # mv's look after it
        assert sorted(e.name for e in await layer.list(("INBOX",))) == ["draft [7].eml", "old.eml"]
        with pytest.raises(NotFound):  # the name moved away is gone
            await layer.stat(("INBOX", ".draft.tmp"))
        assert backend.bytes_of("INBOX/draft [7].eml") == b"Subject: x\r\n\r\n"


@trio_test
async def test_removing_by_the_replaced_name_forgets_it(tmp_path: Path) -> None:
    backend = mailbox()
    async with cached(backend, tmp_path) as layer:
        await layer.list(("INBOX",))
        await layer.commit(("INBOX", "new.eml"), BytesContent(b"Subject: y\r\n\r\n"), None)
        await layer.remove(("INBOX", "new.eml"))
        with pytest.raises(NotFound):
            await layer.stat(("INBOX", "new.eml"))
        assert [e.name for e in await layer.list(("INBOX",))] == ["old.eml"]
        assert backend.bytes_of("INBOX/new [7].eml") is None
