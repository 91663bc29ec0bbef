"""Fixtures of the unit tier."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from fsmount.cache import layer, metadata, prefetch

from .harness import Clock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A monotonic clock for the metadata cache and the prefetcher that only the test moves."""
    c = Clock()
    fake = SimpleNamespace(monotonic=c, time=time.time)  # wall-clock stamps stay real
    for module in (metadata, layer, prefetch):
        monkeypatch.setattr(module, "time", fake)
    return c
