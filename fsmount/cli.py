"""argv → config → mount. Every user error is one line on stderr and a non-zero exit status
(``exitstatus.Exit``, fsmount(1) EXIT STATUS).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import COMMON, SCHEMES, SERVICE, Account, ConfigError, load, make_account
from .credentials import resolve
from .exitstatus import Exit
from .homedir import fix_home
from .mountpoint import MountpointError, check
from .vfs.attrs import Owner

log = logging.getLogger("fsmount")

#: Options handed to the kernel/libfuse as they are.
FUSE_OPTIONS = {"allow_other", "allow_root", "default_permissions", "nodev", "nosuid", "noexec",
                "dev", "suid", "exec", "auto_unmount"}
#: Options mount(8), fstab and systemd pass along that mean nothing here.
IGNORED = {"rw", "defaults", "auto", "noauto", "user", "users", "nouser", "_netdev", "nofail",
           "async", "atime", "noatime", "relatime", "nodiratime"}

USAGE = """\
fsmount [OPTIONS] SOURCE MOUNTPOINT    mount one account (a URL or a configured account name)
fsmount [OPTIONS] MOUNTPOINT           mount every configured account, one folder each"""


class UsageError(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fsmount", usage=USAGE,
        description="Mount FTP/FTPS, IMAP, POP3, NNTP and an SMTP outbox as files and folders.",
        epilog="Unmount with: fusermount3 -u MOUNTPOINT. See fsmount(1) and fsmount.conf(5).",
    )
    p.add_argument("args", nargs="+", metavar="[SOURCE] MOUNTPOINT", help=argparse.SUPPRESS)
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]",
                   help="mount options: ro, nonempty, allow_other, … and account settings such as ca_file=FILE")
    p.add_argument("-c", "--config", metavar="FILE", help="config file (default: ~/.config/fsmount/config.toml)")
    p.add_argument("--debug", action="store_true", help="log every protocol command (implies -f)")
    p.add_argument("-V", "--version", action="version", version=f"fsmount {__version__}")
    return p


def split_options(raw: Sequence[str]) -> dict[str, str | None]:
    options: dict[str, str | None] = {}
    for group in raw:
        for item in group.split(","):
            if item.strip():
                key, eq, value = item.strip().partition("=")
                options[key] = value if eq else None
    return options


def convert(key: str, value: str | None, kind: Any) -> Any:
    """A ``-o key=value`` string as the type the config schema wants."""
    if kind is bool:
        if value is None or value.lower() in ("1", "yes", "true", "on"):
            return True
        if value.lower() in ("0", "no", "false", "off"):
            return False
        raise UsageError(f"-o {key}: expected yes or no, not {value!r}")
    if value is None:
        raise UsageError(f"-o {key} needs a value ({key}=...)")
    if kind is list:
        return [v for v in value.split(":") if v]
    try:
        if kind is int:
            return int(value)
        if kind == (int, float):
            return float(value)
    except ValueError:
        raise UsageError(f"-o {key}: {value!r} is not a number") from None
    return value


def build_plan(ns: argparse.Namespace) -> Any:
    from .mount import MountPlan

    if len(ns.args) > 2:
        raise UsageError(f"too many arguments: {' '.join(ns.args)}")
    source, mountpoint = (ns.args if len(ns.args) == 2 else (None, ns.args[0]))
    options = split_options(ns.options)
    fuse: set[str] = set()
    account_settings: dict[str, Any] = {}
    readonly = False
    nonempty = False
    config_file = ns.config or options.pop("config", None)
    for key, value in list(options.items()):
        if key in FUSE_OPTIONS:
            fuse.add(key)
        elif key == "ro":
            readonly = True
        elif key == "nonempty":  # fsmount's own check: libfuse 3 no longer knows the option
            nonempty = True
        elif key in IGNORED or key == "comment" or key.startswith("x-"):
            pass
        elif key == "debug":
            ns.debug = True
        elif key == "password":
            raise UsageError("a password on the command line is visible to every local user; "
                             "use password_command, ~/.netrc, $FSMOUNT_PASSWORD or the prompt")
        else:
            account_settings[key] = value
    config = load(config_file, required=bool(config_file))
    accounts = pick_accounts(source, config, account_settings)
    mountpoint = check(mountpoint, nonempty=nonempty)
    single = next(iter(accounts)) if source is not None else None
    host = accounts[single].host if single else "accounts"
    fuse |= {f"fsname=fsmount:{host}", "subtype=fsmount", "default_permissions"}
    if readonly:
        fuse.add("ro")
    secrets = {name: resolve(acc) for name, acc in accounts.items()}
    return MountPlan(accounts, secrets, single, mountpoint, frozenset(fuse),
                     config.settings, Owner.current(readonly))


def pick_accounts(source: str | None, config: Any, settings: dict[str, Any]) -> dict[str, Account]:
    if source is None:
        if settings:
            raise UsageError(f"unknown mount option(s): {', '.join(settings)}")
        if not config.accounts:
            where = config.path or "the config file (~/.config/fsmount/config.toml)"
            raise UsageError(f"no SOURCE given and no accounts in {where}")
        return dict(config.accounts)
    if "://" not in source:
        if source not in config.accounts:
            raise UsageError(f"{source!r} is neither a URL nor an account in {config.path or 'the config file'}")
        account = config.accounts[source]
        if settings:
            return {source: _with_settings(source, dict(config.tables[source]), settings, account.service)}
        return {source: account}
    kind = SCHEMES.get(source.split("://", 1)[0].lower(), ("ftp",))[0]
    return {_url_name(source): _with_settings(_url_name(source), {"url": source}, settings, kind)}


def _with_settings(name: str, table: dict[str, Any], settings: dict[str, Any], service: str) -> Account:
    schema = {**COMMON, **SERVICE.get(service, {})}
    for key, value in settings.items():
        if key not in schema or key == "url":
            raise UsageError(f"unknown mount option: {key}")
        table[key] = convert(key, value, schema[key][0])
    return make_account(name, table, where="command line")


def _url_name(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0].rpartition("@")[2] or "account"


class _GoneRequests(logging.Filter):
    """pyfuse3 logs an ERROR when the kernel no longer waits for a reply (ENOENT: the caller
    was interrupted, or the mount is going away). Nothing is lost, so it is only INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        gone = "failed with No such file or directory" in record.getMessage()
        if record.levelno == logging.ERROR and gone:
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger().isEnabledFor(logging.INFO)
        return True


def setup_logging(debug: bool, log_file: Path | None) -> None:
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("pyfuse3").addFilter(_GoneRequests())


def prepare_dirs(settings: Any) -> None:
    """Create the cache and state directories now, so that a HOME or setting that leaves
    nowhere to write is one line before mounting, not a traceback in the background."""
    from .mount import cache_dir, state_dir

    for what, path, key in (("cache", cache_dir(settings), "CACHE"), ("log and state", state_dir(settings), "STATE")):
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not os.access(path, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as e:
            raise UsageError(f"cannot use {path} for the {what} directory: {e.strerror} "
                             f"(set XDG_{key}_HOME, or {key.lower()}_dir in the config file)") from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        ns = parser().parse_intermixed_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    fix_home()
    try:
        plan = build_plan(ns)
        prepare_dirs(plan.settings)
    except (ConfigError, UsageError) as e:
        print(f"fsmount: {e}", file=sys.stderr)
        return Exit.USAGE
    except MountpointError as e:
        print(f"fsmount: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 130
    from .daemon import run

    return run(plan, foreground=ns.foreground or ns.debug, debug=ns.debug)


def entry() -> None:
    sys.exit(main())
