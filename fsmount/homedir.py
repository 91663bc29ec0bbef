"""A home directory that is really the user's, for the defaults under ``~``.

``mount.fuse3`` runs an fstab ``user`` mount with ``HOME=/root``, and services or ``sudo``
can hand over another user's home: writing the cache and log there fails (or, as root,
leaves root's files in a user's home). Such a HOME is replaced, for this process and what it
runs (password_command), by the home the password database gives the user.
"""
from __future__ import annotations

import os
import pwd
import stat


def _ours(path: str | None) -> bool:
    if not path or not os.path.isabs(path):
        return False
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()


def fix_home() -> None:
    """Point ``HOME`` at the user's own home directory when it names another one, or none.

    Left as it is when the password database has nothing better: what then cannot be
    created under it is reported as one line where it is created."""
    home = os.environ.get("HOME")
    if _ours(home):
        return
    try:
        fallback = pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        return
    if _ours(fallback):
        os.environ["HOME"] = fallback
