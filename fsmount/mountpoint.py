"""Is a directory fit to mount on? Refused before mounting, each with one line (exit status 4):
a mount already there (a second ``fsmount`` would stack over the first and hide it), a dead
mount, and a directory that holds files the mount would hide (unless ``-o nonempty``).

An ``autofs`` mount is no obstacle: it is systemd's automount trigger (``x-systemd.automount``
in fstab), which the real mount is meant to cover.
"""
from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass

from .exitstatus import Exit

MOUNTINFO = "/proc/self/mountinfo"


class MountpointError(Exception):
    """Why ``MOUNTPOINT`` cannot be used, in one line."""

    status = Exit.MOUNTPOINT


@dataclass(frozen=True)
class Mounted:
    fstype: str
    source: str


def mounted_at(path: str) -> Mounted | None:
    """The topmost mount whose mount point is exactly ``path`` (a real path), or None."""
    found = None
    try:
        with open(MOUNTINFO, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    target = os.fsencode(path)
    for line in lines:
        fields = line.split(b" ")
        try:
            sep = fields.index(b"-")
        except ValueError:
            continue
        if _unescape(fields[4]) == target and len(fields) > sep + 2:
            found = Mounted(os.fsdecode(_unescape(fields[sep + 1])), os.fsdecode(_unescape(fields[sep + 2])))
    return found


def _unescape(field: bytes) -> bytes:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field)


def check(mountpoint: str, *, nonempty: bool) -> str:
    """The absolute path to mount on, or ``MountpointError`` saying why not."""
    path = os.path.abspath(mountpoint)
    mount = mounted_at(os.path.realpath(path))
    try:
        info = os.stat(path)
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            raise MountpointError(
                f"mountpoint {mountpoint}: a mount whose process has ended is still there; "
                f"clear it with: fusermount3 -uz {path}") from None
        if mount is not None:
            raise MountpointError(_already(mountpoint, path, mount)) from None
        if e.errno == errno.ENOENT:
            raise MountpointError(f"mountpoint {mountpoint}: no such directory") from None
        raise MountpointError(f"mountpoint {mountpoint}: {e.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise MountpointError(f"mountpoint {mountpoint}: not a directory")
    if mount is not None and mount.fstype != "autofs":
        raise MountpointError(_already(mountpoint, path, mount))
    if mount is None and not nonempty:
        try:
            with os.scandir(path) as entries:
                first = next(entries, None)
        except OSError as e:
            raise MountpointError(f"mountpoint {mountpoint}: cannot be read: {e.strerror}") from None
        if first is not None:
            raise MountpointError(
                f"mountpoint {mountpoint} is not empty (it holds {first.name!r}); the mount "
                "would hide its files (-o nonempty mounts over them anyway)")
    return path


def _already(mountpoint: str, path: str, mount: Mounted) -> str:
    return (f"mountpoint {mountpoint} is already mounted ({mount.source}, type {mount.fstype}); "
            f"unmount it first: fusermount3 -u {path}")
