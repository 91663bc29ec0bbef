"""The decoded view: a read-only ``.txt`` beside each ``.eml``, its size exact from the first
stat, made from the message fetched once for both files."""
from __future__ import annotations

from pathlib import Path

import pytest

from fsmount.backends.base import BytesContent, Capabilities
from fsmount.cache.decoded import decoded_text
from fsmount.errors import NotPermitted

from .harness import cached, trio_test
from .memory_backend import MemoryBackend

RAW = (b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nContent-Transfer-Encoding: base64\r\n\r\n"
       b"SGVsbG8sIHfDtnJsZCEK\r\n")
MAILBOX = Capabilities(write=True, remove=True, rename=True, set_mtime=True, xattrs=True,
                       immutable=True)


def mailbox() -> MemoryBackend:
    return MemoryBackend({"INBOX/a.eml": RAW, "INBOX/notes": b"plain", "INBOX/sub": None},
                         MAILBOX, naming=lambda name: name)


@trio_test
async def test_each_message_has_its_text_beside_it(tmp_path: Path) -> None:
    async with cached(mailbox(), tmp_path, decoded_view=True) as layer:
        assert [e.name for e in await layer.list(("INBOX",))] == ["a.eml", "a.txt", "notes", "sub"]
    async with cached(mailbox(), tmp_path / "off") as layer:
        assert [e.name for e in await layer.list(("INBOX",))] == ["a.eml", "notes", "sub"]


@trio_test
async def test_a_text_has_its_exact_size_at_the_first_stat(tmp_path: Path) -> None:
    backend = mailbox()
    text = decoded_text(RAW)
    assert len(text) != len(RAW) and "Grüße".encode() in text and b"w\xc3\xb6rld" in text
    async with cached(backend, tmp_path, decoded_view=True) as layer:
        entry = await layer.stat(("INBOX", "a.txt"))
        assert entry.size == len(text) and entry.size_exact
        listed = {e.name: e for e in await layer.list(("INBOX",))}
        assert listed["a.txt"].size == len(text) and listed["a.txt"].size_exact
        assert await layer.read(("INBOX", "a.txt"), 0, 1 << 20) == text
        assert await layer.read(("INBOX", "a.eml"), 0, 1 << 20) == RAW
        assert backend.count("download") == 1  # the message, once for both files


@trio_test
async def test_a_text_is_read_only(tmp_path: Path) -> None:
    backend = mailbox()
    text = ("INBOX", "a.txt")
    async with cached(backend, tmp_path, decoded_view=True) as layer:
        await layer.list(("INBOX",))
        changes = [
            layer.commit(text, BytesContent(b"x"), None), layer.remove(text),
            layer.rename(text, ("INBOX", "b.txt")), layer.rename(("INBOX", "a.eml"), text),
            layer.set_mode(text, 0o600), layer.set_mtime(text, 0.0),
            layer.set_xattr(text, "k", b"v"),
        ]
        for change in changes:
            with pytest.raises(NotPermitted):
                await change
        ops = {op for op, _ in backend.calls}
        assert ops <= {"list"}, ops
        assert await layer.get_xattrs(text) == {}


@trio_test
async def test_a_text_follows_its_message(tmp_path: Path) -> None:
    backend = mailbox()
    async with cached(backend, tmp_path, decoded_view=True) as layer:
        await layer.list(("INBOX",))
        await layer.rename(("INBOX", "a.eml"), ("INBOX", "b.eml"))
        assert [e.name for e in await layer.list(("INBOX",))] == ["notes", "sub", "b.eml", "b.txt"]
        await layer.commit(("INBOX", "c.eml"), BytesContent(RAW), None)
        await layer.remove(("INBOX", "b.eml"))
        assert [e.name for e in await layer.list(("INBOX",))] == ["notes", "sub", "c.eml", "c.txt"]
        assert await layer.read(("INBOX", "c.txt"), 0, 1 << 20) == decoded_text(RAW)
        assert backend.count("list", ("INBOX",)) == 1
