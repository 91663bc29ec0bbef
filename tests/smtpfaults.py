"""A fault injector in front of the real SMTP server: it loses the answer to the final "."

The server really receives (and records) the message; only its answer to the end of DATA
never reaches the client: ``hold`` keeps it back (the client waits, e.g. until it is killed),
``drop`` cuts both connections instead. One fault, on the first message; afterwards (and on
every later connection) the proxy only relays. Plain SMTP only: it reads the client's lines.
"""
from __future__ import annotations

import socket
import threading

from .faultproxy import FaultProxy, cut


class FinalDotProxy(FaultProxy):
    def __init__(self, host: str, port: int, fault: str) -> None:
        assert fault in ("hold", "drop")
        self.fault = fault
        self.armed = True
        self.connections = 0
        self.faulted = threading.Event()  # the server answered the final dot; it was lost
        self._lock = threading.Lock()
        super().__init__(host, port)

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        dot_sent = threading.Event()
        for relay, args in ((self._from_client, (client, upstream, dot_sent)),
                            (self._from_server, (upstream, client, dot_sent))):
            threading.Thread(target=relay, args=args, daemon=True).start()

    def _from_client(self, client: socket.socket, upstream: socket.socket,
                     dot_sent: threading.Event) -> None:
        in_data, partial = False, b""
        while chunk := _recv(client):
            lines = (partial + chunk).split(b"\r\n")
            partial = lines.pop()
            for line in lines:
                if not in_data and line.upper() == b"DATA":
                    in_data = True
                elif in_data and line == b".":
                    in_data = False
                    dot_sent.set()  # before the server can see it, so its answer is caught
            if not _send(upstream, chunk):
                break
        cut(upstream)

    def _from_server(self, upstream: socket.socket, client: socket.socket,
                     dot_sent: threading.Event) -> None:
        while chunk := _recv(upstream):
            if dot_sent.is_set():
                with self._lock:
                    fire, self.armed = self.armed, False
                if fire:
                    if self.fault == "drop":
                        cut(client, upstream)
                    self.faulted.set()
                    return  # "hold": nothing from the server reaches the client any more
            if not _send(client, chunk):
                break
        cut(client)


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except OSError:
        return b""


def _send(s: socket.socket, data: bytes) -> bool:
    try:
        s.sendall(data)
        return True
    except OSError:
        return False
