"""TLS policy: verification on by default; the account may name a CA file or opt out."""
from __future__ import annotations

import ssl
from enum import Enum

from ..errors import ConfigError


class TlsMode(str, Enum):
    """How a plain-scheme account (``ftp://``, ``imap://`` …) treats TLS.

    ``implicit`` comes from the ``s`` schemes (``ftps://``, ``imaps://``); the others from the
    account's ``tls`` setting: ``require`` (STARTTLS/AUTH TLS or fail), ``prefer`` (upgrade when
    offered) or ``off``.
    """

    IMPLICIT = "implicit"
    REQUIRE = "require"
    PREFER = "prefer"
    OFF = "off"


def client_context(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load CA file {ca_file}: {e}") from None
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
