"""Concurrent misses on one key wait on one backend call, share its error, and survive the
first caller's cancellation (Ctrl-C in one program must not fail another's read)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from fsmount.backends.base import Capabilities
from fsmount.errors import FsError, PermissionDenied, Transient

from .harness import cached, settle, trio_test
from .memory_backend import MemoryBackend

MAIL = Capabilities(immutable=True)  # whole downloads, as IMAP, POP3 and NNTP


async def together(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run the calls concurrently; each one's result, or the exception it raised."""
    results: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        try:
            results[i] = await calls[i]()
        except FsError as e:
            results[i] = e

    async with trio.open_nursery() as nursery:
        for i in range(len(calls)):
            nursery.start_soon(one, i)
    return results


async def whole(layer: Any, path: tuple[str, ...]) -> bytes:
    reader = layer.open_reader(path, await layer.stat(path))
    try:
        return bytes(await reader.read(0, 1 << 20))
    finally:
        reader.close()


@trio_test
async def test_concurrent_stats_in_one_folder_make_one_listing(tmp_path: Path) -> None:
    backend = MemoryBackend({"d/a": b"1", "d/b": b"22", "d/c": b"333"})
    gate = backend.block("list")
    async with cached(backend, tmp_path) as layer:
        async with trio.open_nursery() as nursery:
            found: dict[str, int | None] = {}

            async def stat(name: str) -> None:
                found[name] = (await layer.stat(("d", name))).size

            for name in ("a", "b", "c", "a"):
                nursery.start_soon(stat, name)
            await settle()
            gate.set()
        assert found == {"a": 1, "b": 2, "c": 3}
        assert backend.count("list", ("d",)) == 1
        assert backend.count("stat") == 0


@trio_test
async def test_concurrent_stats_of_one_object_make_one_stat(tmp_path: Path) -> None:
    """Past the end of a listing the server cut short, a name is asked for on its own."""
    backend = MemoryBackend({"a": b"1", "b": b"2", "c": b"3"}, cut=1)
    async with cached(backend, tmp_path) as layer:
        await layer.list(())
        gate = backend.block("stat")
        calls = [lambda: layer.stat(("c",))] * 3
        async with trio.open_nursery() as nursery:
            results: list[Any] = []
            nursery.start_soon(lambda: _collect(results, calls))
            await settle()
            gate.set()
        assert [e.name for e in results[0]] == ["c"] * 3
        assert backend.count("stat", ("c",)) == 1


async def _collect(into: list[Any], calls: Sequence[Callable[[], Awaitable[Any]]]) -> None:
    into.append(await together(*calls))


@trio_test
async def test_concurrent_listings_make_one_listing(tmp_path: Path) -> None:
    """``ls`` (a growing listing) and a lookup's listing of one folder share the fetch."""
    backend = MemoryBackend({f"d/m{i}": b"x" for i in range(10)})
    gate = backend.block("list")
    async with cached(backend, tmp_path) as layer:
        results: list[Any] = []

        async def readdir() -> list[str]:
            growing = await layer.list_growing(("d",))
            await growing.wait_beyond(10)
            return [e.name for e in growing.entries]

        async def names() -> list[str]:
            return [e.name for e in await layer.list(("d",))]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_collect, results, [readdir, names, names, readdir])
            await settle()
            gate.set()
        assert results[0] == [[f"m{i}" for i in range(10)]] * 4
        assert backend.count("list") == 1


@trio_test
async def test_concurrent_reads_of_one_message_make_one_download(tmp_path: Path) -> None:
    backend = MemoryBackend({"INBOX/1.eml": b"Subject: hi\r\n\r\nbody\r\n"}, MAIL)
    async with cached(backend, tmp_path) as layer:
        await layer.list(("INBOX",))
        gate = backend.block("download")
        results: list[Any] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_collect, results, [lambda: whole(layer, ("INBOX", "1.eml"))] * 3)
            await settle()
            gate.set()
        assert results[0] == [b"Subject: hi\r\n\r\nbody\r\n"] * 3
        assert backend.count("download") == 1


@pytest.mark.parametrize("op", ["list", "download"])
@trio_test
async def test_a_failure_is_shared_by_everyone_waiting(tmp_path: Path, op: str) -> None:
    backend = MemoryBackend({"1.eml": b"Subject: hi\r\n\r\n"}, MAIL)
    async with cached(backend, tmp_path) as layer:
        if op == "download":
            await layer.list(())
        gate = backend.block(op)
        backend.fail(op, PermissionDenied("no"))
        results: list[Any] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_collect, results, [lambda: whole(layer, ("1.eml",))] * 3)
            await settle()
            gate.set()
        assert all(isinstance(r, PermissionDenied) for r in results[0]), results
        assert backend.count(op) == 1


@pytest.mark.parametrize("op", ["list", "download"])
@trio_test
async def test_the_first_caller_cancelled_does_not_fail_the_others(tmp_path: Path, op: str) -> None:
    """The one who started the fetch is cancelled (Ctrl-C): the others, who waited on that
    fetch, get the object, fetched anew for them."""
    backend = MemoryBackend({"1.eml": b"Subject: hi\r\n\r\nbody\r\n"}, MAIL)
    async with cached(backend, tmp_path) as layer:
        if op == "download":
            await layer.list(())
        gate = backend.block(op)
        first = trio.CancelScope()
        outcome: dict[str, Any] = {}

        async def impatient() -> None:
            with first:
                outcome["first"] = await whole(layer, ("1.eml",))
            outcome["first cancelled"] = first.cancelled_caught

        async with trio.open_nursery() as nursery:
            nursery.start_soon(impatient)
            await settle()  # the first caller's fetch is the one under way
            assert backend.count(op) == 1
            results: list[Any] = []
            nursery.start_soon(_collect, results, [lambda: whole(layer, ("1.eml",))] * 2)
            await settle()
            first.cancel()
            await settle()
            gate.set()
        assert outcome == {"first cancelled": True}
        assert results[0] == [b"Subject: hi\r\n\r\nbody\r\n"] * 2
        assert backend.count(op) == 2  # the abandoned call, and one more for the others


@trio_test
async def test_a_cancelled_fetch_is_not_remembered_as_a_failure(tmp_path: Path) -> None:
    """After the only caller was cancelled, the next one fetches: no error is kept for it."""
    backend = MemoryBackend({"d/a": b"1"})
    gate = backend.block("list")
    async with cached(backend, tmp_path) as layer:
        with trio.move_on_after(0) as scope:
            await layer.stat(("d", "a"))
        assert scope.cancelled_caught
        gate.set()
        assert (await layer.stat(("d", "a"))).size == 1
        assert backend.count("list", ()) == 2


@trio_test
async def test_a_bug_in_a_backend_reaches_waiters_as_an_fs_error(tmp_path: Path) -> None:
    """A waiter gets an ``FsError`` (an errno), whatever the fetch raised; the first caller
    sees the bug itself, which the VFS logs once."""
    backend = MemoryBackend({"d/a": b"1"})
    gate = backend.block("list")
    backend.failures["list"] = ValueError("a bug")  # type: ignore[assignment]
    async with cached(backend, tmp_path) as layer:
        outcome: list[Any] = []

        async def first() -> None:
            with pytest.raises(ValueError):
                await layer.list(("d",))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            await settle()
            nursery.start_soon(_collect, outcome, [lambda: layer.list(("d",))])
            await settle()
            gate.set()
        assert isinstance(outcome[0][0], FsError) and not isinstance(outcome[0][0], Transient)
        assert backend.count("list") == 1
