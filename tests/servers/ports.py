"""Ports for the test servers, below the kernel's ephemeral range (32768-60999 here).

A port that ``bind(0)`` picked is free at that moment, but it is one the kernel also hands to
the local end of outgoing connections: under load (thousands of loopback connections a
second, e.g. FTP data connections) a server started a moment later finds it taken
(EADDRINUSE). Ports below the range are only ever taken by someone who asked for them.
"""
from __future__ import annotations

import random
import socket

PORTS = range(20000, 32000)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports nobody listens on or is bound to right now."""
    found: list[int] = []
    for port in random.sample(PORTS, 200):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        found.append(port)
        if len(found) == n:
            return found
    raise RuntimeError(f"no {n} free ports in {PORTS}")


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def bound_socket(host: str = "127.0.0.1") -> socket.socket:
    """A socket bound to a free port of the range (for a server that takes a listening fd)."""
    for port in random.sample(PORTS, 200):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return s
        except OSError:
            s.close()
    raise RuntimeError(f"no free port in {PORTS}")
