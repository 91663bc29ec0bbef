"""The mount's namespace: one account as the root, or one folder per account.

Paths here ("vpaths") include the account folder in a multi-account mount; ``route`` turns one
into the account's cached backend and the backend's own path.
"""
from __future__ import annotations

import time
from collections.abc import Mapping

from ..backends.base import Capabilities, Entry, Path
from ..cache.growing import GrowingListing
from ..cache.interface import CachedAccount
from ..errors import CrossDevice, NotFound, ReadOnly

ROOT_CAPS = Capabilities()


class Tree:
    def __init__(self, accounts: Mapping[str, CachedAccount], single: str | None) -> None:
        self.accounts = dict(accounts)
        self.single = single
        self.started = time.time()

    def route(self, vpath: Path) -> tuple[CachedAccount, Path]:
        if self.single is not None:
            return self.accounts[self.single], vpath
        if not vpath:
            raise ReadOnly("the mount root holds one folder per account")
        try:
            return self.accounts[vpath[0]], vpath[1:]
        except KeyError:
            raise NotFound(vpath[0]) from None

    def is_top(self, vpath: Path) -> bool:
        return self.single is None and not vpath

    def capabilities(self, vpath: Path) -> Capabilities:
        return ROOT_CAPS if self.is_top(vpath) else self.route(vpath)[0].capabilities

    def same_account(self, a: Path, b: Path) -> None:
        if self.single is None and (not a or not b or a[0] != b[0]):
            raise CrossDevice("rename across accounts")

    def trust(self, vpath: Path) -> float | None:
        """Seconds the cache still trusts the entry at ``vpath`` (the listing it came from);
        None for what no listing vouches for (the mount's own folders, an account's root)."""
        if self.is_top(vpath) or not vpath or (self.single is None and len(vpath) == 1):
            return None
        backend, path = self.route(vpath)
        return backend.trust(path[:-1])

    async def list(self, vpath: Path) -> list[Entry]:
        if self.is_top(vpath):
            return [Entry(name, True, mtime=self.started) for name in self.accounts]
        backend, path = self.route(vpath)
        return await backend.list(path)

    async def list_growing(self, vpath: Path) -> GrowingListing:
        if self.is_top(vpath):
            return GrowingListing.whole(await self.list(vpath))
        backend, path = self.route(vpath)
        return await backend.list_growing(path)

    async def stat(self, vpath: Path) -> Entry:
        if self.is_top(vpath):
            return Entry("", True, mtime=self.started)
        backend, path = self.route(vpath)
        if not path and self.single is None:
            return Entry(vpath[0], True, mtime=self.started)
        return await backend.stat(path)
