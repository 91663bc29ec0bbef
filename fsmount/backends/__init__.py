"""One module per service; ``create`` picks it by the account's service."""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Account
from ..credentials import Secret
from .base import Backend

MODULES = {"ftp": "ftp", "imap": "imap", "pop3": "pop3", "nntp": "nntp", "smtp": "outbox"}


@dataclass
class Environment:
    """What a backend may use besides its own account.

    ``state_dir`` is durable (the outbox queue lives there; the cache may be deleted at any
    time). ``peers`` holds the mount's other backends by account name, for the outbox's
    links to a Sent folder and a news server.
    """

    state_dir: Path
    peers: Mapping[str, Backend] = field(default_factory=dict)


def create(account: Account, secret: Secret, env: Environment) -> Backend:
    """Connects lazily: errors at mount time come from ``Backend.stat(())``, not from here."""
    module = importlib.import_module(f"{__name__}.{MODULES[account.service]}")
    return module.create(account, secret, env)
