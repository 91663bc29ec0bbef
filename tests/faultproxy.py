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
