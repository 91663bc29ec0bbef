"""Refusals without a response code get their errno from their words, for IMAP, POP3 and NNTP.

The replies are what real servers send (their own words, codes left out where the server
gives none); a code, where there is one, decides before the words.
"""
from __future__ import annotations

import errno
import poplib
import warnings

import pytest
from imapclient import exceptions as imap_errors

from fsmount.backends import imap, pop3

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import nntplib

    from fsmount.backends import nntp


@pytest.mark.parametrize("reply, expected", [
    ("select failed: Permission denied (0.001 + 0.000 secs).", errno.EACCES),  # Dovecot, no code
    ("create failed: [NOPERM] Permission denied", errno.EACCES),
    ("create failed: Permission denied", errno.EACCES),  # Cyrus
    ("append failed: Access denied", errno.EACCES),
    ("delete failed: Operation not allowed on this mailbox", errno.EACCES),
    ("select failed: Mailbox does not exist", errno.ENOENT),  # Cyrus, Courier
    ("select failed: Mailbox doesn't exist: Gone (0.001 + 0.000 secs).", errno.ENOENT),  # Dovecot
    ("select failed: Unknown Mailbox: Foo (Failure)", errno.ENOENT),  # Gmail without its code
    ("select failed: The specified folder could not be found in the store.", errno.ENOENT),  # Exchange
    ("select failed: [NONEXISTENT] Unknown Mailbox: Foo (Failure)", errno.ENOENT),
    ("append failed: [TRYCREATE] Mailbox doesn't exist", errno.ENOENT),
    ("select failed: Mailbox doesn't exist: [Gmail]/Gone", errno.ENOENT),  # a name in brackets
    ("create failed: Mailbox already exists", errno.EEXIST),
    ("create failed: [ALREADYEXISTS] Mailbox already exists", errno.EEXIST),
    ("append failed: Quota exceeded (mailbox for user is full)", errno.ENOSPC),
    ("append failed: [OVERQUOTA] Quota exceeded", errno.ENOSPC),
    ("delete failed: [HASCHILDREN] Mailbox has children", errno.ENOTEMPTY),
    ("create failed: [CANNOT] Permission denied to use this name", errno.EINVAL),  # code first
    ("select failed: Internal error occurred", errno.EIO),
    ("SELECT command error: BAD [b'Error in IMAP command SELECT: Permission denied']", errno.EIO),
])
def test_imap(reply: str, expected: int) -> None:
    assert imap.classify(imap_errors.IMAPClientError(reply)).errno == expected


def test_imap_read_only_folder_is_erofs_not_a_lost_connection() -> None:
    error = imap.classify(imap_errors.IMAPClientReadOnlyError("'Shared' is not writable"))
    assert error.errno == errno.EROFS and not isinstance(error, imap.Transient)


@pytest.mark.parametrize("reply, expected", [
    (b"-ERR Permission denied", errno.EACCES),
    (b"-ERR [SYS/PERM] Access denied", errno.EACCES),
    (b"-ERR no such message", errno.ENOENT),
    (b"-ERR Message is deleted.", errno.ENOENT),  # Dovecot, a message DELEd in the session
    (b"-ERR Unknown command: XYZ", errno.EIO),
    (b"-ERR [AUTH] Permission denied", errno.EACCES),
])
def test_pop3(reply: bytes, expected: int) -> None:
    assert pop3.classify(poplib.error_proto(reply)).errno == expected


@pytest.mark.parametrize("reply, expected", [
    ("411 No such newsgroup", errno.ENOENT),
    ("423 No article with that number", errno.ENOENT),
    ("430 No such article", errno.ENOENT),
    ("440 Posting not permitted", errno.EPERM),
    ("441 Article has no body", errno.EPERM),
    ("480 Authentication required", errno.EACCES),
    ("481 Authentication failed", errno.EACCES),
    ("502 Permission denied", errno.EACCES),
    ("503 Access denied to this group", errno.EACCES),  # no code of its own: the words
    ("500 What?", errno.EIO),
])
def test_nntp(reply: str, expected: int) -> None:
    error = (nntplib.NNTPTemporaryError if reply[0] == "4" else nntplib.NNTPPermanentError)(reply)
    assert nntp.classify(error).errno == expected
