"""ProFTPD on loopback: a third real FTP server, with its own MLSD dialect (symlinks as
``type=OS.unix=slink:TARGET``), its own LIST and a strict TLS (every data connection must
resume the control connection's TLS session, which fsmount does).

Debian's package conflicts with vsftpd's (both provide ``ftp-server``), so ``contrib/setup.sh``
unpacks it into ``PROFTPD_ROOT`` instead of installing it. ``running_proftpd()`` starts one
daemon with three listeners on ports picked free: plain FTP, explicit FTPS (``AUTH TLS``
optional) and implicit FTPS. User ``alice``/``secret`` (full rights), chrooted to ``root``.
"""
from __future__ import annotations

import ftplib
import os
import shutil
import signal
import ssl
import subprocess

from .ports import bound_socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers.certs import certs
from tests.servers.ftp import USERS, _data_dir, _wait_port

PROFTPD_ROOT = Path(os.environ.get("PROFTPD_ROOT", "/opt/fsmount-test/proftpd"))
PROFTPD = PROFTPD_ROOT / "usr/sbin/proftpd"


def available() -> bool:
    return PROFTPD.exists() and (PROFTPD_ROOT / "usr/lib/proftpd/mod_tls.so").exists()


@dataclass
class ProFtpd:
    dir: Path
    root: Path  # alice's home and chroot: tests check their writes here
    port: int  # plain FTP, AUTH TLS offered but optional
    tls_port: int  # the same listener as ``port`` (explicit FTPS is AUTH TLS on it)
    implicit_port: int  # implicit FTPS
    proc: subprocess.Popen
    ca: Path = field(default_factory=lambda: certs().ca)

    def url(self, scheme: str = "ftp", user: str | None = "alice", path: str = "") -> str:
        port = self.implicit_port if scheme == "ftps" else self.port
        who = f"{user}@" if user else ""
        return f"{scheme}://{who}127.0.0.1:{port}{path}"

    def client(self, user: str | None = "alice", tls: bool = False) -> ftplib.FTP:
        """A direct ftplib client, for checking from the server's side."""
        if tls:
            c: ftplib.FTP = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=str(self.ca)),
                                           timeout=10)
        else:
            c = ftplib.FTP(timeout=10)
        c.connect("127.0.0.1", self.port)
        c.login(user or "anonymous", USERS.get(user or "", ""))
        return c

    def log_text(self) -> str:
        return (self.dir / "proftpd.log").read_text(errors="replace")


def _password_hash(password: str) -> str:
    return subprocess.run(["openssl", "passwd", "-6", password], capture_output=True, text=True,
                          check=True).stdout.strip()


def _config(d: Path, root: Path, ports: list[int], passive: tuple[int, int]) -> str:
    c = certs()
    tls = [
        "TLSEngine on", "TLSRequired off", f"TLSECCertificateFile {c.cert}",
        f"TLSECCertificateKeyFile {c.key}", "TLSVerifyClient off",
        "TLSProtocol TLSv1.2 TLSv1.3", f"TLSLog {d / 'tls.log'}",
    ]
    common = [
        "AuthOrder mod_auth_file.c", f"AuthUserFile {d / 'passwd'}", f"AuthGroupFile {d / 'group'}",
        "RequireValidShell off", "DefaultRoot ~", "RootLogin on", "AllowOverwrite on",
        "TimesGMT on",
        f"PassivePorts {passive[0]} {passive[1]}", "MaxLoginAttempts 100",
        "<Limit SITE_CHMOD>", "  AllowAll", "</Limit>",
    ]
    lines = [
        f"ModulePath {PROFTPD_ROOT / 'usr/lib/proftpd'}",
        # Debian 13 builds transfers (mod_xfer) and LIST (mod_ls) as modules too
        *(line for module in ("mod_tls.c", "mod_xfer.c", "mod_ls.c")
          for line in (f"<IfModule !{module}>", f"  LoadModule {module}", "</IfModule>")),
        "ServerType standalone", 'ServerName "fsmount test ProFTPD"', "DefaultServer off",
        "DefaultAddress 127.0.0.1", "SocketBindTight on", "UseIPv6 off", f"Port {ports[0]}",
        "User root", "Group root", "UseReverseDNS off", "WtmpLog off",
        # mod_delay is built in on Debian 12, a module of its own (not loaded here) on 13
        "<IfModule mod_delay.c>", "  DelayEngine off", "</IfModule>",
        "MaxInstances 200", "TimeoutIdle 120",
        f"ScoreboardFile {d / 'scoreboard'}", f"PidFile {d / 'proftpd.pid'}",
        f"SystemLog {d / 'proftpd.log'}", f"TransferLog {d / 'xfer.log'}",
        *common, *tls,
        "<VirtualHost 127.0.0.1>", f"  Port {ports[1]}", *(f"  {x}" for x in common + tls),
        "  TLSOptions UseImplicitSSL", "</VirtualHost>",
    ]
    return "\n".join(lines) + "\n"


def _free_ports(n: int) -> tuple[list[int], ExitStack]:
    """``n`` free ports, held bound until the caller lets go (just before the server binds
    them): two servers starting at once cannot pick the same."""
    stack = ExitStack()
    ports = []
    for _ in range(n):
        s = stack.enter_context(bound_socket())
        ports.append(s.getsockname()[1])
    return ports, stack


@contextmanager
def running_proftpd() -> Iterator[ProFtpd]:
    if not available():
        raise RuntimeError(f"ProFTPD is not unpacked in {PROFTPD_ROOT} (run contrib/setup.sh)")
    d = _data_dir("srv-proftpd-")
    root = d / "root"
    root.mkdir()
    (d / "passwd").write_text(f"alice:{_password_hash(USERS['alice'])}:0:0::{root}:/bin/sh\n")
    (d / "group").write_text("root:x:0:\n")
    for f in ("passwd", "group"):
        os.chmod(d / f, 0o600)  # ProFTPD refuses world-readable AuthUserFiles
    proc = None
    try:
        for _ in range(10):
            ports, held = _free_ports(4)
            passive_base = ports[2]
            (d / "proftpd.conf").write_text(
                _config(d, root, ports[:2], (passive_base, passive_base + 40)))
            held.close()
            proc = subprocess.Popen([str(PROFTPD), "-n", "-q", "-c", str(d / "proftpd.conf")],
                                    stdout=subprocess.DEVNULL,
                                    stderr=open(d / "stderr.log", "wb"), start_new_session=True)
            try:
                _wait_port(ports[0], proc)
                _wait_port(ports[1], proc)
                break
            except RuntimeError:  # lost a port to someone else: try others
                proc = None
        if proc is None:
            raise RuntimeError(f"ProFTPD did not start: {(d / 'stderr.log').read_text()[-2000:]}")
        yield ProFtpd(d, root, ports[0], ports[0], ports[1], proc)
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the daemon and its session children
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(d, ignore_errors=True)
