"""The loopback plumbing of the fault injectors: a proxy between a client and a real server
that subclasses make misbehave on purpose (cut a transfer, refuse a command, misreport)."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.servers.ports import bound_socket


def _listener() -> socket.socket:
    """Below the ephemeral range (see servers/ports.py): a port given up for a while (a
    server "stopped" and "restarted") is not taken meanwhile by an outgoing connection."""
    s = bound_socket()
    s.listen()
    return s


class FaultProxy:
    """Listens on a free loopback port; each client gets its own connection to the server,
    and ``serve(client, upstream)`` relays between them (in its own threads)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream_address = (host, port)
        self.listener = _listener()
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
            for s in (client, upstream):
                # Relayed as it comes: without this, Nagle holds a reply sent right after
                # another (FTP's 125 then 226) until the client's delayed ACK, 40 ms later
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets += [client, upstream]
            self.serve(client, upstream)


def cut(*socks: socket.socket) -> None:
    """Really disconnect (close() alone waits for another thread's makefile)."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def relay(src: socket.socket, dst: socket.socket) -> None:
    """Pass everything from ``src`` on to ``dst`` unchanged, then disconnect ``dst``: the
    direction of a connection a fault proxy leaves alone."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    cut(dst)


class OutageProxy(FaultProxy):
    """A server that goes away and comes back, as its clients see it.

    ``silence()``: it stops answering (a paused server, a network cut off): connections are
    still accepted, and what either side sends is held back, as a paused server's unread
    socket or a cut link would; ``held`` counts the bytes clients sent meanwhile, so a test
    can wait until a request reached the silent server.
    ``refuse()``: it is stopped: connections are refused and the open ones reset.
    ``restore()``: it is back, on the same port; what was held back is delivered then, as a
    resumed server answers what waited for it (a client that gave up meanwhile has closed its
    connection). So a probe sent during the outage is answered as soon as the server is back,
    whenever that is, and a test's timing does not decide whether it met the outage.
    """

    def __init__(self, host: str, port: int) -> None:
        self.held = 0
        self._audible = threading.Event()
        self._audible.set()
        super().__init__(host, port)

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if not self._audible.is_set():
                    if from_client:
                        self.held += len(data)
                    self._audible.wait()
                dst.sendall(data)
        except OSError:
            pass
        cut(dst)

    @property
    def silent(self) -> bool:
        return not self._audible.is_set()

    def silence(self) -> None:
        self.held = 0
        self._audible.clear()

    def close(self) -> None:
        self._audible.set()  # let the held pipes end
        super().close()

    def refuse(self) -> None:
        cut(self.listener)  # close() alone leaves the accept() under way accepting one more
        self.listener.close()
        cut(*self.sockets)
        for s in self.sockets:  # so that the port can be listened on again
            s.close()
        self.sockets = []

    def restore(self) -> None:
        self._audible.set()
        if self.listener.fileno() == -1:
            self.listener = socket.create_server(("127.0.0.1", self.port))
            threading.Thread(target=self._accept, daemon=True).start()


@dataclass(frozen=True)
class Line:
    """One line a client sent through a :class:`Relay`, as the server received it: on which
    connection, and after how many of the server's answers (chunks relayed back on that
    connection). Two lines of one connection after the same number of answers were sent
    before the server had answered the first: pipelined, as the server saw it."""

    connection: int
    text: str
    answers: int

    @property
    def word(self) -> str:
        """The command's first word, upper case (of an IMAP command: its tag)."""
        return self.text.split(" ", 1)[0].upper()


class Relay(FaultProxy):
    """A transparent relay that keeps count: ``connections`` accepted so far, ``from_client``
    every byte a client sent (a password sent in clear shows here), and ``cut_all`` to drop
    every connection at once, as a server restart or a NAT timeout would; ``cut_after = N``
    cuts the connection that next carries N more bytes from the server, in the middle of an
    answer (``cuts`` counts those); ``hold_after = N`` holds back what the server sends after
    N more bytes until ``release()``, as a slow link would (``held`` is set once it does).
    TLS passes through untouched (the relay only moves bytes), so it stands in front of any
    server.

    ``lines()`` is what the server was asked, line by line, and ``batches()`` which commands
    arrived pipelined: readable only on a connection without TLS (``tls = "off"``). Once a
    client starts a TLS handshake (STARTTLS, or TLS from the first byte) no more lines are
    recorded on that connection: ``encrypted`` counts, per connection, the bytes the client
    sent from then on, which no one on the wire can read."""

    def __init__(self, host: str, port: int) -> None:
        self.connections = 0
        self.from_client = bytearray()
        self.sent: list[Line] = []  # every line clients sent, in the order it arrived
        self.encrypted: dict[int, int] = {}  # connection → client bytes sent inside TLS
        self.cut_after: int | None = None
        self.cuts = 0
        self.hold_after: int | None = None
        self.held = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        super().__init__(host, port)

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            conn = _Connection(self.connections)
        threading.Thread(target=self._pipe, args=(client, upstream, conn, True), daemon=True).start()
        threading.Thread(target=self._pipe, args=(upstream, client, conn, False), daemon=True).start()

    def release(self) -> None:
        """Let what ``hold_after`` held back go on, and all that follows."""
        self._released.set()

    def close(self) -> None:
        self.release()
        super().close()

    def mark(self) -> int:
        """Where the record stands now: pass it as ``since`` to see only what came later."""
        with self._lock:
            return len(self.sent)

    def lines(self, since: int = 0) -> list[str]:
        """Every line clients sent since ``mark()``, in order, without its line end."""
        with self._lock:
            return [line.text for line in self.sent[since:]]

    def commands(self, word: str, since: int = 0) -> list[str]:
        """The lines sent since ``mark()`` that start with the command ``word``."""
        with self._lock:
            return [line.text for line in self.sent[since:] if line.word == word.upper()]

    def batches(self, word: str, since: int = 0) -> list[int]:
        """How many ``word`` commands each round carried: a run of them on one connection
        with no answer from the server in between counts as one round (``[4]``: four sent
        before the server answered the first; ``[1, 1]``: one at a time)."""
        with self._lock:
            sent = self.sent[since:]
        rounds: list[int] = []
        open_round: dict[int, tuple[int, int]] = {}  # connection → (answers, index in rounds)
        for line in sent:
            if line.word != word.upper():
                open_round.pop(line.connection, None)
                continue
            answers, index = open_round.get(line.connection, (-1, -1))
            if answers == line.answers:
                rounds[index] += 1
            else:
                open_round[line.connection] = (line.answers, len(rounds))
                rounds.append(1)
        return rounds

    def cut_all(self) -> int:
        """Drop every connection open now; how many there were."""
        with self._lock:
            socks, self.sockets = self.sockets, []
        cut(*socks)
        for s in socks:
            s.close()
        return len(socks) // 2

    def _pipe(self, src: socket.socket, dst: socket.socket, conn: _Connection, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                rest = b""  # held back until release()
                with self._lock:  # recorded before it is passed on: the order is causal
                    if from_client:
                        self.from_client += data
                        self.sent += conn.lines(data)
                        if conn.tls:
                            n = conn.number
                            self.encrypted[n] = self.encrypted.get(n, 0) + len(data)
                    else:
                        conn.answers += 1
                        if self.hold_after is not None and len(data) > self.hold_after:
                            data, rest, self.hold_after = data[:self.hold_after], data[self.hold_after:], None
                            self.held.set()
                        elif self.hold_after is not None:
                            self.hold_after -= len(data)
                        if self.cut_after is not None:
                            if len(data) >= self.cut_after:
                                data, self.cut_after = data[:self.cut_after], None
                                self.cuts += 1
                                dst.sendall(data)
                                cut(src, dst)
                                return
                            self.cut_after -= len(data)
                dst.sendall(data)
                if rest:
                    self._released.wait()
                    dst.sendall(rest)
        except OSError:
            pass
        cut(dst)


class _Connection:
    """A relayed connection's count of answers, the client's unfinished line, and whether
    the client has started TLS on it."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.answers = 0
        self.partial = b""
        self.tls = False

    def lines(self, data: bytes) -> list[Line]:
        """The lines ``data`` completes; none once the client started TLS: a chunk that
        begins, at a line start, with a TLS handshake record (type 22, version 3.x), which no
        text command does, is where the clear text ends."""
        if not self.tls and not self.partial and data[:2] == b"\x16\x03":
            self.tls = True
        if self.tls:
            return []
        *done, self.partial = (self.partial + data).split(b"\n")
        return [Line(self.number, raw.rstrip(b"\r").decode("utf-8", "replace"), self.answers)
                for raw in done]


@contextmanager
def relaying(host: str, port: int) -> Iterator[Relay]:
    """A :class:`Relay` in front of ``host:port`` for the length of a ``with`` block."""
    relay = Relay(host, port)
    try:
        yield relay
    finally:
        relay.close()
