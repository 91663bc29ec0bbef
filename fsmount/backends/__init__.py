"""One module per service; ``create`` picks it by the account's service."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Account
from ..credentials import Secret
from .base import Backend

if TYPE_CHECKING:
    from ..cache.links import Links

MODULES = {"ftp": "ftp", "imap": "imap", "pop3": "pop3", "nntp": "nntp", "smtp": "outbox"}


@dataclass
class Environment:
    """What a backend may use besides its own account.

    ``state_dir`` is durable (the outbox queue lives there; the cache may be deleted at any
    time). ``links`` reaches the mount's other accounts through their cache layers, for the
    outbox's links to a Sent folder and a news server (set once the cache layers exist).
    """

    state_dir: Path
    links: Links | None = None


def create(account: Account, secret: Secret, env: Environment) -> Backend:
    """Connects lazily: errors at mount time come from ``Backend.stat(())``, not from here."""
    module = importlib.import_module(f"{__name__}.{MODULES[account.service]}")
    return module.create(account, secret, env)
