"""FTP servers for the tests, the demo and the benchmark: pyftpdlib and vsftpd on loopback.

``running_ftp()`` starts one pyftpdlib process (``python -m tests.servers.ftp DIR``) with three
listeners on ports the kernel picks: plain FTP (no TLS offered), explicit FTPS (``AUTH TLS``
optional) and implicit FTPS. Users: ``alice``/``secret`` (full rights, incl. SITE CHMOD and
MFMT), ``bob``/``secret2`` (read-only) and anonymous (read-only). Faults are switched on at
run time by ``set_faults`` (a JSON file the server re-reads when it changes):

- ``drop_after``: after N bytes of a download, close the data *and* control connections
  (``times`` of them, default 1; needs ``sendfile=False``);
- ``slow``: delay every reply by this many seconds; ``hang``: never answer a command again;
- ``list_extra``/``mlsd_extra``: raw lines appended to every LIST / MLSD answer (hostile listings);
- ``list_cap``: listings end after this many lines, with ``226 Output truncated to N matches``
  (or ``list_cap_reply``, e.g. a 426; or, with ``list_cap_silent``, inside the next line
  and with the usual 226);
- ``no_mlst``: MLSD and MLST answer 500 although FEAT offers them (a LIST-only server);
- ``drop_upload_after``: the same for uploads (N bytes received);
- ``stor_reply``: answer every STOR with this reply instead (e.g. ``552 Quota exceeded``);
- ``no_rename_over``: RNTO onto an existing file fails with 550, as on some servers.

``FtpServer.commands()`` lists every command the server received (``PASS`` without its argument).

``running_vsftpd()`` starts a real vsftpd 3 (anonymous, read-only, LIST only — no MLSD/MFMT),
optionally with TLS enforced and ``require_ssl_reuse=YES``.
"""
from __future__ import annotations

import ftplib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

from .ports import free_port
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers.certs import certs

USERS = {"alice": "secret", "bob": "secret2"}
REPO = Path(__file__).resolve().parent.parent.parent
VSFTPD = "/usr/sbin/vsftpd"


def _data_dir(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix=prefix))
    os.chmod(d, 0o755)
    return d


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"port {port} did not open") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


# -- pyftpdlib -----------------------------------------------------------------------------


@dataclass
class FtpServer:
    dir: Path
    root: Path  # what the users see; tests check their writes here
    port: int  # plain FTP, no TLS offered
    tls_port: int  # explicit FTPS (AUTH TLS optional)
    implicit_port: int  # implicit FTPS
    proc: subprocess.Popen
    ca: Path = field(default_factory=lambda: certs().ca)

    def url(self, scheme: str = "ftp", user: str | None = "alice", path: str = "") -> str:
        port = {"ftps": self.implicit_port, "ftpes": self.tls_port}.get(scheme, self.port)
        who = f"{user}@" if user else ""
        return f"{scheme}://{who}127.0.0.1:{port}{path}"

    def set_faults(self, **faults: object) -> None:
        tmp = self.dir / "faults.json.tmp"
        tmp.write_text(json.dumps({**faults, "serial": time.monotonic_ns()}))
        os.replace(tmp, self.dir / "faults.json")

    def client(self, user: str | None = "alice", tls: bool = False) -> ftplib.FTP:
        """A direct ftplib client, for checking what the backend did from the server's side."""
        if tls:
            c: ftplib.FTP = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=str(self.ca)), timeout=10)
            c.connect("127.0.0.1", self.tls_port)
            c.login(user or "anonymous", USERS.get(user or "", ""))
            c.prot_p()  # type: ignore[attr-defined]
        else:
            c = ftplib.FTP(timeout=10)
            c.connect("127.0.0.1", self.port)
            c.login(user or "anonymous", USERS.get(user or "", ""))
        return c

    def commands(self) -> list[str]:
        """Every command the server received so far, in order (``"MLSD /docs"``), from all
        connections: what a test asserts about the requests a tool through the mount cost."""
        try:
            return (self.dir / "commands.log").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def running_ftp(*, sendfile: bool = True, max_cons: int = 0, throttle: int = 0,
                root: Path | None = None, encoding: str = "utf8") -> Iterator[FtpServer]:
    """One pyftpdlib process; ``throttle`` caps all transfers together (bytes/s, like one shared
    link: uploads and downloads of every connection draw on one budget); ``max_cons`` limits
    control connections per client address (more get ``421 Too many connections``);
    ``encoding``: what names are on the wire (e.g. ``cp1251``; on disk they stay UTF-8)."""
    d = _data_dir("srv-ftp-")
    root = root or d / "root"
    root.mkdir(exist_ok=True)
    c = certs()
    config = {"root": str(root), "certfile": str(c.combined), "sendfile": sendfile,
              "max_cons": max_cons, "throttle": throttle, "encoding": encoding}
    (d / "config.json").write_text(json.dumps(config))
    log = open(d / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.ftp", str(d)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=log, env={**os.environ, "PYTHONPATH": str(REPO)})
    log.close()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("READY"):
            proc.wait(timeout=10)
            raise RuntimeError(f"pyftpdlib did not start: {(d / 'server.log').read_text()[-2000:]}")
        port, tls_port, implicit_port = (int(p) for p in line.split()[1:4])
        server = FtpServer(d, root, port, tls_port, implicit_port, proc)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()
        shutil.rmtree(d, ignore_errors=True)  # holds the root unless the caller gave one


def _serve(d: Path) -> None:
    """The server process: three listeners on one pyftpdlib I/O loop."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.filesystems import AbstractedFS
    from pyftpdlib.handlers import DTPHandler, FTPHandler, TLS_DTPHandler, TLS_FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

    config = json.loads((d / "config.json").read_text())
    faults_file = d / "faults.json"
    state: dict = {"serial": None, "faults": {}, "times": 0}

    def faults() -> dict:
        try:
            data = json.loads(faults_file.read_text())
        except (OSError, ValueError):
            return state["faults"]
        if data.get("serial") != state["serial"]:
            state.update(serial=data.get("serial"), faults=data, times=int(data.get("times", 1)))
        return state["faults"]

    rate = int(config["throttle"])
    pace = {"next": 0.0}

    class FaultDTP:
        sent = 0
        _pacer = None

        def _pace(self, n):  # type: ignore[no-untyped-def]
            """One budget for all transfers (a shared link): stop this channel until its
            bytes fit under ``rate``."""
            if not rate or not n or self._closed:
                return
            now = time.monotonic()
            pace["next"] = max(pace["next"], now) + n / rate
            delay = pace["next"] - now
            if delay > 0.002 and self._pacer is None:
                event = self.ioloop.READ if self.receive else self.ioloop.WRITE
                self.del_channel()

                def resume() -> None:
                    self._pacer = None
                    if not self._closed:
                        self.add_channel(events=event)

                self._pacer = self.ioloop.call_later(delay, resume, _errback=self.handle_error)

        def close(self):  # type: ignore[no-untyped-def]
            if self._pacer is not None and not self._pacer.cancelled:
                self._pacer.cancel()
            return super().close()  # type: ignore[misc]

        def send(self, data):  # type: ignore[no-untyped-def]
            f = faults()
            limit = f.get("drop_after")
            if limit is not None and not self.receive and state["times"] > 0:
                if self.sent + len(data) >= limit:
                    state["times"] -= 1
                    cc = self.cmd_channel
                    self.close()
                    cc.close()
                    return 0
            n = super().send(data)  # type: ignore[misc]
            self.sent += n or 0
            self._pace(n)
            return n

        def recv(self, buffer_size):  # type: ignore[no-untyped-def]
            limit = faults().get("drop_upload_after")
            if limit is not None and self.receive and state["times"] > 0 \
                    and self.tot_bytes_received >= limit:
                state["times"] -= 1
                cc = self.cmd_channel
                self.close()
                cc.close()
                return b""
            chunk = super().recv(buffer_size)  # type: ignore[misc]
            self._pace(len(chunk))
            return chunk

    dtp_plain = type("DTP", (FaultDTP, DTPHandler), {})
    dtp_tls = type("TlsDTP", (FaultDTP, TLS_DTPHandler), {})

    class FaultFS(AbstractedFS):
        def _capped(self, lines):  # type: ignore[no-untyped-def]
            """A listing cut after ``list_cap`` lines: the final reply says so, or with
            ``list_cap_silent`` the data ends inside the next line and the reply is the usual."""
            cap = faults().get("list_cap")
            if cap is None:
                yield from lines
                return
            for n, chunk in enumerate(b"".join(lines).splitlines(keepends=True)):
                if n == cap:
                    if faults().get("list_cap_silent"):
                        yield chunk[:len(chunk) // 2]
                    else:
                        self.cmd_channel.capped = cap
                    return
                yield chunk

        def format_list(self, basedir, listing, ignore_err=True):  # type: ignore[no-untyped-def]
            def lines():  # type: ignore[no-untyped-def]
                yield from super(FaultFS, self).format_list(basedir, listing, ignore_err)
                for line in faults().get("list_extra", []):
                    yield line.encode("utf-8", "surrogateescape")
            yield from self._capped(lines())

        def format_mlsx(self, basedir, listing, perms, facts, ignore_err=True):  # type: ignore[no-untyped-def]
            one = len(listing) == 1 and not os.path.isdir(os.path.join(basedir, listing[0]))

            def lines():  # type: ignore[no-untyped-def]
                yield from super(FaultFS, self).format_mlsx(basedir, listing, perms, facts, ignore_err)
                if not one:
                    for line in faults().get("mlsd_extra", []):
                        yield line.encode("utf-8", "surrogateescape")
            yield from (lines() if one else self._capped(lines()))

    commands = open(d / "commands.log", "a", buffering=1)  # a line each, as it comes

    class Hooks:
        def process_command(self, cmd, *args, **kwargs):  # type: ignore[no-untyped-def]
            arg = args[0] if args and isinstance(args[0], str) and cmd != "PASS" else ""
            commands.write(f"{cmd} {arg}".rstrip() + "\n")
            if faults().get("hang"):
                return None
            if faults().get("no_mlst") and cmd in ("MLSD", "MLST"):
                self.respond(f"500 Command {cmd} not understood.")
                return None
            return super().process_command(cmd, *args, **kwargs)  # type: ignore[misc]

        capped = None

        def respond(self, resp, logfun=None):  # type: ignore[no-untyped-def]
            if self.capped is not None and resp.startswith("226"):
                reply = faults().get("list_cap_reply") or "226 Output truncated to {n} matches"
                resp, self.capped = reply.format(n=self.capped), None
            delay = faults().get("slow")
            parent = super().respond  # type: ignore[misc]
            if delay:
                self.ioloop.call_later(float(delay), lambda: parent(resp) if not self._closed else None)
                return None
            return parent(resp) if logfun is None else parent(resp, logfun=logfun)

        def ftp_STOR(self, file, mode="w"):  # type: ignore[no-untyped-def]
            reply = faults().get("stor_reply")
            if reply:
                self.respond(reply)
                return None
            return super().ftp_STOR(file, mode)  # type: ignore[misc]

        def ftp_RNTO(self, path):  # type: ignore[no-untyped-def]
            if faults().get("no_rename_over") and os.path.exists(path):
                self.respond("550 Rename failed: target exists.")
                return None
            return super().ftp_RNTO(path)  # type: ignore[misc]

    auth = DummyAuthorizer()
    auth.add_user("alice", USERS["alice"], config["root"], perm="elradfmwMT")
    auth.add_user("bob", USERS["bob"], config["root"], perm="elr")
    auth.add_anonymous(config["root"])

    def setup(h: type) -> type:
        h.authorizer = auth
        h.auth_failed_timeout = 0
        h.timeout = 120
        h.abstracted_fs = FaultFS
        h.use_sendfile = bool(config["sendfile"]) and not rate  # sendfile would bypass the pacing
        h.banner = "fsmount test server ready."
        h.encoding = config["encoding"]
        return h

    plain = setup(type("Plain", (Hooks, FTPHandler), {"dtp_handler": dtp_plain}))
    explicit = setup(type("Explicit", (Hooks, TLS_FTPHandler), {"dtp_handler": dtp_tls,
                                                                  "certfile": config["certfile"]}))

    class Implicit(explicit):  # type: ignore[valid-type, misc]
        def handle(self):  # type: ignore[no-untyped-def]
            self.secure_connection(self.ssl_context)

        def handle_ssl_established(self):  # type: ignore[no-untyped-def]
            explicit.handle(self)

    loop = IOLoop()
    servers = [FTPServer(("127.0.0.1", 0), h, ioloop=loop) for h in (plain, explicit, Implicit)]
    for s in servers:
        if config["max_cons"]:
            s.max_cons_per_ip = config["max_cons"]
    ports = [s.socket.getsockname()[1] for s in servers]
    print("READY", *ports, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    servers[0].serve_forever(handle_exit=True)


# -- vsftpd --------------------------------------------------------------------------------


@dataclass
class Vsftpd:
    dir: Path
    root: Path
    port: int
    tls: bool
    proc: subprocess.Popen
    ca: Path = field(default_factory=lambda: certs().ca)

    def url(self, scheme: str | None = None) -> str:
        return f"{scheme or ('ftpes' if self.tls else 'ftp')}://127.0.0.1:{self.port}"


@contextmanager
def running_vsftpd(files: dict[str, bytes], *, tls: bool = False,
                   links: dict[str, str] | None = None, modes: dict[str, int] | None = None) -> Iterator[Vsftpd]:
    """Anonymous read-only vsftpd serving ``files`` (relative paths → bytes) and symlinks
    (``links``: name → target); ``modes`` overrides a path's permission bits.

    With ``tls``: logins and data must use TLS, and every data connection must resume the
    control connection's TLS session (``require_ssl_reuse=YES``).
    """
    d = _data_dir("srv-vsftpd-")
    root, empty = d / "root", d / "empty"
    empty.mkdir()
    root.mkdir()
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    for rel, target in (links or {}).items():
        os.symlink(target, root / rel)
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, (modes or {}).get(str(p.relative_to(root)), 0o555 if p.is_dir() else 0o444))
    c = certs()
    proc = None
    try:
        for _ in range(20):
            port = free_port()
            lines = [
                "listen=YES", "listen_ipv6=NO", "listen_address=127.0.0.1", f"listen_port={port}",
                "background=NO", "anonymous_enable=YES", f"anon_root={root}", "no_anon_password=YES",
                "local_enable=NO", "write_enable=NO", "pasv_address=127.0.0.1",
                f"secure_chroot_dir={empty}", f"vsftpd_log_file={d / 'vsftpd.log'}",
                "seccomp_sandbox=NO", "utf8_filesystem=YES", "force_dot_files=YES",
            ]
            if tls:
                lines += [
                    "ssl_enable=YES", "allow_anon_ssl=YES", "force_anon_data_ssl=YES",
                    "force_anon_logins_ssl=YES", "require_ssl_reuse=YES", "ssl_ciphers=HIGH",
                    f"rsa_cert_file={c.cert}", f"rsa_private_key_file={c.key}",
                ]
            conf = d / "vsftpd.conf"
            conf.write_text("\n".join(lines) + "\n")
            proc = subprocess.Popen([VSFTPD, str(conf)], stdout=subprocess.DEVNULL,
                                    stderr=open(d / "stderr.log", "wb"))
            try:
                _wait_port(port, proc)
                break
            except RuntimeError:  # lost the port to someone else: try another
                proc = None
                continue
        if proc is None:
            raise RuntimeError(f"vsftpd did not start: {(d / 'stderr.log').read_text()}")
        yield Vsftpd(d, root, port, tls, proc)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        for p in [d, *d.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    _serve(Path(sys.argv[1]))
