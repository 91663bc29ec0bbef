"""Whether a message's bytes are as many as the server announced before sending them.

A server that cuts a message short (a bug, a proxy, a hostile server) while ending the answer
in good form would otherwise have its truncated bytes shown, and cached, as the whole file.
Every mail and news backend checks what it received against the size the listing gave
(IMAP RFC822.SIZE, POP3 LIST, NNTP :bytes); a mismatch is ``SizeMismatch`` (EIO), logged once
as a WARNING, and nothing of it is kept.

How exact a size is depends on the protocol, so the caller says:
``exact``: any difference is an error (IMAP: RFC822.SIZE is the size of BODY[] by
definition). Otherwise only a *short* answer is: more bytes than announced is never a cut
message (the answer's own end delimits it), and the dot-terminated protocols' servers differ
in what they count (see ``dot_slack``).
"""
from __future__ import annotations

import logging

from ..errors import SizeMismatch

log = logging.getLogger(__name__)


def check_size(what: str, received: int, announced: int | None, *, exact: bool = False,
               slack: int = 0) -> None:
    """Raise ``SizeMismatch`` (with one WARNING) when ``received`` bytes cannot be the whole of
    what was ``announced``: fewer than ``announced - slack``, or (``exact``) any other count.
    An unknown ``announced`` (None) checks nothing."""
    if announced is None:
        return
    if received + slack >= announced and (not exact or received == announced):
        return
    log.warning("%s: the server sent %d bytes where it announced %d; not shown",
                what, received, announced)
    raise SizeMismatch(f"{what}: {received} bytes received, {announced} announced")


def dot_slack(stuffed: int) -> int:
    """What a POP3 or NNTP server may count beyond the message's bytes without having cut it:
    the terminating ``.`` CRLF (3 octets) and each dot added by dot-stuffing, as a server
    counting its wire-format store does (INN subtracts them, as RFC 3977 asks, but misses the
    dot of a stuffed first body line)."""
    return 3 + stuffed
