"""Where passwords and tokens come from — never argv.

Order: the config's ``password`` (only in a file only its owner can read), its
``password_command``, ``~/.netrc``, ``$FSMOUNT_PASSWORD``, then a prompt when a terminal is
attached. Resolved once, before the mount detaches from the terminal.
"""
from __future__ import annotations

import getpass
import netrc
import os
import subprocess
import sys
from dataclasses import dataclass

from .config import Account
from .errors import ConfigError


@dataclass(frozen=True)
class Secret:
    password: str | None
    token_command: str | None = None

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return "Secret(***)"

    def token(self) -> str:
        """A fresh OAuth token (they expire, so the command runs at every login)."""
        if not self.token_command:
            raise ConfigError("no token_command configured")
        return run_command(self.token_command, "token_command")


def run_command(command: str, key: str) -> str:
    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"{key} failed: {e}") from None
    if done.returncode != 0:
        err = done.stderr.strip().splitlines()
        raise ConfigError(f"{key} exited with status {done.returncode}" + (f": {err[-1]}" if err else ""))
    return done.stdout.rstrip("\n")


def resolve(account: Account, *, interactive: bool | None = None) -> Secret:
    """The secret for ``account``; ``None`` password where no login name is configured."""
    token_command = account.options.get("token_command")
    if account.user is None or account.user in ("anonymous", "ftp"):
        return Secret(None, token_command)
    if account["password"] is not None:
        return Secret(account["password"], token_command)
    if account["password_command"]:
        return Secret(run_command(account["password_command"], f"{account.origin}: password_command"), token_command)
    if token_command:
        return Secret(None, token_command)
    try:
        entry = netrc.netrc().authenticators(account.host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        entry = None
    if entry and entry[2] and entry[0] in (None, "", account.user):
        return Secret(entry[2])
    if os.environ.get("FSMOUNT_PASSWORD"):
        return Secret(os.environ["FSMOUNT_PASSWORD"])
    if interactive if interactive is not None else sys.stdin.isatty():
        try:
            return Secret(getpass.getpass(f"Password for {account.label}: "))
        except (EOFError, KeyboardInterrupt):
            raise ConfigError("no password given") from None
    raise ConfigError(
        f"{account.origin}: no password for {account.label}: set password_command in the config, "
        "add it to ~/.netrc, set $FSMOUNT_PASSWORD, or run fsmount from a terminal to be asked"
    )
