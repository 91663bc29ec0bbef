"""IDLE on INBOX in a thread of its own: new mail shows without polling; a dropped
connection is noticed and reopened."""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

from imapclient import IMAPClient

from ..base import Path

from .session import _close

if TYPE_CHECKING:
    from . import ImapBackend

log = logging.getLogger(__name__)

IDLE_RENEW = 25 * 60  # RFC 2177: re-issue IDLE before the server's 30-minute timeout
IDLE_CHECK = 1.0  # how long one wait for IDLE news lasts (and so how soon stop() is seen)


class IdleWatcher:
    """One connection of its own, IDLEing on a folder in a thread; ``dirty`` is set when the
    server reports anything (new, expunged or changed messages) and cleared by the next scan.

    ``idling`` is False while it (re)connects: then ``changed`` asks the server as usual.
    """

    def __init__(self, backend: ImapBackend, path: Path, folder: str) -> None:
        self.backend = backend
        self.path = path
        self.folder = folder
        self.dirty = True
        self.idling = False
        self._stop = threading.Event()
        self._conn: IMAPClient | None = None
        self._thread = threading.Thread(target=self._loop, name=f"imap-idle {folder}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None:
            try:
                conn.socket().shutdown(socket.SHUT_RDWR)  # wakes the thread at once
            except OSError:
                pass
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        label = self.backend.label
        failures = 0
        while not self._stop.is_set():
            try:
                self._conn = conn = self.backend._connect()
                if not conn.has_capability("IDLE"):
                    log.info("%s: no IDLE; polling instead", label)
                    return
                conn.select_folder(self.folder, readonly=True)
                failures = 0
                while not self._stop.is_set():
                    log.debug("%s: IDLE %s", label, self.folder)
                    conn.idle()
                    self.idling = True
                    started = time.monotonic()
                    quick = 0
                    while not self._stop.is_set() and time.monotonic() - started < IDLE_RENEW:
                        asked = time.monotonic()
                        if conn.idle_check(timeout=IDLE_CHECK):
                            self.dirty = True
                            quick = 0
                        elif time.monotonic() - asked < IDLE_CHECK / 2:
                            # imapclient answers nothing at once, not an error, when the
                            # server has closed the connection: without this the thread
                            # spins and changed() trusts a dead connection for good
                            quick += 1
                            if quick >= 3:
                                raise ConnectionError("the server closed the IDLE connection")
                        else:
                            quick = 0
                    self.idling = False
                    conn.idle_done()
            except Exception as e:  # lost connection, server restart: reconnect with backoff
                self.idling = False
                self.dirty = True
                if self._stop.is_set():
                    break
                failures += 1
                log.info("%s: IDLE on %s stopped (%s); reconnecting", label, self.folder, e)
                self._stop.wait(min(60.0, 0.5 * 2 ** min(failures, 7)))
            finally:
                self.idling = False
                if self._conn is not None:
                    conn, self._conn = self._conn, None
                    if self._stop.is_set():
                        try:
                            conn.shutdown()
                        except Exception:
                            pass
                    else:
                        _close(conn)




