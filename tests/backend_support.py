"""What the backend test suites share: running one async scenario, and spool files as the
VFS hands them to ``commit()``.

Import ``remove_spools`` into a test module with ``spool``: the fixture is autouse, so every
file made in a test is removed after it.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import trio

T = TypeVar("T")
B = TypeVar("B", bound=Any)


def run(backend: B, fn: Callable[[B], Awaitable[T]]) -> T:
    """pytest-trio is not installed: run one async scenario, always closing the backend."""
    async def main() -> T:
        try:
            return await fn(backend)
        finally:
            await backend.aclose()

    return trio.run(main)

_SPOOLS: list[str] = []


def spool(data: bytes) -> str:
    fd, path = tempfile.mkstemp(prefix="spool-", dir="/var/tmp")
    os.write(fd, data)
    os.close(fd)
    _SPOOLS.append(path)
    return path


@pytest.fixture(autouse=True)
def remove_spools() -> Iterator[None]:
    yield
    while _SPOOLS:
        path = _SPOOLS.pop()
        if os.path.exists(path):
            os.unlink(path)
