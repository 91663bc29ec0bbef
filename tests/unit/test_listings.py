"""Listings in memory: kept for the TTL, confirmed by ``changed()`` after it, never stored
when a change of ours finished while they ran, and a failed one remembered for a moment."""
from __future__ import annotations

from pathlib import Path

import pytest
import trio
from cachetools import TTLCache

from fsmount.backends.base import BytesContent, Capabilities
from fsmount.cache.layer import FAILURE_MEMORY, MAX_FAILURES, CachedBackend
from fsmount.errors import AlreadyExists, NotFound, PermissionDenied

from .harness import Clock, cached, settle, trio_test
from .memory_backend import MemoryBackend

WRITABLE = Capabilities(write=True, overwrite=True, remove=True, rename=True, mkdir=True)


def names(entries: list) -> list[str]:
    return sorted(e.name for e in entries)


async def change(layer: CachedBackend, what: str) -> None:
    if what == "commit":
        await layer.commit(("d", "new"), BytesContent(b"fresh"), None)
    elif what == "remove":
        await layer.remove(("d", "b"))
    else:
        await layer.rename(("d", "b"), ("d", "new"))


AFTER = {"commit": ["a", "b", "new"], "remove": ["a"], "rename": ["a", "new"]}


@pytest.mark.parametrize("what", ["commit", "remove", "rename"])
@trio_test
async def test_a_listing_that_started_before_our_change_is_not_kept(tmp_path: Path, what: str) -> None:
    """The server answered the listing before our change reached it; that answer arrives
    after the change finished and must not undo it (sshfs's ``write_ctr``)."""
    backend = MemoryBackend({"d/a": b"1", "d/b": b"2"}, WRITABLE)
    async with cached(backend, tmp_path) as layer:
        await layer.stat(("d",))
        gate = backend.block("list")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(layer.list, ("d",))
            await settle()  # the listing holds what the server had: a and b
            await change(layer, what)
            gate.set()
        assert names(await layer.list(("d",))) == AFTER[what]
        if what != "remove":
            assert (await layer.stat(("d", "new"))).size == len(backend.bytes_of("d/new") or b"")
        else:
            with pytest.raises(NotFound):
                await layer.stat(("d", "b"))


@trio_test
async def test_our_changes_show_without_relisting(tmp_path: Path) -> None:
    backend = MemoryBackend({"d/a": b"1", "d/b": b"2"}, WRITABLE)
    async with cached(backend, tmp_path) as layer:
        await layer.list(("d",))
        for what in ("commit", "remove"):
            await change(layer, what)
        assert names(await layer.list(("d",))) == ["a", "new"]
        assert (await layer.stat(("d", "new"))).size == 5
        assert backend.count("list", ("d",)) == 1


@trio_test
async def test_a_failed_change_relists_its_folder(tmp_path: Path) -> None:
    backend = MemoryBackend({"d/a": b"1", "d/b": b"2"}, WRITABLE)
    async with cached(backend, tmp_path) as layer:
        await layer.list(("d",))
        backend.fail("remove", PermissionDenied("no"))
        with pytest.raises(PermissionDenied):
            await layer.remove(("d", "b"))
        assert names(await layer.list(("d",))) == ["a", "b"]
        assert backend.count("list", ("d",)) == 2


@trio_test
async def test_a_listing_is_trusted_for_its_ttl(tmp_path: Path, clock: Clock) -> None:
    backend = MemoryBackend({"d/a": b"1"})
    async with cached(backend, tmp_path, ttl=60) as layer:
        await layer.list(("d",))
        backend.put("d/other", b"from another client")
        clock.advance(59)
        assert names(await layer.list(("d",))) == ["a"]
        assert backend.count("list", ("d",)) == 1 and backend.count("changed") == 0
        clock.advance(2)
        assert names(await layer.list(("d",))) == ["a", "other"]
        assert backend.count("changed", ("d",)) == 1 and backend.count("list", ("d",)) == 2


@trio_test
async def test_an_expired_listing_the_backend_confirms_is_kept(tmp_path: Path, clock: Clock) -> None:
    """``changed()`` says no: no listing, and the confirmation counts as a fresh one."""
    backend = MemoryBackend({"d/a": b"1"})
    async with cached(backend, tmp_path, ttl=60) as layer:
        await layer.list(("d",))
        clock.advance(61)
        assert names(await layer.list(("d",))) == ["a"]
        assert backend.count("changed", ("d",)) == 1 and backend.count("list", ("d",)) == 1
        clock.advance(59)
        await layer.stat(("d", "a"))
        assert backend.count("changed", ("d",)) == 1 and backend.count("list", ("d",)) == 1


@trio_test
async def test_a_missing_name_in_a_complete_listing_costs_no_call(tmp_path: Path) -> None:
    backend = MemoryBackend({"d/a": b"1"})
    async with cached(backend, tmp_path) as layer:
        await layer.list(("d",))
        with pytest.raises(NotFound):
            await layer.stat(("d", "nothing"))
        assert backend.count("stat") == 0 and backend.count("list", ("d",)) == 1


@trio_test
async def test_a_name_past_a_cut_listing_is_asked_for(tmp_path: Path) -> None:
    """A listing the server cut short proves nothing about the names it did not send."""
    backend = MemoryBackend({"a": b"1", "b": b"22", "c": b"333"}, WRITABLE, cut=2)
    async with cached(backend, tmp_path) as layer:
        assert names(await layer.list(())) == ["a", "b"]
        assert (await layer.stat(("c",))).size == 3
        with pytest.raises(NotFound):
            await layer.stat(("nothing",))
        assert backend.count("stat") == 2
        with pytest.raises(AlreadyExists):
            await layer.ensure_absent(("c",))
        await layer.ensure_absent(("new",))


@trio_test
async def test_a_failed_listing_answers_lookups_for_a_moment(tmp_path: Path, clock: Clock) -> None:
    """``ls -l`` of a folder whose listing failed: one listing, not one per name shown; a new
    readdir tries again at once, and so does a lookup once the memory is over."""
    backend = MemoryBackend({"d/a": b"1", "d/b": b"2"})
    async with cached(backend, tmp_path) as layer:
        layer._failed = TTLCache(MAX_FAILURES, FAILURE_MEMORY, timer=clock)
        await layer.stat(("d",))
        backend.fail("list", PermissionDenied("no"))
        for name in ("a", "b", "a"):
            with pytest.raises(PermissionDenied):
                await layer.stat(("d", name))
        assert backend.count("list", ("d",)) == 1

        growing = await layer.list_growing(("d",))  # a new readdir
        await growing.wait_beyond(0)
        assert isinstance(growing.error, PermissionDenied)
        assert backend.count("list", ("d",)) == 2

        backend.fail("list", None)
        clock.advance(FAILURE_MEMORY - 1)
        with pytest.raises(PermissionDenied):
            await layer.stat(("d", "a"))
        clock.advance(2)
        assert (await layer.stat(("d", "a"))).size == 1
        assert backend.count("list", ("d",)) == 3


@trio_test
async def test_a_growing_listing_shows_its_first_part_before_the_end(tmp_path: Path) -> None:
    backend = MemoryBackend({f"d/m{i}": b"x" for i in range(6)})
    async with cached(backend, tmp_path) as layer:
        await layer.stat(("d",))
        gate = backend.block("list")
        growing = await layer.list_growing(("d",))
        await settle()
        assert growing.entries == [] and not growing.done
        gate.set()
        await growing.wait_beyond(5)
        assert [e.name for e in growing.entries] == [f"m{i}" for i in range(6)]
        assert names(await layer.list(("d",))) == [f"m{i}" for i in range(6)]
        assert backend.count("list", ("d",)) == 1


@trio_test
async def test_a_walk_through_cached_folders_lists_their_uncached_subfolders_ahead(
        tmp_path: Path) -> None:
    """``find`` reads ``a`` and then ``a/s``, whose listing the cache already holds: the
    subfolder ``a/s/x``, which it does not, is listed ahead; ``a/s`` itself is not again."""
    backend = MemoryBackend({"a/s/x/f": b"f", "a/t": b"t"})
    async with cached(backend, tmp_path) as layer:
        await layer.list(("a", "s"))  # in the cache, as a listing of an earlier ls left it
        await layer.list_growing(("a",))
        await layer.list_growing(("a", "s"))  # right after its parent: a walk
        await settle()
        listed = [args[0] for name, args in backend.calls if name.startswith("list")]
        # in whatever order the tasks ran: ``a`` itself is listed in a task of its own
        assert sorted(listed) == [("a",), ("a", "s"), ("a", "s", "x")]
