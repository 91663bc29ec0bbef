"""Cross-account effects: the outbox files into another account's Sent folder and posts
through a news account, by way of those accounts' cache layers.

A copy filed into Sent goes through the Sent account's ``CachedBackend.commit``, so the
listing the mount serves shows it at once (through the bare backend the cache would not
hear of it until its listing expired). What each link may ask is typed
(``KeepsSentMail``, ``PostsNews``); an account of another kind is no link.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..backends.base import Backend, BytesContent, KeepsSentMail, Path, PostsNews
from .layer import CachedBackend


class SentLink:
    """An account's Sent folder, as the outbox uses it."""

    def __init__(self, account: Backend | CachedBackend, keeper: KeepsSentMail) -> None:
        self._account = account  # changes go through it: its cache learns of them
        self._keeper = keeper

    async def folder(self) -> Path | None:
        return await self._keeper.sent_folder()

    async def holds(self, folder: Path, message_id: str) -> bool:
        return await self._keeper.contains_message_id(folder, message_id)

    async def file(self, folder: Path, name: str, data: bytes) -> None:
        await self._account.commit(folder + (name,), BytesContent(data), None)


class Links:
    """The mount's accounts by name, for the links an outbox's settings name."""

    def __init__(self, accounts: Mapping[str, Backend | CachedBackend]) -> None:
        self._accounts = accounts

    def sent(self, name: str | None) -> SentLink | None:
        account = self._accounts.get(name) if name else None
        keeper = _protocol_side(account)
        return SentLink(account, keeper) if isinstance(keeper, KeepsSentMail) else None  # type: ignore[arg-type]

    def news(self, name: str | None) -> PostsNews | None:
        poster = _protocol_side(self._accounts.get(name) if name else None)
        return poster if isinstance(poster, PostsNews) else None


def _protocol_side(account: Backend | CachedBackend | None) -> object:
    """The backend that speaks the account's protocol (asked what it can do)."""
    return account.bare if isinstance(account, CachedBackend) else account
