"""Writers through ``Operations``: a writer whose write failed is poisoned, so its close
fails and nothing is committed (tests/test_write_safety.py does it through a mount)."""
from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyfuse3
import pytest

from fsmount.backends.base import Capabilities
from fsmount.cache.spool import MEMORY_LIMIT
from fsmount.errors import Transient
from fsmount.vfs.operations import Operations

from .harness import mounted_ops, trio_test
from .memory_backend import MemoryBackend

ROOT = pyfuse3.ROOT_INODE
FTP = Capabilities(ranged_read=True, write=True, overwrite=True, remove=True, rename=True)
OLD = b"the server's copy"


def server() -> MemoryBackend:
    return MemoryBackend({"old.txt": OLD}, FTP)


@contextmanager
def disk_full_past(nbytes: int) -> Iterator[None]:
    """Local files of this process cannot grow past ``nbytes`` (as on a full spool disk):
    a write across the limit is cut short, one past it fails with EFBIG."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


async def errno_of(call: object) -> int:
    with pytest.raises(pyfuse3.FUSEError) as e:
        await call  # type: ignore[misc]
    return e.value.errno


async def open_for_writing(ops: Operations, name: str) -> int:
    if name == "old.txt":
        inode = (await ops.lookup(ROOT, name.encode())).st_ino
        return (await ops.open(inode, os.O_WRONLY | os.O_TRUNC, None)).fh
    return (await ops.create(ROOT, name.encode(), 0o644, os.O_WRONLY, None))[0].fh


@pytest.mark.parametrize("name", ["old.txt", "new.txt"])
@trio_test
async def test_a_failed_write_poisons_the_writer(tmp_path: Path, name: str) -> None:
    backend = server()
    async with mounted_ops(backend, tmp_path) as ops:
        fh = await open_for_writing(ops, name)
        assert await ops.write(fh, 0, b"a" * 1000) == 1000
        big = b"b" * (2 * MEMORY_LIMIT)  # past the memory limit: into a spool file
        with disk_full_past(MEMORY_LIMIT // 2):
            failed = await errno_of(ops.write(fh, 1000, big))
        assert failed in (errno.ENOSPC, errno.EFBIG)
        assert await errno_of(ops.write(fh, 1000, b"more")) == failed  # the disk has room again
        assert await errno_of(ops.flush(fh)) == failed  # what close() returns
        assert await errno_of(ops.fsync(fh, False)) == failed
        await ops.release(fh)
        assert backend.count("commit") == 0
        assert backend.bytes_of("old.txt") == OLD
        with pytest.raises(pyfuse3.FUSEError):
            await ops.lookup(ROOT, b"new.txt")


@trio_test
async def test_a_writer_commits_at_flush_once(tmp_path: Path) -> None:
    backend = server()
    async with mounted_ops(backend, tmp_path) as ops:
        fh = await open_for_writing(ops, "old.txt")
        await ops.write(fh, 0, b"x" * (2 * MEMORY_LIMIT))
        await ops.write(fh, 2 * MEMORY_LIMIT, b"end")
        await ops.flush(fh)
        await ops.flush(fh)  # nothing written since: nothing to store
        await ops.release(fh)
        assert backend.count("commit") == 1
        assert backend.bytes_of("old.txt") == b"x" * (2 * MEMORY_LIMIT) + b"end"


async def closed_with_a_failed_commit(ops: Operations, backend: MemoryBackend) -> int:
    """A new file written and closed while the server fails the commit; its handle (not
    released yet)."""
    fh = await open_for_writing(ops, "new.txt")
    await ops.write(fh, 0, b"data")
    backend.fail("commit", Transient("connection lost"))
    assert await errno_of(ops.flush(fh)) == errno.EIO
    return fh


@trio_test
async def test_a_failed_commit_is_what_close_returns(tmp_path: Path) -> None:
    backend = server()
    async with mounted_ops(backend, tmp_path) as ops:
        await ops.release(await closed_with_a_failed_commit(ops, backend))
        assert backend.bytes_of("new.txt") is None
        with pytest.raises(pyfuse3.FUSEError):
            await ops.lookup(ROOT, b"new.txt")  # no pending file left behind


@trio_test
async def test_a_writer_still_open_at_unmount_is_not_committed(tmp_path: Path) -> None:
    """Its program has not closed it: its content may be any prefix of what it means to
    write. The server keeps what it had; the writer's close fails."""
    backend = server()
    async with mounted_ops(backend, tmp_path) as ops:
        fh = await open_for_writing(ops, "old.txt")
        await ops.write(fh, 0, b"torn")
        await ops.drain()
        assert await errno_of(ops.flush(fh)) == errno.EIO
        await ops.release(fh)
        assert backend.count("commit") == 0 and backend.bytes_of("old.txt") == OLD


@trio_test
async def test_a_failed_close_is_not_warned_of_again_at_unmount(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``cp`` was told by close(); its release can still be on its way from the kernel when
    the mount goes (a cp that failed, then an unmount): the file is not "still open"."""
    backend = server()
    async with mounted_ops(backend, tmp_path) as ops:
        told = await closed_with_a_failed_commit(ops, backend)
        untold = await open_for_writing(ops, "old.txt")
        await ops.write(untold, 0, b"torn")
        with caplog.at_level("WARNING", logger="fsmount.vfs.operations"):
            await ops.drain()
        assert [r.getMessage().split(":")[0] for r in caplog.records] == ["old.txt"]
        for fh in (told, untold):
            await ops.release(fh)
        assert backend.count("commit") == 1 and backend.bytes_of("old.txt") == OLD
