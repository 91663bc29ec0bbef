"""The error tree shared by every layer.

Backends raise these; the VFS turns each into its ``errno`` for the kernel. Anything that is not
an ``FsError`` is a bug: the VFS logs it once with its traceback and answers ``EIO``.
"""
from __future__ import annotations

import errno as _errno


class FsError(Exception):
    """A failure with a meaning for the user; ``errno`` is what the syscall returns."""

    errno: int = _errno.EIO


class TooLarge(FsError):
    """An object fetched whole turned out bigger than the caller can hold."""

    errno = _errno.EFBIG


class NotFound(FsError):
    errno = _errno.ENOENT


class AlreadyExists(FsError):
    errno = _errno.EEXIST


class PermissionDenied(FsError):
    errno = _errno.EACCES


class NotPermitted(FsError):
    """The operation makes no sense for this object (an in-place edit of a message)."""

    errno = _errno.EPERM


class ReadOnly(FsError):
    """Read-only by nature (a mailbox without write support, a server without upload)."""

    errno = _errno.EROFS


class Unsupported(FsError):
    """The backend lacks the capability (chmod on a server without SITE CHMOD)."""

    errno = _errno.EOPNOTSUPP


class NoSpace(FsError):
    errno = _errno.ENOSPC


class NotEmpty(FsError):
    errno = _errno.ENOTEMPTY


class IsADirectory(FsError):
    errno = _errno.EISDIR


class NotADirectory(FsError):
    errno = _errno.ENOTDIR


class CrossDevice(FsError):
    """A rename across accounts: ``mv`` then copies and deletes by itself."""

    errno = _errno.EXDEV


class InvalidArgument(FsError):
    """The data handed to the backend is unusable (a malformed message, a bad name)."""

    errno = _errno.EINVAL


class NameTooLong(FsError):
    errno = _errno.ENAMETOOLONG


class NoData(FsError):
    """No such extended attribute."""

    errno = _errno.ENODATA


class SizeMismatch(FsError):
    """The bytes a server sent are not as many as it announced: never shown as the file."""


class Transient(FsError):
    """Worth retrying: a lost connection, a timeout, a 4xx reply. Only these are retried."""

    errno = _errno.EIO


class TimedOut(Transient):
    errno = _errno.ETIMEDOUT


class AuthenticationFailed(FsError):
    """Wrong user or password: never retried, so a bad password cannot lock an account."""

    errno = _errno.EACCES


class Unreachable(Transient):
    """The server cannot be reached at all (connection refused, unknown host): EIO, as for any
    server that keeps failing (fsmount(1), ERRORS), not EHOSTUNREACH's "No route to host",
    which would send the user looking for a network fault that is not there. The reason is
    in the message (and the log)."""

    errno = _errno.EIO


class Offline(FsError):
    """The account's server stopped answering a moment ago and has not answered since: an
    operation that needs it fails at once instead of waiting for it again
    (``cache.availability``)."""

    errno = _errno.EHOSTDOWN


class ConfigError(Exception):
    """A user mistake found before mounting; the CLI prints it as one line and exits 2."""
