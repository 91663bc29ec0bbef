"""What a writer's content holds, in memory and after it moved to a spool file; the memory
it may take. Unit tests (no server, no mount)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from fsmount.cache import spool as spool_module
from fsmount.cache.spool import MEMORY_LIMIT, Spool


def spool_files(spool: Spool) -> list[str]:
    return os.listdir(spool.directory)


def test_small_content_never_touches_the_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    content = spool.new()
    content.write(0, b"hello ")
    content.write(6, b"world")
    content.write(20, b"!")  # past the end: the hole reads as zeros
    assert content.read(0, 100) == b"hello world" + bytes(9) + b"!"
    assert content.open().read() == trio.run(content.read_all) == content.read(0, 100)
    content.truncate(5)
    assert content.size() == 5 and content.open().read() == b"hello"
    content.truncate(8)
    assert content.read(0, 100) == b"hello\0\0\0"
    assert spool_files(spool) == [] and spool.in_memory == 8
    content.close()
    assert spool.in_memory == 0


def test_large_content_moves_to_a_spool_file_whole(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    content = spool.new()
    head = os.urandom(1000)
    content.write(0, head)
    tail = os.urandom(MEMORY_LIMIT)
    content.write(len(head), tail)
    assert spool.in_memory == 0 and len(spool_files(spool)) == 1
    assert content.size() == len(head) + len(tail)
    with content.open() as f:
        assert f.read() == head + tail
    content.truncate(10)
    content.truncate(MEMORY_LIMIT + 5)  # grows on disk, zeros
    assert content.read(0, 20) == head[:10] + bytes(10)
    content.close()
    again = spool.new()
    again.write(0, b"x" * (MEMORY_LIMIT + 1))
    assert again.read(MEMORY_LIMIT - 1, 10) == b"xx"  # the emptied file, reused
    again.close()
    spool.close()
    assert spool_files(spool) == []


def test_memory_for_all_writers_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "MEMORY_BUDGET", 3000)
    spool = Spool(tmp_path)
    writers = [spool.new() for _ in range(4)]
    for i, w in enumerate(writers):
        w.write(0, bytes([i]) * 1000)
    assert spool.in_memory == 3000 and len(spool_files(spool)) == 1  # the fourth went to disk
    assert [w.read(0, 1000) for w in writers] == [bytes([i]) * 1000 for i in range(4)]
    writers[0].close()
    late = spool.new()
    late.write(0, b"y" * 1000)  # room again
    assert spool.in_memory == 3000 and len(spool_files(spool)) == 1
