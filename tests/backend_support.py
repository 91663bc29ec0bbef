"""What the backend test suites share: running one async scenario, content as the VFS
hands it to ``commit()``, and scratch files to download into.

Import ``remove_spools`` into a test module with ``spool``: the fixture is autouse, so every
file made in a test is removed after it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from fsmount.cache.spool import Spool, SpoolFile

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
_CONTENTS: list[SpoolFile] = []


def spool(data: bytes) -> SpoolFile:
    """``data`` as a writer's content: in memory when small, in a spool file when large."""
    base = tempfile.mkdtemp(prefix="spools-", dir="/var/tmp")
    _SPOOLS.append(base)
    content = Spool(Path(base)).new()
    content.write(0, data)
    _CONTENTS.append(content)
    return content


def scratch() -> str:
    """An empty file to download into."""
    fd, path = tempfile.mkstemp(prefix="download-", dir="/var/tmp")
    os.close(fd)
    _SPOOLS.append(path)
    return path


@pytest.fixture(autouse=True)
def remove_spools() -> Iterator[None]:
    yield
    while _CONTENTS:
        _CONTENTS.pop().close()
    while _SPOOLS:
        path = _SPOOLS.pop()
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)
