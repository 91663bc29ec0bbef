"""Running the cache layer and the VFS over a ``MemoryBackend`` inside one ``trio.run``:
no FUSE, no server, no sleeps (``settle`` waits until every task is blocked)."""
from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path as FsPath
from typing import Any

import trio
import trio.testing

from fsmount.cache.content import ContentStore
from fsmount.cache.layer import CachedBackend
from fsmount.cache.spool import Spool
from fsmount.vfs.attrs import Owner
from fsmount.vfs.operations import Operations
from fsmount.vfs.tree import Tree

from .memory_backend import MemoryBackend

TTL = 3600.0


def trio_test(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """pytest-trio is not installed: run an async test (fixtures and all) in ``trio.run``."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return trio.run(functools.partial(fn, *args, **kwargs))
    return wrapper


async def settle() -> None:
    """Until every task waits on something only the test can give (a gate, a call)."""
    await trio.testing.wait_all_tasks_blocked()


@asynccontextmanager
async def cached(backend: MemoryBackend, where: FsPath, *, ttl: float = TTL,
                 **options: Any) -> AsyncIterator[CachedBackend]:
    """A cache layer over ``backend`` with a content store under ``where``, and a nursery for
    its background tasks (read-ahead, scans, growing listings) as the mount gives it."""
    store = ContentStore(where / "content", 1 << 30)
    layer = CachedBackend(backend, "acct", store, ttl, **{"stream_size": 0, **options})
    try:
        async with trio.open_nursery() as nursery:
            layer.nursery = nursery
            yield layer
            nursery.cancel_scope.cancel()
    finally:
        store.close()


@asynccontextmanager
async def mounted_ops(backend: MemoryBackend, where: FsPath, **options: Any
                      ) -> AsyncIterator[Operations]:
    """``Operations`` over one account (as the mount builds it), driven without a kernel."""
    spool = Spool(where / "spool")
    try:
        async with cached(backend, where, **options) as layer:
            yield Operations(Tree({"acct": layer}, "acct"), spool, Owner.current())
    finally:
        spool.close()


class Clock:
    """The monotonic clock of the metadata cache and the prefetcher, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
