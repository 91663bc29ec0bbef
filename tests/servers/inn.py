"""A private INN 2.7 news server on loopback, for the NNTP tests.

innd (plain NNTP + STARTTLS, reader connections handed to nnrpd) gets its listening socket by
systemd-style socket activation: we bind port 0 ourselves and pass the socket as fd 3, so no
port can be stolen between choosing and binding it. A separate ``nnrpd -D -S`` serves NNTPS on
a second port (chosen free, retried on a collision). Every instance has its own ``pathhost``,
which its greeting names, so a test can never talk to someone else's server by mistake.

Articles are pre-loaded by POSTing as alice, exactly as a user would. The data dir is thrown
away, so the fixture stops the servers with SIGKILL (``ctlinnd shutdown`` takes ~3 s and
SIGTERM ~300 s).
"""
from __future__ import annotations

import email.utils
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .certs import certs
from .ports import bound_socket, free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import nntplib

BIN = Path("/usr/lib/news/bin")
HOST = "127.0.0.1"
USERS = {"alice": "secret1", "bob": "secret2"}

#: name → active-file flag (y = open, m = moderated, n = no local posting)
DEFAULT_GROUPS: dict[str, str] = {
    "control": "n",
    "control.cancel": "n",
    "junk": "n",
    "local.test": "y",
    "local.moderated": "m",
    "comp.lang": "y",
    "comp.lang.python": "y",
    "comp.lang.c": "y",
    "de.comp.lang.python.misc": "y",
}


def available() -> bool:
    return (BIN / "innd").exists() and (BIN / "nnrpd").exists()


@dataclass
class InnServer:
    dir: Path
    port: int  # plain NNTP, STARTTLS offered
    tls_port: int  # NNTPS (implicit TLS)
    pathhost: str
    ca: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return _env(self.dir)

    def client(self, user: str | None = "alice", *, tls: bool = False) -> nntplib.NNTP:
        """A direct client (the tests' view from the server side)."""
        if tls:
            ctx = ssl.create_default_context(cafile=str(self.ca))
            conn: nntplib.NNTP = nntplib.NNTP_SSL(HOST, self.tls_port, ssl_context=ctx, timeout=30)
        else:
            conn = nntplib.NNTP(HOST, self.port, timeout=30)
        if user is not None:
            conn.login(user, USERS[user], usenetrc=False)
        return conn

    def post(
        self,
        groups: str | Iterable[str],
        subject: str,
        body: str = "Hello.\n",
        *,
        message_id: str | None = None,
        sender: str = "Alice <alice@example.org>",
        headers: dict[str, str] | None = None,
        conn: nntplib.NNTP | None = None,
    ) -> str:
        """POST one article as alice; returns its Message-ID."""
        newsgroups = groups if isinstance(groups, str) else ",".join(groups)
        message_id = message_id or f"<{uuid.uuid4().hex}@test.invalid>"
        lines = [
            f"From: {sender}",
            f"Newsgroups: {newsgroups}",
            f"Subject: {subject}",
            f"Date: {email.utils.formatdate(localtime=False)}",
            f"Message-ID: {message_id}",
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
            "",
            *body.split("\n"),
        ]
        if lines[-1] == "":
            lines.pop()
        data = [line.encode("utf-8") for line in lines]
        if conn is not None:
            conn.post(data)
        else:
            with self.client() as c:
                c.post(data)
        return message_id

    def post_many(self, group: str, count: int, prefix: str = "Article") -> list[str]:
        """``count`` articles on one connection (2,000 take a few seconds)."""
        with self.client() as c:
            return [self.post(group, f"{prefix} {i}", f"Body of {prefix.lower()} {i}.\n", conn=c)
                    for i in range(1, count + 1)]

    def article(self, ident: str | int, group: str | None = None) -> bytes:
        """The article as the server stores it, CRLF line endings."""
        with self.client() as c:
            if group is not None:
                c.group(group)
            _, info = c.article(str(ident) if isinstance(ident, int) else ident)
            return b"".join(line + b"\r\n" for line in info.lines)

    def moderator_mail(self) -> str:
        """What nnrpd mailed to moderators (articles posted to moderated groups)."""
        path = self.dir / "log" / "moderator.mbox"
        return path.read_text(errors="replace") if path.exists() else ""

    def group_high(self, group: str) -> int:
        with self.client(None) as c:
            return int(c.group(group)[3])

    def ctlinnd(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "ctlinnd"), "-t", "10", *args], env=self.env,
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"ctlinnd {args}: {done.stdout}{done.stderr}")
        return done.stdout

    def new_group(self, name: str, flag: str = "y") -> None:
        self.ctlinnd("newgroup", name, flag, "fixture")

    def drop_connections(self) -> int:
        """SIGKILL the per-connection nnrpd children of our servers: every client is cut off."""
        killed = 0
        for proc in self.procs:
            for child in _children(proc.pid):
                try:
                    os.kill(child, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
        return killed

    def stop(self) -> None:
        for proc in self.procs:
            _kill_group(proc)
        self.procs.clear()


# -- setup -------------------------------------------------------------------------------


def _set_keys(path: Path, values: dict[str, str]) -> None:
    """Replace (or add) ``key: value`` lines, commented-out defaults included."""
    keys = set(values)
    kept = [
        line for line in path.read_text().splitlines()
        if line.lstrip("#").split(":", 1)[0].strip() not in keys
    ]
    kept += [f"{k}: {v}" for k, v in values.items()]
    path.write_text("\n".join(kept) + "\n")


def _layout(d: Path, groups: dict[str, str], pathhost: str, tls: bool) -> None:
    for sub in ("etc", "db", "run", "log", "spool/articles", "spool/overview",
                "spool/incoming/tmp", "spool/outgoing", "spool/archive", "http"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    shutil.copytree("/etc/news", d / "etc", dirs_exist_ok=True)
    if tls:
        c = certs()
        shutil.copy(c.cert, d / "etc" / "cert.pem")
        shutil.copy(c.key, d / "etc" / "key.pem")
    _set_keys(d / "etc" / "inn.conf", {
        "pathetc": f"{d}/etc", "pathdb": f"{d}/db", "pathrun": f"{d}/run",
        "pathlog": f"{d}/log", "pathspool": f"{d}/spool",
        "patharticles": f"{d}/spool/articles", "pathoverview": f"{d}/spool/overview",
        "pathincoming": f"{d}/spool/incoming", "pathtmp": f"{d}/spool/incoming/tmp",
        "pathoutgoing": f"{d}/spool/outgoing", "patharchive": f"{d}/spool/archive",
        "pathhttp": f"{d}/http",
        "bindaddress": HOST, "pathhost": pathhost, "domain": "test.invalid",
        "pgpverify": "false", "doinnwatch": "false", "htmlstatus": "false",
        "status": "0", "timer": "0", "nnrpdloadlimit": "0", "artcutoff": "0",
        # readers at the priority of everything else the tests run: at INN's default (nice 4)
        # an nnrpd took seconds to greet on a machine busy with other test processes
        "nicekids": "0",
        "mta": f'"{d}/etc/fake-mta %s"',
        **({"tlscertfile": f"{d}/etc/cert.pem", "tlskeyfile": f"{d}/etc/key.pem"} if tls else {}),
    })
    (d / "etc" / "incoming.conf").write_text("# no peers: 127.0.0.1 is a reader, not a feeder\n")
    (d / "etc" / "newsfeeds").write_text("ME:*,!junk,!control*::\n")
    (d / "db" / "active").write_text(
        "".join(f"{name} 0000000000 0000000001 {flag}\n" for name, flag in groups.items()))
    (d / "db" / "newsgroups").write_text("local.test\tLocal test group.\n")
    (d / "db" / "active.times").touch()
    (d / "etc" / "moderators").write_text("*:%s@moderators.test.invalid\n")
    # Articles for moderated groups go to the moderator by mail: into a file here, never
    # through the machine's MTA.
    mta = d / "etc" / "fake-mta"
    mta.write_text(f"#!/bin/sh\n{{ echo \"To: $1\"; cat; echo; }} >> {d}/log/moderator.mbox\n")
    mta.chmod(0o755)
    (d / "etc" / "nnrp.passwd").write_text("".join(
        f"{user}:{_crypt(password)}\n" for user, password in USERS.items()))
    (d / "etc" / "readers.conf").write_text(f"""\
auth "anon" {{
    hosts: "127.0.0.1, ::1, localhost"
    default: "<anon>"
}}
auth "users" {{
    hosts: "127.0.0.1, ::1, localhost"
    auth: "ckpasswd -f {d}/etc/nnrp.passwd"
}}
access "anon" {{
    users: "<anon>"
    newsgroups: "*"
    access: R
}}
access "users" {{
    users: "*,!<anon>"
    newsgroups: "*"
    access: RPA
}}
""")
    (d / "db" / "history").touch()
    news = pwd.getpwnam("news")
    for root, dirs, files in os.walk(d):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), news.pw_uid, news.pw_gid)
    os.chown(d, news.pw_uid, news.pw_gid)
    if tls:
        os.chmod(d / "etc" / "key.pem", 0o600)
    env = _env(d)
    done = subprocess.run([str(BIN / "makedbz"), "-i", "-o", "-f", "history"], cwd=d / "db",
                          env=env, capture_output=True, text=True)  # runs as news
    if done.returncode != 0:
        raise RuntimeError(f"makedbz failed: {done.stderr}")


def _env(d: Path) -> dict[str, str]:
    """The environment of INN's programs: its own inn.conf; OpenSSL's default trust store
    (which nnrpd loads for every TLS connection, to check client certificates nobody sends)
    only the tests' CA: the system's bundle cost ~60 ms of CPU per connection; and a fully
    qualified host name, so that nnrpd does not ask DNS for the machine's: every nnrpd reads
    inn.conf and canonicalizes the host name, and where /etc/hosts does not name the host
    (the Debian 13 chroot) one greeting in twenty waited 5 s for a resolver that did not
    answer. INN reads INN_HOSTNAME since 2.7.2 (Debian 13); Debian's installers put the
    host's name in /etc/hosts."""
    return {**os.environ, "INNCONF": str(d / "etc" / "inn.conf"),
            "SSL_CERT_FILE": str(certs().ca), "SSL_CERT_DIR": str(d / "etc"),
            "INN_HOSTNAME": "news.test.invalid"}


def _crypt(password: str) -> str:
    return subprocess.run(["openssl", "passwd", "-6", password], check=True,
                          capture_output=True, text=True).stdout.strip()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a server we started and the nnrpd children it forked (its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _greets(port: int, pathhost: str, proc: subprocess.Popen, deadline: float) -> bool:
    """Poll until the server on ``port`` greets a reader (200/201) with our pathhost; False
    if ``proc`` died or another server answers there."""
    delay = 0.005
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                s.settimeout(5)
                greeting = s.recv(512)
                if pathhost.encode() in greeting:
                    if greeting.startswith(b"20"):  # a reader's greeting: clients are served
                        return True
                elif greeting:  # someone else's server on this port
                    return False
        except OSError:
            pass
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise TimeoutError(f"news server on port {port} did not start; see its log")


def _start_innd(d: Path, pathhost: str, log: Path) -> tuple[subprocess.Popen, int]:
    listener = bound_socket(HOST)
    listener.listen(64)
    port = listener.getsockname()[1]
    _set_keys(d / "etc" / "inn.conf", {"port": str(port), "nnrpdpostport": str(port)})
    env = {**_env(d), "LISTEN_FDS": "1"}

    def as_fd3() -> None:
        os.dup2(listener.fileno(), 3)
        os.set_inheritable(3, True)

    # LISTEN_PID must be innd's own PID: the shell sets it to $$ and then execs innd.
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", f'LISTEN_PID=$$ exec {BIN}/innd -d -u -c 0'],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=as_fd3, close_fds=False, start_new_session=True,
        )
    listener.close()
    return proc, port


def _start_nntps(d: Path, pathhost: str, log: Path) -> tuple[subprocess.Popen, int]:
    """``nnrpd -D`` binds by itself: pick a free port, retry if someone took it meanwhile."""
    env = _env(d)
    for _ in range(10):
        port = free_port(HOST)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [str(BIN / "nnrpd"), "-D", "-f", "-S", "-b", HOST, "-p", str(port)],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if _tls_ready(port, proc, time.monotonic() + 20):
            return proc, port
        _kill_group(proc)
    raise RuntimeError("could not start nnrpd for NNTPS")


def _tls_ready(port: int, proc: subprocess.Popen, deadline: float) -> bool:
    delay = 0.005
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:  # nnrpd's own greeting over TLS: a port another process took meanwhile is not it
            ctx = ssl.create_default_context(cafile=str(certs().ca))
            with socket.create_connection((HOST, port), timeout=2) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                if tls.recv(64).startswith(b"20"):
                    return True
                return False
        except OSError:
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    raise TimeoutError(f"nnrpd on port {port} did not start")


@contextmanager
def running_inn(groups: dict[str, str] | None = None, *, tls: bool = True) -> Iterator[InnServer]:
    """Start a fresh INN in a throwaway /tmp dir; kill it and remove the dir afterwards.

    ``tls=False``: no certificate, so no STARTTLS and no NNTPS port (``tls_port`` is 0).
    """
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix="srv-inn-"))
    os.chmod(d, 0o755)
    pathhost = f"news-{uuid.uuid4().hex[:10]}.test.invalid"
    log = d / "server.log"
    server: InnServer | None = None
    try:
        _layout(d, groups or DEFAULT_GROUPS, pathhost, tls)
        proc, port = _start_innd(d, pathhost, log)
        server = InnServer(d, port, 0, pathhost, certs().ca, [proc])
        try:
            started = _greets(port, pathhost, proc, time.monotonic() + 60)
        except TimeoutError:
            started = False
        if not started:
            raise RuntimeError(f"innd did not start:\n{log.read_text(errors='replace')[-3000:]}")
        if tls:
            tls_proc, server.tls_port = _start_nntps(d, pathhost, log)
            server.procs.append(tls_proc)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def inn() -> Iterator[InnServer]:
    """A fresh INN per test (start ~0.2 s, stop instant)."""
    if not available():
        pytest.skip("inn2 is not installed")
    with running_inn() as server:
        yield server


@pytest.fixture
def inn_without_tls() -> Iterator[InnServer]:
    """An INN that offers neither STARTTLS nor NNTPS."""
    if not available():
        pytest.skip("inn2 is not installed")
    with running_inn(tls=False) as server:
        yield server
