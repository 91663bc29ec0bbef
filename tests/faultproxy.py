"""The loopback plumbing of the fault injectors: a proxy between a client and a real server
that subclasses make misbehave on purpose (cut a transfer, refuse a command, misreport)."""
from __future__ import annotations

import socket
import threading


class FaultProxy:
    """Listens on a free loopback port; each client gets its own connection to the server,
    and ``serve(client, upstream)`` relays between them (in its own threads)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream_address = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()
        cut(*self.sockets)
        for s in self.sockets:
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream_address)
            self.sockets += [client, upstream]
            self.serve(client, upstream)


def cut(*socks: socket.socket) -> None:
    """Really disconnect (close() alone waits for another thread's makefile)."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Relay(FaultProxy):
    """A transparent relay that keeps count: ``connections`` accepted so far, ``from_client``
    every byte a client sent (a password sent in clear shows here), and ``cut_all`` to drop
    every connection at once, as a server restart or a NAT timeout would; ``cut_after = N``
    cuts the connection that next carries N more bytes from the server, in the middle of an
    answer (``cuts`` counts those). TLS passes through untouched (the relay only moves
    bytes), so it stands in front of any server."""

    def __init__(self, host: str, port: int) -> None:
        self.connections = 0
        self.from_client = bytearray()
        self.cut_after: int | None = None
        self.cuts = 0
        self._lock = threading.Lock()
        super().__init__(host, port)

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def cut_all(self) -> int:
        """Drop every connection open now; how many there were."""
        with self._lock:
            socks, self.sockets = self.sockets, []
        cut(*socks)
        for s in socks:
            s.close()
        return len(socks) // 2

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    if from_client:
                        self.from_client += data
                    elif self.cut_after is not None:
                        if len(data) >= self.cut_after:
                            data, self.cut_after = data[:self.cut_after], None
                            self.cuts += 1
                            dst.sendall(data)
                            cut(src, dst)
                            return
                        self.cut_after -= len(data)
                dst.sendall(data)
        except OSError:
            pass
        cut(dst)
