"""The content store's small-object database: adopted across mounts, bounded, and started
afresh when damaged or removed. Unit tests (no server, no mount)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from fsmount.cache.content import DATABASE, SMALL, ContentStore


def stored(store: ContentStore, objects: dict[str, bytes]) -> None:
    """What a scan's batch does: write, then mark each object complete."""
    store.store_whole(list(objects.items()))
    for key, data in objects.items():
        obj = store.open(key, None)
        obj.stored_whole(len(data))
        store.release(obj)


def read(store: ContentStore, key: str) -> bytes:
    obj = store.open(key, None)
    try:
        assert obj.complete
        return obj.read(0, 1 << 30)
    finally:
        store.release(obj)


def test_rows_and_files_survive_a_remount(tmp_path: Path) -> None:
    big = b"b" * (SMALL + 1)
    store = ContentStore(tmp_path, 1 << 30)
    stored(store, {"small": b"hello", "big": big})
    assert (tmp_path / "big").is_file() and not (tmp_path / "small").exists()
    store.close()
    again = ContentStore(tmp_path, 1 << 30)
    assert read(again, "small") == b"hello" and read(again, "big") == big
    assert again.used >= 5 + len(big)


def test_rows_are_evicted_past_the_limit(tmp_path: Path) -> None:
    store = ContentStore(tmp_path, 2500)
    for i in range(5):
        stored(store, {f"k{i}": bytes([i]) * 1000})
    assert store.used <= 2500
    assert not store.open("k0", None).complete  # the oldest went first
    assert read(store, "k4") == b"\4" * 1000
    store.close()
    assert sorted(k for k in ContentStore(tmp_path, 2500)._lru) == ["k3", "k4"]


def test_a_damaged_database_is_started_afresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / DATABASE).write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING):
        store = ContentStore(tmp_path, 1 << 30)
    assert "damaged" in caplog.text
    stored(store, {"k": b"fine"})
    assert read(store, "k") == b"fine"


def test_a_database_removed_under_a_live_store_is_noticed(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content", 1 << 30)
    stored(store, {"k": b"data"})
    shutil.rmtree(tmp_path / "content")
    obj = store.open("k", None)
    with pytest.raises(FileNotFoundError):  # the reader then fetches it again
        obj.read(0, 10)
    obj.lost()
    store.release(obj)
    assert store.used == 0 and (tmp_path / "content" / DATABASE).exists()
