"""What a server's refusal means by its words, for replies without a machine-readable code.

Response codes are optional (IMAP's RFC 5530 codes, POP3's RFC 2449/3206 ones) and many
servers send none: "NO Permission denied", "NO Mailbox does not exist", "-ERR no such
message". Each backend maps its codes first and asks here only when there is none, so the
user gets EACCES or ENOENT instead of a bare EIO. The phrases are those real servers use
(Dovecot, Cyrus, Courier, Gmail, Exchange, UW, INN), in English: a server answering in
another language still gets EIO.
"""
from __future__ import annotations

import re

from ..errors import AlreadyExists, FsError, NoSpace, NotEmpty, NotFound, PermissionDenied

# First match wins; each pattern is searched case-insensitively in the reply's text.
_MEANINGS: list[tuple[type[FsError], re.Pattern[str]]] = [
    (PermissionDenied, re.compile(
        r"permission denied|access denied|not allowed|not permitted|no permission"
        r"|insufficient (?:rights|privileges|permissions)|forbidden", re.I)),
    (NotFound, re.compile(
        r"does ?n[o']t exist|no such|unknown (?:mailbox|folder|message|article|group)"
        r"|not found|nonexistent|could not be found|cannot find"
        r"|(?:is|has been|was) (?:deleted|expunged)", re.I)),
    (AlreadyExists, re.compile(r"already exists?", re.I)),
    (NotEmpty, re.compile(r"has (?:child|children|inferior)|not empty", re.I)),
    (NoSpace, re.compile(r"quota|mailbox (?:is )?full|no space|disk full", re.I)),
]


def refusal_by_words(reason: str) -> FsError | None:
    """The FsError a refusal's text describes, or None when its words say nothing known."""
    for error, pattern in _MEANINGS:
        if pattern.search(reason):
            return error(reason)
    return None
