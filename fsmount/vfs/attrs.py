"""Entries → the attributes the kernel sees."""
from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

import pyfuse3

from ..backends.base import Capabilities, Entry

#: Kernel cache times. Immutable objects (messages) never change under their name.
IMMUTABLE_TIMEOUT = 300.0
MUTABLE_TIMEOUT = 1.0


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int
    readonly: bool = False

    @classmethod
    def current(cls, readonly: bool = False) -> Owner:
        return cls(os.getuid(), os.getgid(), readonly)


def make(inode: int, entry: Entry, caps: Capabilities, owner: Owner) -> pyfuse3.EntryAttributes:
    a = pyfuse3.EntryAttributes()
    a.st_ino = inode
    writable = not owner.readonly and (caps.write or caps.remove or caps.mkdir)
    if entry.symlink is not None:
        a.st_mode = stat.S_IFLNK | 0o777
        a.st_size = len(entry.symlink.encode())
    elif entry.is_dir:
        a.st_mode = stat.S_IFDIR | _perm(entry.mode, 0o755, writable)
        a.st_size = 0
    else:
        file_writable = writable and caps.write and (caps.overwrite or not caps.immutable)
        a.st_mode = stat.S_IFREG | _perm(entry.mode, 0o644, file_writable)
        a.st_size = entry.size or 0
    a.st_nlink = 2 if entry.is_dir else 1
    a.st_uid, a.st_gid = owner.uid, owner.gid
    mtime_ns = int((entry.mtime if entry.mtime is not None else time.time()) * 1e9)
    a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = mtime_ns
    a.st_blksize = 1024 * 1024
    a.st_blocks = (a.st_size + 511) // 512
    timeout = IMMUTABLE_TIMEOUT if caps.immutable and entry.size_exact else MUTABLE_TIMEOUT
    a.attr_timeout = a.entry_timeout = timeout
    return a


def _perm(mode: int | None, default: int, writable: bool) -> int:
    perm = (mode if mode is not None else default) & 0o7777
    return perm if writable else perm & ~0o222
