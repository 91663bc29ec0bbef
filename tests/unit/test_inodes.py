"""Inode lifetimes in the VFS, driven through ``Operations`` without a kernel: a node lives
while the kernel holds lookups on it or a handle is open, and follows renames."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pyfuse3
import pytest

from fsmount.backends.base import Capabilities
from fsmount.vfs.operations import Operations

from .harness import mounted_ops, trio_test
from .memory_backend import MemoryBackend

ROOT = pyfuse3.ROOT_INODE
FTP = Capabilities(ranged_read=True, write=True, overwrite=True, mkdir=True, remove=True,
                   rename=True)


def server() -> MemoryBackend:
    return MemoryBackend({"f": b"file", "d/x": b"inside", "d/sub/y": b"deeper"}, FTP)


async def lookup(ops: Operations, parent: int, name: str) -> int:
    return (await ops.lookup(parent, name.encode())).st_ino


@trio_test
async def test_a_node_lives_until_the_kernel_forgets_every_lookup(tmp_path: Path) -> None:
    async with mounted_ops(server(), tmp_path) as ops:
        inode = await lookup(ops, ROOT, "f")
        assert await lookup(ops, ROOT, "f") == inode
        assert ops.inodes[inode].lookups == 2
        await ops.forget([(inode, 1)])
        assert ops.inodes.get(inode) is not None and ops.inodes.at(("f",)) is not None
        await ops.forget([(inode, 1)])
        assert ops.inodes.get(inode) is None and ops.inodes.at(("f",)) is None
        with pytest.raises(pyfuse3.FUSEError) as e:
            await ops.getattr(inode)
        assert e.value.errno == errno.ENOENT
        again = await lookup(ops, ROOT, "f")
        assert again != inode and ops.inodes[again].lookups == 1


@trio_test
async def test_an_open_file_outlives_the_kernels_lookups(tmp_path: Path) -> None:
    async with mounted_ops(server(), tmp_path) as ops:
        inode = await lookup(ops, ROOT, "f")
        fh = (await ops.open(inode, os.O_RDONLY, None)).fh
        await ops.forget([(inode, 1)])
        assert await ops.read(fh, 0, 100) == b"file"
        assert (await ops.getattr(inode)).st_size == 4
        await ops.release(fh)
        assert ops.inodes.get(inode) is None


@trio_test
async def test_the_root_is_never_forgotten(tmp_path: Path) -> None:
    async with mounted_ops(server(), tmp_path) as ops:
        await ops.forget([(ROOT, 10)])
        assert (await ops.getattr(ROOT)).st_ino == ROOT
        assert await lookup(ops, ROOT, "f") > ROOT


@trio_test
async def test_a_rename_moves_the_node_and_everything_below_it(tmp_path: Path) -> None:
    backend = server()
    async with mounted_ops(backend, tmp_path) as ops:
        d = await lookup(ops, ROOT, "d")
        x = await lookup(ops, d, "x")
        sub = await lookup(ops, d, "sub")
        y = await lookup(ops, sub, "y")
        await ops.rename(ROOT, b"d", ROOT, b"e", 0, None)
        assert [ops.inodes[i].vpath for i in (d, x, sub, y)] == [
            ("e",), ("e", "x"), ("e", "sub"), ("e", "sub", "y")]
        assert ops.inodes.at(("d", "x")) is None and ops.inodes.at(("d",)) is None
        assert await lookup(ops, ROOT, "e") == d
        assert await lookup(ops, sub, "y") == y
        fh = (await ops.open(y, os.O_RDONLY, None)).fh
        assert await ops.read(fh, 0, 100) == b"deeper"
        await ops.release(fh)
        with pytest.raises(pyfuse3.FUSEError):
            await ops.lookup(ROOT, b"d")
        assert backend.bytes_of("e/sub/y") == b"deeper"


@trio_test
async def test_a_rename_over_a_file_replaces_its_node(tmp_path: Path) -> None:
    async with mounted_ops(server(), tmp_path) as ops:
        d = await lookup(ops, ROOT, "d")
        x = await lookup(ops, d, "x")
        f = await lookup(ops, ROOT, "f")
        await ops.rename(d, b"x", ROOT, b"f", 0, None)
        assert await lookup(ops, ROOT, "f") == x
        assert ops.inodes[f].vpath == ("f",) and ops.inodes.at(("f",)) is ops.inodes[x]
        await ops.forget([(f, 1)])
        assert ops.inodes.get(f) is None and ops.inodes.at(("f",)) is ops.inodes[x]


@trio_test
async def test_an_unlinked_name_gets_a_new_node(tmp_path: Path) -> None:
    """The kernel may still hold the removed file's inode; a new file of the same name is
    another file, never that inode again."""
    async with mounted_ops(server(), tmp_path) as ops:
        old = await lookup(ops, ROOT, "f")
        await ops.unlink(ROOT, b"f", None)
        assert ops.inodes.at(("f",)) is None and ops.inodes.get(old) is not None
        fh = (await ops.create(ROOT, b"f", 0o644, os.O_WRONLY, None))[0].fh
        await ops.write(fh, 0, b"new")
        await ops.flush(fh)
        await ops.release(fh)
        new = await lookup(ops, ROOT, "f")
        assert new != old
        await ops.forget([(old, 1)])
        assert ops.inodes.get(old) is None and ops.inodes.at(("f",)) is ops.inodes[new]
