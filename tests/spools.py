"""Spool files for backend tests, as the VFS hands them to ``commit()``.

Import both names into a test module: ``from tests.spools import remove_spools, spool``
(the fixture is autouse, so every file made in a test is removed after it).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

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
