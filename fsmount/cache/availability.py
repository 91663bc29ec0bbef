"""Whether an account's server answers, and what the mount does while it does not.

A server that stops answering (paused, cut off, down) costs the first operation that meets it
one ``timeout``. After that the account is *offline*: every operation that needs the server
fails at once (``Offline``, EHOSTDOWN) instead of waiting again — the kernel's retry of a
failed read, the next file of a ``grep -r``, a file manager's thumbnails — and the operations
already waiting for a connection behind the one that failed give up with it. Listings and
bytes already cached are still served (``layer``). A probe (``Backend.probe``: one real round
trip) runs in the background, soon and then less often (sooner when an operation wanted the
server meanwhile), and the first that succeeds puts the account back online: nothing needs
remounting.

Only a server that cannot be reached takes an account offline (a timeout, a refused
connection, after the pool's retries); a server that answers, even with an error or by
dropping connections, is online.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from ..backends.base import Backend
from ..errors import FsError, Offline, TimedOut, Unreachable

log = logging.getLogger(__name__)
T = TypeVar("T")

PROBE_FIRST = 1.0  # the first probe after the server stopped answering (a restart is quick)
PROBE_MAX = 15.0  # then probes slow down to one every this many seconds
#: The backend methods that may talk to the server, and so go through ``Availability.call``.
SERVER_CALLS = frozenset({
    "list", "list_in_parts", "stat", "read", "read_into", "read_in_thread", "download",
    "download_many", "commit", "remove", "rename", "mkdir", "rmdir", "set_mode", "set_mtime",
    "get_xattrs", "xattr_names", "set_xattr", "changed",
})


def cuts_off(error: BaseException) -> bool:
    """Whether ``error`` says the server cannot be reached: it did not answer within the
    timeout, or refused to connect. A connection lost while the server was answering is
    not that (the pool's retry reconnected, or else the error is ``Unreachable``)."""
    return isinstance(error, TimedOut | Unreachable)


class Availability:
    """One account's connection state. Lives on the trio thread."""

    def __init__(self, account: str, probe: Callable[[], Awaitable[object]]) -> None:
        self.account = account
        self._probe = probe
        self.since: float | None = None  # wall-clock time the server stopped answering
        self.error: FsError | None = None  # what the operation that found out met
        self.changes = 0  # how many times the state changed (the status file's identity)
        self.nursery: trio.Nursery | None = None  # runs the probes; set by the mount
        self._calls: set[trio.CancelScope] = set()
        self._wanted = trio.Event()  # an operation wanted the server while it was away

    @property
    def offline(self) -> bool:
        return self.since is not None

    def offline_error(self) -> Offline:
        if self.since is None:  # a call cancelled when it went offline, ending after it came back
            return Offline(f"{self.account}: the server did not answer")
        return Offline(f"{self.account}: the server has not answered since "
                       f"{_clock(self.since)} ({self.error})")

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, probing: bool = False) -> T:
        """``fn(*args)``, unless the account is offline; its outcome updates the state."""
        if self.since is not None and not probing:
            self._wanted.set()
            raise self.offline_error()
        with trio.CancelScope() as scope:
            self._calls.add(scope)
            try:
                result = await fn(*args)
            except FsError as e:
                self._calls.discard(scope)
                if cuts_off(e):
                    self._went_offline(e)
                raise
            finally:
                self._calls.discard(scope)
        if scope.cancelled_caught:  # another call found the server gone: no use waiting
            raise self.offline_error()
        if self.since is not None:
            self._came_back()
        return result

    def _went_offline(self, error: FsError) -> None:
        if self.since is not None:
            return
        self.since, self.error = time.time(), error
        self.changes += 1
        log.warning("%s: the server does not answer (%s); until it does, what is cached is "
                    "served and everything else fails at once", self.account, error)
        for scope in self._calls:  # waiting for a connection, or between retries
            scope.cancel()
        if self.nursery is not None:
            self.nursery.start_soon(self._probe_until_back)

    def _came_back(self) -> None:
        assert self.since is not None
        log.warning("%s: the server answers again (it did not for %.0f s)", self.account,
                    time.time() - self.since)
        self.since = self.error = None
        self.changes += 1

    async def _probe_until_back(self) -> None:
        """Probe after ``PROBE_FIRST`` s, then less and less often — or sooner when an
        operation wanted the server meanwhile (but at most once per ``PROBE_FIRST`` s): the
        user who tries again finds the server back as soon as it is."""
        delay = PROBE_FIRST
        while self.since is not None:
            last = trio.current_time()
            self._wanted = trio.Event()
            with trio.move_on_after(delay):
                await self._wanted.wait()
            await trio.sleep_until(last + PROBE_FIRST)
            if self.since is None:
                return
            try:
                await self.call(self._probe, probing=True)
            except FsError as e:
                log.debug("%s: still no answer: %s", self.account, e)
            delay = min(delay * 2, PROBE_MAX)

    def status(self) -> str:
        """The text of the account's status file."""
        if self.since is None:
            return "online\n"
        return f"offline since {_clock(self.since)}: {self.error}\n"


class GuardedBackend:
    """A backend whose server calls go through an ``Availability``; everything else (its
    capabilities, its local helpers) is the backend's own."""

    def __init__(self, backend: Backend, availability: Availability) -> None:
        self._backend = backend
        self._availability = availability

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._backend, name)
        if name in SERVER_CALLS:
            return functools.partial(self._availability.call, attr)
        return attr


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(t))
