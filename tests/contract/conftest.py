"""Fixtures of the contract suite: every service (server × way of reaching it), each server
started once per session, one shared mount per service, and the CLI run as a user runs it.

``service`` is parametrized over ``SERVICES``; pytest groups the tests by it, so at most one
shared mount is up at a time. A test names what it needs with ``needs(service, ...)`` and is
skipped, by capability only, where the service cannot do it.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.contract import services as sv
from tests.faultproxy import Relay
from tests.mounting import Mount, is_mounted, mounted, private_env, scratch_dir
from tests.servers import dovecot, inn, proftpd
from tests.servers.ftp import running_ftp, running_vsftpd
from tests.servers.smtp import SmtpServer

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no FUSE")

#: service id → (server fixture, how to make the service from the server)
SERVICES: dict[str, tuple[str, Callable[[object], sv.Service]]] = {
    "pyftpdlib-ftp": ("pyftpdlib", lambda s: sv.pyftpdlib_service(s, "ftp")),  # type: ignore[arg-type]
    "pyftpdlib-ftpes": ("pyftpdlib", lambda s: sv.pyftpdlib_service(s, "ftpes")),  # type: ignore[arg-type]
    "pyftpdlib-ftps": ("pyftpdlib", lambda s: sv.pyftpdlib_service(s, "ftps")),  # type: ignore[arg-type]
    "proftpd-ftp": ("proftpd_server", lambda s: sv.proftpd_service(s, "ftp")),  # type: ignore[arg-type]
    "proftpd-ftpes": ("proftpd_server", lambda s: sv.proftpd_service(s, "ftpes")),  # type: ignore[arg-type]
    "proftpd-ftps": ("proftpd_server", lambda s: sv.proftpd_service(s, "ftps")),  # type: ignore[arg-type]
    "vsftpd-ftp": ("vsftpd_plain", sv.vsftpd_service),  # type: ignore[dict-item]
    "vsftpd-ftpes": ("vsftpd_tls", sv.vsftpd_service),  # type: ignore[dict-item]
    "dovecot-imap": ("dovecot_srv", lambda s: sv.imap_service(s, "imap")),  # type: ignore[arg-type]
    "dovecot-imaps": ("dovecot_srv", lambda s: sv.imap_service(s, "imaps")),  # type: ignore[arg-type]
    "dovecot-pop3": ("dovecot_srv", lambda s: sv.pop3_service(s, "pop3")),  # type: ignore[arg-type]
    "dovecot-pop3s": ("dovecot_srv", lambda s: sv.pop3_service(s, "pop3s")),  # type: ignore[arg-type]
    "inn-nntp": ("inn_srv", lambda s: sv.nntp_service(s, "nntp")),  # type: ignore[arg-type]
    "inn-nntps": ("inn_srv", lambda s: sv.nntp_service(s, "nntps")),  # type: ignore[arg-type]
    "aiosmtpd-smtp": ("smtp_srv", lambda s: sv.smtp_service(s, "smtp")),  # type: ignore[arg-type]
    "aiosmtpd-smtps": ("smtp_srv", lambda s: sv.smtp_service(s, "smtps")),  # type: ignore[arg-type]
}


# -- the servers, once per session -------------------------------------------------------------


@pytest.fixture(scope="session")
def pyftpdlib() -> Iterator[object]:
    with running_ftp() as server:
        yield server


@pytest.fixture(scope="session")
def proftpd_server() -> Iterator[object]:
    if not proftpd.available():
        pytest.skip("ProFTPD is not unpacked (contrib/setup.sh)")
    with proftpd.running_proftpd() as server:
        yield server


@pytest.fixture(scope="session")
def vsftpd_plain() -> Iterator[object]:
    with running_vsftpd({}) as server:
        yield server


@pytest.fixture(scope="session")
def vsftpd_tls() -> Iterator[object]:
    with running_vsftpd({}, tls=True) as server:
        yield server


@pytest.fixture(scope="session")
def dovecot_srv() -> Iterator[object]:
    if not dovecot.available():
        pytest.skip("dovecot is not installed")
    with dovecot.dovecot() as server:
        yield server


@pytest.fixture(scope="session")
def inn_srv() -> Iterator[object]:
    if not inn.available():
        pytest.skip("inn2 is not installed")
    with inn.running_inn() as server:
        yield server


@pytest.fixture(scope="session")
def smtp_srv() -> Iterator[object]:
    server = SmtpServer()
    try:
        yield server
    finally:
        server.stop()


# -- the service, and what the tests share ---------------------------------------------------


@pytest.fixture(scope="session", params=list(SERVICES))
def service(request: pytest.FixtureRequest) -> sv.Service:
    fixture, make = SERVICES[request.param]
    return make(request.getfixturevalue(fixture))


def needs(service: sv.Service, *caps: str) -> None:
    """Skip unless the service has every capability named."""
    missing = [c for c in caps if c not in service.caps]
    if missing:
        pytest.skip(f"{service.id} cannot: {', '.join(missing)}")


@pytest.fixture
def area(service: sv.Service) -> sv.Area:
    """A place of this test's own on the server."""
    return service.new_area()


@dataclass
class Shared:
    """The one mount of a service the data tests share, through a relay they can cut."""

    mount: Mount
    relay: Relay

    @property
    def path(self) -> Path:
        return self.mount.path


@pytest.fixture(scope="session")
def shared(service: sv.Service) -> Iterator[Shared]:
    """Listings are trusted for half a second only, so what a test puts on the server shows soon."""
    service.stock_areas(12)
    relay = Relay(service.host, service.port)
    try:
        cfg = service.account(port=relay.port, metadata_ttl=0.5, poll_interval=0.5)
        # no warning is expected: a cut connection that is replaced is no news to the user
        with mounted(cfg, source=sv.ACCOUNT) as m:
            yield Shared(m, relay)
    finally:
        relay.close()


# -- the CLI as a user runs it ---------------------------------------------------------------


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port bound but not listening: connections to it are refused, and no other process
    can take it meanwhile (a server that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def attempt(config_toml: str) -> subprocess.CompletedProcess:
    """``fsmount -c FILE acct MNT`` in its default (detached) mode, in a home of its own;
    a mount that unexpectedly worked is undone. The log it left is checked: no traceback."""
    home = scratch_dir("fsmount-test-")
    mnt = home / "mnt"
    mnt.mkdir()
    (home / "config.toml").write_text(config_toml)
    (home / "config.toml").chmod(0o600)
    try:
        done = subprocess.run([sys.executable, "-m", "fsmount", "-c", str(home / "config.toml"),
                               sv.ACCOUNT, str(mnt)], capture_output=True, text=True, timeout=90,
                              stdin=subprocess.DEVNULL, env=private_env(home))
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        for log in home.rglob("*.log"):
            assert "Traceback" not in log.read_text(errors="replace"), log.read_text()
        return done
    finally:
        shutil.rmtree(home, ignore_errors=True)


def one_line(done: subprocess.CompletedProcess, status: int, pattern: str) -> None:
    """The user's whole answer: one line on stderr, naming the reason, and the status."""
    assert done.returncode == status, (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("fsmount: "), done.stderr
    assert re.search(pattern, done.stderr), done.stderr
