"""Entries → the attributes the kernel sees."""
from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

import pyfuse3

from ..backends.base import Capabilities, Entry

#: Kernel cache times. Immutable objects (messages) never change under their name; other
#: entries are kept as long as the cache trusts the listing they came from (``trust``), or
#: ``MUTABLE_TIMEOUT`` where nothing vouches for them: files being written, sizes that are
#: only hints, entries of a listing that was not kept.
IMMUTABLE_TIMEOUT = 300.0
MUTABLE_TIMEOUT = 1.0
PENDING = ("pending",)  # the identity of a file created here and not stored yet


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int
    readonly: bool = False

    @classmethod
    def current(cls, readonly: bool = False) -> Owner:
        return cls(os.getuid(), os.getgid(), readonly)


def make(inode: int, entry: Entry, caps: Capabilities, owner: Owner,
         trust: float | None = None) -> pyfuse3.EntryAttributes:
    """The kernel's view of ``entry``, which the cache trusts ``trust`` seconds more (None:
    not at all). Runs once per directory entry in a listing, so it reads each field once,
    sets each attribute once and calls nothing it need not."""
    a = pyfuse3.EntryAttributes()
    a.st_ino = inode
    writable = not owner.readonly and (caps.write or caps.remove or caps.mkdir)
    is_dir = entry.is_dir
    if entry.symlink is not None:
        size = len(entry.symlink.encode())
        a.st_mode = _IFLNK | 0o777
    else:
        mode = entry.mode
        if is_dir:
            size = 0
            perm = (mode if mode is not None else 0o755) & 0o7777
            a.st_mode = _IFDIR | (perm if writable else perm & _NO_WRITE)
        else:
            size = entry.size or 0
            perm = (mode if mode is not None else 0o644) & 0o7777
            if not (writable and caps.write and (caps.overwrite or not caps.immutable)):
                perm &= _NO_WRITE
            a.st_mode = _IFREG | perm
    a.st_size = size
    a.st_nlink = 2 if is_dir else 1
    a.st_uid = owner.uid
    a.st_gid = owner.gid
    mtime = entry.mtime
    a.st_mtime_ns = a.st_ctime_ns = a.st_atime_ns = (
        int(mtime * 1e9) if mtime is not None else _MOUNTED_NS)
    a.st_blksize = 1024 * 1024
    a.st_blocks = (size + 511) // 512
    if not entry.size_exact and not is_dir:
        # a size that is only a hint is asked for again at each stat: the cache layer
        # answers with the exact size as soon as it knows it
        a.entry_timeout, a.attr_timeout = MUTABLE_TIMEOUT, 0
    elif entry.identity == PENDING:
        a.attr_timeout = a.entry_timeout = MUTABLE_TIMEOUT
    elif caps.immutable:
        a.attr_timeout = a.entry_timeout = IMMUTABLE_TIMEOUT
    else:
        a.attr_timeout = a.entry_timeout = MUTABLE_TIMEOUT if trust is None else trust
    return a


_IFLNK, _IFDIR, _IFREG = stat.S_IFLNK, stat.S_IFDIR, stat.S_IFREG
# The time shown where the server tells none (IMAP folders, NNTP groups): the same at every
# stat, or tar reports "file changed as we read it" and exits 1.
_MOUNTED_NS = time.time_ns()
_NO_WRITE = ~0o222  # permission bits without any write bit
