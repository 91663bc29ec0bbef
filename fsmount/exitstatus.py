"""The exit statuses of ``fsmount``, as fsmount(1) documents them under EXIT STATUS.

They are distinct where a caller acts differently: systemd restarts a mount that failed
(``FAILED``: a server may come back) but not one that cannot work as configured (``USAGE``,
``REFUSED``, ``MOUNTPOINT``: contrib/fsmount@.service lists them in RestartPreventExitStatus=).
"""
from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    #: The mount failed for a reason that may pass: a server unreachable or not answering,
    #: the kernel refusing the mount, an internal error.
    FAILED = 1
    #: A usage or configuration mistake (bad option, URL, setting; no password; no usable
    #: directory for the cache or the log).
    USAGE = 2
    #: A server refused the login, or its TLS certificate is not trusted: trying again
    #: with the same settings cannot help (and could lock the account).
    REFUSED = 3
    #: The mountpoint cannot be used: missing, not a directory, already mounted, a dead
    #: mount, or not empty without ``-o nonempty``.
    MOUNTPOINT = 4
    #: Mounted, but some accounts of a mount of every account could not be used; each is
    #: named on standard error.
    PARTIAL = 5
