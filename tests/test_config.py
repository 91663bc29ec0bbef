"""Config and command-line mistakes: one line naming the file and key, exit status 2."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fsmount.config import load, make_account
from fsmount.errors import ConfigError
from fsmount.net.tls import TlsMode
from tests.mounting import private_env


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    cfg.chmod(mode)
    return cfg


def test_account_defaults_and_tls_modes() -> None:
    acc = make_account("a", {"url": "ftps://alice@example.org/pub"}, where="t")
    assert (acc.service, acc.host, acc.port, acc.user, acc.path) == ("ftp", "example.org", 990, "alice", "/pub")
    assert acc.tls is TlsMode.IMPLICIT and acc["connections"] == 4
    assert make_account("b", {"url": "ftp://h"}, where="t").tls is TlsMode.PREFER
    assert make_account("c", {"url": "ftpes://h"}, where="t").tls is TlsMode.REQUIRE
    assert make_account("d", {"url": "imap://h", "tls": "off"}, where="t").tls is TlsMode.OFF
    assert make_account("e", {"url": "imaps://h"}, where="t").port == 993


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"url": "ftp://alice:pw@h/"}, "password in the URL"),
        ({"url": "gopher://h/"}, "unknown scheme 'gopher'"),
        ({"url": "ftp://h:99999/"}, "bad URL"),
        ({"url": "ftp:///x"}, "no host"),
        ({"url": "ftp://h", "conections": 3}, "unknown key 'conections'"),
        ({"url": "ftp://h", "connections": "4"}, "'connections' must be a int"),
        ({"url": "ftp://h", "tls": "maybe"}, "'tls' must be require, prefer or off"),
        ({"url": "ftps://h", "tls": "off"}, "always uses TLS"),
        ({"url": "imap://h", "groups": ["*"]}, "unknown key 'groups' for a imap account"),
        ({}, "missing 'url'"),
    ],
)
def test_bad_account(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_account("x", table, where="cfg: [accounts.x]")


def test_password_in_group_readable_config_is_refused(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[accounts.a]\nurl = "ftp://alice@h"\npassword = "s"\n', 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load(cfg, required=True)
    cfg.chmod(0o600)
    assert load(cfg, required=True).accounts["a"]["password"] == "s"


def test_toml_error_names_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[accounts.a\n")
    with pytest.raises(ConfigError, match=str(cfg)):
        load(cfg, required=True)


def fsmount(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fsmount", *args], capture_output=True, text=True,
                          env=private_env(tmp_path), stdin=subprocess.DEVNULL, timeout=60)


@pytest.mark.parametrize(
    ("args", "message", "status"),
    [
        (["ftp://alice:secret@localhost/", "MNT"], "password in the URL", 2),
        (["nosuch", "MNT"], "neither a URL nor an account", 2),
        (["MNT"], "no SOURCE given and no accounts", 2),
        (["ftp://localhost/", "/nonexistent-dir"], "no such directory", 4),
        (["-o", "password=x", "ftp://localhost/", "MNT"], "visible to every local user", 2),
        (["-o", "bogus=1", "ftp://localhost/", "MNT"], "unknown mount option: bogus", 2),
        (["-c", "/nonexistent.toml", "MNT"], "no such config file", 2),
        (["ftp://alice@localhost/", "MNT"], "no password for", 2),
        (["-o", "timeout=1", "ftp://127.0.0.1:1/", "MNT"], "ftp://127.0.0.1:1", 1),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], message: str, status: int) -> None:
    (tmp_path / "mnt").mkdir()
    done = fsmount(tmp_path, *[str(tmp_path / "mnt") if a == "MNT" else a for a in args])
    assert done.returncode == status, done.stderr
    assert message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert not os.path.ismount(tmp_path / "mnt")


def test_version() -> None:
    done = subprocess.run([sys.executable, "-m", "fsmount", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("fsmount ")


@pytest.mark.parametrize(("value", "message"), [("-1", "must not be negative"), ('"64M"', "stream_size")])
def test_stream_size_is_checked(tmp_path: Path, value: str, message: str) -> None:
    assert load(write(tmp_path, ""), required=True).settings["stream_size"] == 64 << 20
    cfg = write(tmp_path, f'stream_size = {value}\n[accounts.a]\nurl = "ftp://h"\n')
    with pytest.raises(ConfigError, match=message):
        load(cfg, required=True)
