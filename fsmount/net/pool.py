"""Per-account pools of blocking protocol clients, each used from a worker thread.

The event loop never blocks on a socket: every protocol call runs in a thread, on a connection
taken from the pool. One ``CapacityLimiter`` bounds the account's connections and a second its
threads (not trio's shared default of 40), so one busy account cannot starve another.
"""
from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import trio

from ..errors import FsError, Transient
from .retry import retrying

log = logging.getLogger(__name__)
C = TypeVar("C")
T = TypeVar("T")

#: An idle connection older than this is checked (NOOP) before it is trusted again.
STALE_AFTER = 15.0


class ConnectionPool(Generic[C]):
    """Connections made by ``connect``; a failure is mapped by ``classify``.

    A call that fails with ``Transient`` (a socket error, a timeout) discards its connection,
    since its protocol state is unknown; any other ``FsError`` keeps it, after a ``check``.
    ``connect`` raising ``AuthenticationFailed`` is final: it is never retried.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], C],
        close: Callable[[C], None],
        classify: Callable[[BaseException], FsError],
        *,
        limit: int,
        timeout: float,
        check: Callable[[C], None] | None = None,
    ) -> None:
        self.name = name
        self._connect = connect
        self._close = close
        self._classify = classify
        self._check = check
        self.timeout = timeout
        self._slots = trio.CapacityLimiter(limit)
        self._threads = trio.CapacityLimiter(limit + 1)
        self._idle: list[tuple[C, float, bool]] = []  # (conn, last used, needs check)

    @property
    def limit(self) -> int:
        return int(self._slots.total_tokens)

    def reduce_limit(self) -> None:
        """The server said it has too many connections: use one fewer from now on."""
        if self._slots.total_tokens > 1:
            self._slots.total_tokens -= 1
            log.warning("%s: server refused a connection; limiting to %d", self.name, self.limit)

    async def run(self, fn: Callable[[C], T], *, retry: bool = True, what: str = "") -> T:
        """Run ``fn(conn)`` in a worker thread; retry ``Transient`` failures if ``retry``."""
        if not retry:
            return await self._run_once(fn)
        deadline = trio.current_time() + self.timeout
        return await retrying(lambda: self._run_once(fn), deadline=deadline, what=what or self.name)

    async def _run_once(self, fn: Callable[[C], T]) -> T:
        async with self._slots:
            conn, fresh = self._take()
            box: list[C | None] = [conn]
            try:
                result = await trio.to_thread.run_sync(
                    self._call, box, fresh, fn, limiter=self._threads
                )
            except BaseException as e:
                error = e if isinstance(e, FsError) else self._classify(e)
                if box[0] is not None:
                    if isinstance(error, Transient) or not isinstance(e, Exception):
                        self._discard(box[0])
                    else:
                        self._idle.append((box[0], time.monotonic(), True))
                if error is e or not isinstance(e, Exception):
                    raise
                raise error from e
            self._idle.append((box[0], time.monotonic(), False))  # type: ignore[arg-type]
            return result

    def _take(self) -> tuple[C | None, bool]:
        while self._idle:
            conn, used, needs_check = self._idle.pop()
            return conn, needs_check or time.monotonic() - used > STALE_AFTER
        return None, False

    def _call(self, box: list[C | None], needs_check: bool, fn: Callable[[C], T]) -> T:
        conn = box[0]
        if conn is not None and needs_check and self._check is not None:
            try:
                self._check(conn)
            except (TimeoutError, socket.timeout):
                # No answer at all: a new connection would wait as long again, so the call
                # fails now, within one ``timeout`` (the caller discards this connection).
                raise
            except Exception as e:
                log.debug("%s: dropping a stale connection (%s)", self.name, e)
                self._discard(conn)
                conn = box[0] = None
        if conn is None:
            conn = box[0] = self._connect()
        return fn(conn)

    async def probe(self) -> None:
        """One round trip, to learn whether a server that stopped answering is back: the
        idle connections are checked before reuse from now on (they may have died with the
        server), and the one taken here is checked now, or a new one is made."""
        self._idle = [(conn, used, True) for conn, used, _ in self._idle]
        await self._run_once(lambda conn: None)

    def _discard(self, conn: C) -> None:
        try:
            self._close(conn)
        except Exception as e:  # already broken: nothing more to learn
            log.debug("%s: error closing a connection: %s", self.name, e)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn, _, _ in idle:
            await trio.to_thread.run_sync(self._discard, conn, limiter=self._threads)
