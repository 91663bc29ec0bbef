"""Config file and account URLs → frozen ``Account`` values.

Every mistake becomes a ``ConfigError`` naming the file and key, which the CLI prints as one
line. Secrets never come from argv: a password inside a URL is refused.
"""
from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import ConfigError
from .net.tls import TlsMode

#: scheme → (service, default port, implicit TLS)
SCHEMES: dict[str, tuple[str, int, bool]] = {
    "ftp": ("ftp", 21, False),
    "ftpes": ("ftp", 21, False),
    "ftps": ("ftp", 990, True),
    "imap": ("imap", 143, False),
    "imaps": ("imap", 993, True),
    "pop3": ("pop3", 110, False),
    "pop3s": ("pop3", 995, True),
    "nntp": ("nntp", 119, False),
    "nntps": ("nntp", 563, True),
    "smtp": ("smtp", 587, False),
    "smtps": ("smtp", 465, True),
}

#: Settings every account may have: key → (type, default).
COMMON: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "url": (str, None),
    "tls": (str, None),  # require | prefer | off; default depends on the scheme
    "tls_verify": (bool, True),
    "ca_file": (str, None),
    "plaintext_auth": (bool, False),  # allow a password over an unencrypted connection
    "password": (str, None),  # only in a config file nobody else can read
    "password_command": (str, None),
    "connections": (int, 4),
    "timeout": ((int, float), 30.0),
    "metadata_ttl": ((int, float), 30.0),
    "poll_interval": ((int, float), 60.0),
    "readonly": (bool, False),
}

#: Settings of one service: key → (type, default).
SERVICE: dict[str, dict[str, tuple[type | tuple[type, ...], Any]]] = {
    "ftp": {"encoding": (str, "utf-8"), "passive": (bool, True)},
    "imap": {
        "delete": (str, "trash"),  # trash | expunge
        "idle": (bool, True),
        "auth": (str, "login"),  # login | xoauth2 | oauthbearer
        "token_command": (str, None),
        "decoded_view": (bool, False),  # a decoded .txt beside each message
        "xattrs": (bool, True),  # flags as user.imap.* extended attributes
    },
    "pop3": {"apop": (bool, False), "decoded_view": (bool, False)},
    "nntp": {
        "groups": (list, ["*"]),
        "hierarchy": (bool, False),
        "max_articles": (int, 1000),
        "decoded_view": (bool, False),
    },
    "smtp": {
        "from": (str, None),
        "sent_account": (str, None),  # an IMAP account whose Sent folder receives copies
        "news_account": (str, None),  # an NNTP account for messages with Newsgroups:
        "provider_files_sent": (bool, False),
        "max_lifetime": ((int, float), 7 * 86400.0),
        "retry_first": ((int, float), 60.0),
        "retry_max": ((int, float), 86400.0),
        "send_delay": ((int, float), 5.0),  # seconds a message waits after its last save
    },
}

#: Top-level settings of the config file.
GLOBAL: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "cache_dir": (str, None),
    "cache_size": (int, 1 << 30),
    "stream_size": (int, 64 << 20),  # files this big read from the start are not cached
    "cache_entries": (int, 100_000),  # directory entries kept in memory, all accounts together
    "max_inodes": (int, 100_000),  # files and folders the kernel is let to hold looked up
    "state_dir": (str, None),
}


@dataclass(frozen=True)
class Account:
    """One configured service. ``options`` holds every setting, defaults filled in."""

    name: str
    service: str
    scheme: str
    host: str
    port: int
    user: str | None
    path: str
    tls: TlsMode
    options: Mapping[str, Any] = field(default_factory=dict)
    origin: str = "<command line>"  # the file (and table) it came from, for messages

    def __getitem__(self, key: str) -> Any:
        return self.options[key]

    @property
    def label(self) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"{self.scheme}://{who}{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    accounts: Mapping[str, Account]
    tables: Mapping[str, Mapping[str, Any]]  # as written, for -o overrides
    settings: Mapping[str, Any]
    path: str | None


def xdg_dir(kind: str, fallback: str) -> Path:
    """``XDG_<KIND>_HOME``/fsmount, or ``~/<fallback>``/fsmount."""
    base = os.environ.get(f"XDG_{kind}_HOME") or str(Path.home() / fallback)
    return Path(base) / "fsmount"


def default_config_path() -> Path:
    return xdg_dir("CONFIG", ".config") / "config.toml"


def parse_url(url: str, *, where: str, name: str = "") -> tuple[str, str, str, int, str | None, str]:
    """→ (scheme, service, host, port, user, path). Refuses passwords and unknown schemes."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{where}: bad URL {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        known = ", ".join(sorted(SCHEMES))
        raise ConfigError(f"{where}: unknown scheme {scheme!r} in {url!r} (known: {known})")
    if parts.password is not None:
        raise ConfigError(
            f"{where}: a password in the URL would be visible to every local user; use "
            "password_command in the config, ~/.netrc, $FSMOUNT_PASSWORD or the prompt"
        )
    if not parts.hostname:
        raise ConfigError(f"{where}: no host in URL {url!r}")
    service, default_port, _ = SCHEMES[scheme]
    user = unquote(parts.username) if parts.username else None
    return scheme, service, parts.hostname, port or default_port, user, unquote(parts.path)


def _check(where: str, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if kind is float or kind == (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        want = kind.__name__ if isinstance(kind, type) else "number"
        raise ConfigError(f"{where}: '{key}' must be a {want}, not {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"{where}: '{key}' must not be negative")
    return value


def make_account(name: str, table: Mapping[str, Any], *, where: str) -> Account:
    """Validate one account table (or the settings derived from a command-line URL)."""
    url = table.get("url")
    if not isinstance(url, str):
        raise ConfigError(f"{where}: missing 'url'")
    scheme, service, host, port, user, path = parse_url(url, where=where, name=name)
    allowed = {**COMMON, **SERVICE[service]}
    options: dict[str, Any] = {}
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key '{key}' for a {service} account")
        options[key] = _check(where, key, value, allowed[key][0])
    for key, (_, default) in allowed.items():
        options.setdefault(key, default)
    if options["ca_file"]:  # a detached mount runs in /, so make it absolute now
        options["ca_file"] = os.path.abspath(os.path.expanduser(options["ca_file"]))
    if options["connections"] < 1:
        raise ConfigError(f"{where}: 'connections' must be at least 1")
    implicit = SCHEMES[scheme][2]
    if implicit:
        tls = TlsMode.IMPLICIT
        if options["tls"] not in (None, "require"):
            raise ConfigError(f"{where}: {scheme}:// always uses TLS; 'tls' cannot be {options['tls']!r}")
    else:
        default = "require" if scheme == "ftpes" else "prefer"
        choice = options["tls"] or default
        if choice not in ("require", "prefer", "off"):
            raise ConfigError(f"{where}: 'tls' must be require, prefer or off, not {choice!r}")
        if scheme == "ftpes" and choice != "require":
            raise ConfigError(f"{where}: ftpes:// means explicit TLS is required")
        tls = TlsMode(choice)
    return Account(
        name=name, service=service, scheme=scheme, host=host, port=port, user=user,
        path=path, tls=tls, options=MappingProxyType(options), origin=where,
    )


def load(path: str | os.PathLike[str] | None, *, required: bool) -> Config:
    """Read the config file; a missing default file is an empty config."""
    file = Path(path) if path else default_config_path()
    try:
        raw = file.read_bytes()
        info = file.stat()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{file}: no such config file") from None
        return Config({}, {}, MappingProxyType(_globals({}, str(file))), None)
    except OSError as e:
        raise ConfigError(f"{file}: cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: {e}") from None
    accounts_table = data.pop("accounts", {})
    if not isinstance(accounts_table, dict):
        raise ConfigError(f"{file}: 'accounts' must be a table of [accounts.NAME] tables")
    settings = _globals(data, str(file))
    accounts: dict[str, Account] = {}
    for name, table in accounts_table.items():
        where = f"{file}: [accounts.{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        if "/" in name or name.startswith("."):
            raise ConfigError(f"{where}: an account name cannot contain '/' or start with '.'")
        if "password" in table and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{where}: holds a password but {file} is readable by others; chmod 600 {file}"
            )
        accounts[name] = make_account(name, table, where=where)
    return Config(MappingProxyType(accounts), accounts_table, MappingProxyType(settings), str(file))


def _globals(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key not in GLOBAL:
            raise ConfigError(f"{where}: unknown key '{key}'")
        settings[key] = _check(where, key, value, GLOBAL[key][0])
    for key, (_, default) in GLOBAL.items():
        settings.setdefault(key, default)
    return settings
