"""One throwaway CA and a localhost server certificate, shared by every TLS test server."""
from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Certs:
    ca: Path  # give this to clients (fsmount's ca_file)
    cert: Path  # server certificate chain
    key: Path
    combined: Path  # cert + key in one file (pyftpdlib)


@functools.cache
def certs() -> Certs:
    """Made once per process; world-readable dir so dovecot/innd can read them (key 0644 too)."""
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix="srv-certs-"))
    os.chmod(d, 0o755)
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    server.private_key_pem.write_to_path(str(d / "key.pem"))
    server.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    for pem in server.cert_chain_pems[1:]:
        pem.write_to_path(str(d / "cert.pem"), append=True)
    (d / "combined.pem").write_bytes((d / "cert.pem").read_bytes() + (d / "key.pem").read_bytes())
    for f in d.iterdir():
        os.chmod(f, 0o644)
    return Certs(d / "ca.pem", d / "cert.pem", d / "key.pem", d / "combined.pem")
