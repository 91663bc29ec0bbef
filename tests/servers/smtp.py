"""A real SMTP submission server (aiosmtpd) on loopback, with a capturing handler and faults.

One ``SmtpServer`` listens on two free ports: ``port`` speaks plain SMTP with optional
STARTTLS, ``tls_port`` implicit TLS (SMTPS). Both offer AUTH PLAIN and LOGIN for the users in
``USERS``, 8BITMIME and SMTPUTF8. Every accepted message is recorded as a ``Delivery``
(envelope, exact bytes, whether the session was encrypted and authenticated).

Faults are programmable while the server runs:
- ``server.refuse("later@", "450 4.2.0 try again later", times=2)`` answers RCPT TO for
  addresses starting with the prefix (``times=None``: forever);
- ``server.fail_data(2, "451 4.3.0 try again")`` fails the next two DATA commands;
  ``hold_failure(n, until)`` keeps the n-th failure's answer back until the wall-clock time
  ``until`` (``math.inf``: until told otherwise), as a slow server would.

``smtp_server`` is the pytest fixture (imported by tests that want it).
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from .certs import certs
from .ports import free_port

USERS = {"alice": "secret1", "bob": "secret2"}

# aiosmtpd warns on every AUTH about its own deprecated Session.login_data; not our business.
logging.getLogger("mail.log").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Delivery:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    mail_options: tuple[str, ...]
    user: str | None  # who authenticated, None for an anonymous session
    encrypted: bool


@dataclass
class _Refusal:
    reply: str
    times: int | None  # None: every time


class Capture:
    """The aiosmtpd handler: records deliveries and plays the programmed faults."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.refusals: dict[str, _Refusal] = {}
        self.data_failures = 0
        self.data_reply = "451 4.3.0 Temporary failure, try again"
        self.data_failed = 0  # DATA commands failed so far
        self.held: dict[int, float] = {}  # n-th failure → when its answer may go
        self.rcpt_attempts: list[str] = []
        self.changed = threading.Condition()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        with self.changed:
            self.rcpt_attempts.append(address)
            for prefix, refusal in self.refusals.items():
                if address.startswith(prefix) and refusal.times != 0:
                    if refusal.times is not None:
                        refusal.times -= 1
                    return refusal.reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.changed:
            if self.data_failures:
                self.data_failures -= 1
                self.data_failed += 1
                failure, reply = self.data_failed, self.data_reply
            else:
                failure = 0
        if failure:
            while time.time() < self.held.get(failure, 0.0):  # its deadline may be moved
                await asyncio.sleep(0.01)
            return reply
        with self.changed:
            transport = server.transport
            encrypted = session.ssl is not None or (
                transport is not None and transport.get_extra_info("ssl_object") is not None
            )
            user = session.auth_data if session.authenticated else None
            self.deliveries.append(Delivery(
                envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.original_content),
                tuple(envelope.mail_options), user, encrypted,
            ))
            self.changed.notify_all()
        return "250 2.0.0 OK: queued"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    """LoginPassword check for PLAIN and LOGIN."""
    login = auth_data.login.decode()
    ok = USERS.get(login) == auth_data.password.decode()
    return AuthResult(success=ok, handled=False, auth_data=login if ok else None)


def _start(handler: Capture, **kwargs: Any) -> Controller:
    """Pick a free port and start; another process may grab it in between, so retry."""
    for attempt in range(20):
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(),
                                authenticator=authenticator, auth_require_tls=False, **kwargs)
        try:
            controller.start()
            return controller
        except (OSError, RuntimeError):
            if attempt == 19:
                raise
    raise AssertionError("unreachable")


class SmtpServer:
    def __init__(self, *, auth_required: bool = False) -> None:
        self.handler = Capture()
        c = certs()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(c.cert), str(c.key))
        self.ca = str(c.ca)
        common = {"auth_required": auth_required, "decode_data": False}
        self._plain = _start(self.handler, tls_context=ctx, require_starttls=False, **common)
        try:
            self._tls = _start(self.handler, ssl_context=ctx, **common)
        except BaseException:
            self._plain.stop()
            raise
        self.host = "127.0.0.1"
        self.port = self._plain.port
        self.tls_port = self._tls.port

    # -- what was received ---------------------------------------------------------------

    @property
    def deliveries(self) -> list[Delivery]:
        with self.handler.changed:
            return list(self.handler.deliveries)

    def wait_deliveries(self, count: int, timeout: float = 20.0) -> list[Delivery]:
        """Block until at least ``count`` messages were accepted (a condition, not a sleep)."""
        deadline = time.monotonic() + timeout
        with self.handler.changed:
            while len(self.handler.deliveries) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.handler.deliveries)} of {count} messages arrived")
                self.handler.changed.wait(left)
            return list(self.handler.deliveries)

    # -- faults --------------------------------------------------------------------------

    def refuse(self, prefix: str, reply: str, times: int | None = None) -> None:
        with self.handler.changed:
            self.handler.refusals[prefix] = _Refusal(reply, times)

    def fail_data(self, times: int, reply: str = "451 4.3.0 Temporary failure, try again") -> None:
        with self.handler.changed:
            self.handler.data_failures = times
            self.handler.data_reply = reply

    def hold_failure(self, n: int, until: float) -> None:
        """Answer the ``n``-th failed DATA (counted since the server started) only once
        ``time.time()`` reaches ``until``."""
        with self.handler.changed:
            self.handler.held[n] = until

    def stop(self) -> None:
        for controller in (self._plain, self._tls):
            try:
                controller.stop()
            except Exception:  # already stopped
                pass


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    try:
        yield server
    finally:
        server.stop()
