"""What a socket-level failure means to the user, the same for every protocol."""
from __future__ import annotations

import socket
import ssl

from ..errors import FsError, PermissionDenied, TimedOut, Transient, Unreachable


def connection_failure(exc: BaseException, server: str) -> FsError | None:
    """The FsError for a transport failure talking to ``server`` ("the FTP server"), or None
    when ``exc`` is not one. Only a lost connection or a timeout is worth retrying."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermissionDenied(f"TLS certificate not trusted: {exc.verify_message}")
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return Unreachable(f"{server} unreachable: {exc}")
    if isinstance(exc, TimeoutError | socket.timeout):
        return TimedOut(f"{server} timed out: {exc}")
    if isinstance(exc, EOFError | OSError):
        return Transient(f"connection to {server} lost: {exc!r}")
    return None
