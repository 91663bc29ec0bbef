"""The one place that retries: only ``Transient`` failures, with backoff, within a deadline."""
from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from ..errors import Transient, Unreachable

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A refused connection is a clear answer: retry it only briefly (a server restarting).
UNREACHABLE_PATIENCE = 3.0


def backoff(attempt: int, first: float = 0.05, cap: float = 2.0) -> float:
    """Exponential with jitter, so parallel retries do not hit a recovering server at once."""
    return min(cap, first * 2**attempt) * (0.5 + random.random() / 2)


async def retrying(call: Callable[[], Awaitable[T]], *, deadline: float, what: str) -> T:
    """Run ``call`` until it succeeds, fails permanently, or ``deadline`` (trio time) passes."""
    attempt = 0
    start = trio.current_time()
    while True:
        try:
            return await call()
        except Transient as e:
            delay = backoff(attempt)
            now = trio.current_time()
            if now + delay >= deadline:
                raise
            if isinstance(e, Unreachable) and now + delay - start > UNREACHABLE_PATIENCE:
                raise
            log.info("%s failed (%s); retrying", what, e)
            attempt += 1
            await trio.sleep(delay)
