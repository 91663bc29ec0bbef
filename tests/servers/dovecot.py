"""A private Dovecot (IMAP + POP3) on loopback, for the mail tests and the demo.

One instance per fixture, from a throwaway /tmp dir: its own base_dir, state_dir, log and
passwd file, so it never meets the system's dovecot. Four listeners on ports picked free
(IMAP with STARTTLS, IMAPS, POP3 with STLS, POP3S); users alice/secret1 and bob/secret2 whose
mail (Maildir, ``/``-separated folders as real directories) belongs to uid 65534, since
Dovecot refuses uid 0. The anvil auth penalty and the failure delay are off, so a test with a
wrong password costs half a second, not fifteen.

Use ``with dovecot() as srv:`` (``running_dovecot`` is the same), or the fixtures
``dovecot_server`` (one per test module; tests must not rely on an empty mailbox) and
``fresh_dovecot`` (one per test). Import the fixture into the test module to use it.
Pre-load mail with ``srv.deliver`` (IMAP APPEND, as a client would), ``srv.append_many`` (one
connection for many messages) or ``srv.write_maildir`` (files straight into the Maildir: the
fastest way to make 10,000 messages; Dovecot indexes them on the next access).
"""
from __future__ import annotations

import imaplib
import itertools
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from .certs import certs
from .ports import free_ports

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
HOST = "127.0.0.1"
USERS = {"alice": "secret1", "bob": "secret2"}
MAIL_UID = 65534
STOP_GRACE = 0.2  # seconds the master has to end by itself after SIGTERM

# What Dovecot 2.3 (Debian 12) and 2.4 (Debian 13) spell alike: logging, listeners, folders.
COMMON = """\
base_dir = {d}/run
state_dir = {d}/state
instance_name = fsmount-test-{tag}
log_path = {d}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = yes
auth_mechanisms = plain login
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
mail_max_userip_connections = 100
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
"""

# Dovecot 2.3: TLS files as <-includes, passwd-file via driver/args, mail_location.
CONFIG_23 = """\
ssl_cert = <{cert}
ssl_key = <{key}
ssl_dh = </usr/share/dovecot/dh.pem
disable_plaintext_auth = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd
}}
mail_location = maildir:~/Maildir:LAYOUT=fs
# without this, every failed login after the first from 127.0.0.1 waits seconds
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
""" + COMMON

# Dovecot 2.4 refuses a 2.3 file: versioned header, named passdb/userdb blocks, mail_driver.
CONFIG_24 = """\
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
ssl_server_cert_file = {cert}
ssl_server_key_file = {key}
auth_allow_cleartext = yes
passdb passwd-file {{
  passwd_file_path = {d}/passwd
}}
userdb passwd-file {{
  passwd_file_path = {d}/passwd
}}
mail_driver = maildir
mail_path = ~/Maildir
mailbox_list_layout = fs
""" + COMMON


def version() -> tuple[int, ...]:
    """Dovecot's version, e.g. (2, 3, 19, 1) or (2, 4, 1)."""
    out = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True, check=True).stdout
    return tuple(int(x) for x in out.split()[0].split("-")[0].split("."))


def config_template() -> str:
    return CONFIG_24 if version() >= (2, 4) else CONFIG_23


def available() -> bool:
    return os.path.exists(DOVECOT)


@dataclass
class Dovecot:
    dir: Path  # the data dir: dovecot.conf, passwd, mail/<user>/Maildir, dovecot.log
    imap_port: int  # plain, STARTTLS offered
    imaps_port: int
    pop3_port: int  # plain, STLS offered
    pop3s_port: int
    ca: Path  # CA file that verifies the server certificate (fsmount's ca_file)
    proc: subprocess.Popen
    host: str = HOST
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))

    @property
    def data_dir(self) -> Path:
        return self.dir

    @property
    def pid(self) -> int:
        return self.proc.pid

    def maildir(self, user: str = "alice") -> Path:
        return self.dir / "mail" / user / "Maildir"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def imap(self, user: str = "alice") -> imaplib.IMAP4:
        """A direct client (the tests' view from the server side), over STARTTLS."""
        conn = imaplib.IMAP4(self.host, self.imap_port, timeout=10)
        conn.starttls(self.ssl_context())
        conn.login(user, self.users[user])
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

    def deliver(self, user: str, message: bytes, folder: str = "INBOX", flags: str = "",
                date: datetime | None = None) -> int:
        """APPEND one message as the user would; returns its UID (0 without APPENDUID)."""
        return self.append_many(user, [message], folder, flags, date)[0]

    def append_many(self, user: str, messages: Iterable[bytes], folder: str = "INBOX",
                    flags: str = "", date: datetime | None = None) -> list[int]:
        """APPEND several messages over one connection (folder name in UTF-8); their UIDs."""
        uids = []
        when = imaplib.Time2Internaldate(date) if date is not None else None
        with self.imap(user) as conn:
            for message in messages:
                typ, data = conn.append(_quote(folder), f"({flags})" if flags else None, when,
                                        message)
                assert typ == "OK", data
                uids.append(_appenduid(data))
        return uids

    def write_maildir(self, user: str, folder: str, messages: Iterable[bytes], *,
                      seen: bool = False, mtime: float | None = None) -> list[Path]:
        """Write messages as Maildir files in ``cur/`` (``:2,`` or ``:2,S`` when seen).

        ``folder`` is UTF-8 with ``/`` (``INBOX`` is the Maildir root). The files get uid 65534;
        Dovecot assigns UIDs on the next access. Files go to ``cur/``, not ``new/``: a read-only
        (EXAMINE) session cannot move them out of ``new/``, and rescanning 100,000 files there
        made every STATUS take 20 s. ``mtime`` (the file's, which
        Dovecot uses as INTERNALDATE) defaults to now. Works while the server runs or before.
        """
        base = self.maildir(user)
        if folder.upper() != "INBOX":
            base = base.joinpath(*(_mutf7(part) for part in folder.split("/")))
        created = _make_maildir(base, self.maildir(user).parent)
        target = base / "cur"
        paths = []
        stamp = int(time.time())
        for i, message in enumerate(messages):
            name = f"{stamp}.M{i}P{os.getpid()}Q{next(_counter)}.fsmount-test:2," + ("S" if seen else "")
            tmp = base / "tmp" / name
            tmp.write_bytes(message)
            os.chown(tmp, MAIL_UID, MAIL_UID)
            if mtime is not None:
                os.utime(tmp, (mtime, mtime))
            os.rename(tmp, target / name)
            paths.append(target / name)
        for d in created:
            os.chown(d, MAIL_UID, MAIL_UID)
        return paths

    def log(self) -> str:
        try:
            return (self.dir / "dovecot.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def bodies_sent(self) -> tuple[int, int]:
        """(message bodies, their bytes) Dovecot sent so far, from the line each IMAP session
        logs when it ends (``body_count=``, ``body_bytes=``): what the server saw fetched."""
        ended = re.findall(r"body_count=(\d+) body_bytes=(\d+)", self.log())
        return sum(int(c) for c, _ in ended), sum(int(b) for _, b in ended)

    def stop(self) -> None:
        """SIGTERM to the master, as a server is stopped; what is left a moment later is
        SIGKILLed. Dovecot's master waits up to 6 s for login processes to end and 1 s for
        its log process: that made every fixture's teardown, and every restart, cost 1-6 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: Dovecot's processes only
        except ProcessLookupError:
            pass
        self.proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same ports and data (e.g. after a 'server down' test)."""
        self.stop()
        ports = (self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port)
        deadline = time.monotonic() + 15
        while any(_listening(p) for p in ports) and time.monotonic() < deadline:
            time.sleep(0.01)  # the killed processes' listeners are not closed yet
        self.proc = _spawn(self.dir)
        _wait_listening(self, time.monotonic() + 15)


_counter = itertools.count()


def _mutf7(name: str) -> str:
    from imapclient.imap_utf7 import encode

    return encode(name).decode()


def _make_maildir(base: Path, stop: Path) -> list[Path]:
    """Create ``base`` with cur/new/tmp (and parents); returns what was created, to chown."""
    created = []
    for d in reversed([base, *base.parents]):
        if d == stop or stop not in d.parents:
            continue
        if not d.exists():
            d.mkdir()
            created.append(d)
    for sub in ("cur", "new", "tmp"):
        if not (base / sub).exists():
            (base / sub).mkdir()
            created.append(base / sub)
    for d in created:
        os.chown(d, MAIL_UID, MAIL_UID)
    return created


def _appenduid(data: list) -> int:
    code = data[0].decode() if data and data[0] else ""
    if "APPENDUID" in code:
        return int(code.split("APPENDUID")[1].split()[1].rstrip("]"))
    return 0


def _quote(folder: str) -> str:
    return '"' + _mutf7(folder).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _spawn(d: Path) -> subprocess.Popen:
    with open(d / "stderr.log", "ab") as err:
        return subprocess.Popen([DOVECOT, "-F", "-c", str(d / "dovecot.conf")],
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


def _wait_listening(server: Dovecot, deadline: float) -> None:
    ports = (server.imap_port, server.imaps_port, server.pop3_port, server.pop3s_port)
    delay = 0.005
    while not all(_listening(p) for p in ports):
        if server.proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            err = (server.dir / "stderr.log").read_text(errors="replace") + server.log()
            raise RuntimeError(f"dovecot did not start: {err[-3000:]}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _start(d: Path) -> Dovecot:
    c = certs()
    imap, imaps, pop3, pop3s = free_ports(4, HOST)
    (d / "dovecot.conf").write_text(config_template().format(
        d=d, tag=d.name, cert=c.cert, key=c.key, imap=imap, imaps=imaps, pop3=pop3, pop3s=pop3s))
    server = Dovecot(d, imap, imaps, pop3, pop3s, c.ca, _spawn(d))
    _wait_listening(server, time.monotonic() + 15)
    return server


@contextmanager
def dovecot() -> Iterator[Dovecot]:
    """A fresh Dovecot in a throwaway dir; stopped (SIGTERM, PID waited for) and removed after."""
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


running_dovecot = dovecot  # the name tests/demo.py uses


@pytest.fixture(scope="module")
def dovecot_server() -> Iterator[Dovecot]:
    """One Dovecot per test module (start ~0.05 s, stop ~0.2 s); tests share its mailboxes."""
    if not available():
        pytest.skip("dovecot is not installed")
    with dovecot() as server:
        yield server


@pytest.fixture
def fresh_dovecot() -> Iterator[Dovecot]:
    """A Dovecot of its own for one test (empty mailboxes; may be stopped or restarted)."""
    if not available():
        pytest.skip("dovecot is not installed")
    with dovecot() as server:
        yield server
