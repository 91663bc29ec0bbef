"""A private Dovecot (IMAP + POP3) on loopback, for the mail tests and the demo.

One instance per fixture, from a throwaway /tmp dir: its own base_dir, state_dir, log and
passwd file, so it never meets the system's dovecot. Four listeners on ports picked free
(IMAP with STARTTLS, IMAPS, POP3 with STLS, POP3S); users alice/secret1 and bob/secret2 whose
mail (Maildir, ``/``-separated folders as real directories) belongs to uid 65534, since
Dovecot refuses uid 0. The anvil auth penalty and the failure delay are off, so a test with a
wrong password costs half a second, not fifteen.
"""
from __future__ import annotations

import imaplib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from .certs import certs

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
HOST = "127.0.0.1"
USERS = {"alice": "secret1", "bob": "secret2"}
MAIL_UID = 65534

CONFIG = """\
base_dir = {d}/run
state_dir = {d}/state
instance_name = fsmount-test-{tag}
log_path = {d}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_dh = </usr/share/dovecot/dh.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
mail_max_userip_connections = 100
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd
}}
mail_location = maildir:~/Maildir:LAYOUT=fs
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = create
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = create
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def available() -> bool:
    return os.path.exists(DOVECOT)


@dataclass
class Dovecot:
    dir: Path
    imap_port: int  # plain, STARTTLS offered
    imaps_port: int
    pop3_port: int  # plain, STLS offered
    pop3s_port: int
    ca: Path
    proc: subprocess.Popen

    def imap(self, user: str = "alice") -> imaplib.IMAP4:
        """A direct client (the tests' view from the server side), over STARTTLS."""
        conn = imaplib.IMAP4(HOST, self.imap_port, timeout=10)
        conn.starttls(ssl.create_default_context(cafile=str(self.ca)))
        conn.login(user, USERS[user])
        return conn

    def doveadm(self, *args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run([DOVEADM, "-c", str(self.dir / "dovecot.conf"), *args], input=stdin,
                              capture_output=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"doveadm {args}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode(errors="replace")

    def create_folder(self, name: str, user: str = "alice") -> None:
        """``name`` in UTF-8 with ``/`` as the separator; parents are created as needed."""
        self.doveadm("mailbox", "create", "-u", user, name)

    def deliver(self, user: str, message: bytes, folder: str = "INBOX", flags: str = "") -> int:
        """APPEND one message as the user would; returns its UID."""
        with self.imap(user) as conn:
            typ, data = conn.append(_quote(folder), f"({flags})" if flags else None, None, message)
            assert typ == "OK", data
            code = data[0].decode() if data and data[0] else ""
        if "APPENDUID" in code:
            return int(code.split("APPENDUID")[1].split()[1].rstrip("]"))
        return 0

    def log(self) -> str:
        try:
            return (self.dir / "dovecot.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then wait for the master to exit (a restart before that fails)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _quote(folder: str) -> str:
    from imapclient.imap_utf7 import encode

    return '"' + encode(folder).decode().replace("\\", "\\\\").replace('"', '\\"') + '"'


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _start(d: Path) -> Dovecot:
    c = certs()
    imap, imaps, pop3, pop3s = _free_ports(4)
    (d / "dovecot.conf").write_text(CONFIG.format(
        d=d, tag=d.name, cert=c.cert, key=c.key, imap=imap, imaps=imaps, pop3=pop3, pop3s=pop3s))
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(d / "dovecot.conf")],
                            stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "wb"))
    server = Dovecot(d, imap, imaps, pop3, pop3s, c.ca, proc)
    deadline = time.monotonic() + 15
    delay = 0.005
    while not all(_listening(p) for p in (imap, imaps, pop3, pop3s)):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            err = (d / "stderr.log").read_text(errors="replace") + server.log()
            raise RuntimeError(f"dovecot did not start: {err[-3000:]}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return server


@contextmanager
def running_dovecot() -> Iterator[Dovecot]:
    """A fresh Dovecot in a throwaway dir; stopped and removed afterwards."""
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix="srv-dovecot-"))
    os.chmod(d, 0o755)
    (d / "mail").mkdir()
    lines = [f"{u}:{{PLAIN}}{p}:{MAIL_UID}:{MAIL_UID}::{d}/mail/{u}\n" for u, p in USERS.items()]
    (d / "passwd").write_text("".join(lines))
    for user in USERS:
        (d / "mail" / user).mkdir()
    shutil.chown(d / "mail", MAIL_UID, MAIL_UID)
    for user in USERS:
        shutil.chown(d / "mail" / user, MAIL_UID, MAIL_UID)
    server = None
    try:
        for attempt in range(5):  # a port taken between choosing and binding: choose again
            try:
                server = _start(d)
                break
            except RuntimeError:
                if attempt == 4:
                    raise
        yield server  # type: ignore[misc]
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A fresh Dovecot per test (start ~0.05 s, stop ~1 s)."""
    if not available():
        pytest.skip("dovecot is not installed")
    with running_dovecot() as server:
        yield server
