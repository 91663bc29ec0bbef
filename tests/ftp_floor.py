"""The floor for reading a file over FTP: a bare pyfuse3 filesystem holding one file, whose
bytes come from one RETR that a worker thread receives into memory, served as they arrive.

It has no cache, no checks and no protocol beyond one RETR, serves the file with direct_io (as
fsmount serves big files), and maps the memory it receives into before the read starts: less
than any pyfuse3 filesystem pays to read a file from an FTP server, beside the floor of
``../shared/bench/fuse_floor.py``, which reads a local file.

usage: FTP_FLOOR_PASSWORD=… ftp_floor.py PORT USER NAME SIZE MOUNTPOINT   (loopback only)
"""
from __future__ import annotations

import errno
import ftplib
import os
import socket
import stat
import sys
import threading

import pyfuse3
import trio

CHUNK = 1 << 20
FILE_INODE = pyfuse3.ROOT_INODE + 1


class OneFile(pyfuse3.Operations):
    def __init__(self, port: int, user: str, password: str, name: str, size: int) -> None:
        super().__init__()
        self.login = (port, user, password)
        self.name = name
        self.size = size
        self.data = bytearray(size)
        self.data[::4096] = bytes(len(range(0, size, 4096)))  # its pages mapped before the read
        self.arrived = 0  # bytes of ``data`` received so far
        self.ended = False  # the transfer is over, whole or not
        self.changed = trio.Event()
        self.receiving = False

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        if inode == pyfuse3.ROOT_INODE:
            a.st_mode = stat.S_IFDIR | 0o755
        else:
            a.st_mode, a.st_size = stat.S_IFREG | 0o644, self.size
        a.entry_timeout = a.attr_timeout = 60
        return a

    async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    async def lookup(self, parent: int, name: bytes, ctx: object = None) -> pyfuse3.EntryAttributes:
        if parent != pyfuse3.ROOT_INODE or name != self.name.encode():
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(FILE_INODE)

    async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
        if not self.receiving:
            self.receiving = True
            token = trio.lowlevel.current_trio_token()
            threading.Thread(target=self._receive, args=(token,), daemon=True).start()
        return pyfuse3.FileInfo(fh=FILE_INODE, direct_io=True)

    async def read(self, fh: int, off: int, size: int) -> memoryview:
        end = min(off + size, self.size)
        while self.arrived < end and not self.ended:
            await self.changed.wait()
        return memoryview(self.data)[off:min(end, self.arrived)]

    def _receive(self, token: trio.lowlevel.TrioToken) -> None:
        try:
            self._retrieve(token)
        finally:  # a short or failed transfer ends the reads (short) instead of hanging them
            self.ended = True
            token.run_sync_soon(self._wake)

    def _retrieve(self, token: trio.lowlevel.TrioToken) -> None:
        port, user, password = self.login
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", port)
        ftp.login(user, password)
        ftp.voidcmd("TYPE I")
        with ftp.transfercmd("RETR " + self.name) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, CHUNK)  # one wake-up per chunk
            view = memoryview(self.data)
            while self.arrived < self.size:
                got = sock.recv_into(view[self.arrived:self.arrived + CHUNK], 0, socket.MSG_WAITALL)
                if not got:
                    break
                self.arrived += got
                token.run_sync_soon(self._wake)
        ftp.voidresp()
        ftp.quit()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


def main() -> None:
    port, user, name, size, mnt = sys.argv[1:6]
    password = os.environ["FTP_FLOOR_PASSWORD"]
    options = set(pyfuse3.default_options) | {"fsname=ftp_floor", "ro"}
    pyfuse3.init(OneFile(int(port), user, password, name, int(size)), mnt, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    main()
